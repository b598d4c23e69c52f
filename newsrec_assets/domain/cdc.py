"""Datastream-format change records: the one parser and writer of the landing format.

A change record is one JSON object per line (see docs/data-model.md). Delivery is at-least-once,
so a change's identity is its source object plus its sort keys (source timestamp and log
position), not its `uuid`, which a re-read assigns afresh.
"""

from __future__ import annotations

import json
import re
import uuid as uuid_lib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

ChangeType = Literal["INSERT", "UPDATE-INSERT", "UPDATE-DELETE", "DELETE"]
CHANGE_TYPES: frozenset[str] = frozenset({"INSERT", "UPDATE-INSERT", "UPDATE-DELETE", "DELETE", "UPDATE"})
ColumnType = Literal["str", "int", "ts"]

DATABASE = "newsapp"

# Every integer column is stored as a signed 64-bit integer; a JSON number outside that range is a
# bad record, never a reason to fail the file it came in.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# staging orders changes by microseconds since the epoch (dbt macro change_seq), so earlier times
# cannot be ordered, and no source of this app has them.
EARLIEST_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
# A PostgreSQL LSN as Datastream writes it: two hexadecimal 32-bit halves, `16/B374D848`.
_LSN = re.compile(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}")


@dataclass(frozen=True)
class SourceTable:
    """Schema of one table that the change stream covers."""

    name: str
    primary_keys: tuple[str, ...]
    columns: dict[str, ColumnType]
    nullable: frozenset[str] = frozenset()
    # Inclusive bounds of integer columns beyond the 64-bit range: what the column can mean.
    int_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def object_name(self) -> str:
        return f"{DATABASE}_{self.name}"


SOURCE_TABLES: dict[str, SourceTable] = {
    table.name: table
    for table in (
        SourceTable(
            name="articles",
            primary_keys=("article_id",),
            columns={
                "article_id": "str",
                "title": "str",
                "body": "str",
                "category": "str",
                "subcategory": "str",
                "status": "str",
                "published_at": "ts",
                "updated_at": "ts",
                "url": "str",
            },
            nullable=frozenset({"url"}),  # where the article lives on the web, if the source has it
        ),
        SourceTable(
            name="user_article_views",
            primary_keys=("user_id", "article_id"),
            columns={
                "user_id": "str",
                "article_id": "str",
                "view_count": "int",
                "first_viewed_at": "ts",
                "last_viewed_at": "ts",
                "last_impression_id": "str",
            },
            nullable=frozenset({"last_impression_id"}),
            int_ranges={"view_count": (0, INT64_MAX)},
        ),
        SourceTable(
            name="impressions",
            primary_keys=("impression_id", "position"),
            columns={
                "impression_id": "str",
                "user_id": "str",
                "article_id": "str",
                "position": "int",
                "shown_at": "ts",
                "variant": "str",
            },
            nullable=frozenset({"variant"}),  # the API's A/B variant; other sources have none
            # staging casts position to a 32-bit integer
            int_ranges={"position": (0, 2**31 - 1)},
        ),
        # The API's exposure log: one row per served list, its articles space-separated in rank
        # order (as MIND's impression logs hold them); dbt expands it into `impressions` rows.
        SourceTable(
            name="served_lists",
            primary_keys=("impression_id",),
            columns={
                "impression_id": "str",
                "user_id": "str",
                "article_ids": "str",
                "first_position": "int",
                "shown_at": "ts",
                "variant": "str",
            },
            nullable=frozenset({"variant"}),
            int_ranges={"first_position": (0, 2**31 - 1)},
        ),
        # Views posted to the API: one row per view, never updated, so no other writer of the same
        # user and article (the app's `user_article_views` row) can number them differently.
        SourceTable(
            name="api_view_events",
            primary_keys=("event_id",),
            columns={
                "event_id": "str",
                "user_id": "str",
                "article_id": "str",
                "viewed_at": "ts",
                "impression_id": "str",
            },
            nullable=frozenset({"impression_id"}),  # the list the view came from, if the app sent it
        ),
    )
}


class MalformedChangeRecord(ValueError):
    """A landing line that cannot be stored as a change; the message is the quarantine reason."""


@dataclass(frozen=True)
class RecordLimits:
    """Plausibility bounds a change must meet to be stored; a change beyond them is quarantined.

    `max_view_count`: the highest `view_count` a user x article row can plausibly reach. A value
    above it (a corrupt counter, e.g. 10^12) would otherwise be taken for that many views.
    """

    max_view_count: int = 1_000_000


DEFAULT_LIMITS = RecordLimits()


