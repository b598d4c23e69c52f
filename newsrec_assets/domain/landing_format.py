"""Landing files: which names hold change records, and how one file's bytes become records.

`parse_landing_file` is the one decoder of landing files: every warehouse adapter and the speed
layer call it, so a file means the same everywhere. It never raises on bad content: every line
becomes either a change record or a quarantine entry with its line number and a reason, and a file
that cannot be decoded at all becomes one quarantine entry (line 0). Re-parsing the same bytes gives
the same result, so a file is ingested once and its bad lines are quarantined once.

Accepted (Datastream's JSON destination format and this project's writers):
- names ending in `.jsonl` or `.json` (one JSON object per line), or either with `.gz` (gzip,
  several members allowed), anywhere under the zone (Datastream's layout is
  `<object>/<yyyy>/<mm>/<dd>/<HH>/<MM>/<name>`, the simulator's `<table>/<yyyy-mm-dd>/<name>`);
- UTF-8 with or without a byte-order mark; LF or CRLF line ends; blank lines are skipped.
Names starting with a dot are writers' temporaries (renamed into place when complete) and names
ending in `/` are folder placeholders: neither is a landed file. Every other name is unsupported
(Avro, for instance) and is reported, never read.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

import orjson

from newsrec_assets.domain.cdc import (
    DEFAULT_LIMITS,
    ChangeRecord,
    MalformedChangeRecord,
    RecordLimits,
    load_change_document,
    parse_change_document,
)

RECORD_SUFFIXES = (".jsonl", ".json")
COMPRESSED_SUFFIX = ".gz"
# The same names as a Cloud Storage `match_glob`, so a bucket listing returns record files only.
RECORD_NAME_GLOB = "**{" + ",".join(s + z for s in RECORD_SUFFIXES for z in ("", COMPRESSED_SUFFIX)) + "}"
UTF8_BOM = b"\xef\xbb\xbf"
_OTHER_BOMS = {b"\xff\xfe": "UTF-16 (little-endian)", b"\xfe\xff": "UTF-16 (big-endian)"}
_GZIP_CHUNK = 1 << 16
WHOLE_FILE = 0  # the line number of a quarantine entry about the file rather than one of its lines


class FileKind(Enum):
    RECORDS = "records"  # a change-record file this module decodes
    # A writer's hidden temporary (renamed into place when complete) or a bucket's folder placeholder.
    NOT_A_FILE = "not a landed file"
    UNSUPPORTED = "unsupported"  # a file nothing here can read: reported, never skipped silently


def landing_file_kind(path: str) -> FileKind:
    """What a landed object is, from its name alone (no read needed)."""
    name = path.rsplit("/", 1)[-1]
    if not name or name.startswith("."):
        return FileKind.NOT_A_FILE
    stem = name.removesuffix(COMPRESSED_SUFFIX)
    return FileKind.RECORDS if stem.endswith(RECORD_SUFFIXES) else FileKind.UNSUPPORTED


class ParsedLine(NamedTuple):
    line_number: int
    record: ChangeRecord
    payload_json: str  # the payload as delivered, re-serialised compactly


class QuarantinedLine(NamedTuple):
    line_number: int  # WHOLE_FILE (0) when the file itself could not be decoded
    reason: str
    raw_line: str  # the line as delivered; bytes that are not UTF-8 appear as \\xNN escapes


@dataclass
class ParsedFile:
    """A landing file split into change records and quarantined lines: nothing is dropped."""

    records: list[ParsedLine] = field(default_factory=list)
    quarantine: list[QuarantinedLine] = field(default_factory=list)


def _as_text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _gunzip(content: bytes) -> tuple[bytes, str | None]:
    """The decompressed bytes (every gzip member) and, if the stream is damaged, why.

    What decompresses before the damage is returned, so the complete lines in it are kept.
    """
    output: list[bytes] = []
    remaining = content
    while remaining:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            for start in range(0, len(remaining), _GZIP_CHUNK):
                output.append(decompressor.decompress(remaining[start : start + _GZIP_CHUNK]))
                if decompressor.eof:
                    break
            output.append(decompressor.flush())
        except zlib.error as error:
            return b"".join(output), f"gzip data is damaged: {error}"
        if not decompressor.eof:
            return b"".join(output), "gzip data ends before its end-of-stream marker (truncated file)"
        remaining = decompressor.unused_data.lstrip(b"\0")  # members may be padded with zeros
    return b"".join(output), None


def parse_landing_file(content: bytes, name: str, limits: RecordLimits = DEFAULT_LIMITS) -> ParsedFile:
    """Decode one landing file (`name` tells its format) into change records and quarantine."""
    parsed = ParsedFile()
    kind = landing_file_kind(name)
    if kind is not FileKind.RECORDS:
        parsed.quarantine.append(QuarantinedLine(WHOLE_FILE, f"not a change-record file ({kind.value})", ""))
        return parsed
    damage = None
    if name.endswith(COMPRESSED_SUFFIX):
        content, damage = _gunzip(content)
    for bom, encoding in _OTHER_BOMS.items():
        if content.startswith(bom):
            parsed.quarantine.append(
                QuarantinedLine(WHOLE_FILE, f"the file is {encoding}; landing files are UTF-8", "")
            )
            return parsed

    lines = content.splitlines()
    if damage is not None and lines and not content.endswith((b"\n", b"\r")):
        # The last line was cut by the damage: what is left of it is part of the quarantine entry.
        damage = f"{damage}; the last line is incomplete"
        parsed.quarantine.append(QuarantinedLine(len(lines), damage, _as_text(lines.pop())))
    elif damage is not None:
        parsed.quarantine.append(QuarantinedLine(WHOLE_FILE, damage, ""))

    for line_number, raw_line in enumerate(lines, start=1):
        # A byte-order mark starts the file, or each part of files joined end to end.
        line = raw_line.removeprefix(UTF8_BOM)
        if not line.strip():
            continue
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as error:
            reason = f"not valid UTF-8 at byte {error.start}"
            parsed.quarantine.append(QuarantinedLine(line_number, reason, _as_text(raw_line)))
            continue
        try:
            document = load_change_document(line)
            record = parse_change_document(document, limits)
        except MalformedChangeRecord as error:
            parsed.quarantine.append(QuarantinedLine(line_number, str(error), _as_text(raw_line)))
            continue
        payload_json = orjson.dumps(document.get("payload")).decode()
        parsed.records.append(ParsedLine(line_number, record, payload_json))
    parsed.quarantine.sort(key=lambda entry: entry.line_number)
    return parsed