def format_ts(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds and `Z`, the landing format's timestamp."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ts(text: Any) -> datetime:
    """Parse a landing timestamp into an aware UTC datetime; raises ValueError if it is not one."""
    if not isinstance(text, str):
        raise ValueError(f"expected an ISO 8601 timestamp string, got {type(text).__name__}")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    try:
        moment = moment.astimezone(UTC)
    except OverflowError as error:  # e.g. 0001-01-01T00:00:00+01:00
        raise ValueError(f"timestamp {text!r} is out of range") from error
    if moment < EARLIEST_TIMESTAMP:
        raise ValueError(f"timestamp {text!r} is before 1970-01-01")
    return moment


@dataclass(frozen=True)
class ChangeRecord:
    """One change of one row, as Datastream delivers it."""

    table: str
    change_type: str
    payload: dict[str, Any]
    source_timestamp: datetime
    read_timestamp: datetime
    log_file: str | None = None
    log_position: int | None = None
    lsn: str | None = None
    uuid: str = field(default_factory=lambda: str(uuid_lib.uuid4()))
    read_method: str = "mysql-cdc-binlog"
    stream_name: str = "newsapp-stream"

    @property
    def is_deleted(self) -> bool:
        return self.change_type == "DELETE"

    @property
    def object_name(self) -> str:
        return SOURCE_TABLES[self.table].object_name

    @property
    def sort_keys(self) -> list[Any]:
        position: list[Any] = [self.lsn] if self.lsn is not None else [self.log_file, self.log_position]
        return [format_ts(self.source_timestamp), *position]

    @property
    def change_key(self) -> str:
        return change_key(self.object_name, self.sort_keys, self.change_type)

    def to_json(self) -> dict[str, Any]:
        table = SOURCE_TABLES[self.table]
        source_metadata: dict[str, Any] = {
            "table": self.table,
            "database": DATABASE,
            "primary_keys": list(table.primary_keys),
            "change_type": self.change_type,
            "is_deleted": self.is_deleted,
        }
        if self.lsn is not None:
            source_metadata["lsn"] = self.lsn
        else:
            source_metadata["log_file"] = self.log_file
            source_metadata["log_position"] = self.log_position
        return {
            "uuid": self.uuid,
            "read_timestamp": format_ts(self.read_timestamp),
            "source_timestamp": format_ts(self.source_timestamp),
            "object": self.object_name,
            "read_method": self.read_method,
            "stream_name": self.stream_name,
            "schema_key": f"{self.object_name}-v1",
            "sort_keys": self.sort_keys,
            "source_metadata": source_metadata,
            "payload": {name: _payload_json_value(self.payload.get(name)) for name in table.columns},
        }

    def to_json_line(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False)


def change_key(object_name: str, sort_keys: list[Any], change_type: str) -> str:
    """Identity of a change across re-deliveries: the object, its sort keys and its change type.

    The change type is part of it because MySQL sources emit an update's UPDATE-DELETE (row before)
    and UPDATE-INSERT (row after) at the same log position.
    """
    position = "|".join("" if key is None else str(key) for key in sort_keys)
    return f"{object_name}|{position}|{change_type}"


def lsn_number(lsn: str) -> int:
    """A PostgreSQL LSN (`16/B374D848`) as the 64-bit number it stands for, so LSNs compare
    numerically: as text, `9/0` would sort after `16/0`."""
    high, _, low = lsn.partition("/")
    return int(high, 16) << 32 | int(low, 16)


def source_order(record: ChangeRecord) -> tuple:
    """The order in which the source applied changes; dbt's `change_seq` macro sorts the same way.

    Source timestamp, then the log position (PostgreSQL LSN, numerically; or MySQL binlog file and
    position), then the row image: an update's UPDATE-DELETE (row before) shares the log position
    of its UPDATE-INSERT (row after) and comes first.
    """
    return (
        record.source_timestamp,
        lsn_number(record.lsn) if record.lsn is not None else -1,
        record.log_file or "",
        record.log_position or 0,
        0 if record.change_type == "UPDATE-DELETE" else 1,
    )


def _payload_json_value(value: Any) -> Any:
    return format_ts(value) if isinstance(value, datetime) else value


def _checked_int(where: str, value: Any, low: int = INT64_MIN, high: int = INT64_MAX) -> int:
    # JSON numbers beyond 64 bits may arrive as floats (orjson): they are not integers either.
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedChangeRecord(f"{where} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise MalformedChangeRecord(f"{where} = {value} is outside its range [{low}, {high}]")
    return value


def _typed(table: SourceTable, name: str, value: Any, limits: RecordLimits, key_only: bool) -> Any:
    if value is None:
        if name in table.nullable or (key_only and name not in table.primary_keys):
            return None
        if key_only:
            raise MalformedChangeRecord(
                f"DELETE without its primary key: payload.{name} is missing, so the row it removes "
                "cannot be identified"
            )
        raise MalformedChangeRecord(f"payload.{name} is null")
    kind = table.columns[name]
    if kind == "str":
        if not isinstance(value, str):
            raise MalformedChangeRecord(f"payload.{name} must be a string")
        return value
    if kind == "int":
        checked = _checked_int(f"payload.{name}", value, *table.int_ranges.get(name, (INT64_MIN, INT64_MAX)))
        if name == "view_count" and checked > limits.max_view_count:
            raise MalformedChangeRecord(
                f"payload.view_count = {checked} is above the plausible maximum {limits.max_view_count} "
                "(max_view_count)"
            )
        return checked
    try:
        return parse_ts(value)
    except ValueError as error:
        raise MalformedChangeRecord(f"payload.{name}: {error}") from error


def _require(mapping: dict[str, Any], key: str, where: str = "") -> Any:
    if key not in mapping:
        raise MalformedChangeRecord(f"missing field {where}{key}")
    return mapping[key]


def load_change_document(line: str | bytes) -> dict[str, Any]:
    """The JSON object of one landing line; raises MalformedChangeRecord if it is not one."""
    try:
        document = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise MalformedChangeRecord(f"invalid JSON: {error}") from error
    if not isinstance(document, dict):
        raise MalformedChangeRecord("a change record must be a JSON object")
    return document


def parse_change_line(line: str | bytes, limits: RecordLimits = DEFAULT_LIMITS) -> ChangeRecord:
    """Parse and validate one landing line; raises MalformedChangeRecord with the reason."""
    return parse_change_document(load_change_document(line), limits)


def parse_change_document(document: dict[str, Any], limits: RecordLimits = DEFAULT_LIMITS) -> ChangeRecord:
    """Validate a landing line's JSON object into a change record.

    A DELETE needs only the removed row's primary key in `payload` (Datastream sends the whole row
    before the delete for MySQL, the replica identity for PostgreSQL): its other columns may be
    null or absent. Every other change carries the whole row after it.
    """
    metadata = _require(document, "source_metadata")
    if not isinstance(metadata, dict):
        raise MalformedChangeRecord("source_metadata must be a JSON object")
    is_delete = metadata.get("change_type") == "DELETE"
    payload = document.get("payload") if is_delete else _require(document, "payload")
    if payload is None and is_delete:
        payload = {}
    if not isinstance(payload, dict):
        raise MalformedChangeRecord("payload must be a JSON object")

    table_name = _require(metadata, "table", "source_metadata.")
    table = SOURCE_TABLES.get(table_name)
    if table is None:
        raise MalformedChangeRecord(f"unknown source table {table_name!r}")
    change_type = _require(metadata, "change_type", "source_metadata.")
    if change_type not in CHANGE_TYPES:
        raise MalformedChangeRecord(f"unknown change_type {change_type!r}")
    if change_type == "UPDATE":  # PostgreSQL sources report the row after the update as UPDATE
        change_type = "UPDATE-INSERT"
    record_uuid = _require(document, "uuid")
    if not isinstance(record_uuid, str) or not record_uuid:
        raise MalformedChangeRecord("uuid must be a non-empty string")

    try:
        source_timestamp = parse_ts(_require(document, "source_timestamp"))
        read_timestamp = parse_ts(_require(document, "read_timestamp"))
    except ValueError as error:
        raise MalformedChangeRecord(str(error)) from error

    lsn = metadata.get("lsn")
    log_file = metadata.get("log_file")
    log_position = metadata.get("log_position")
    if lsn is None and (log_file is None or log_position is None):
        raise MalformedChangeRecord("source_metadata needs lsn or log_file and log_position")
    if log_position is not None:
        _checked_int("source_metadata.log_position", log_position, 0, INT64_MAX)
    if log_file is not None and not isinstance(log_file, str):
        raise MalformedChangeRecord("source_metadata.log_file must be a string")
    if lsn is not None and not (isinstance(lsn, str) and _LSN.fullmatch(lsn)):
        raise MalformedChangeRecord(f"source_metadata.lsn {lsn!r} is not a PostgreSQL LSN like '16/B374D848'")

    typed_payload = {
        name: _typed(table, name, payload.get(name), limits, key_only=is_delete) for name in table.columns
    }
    return ChangeRecord(
        table=table.name,
        change_type=change_type,
        payload=typed_payload,
        source_timestamp=source_timestamp,
        read_timestamp=read_timestamp,
        log_file=log_file,
        log_position=log_position,
        lsn=lsn,
        uuid=record_uuid,
        read_method=str(document.get("read_method", "")),
        stream_name=str(document.get("stream_name", "")),
    )
