"""Landing zone port: where Datastream change-record files arrive (a bucket prefix; locally a folder).

Files are named `<table>/<YYYY-MM-DD>/<name>.jsonl` by this project's writers and
`<object>/<yyyy>/<mm>/<dd>/<HH>/<MM>/<name>.jsonl[.gz]` by Datastream, relative to the zone's root.
Writers make them appear atomically (a hidden temporary name, then rename), so a listed file is
always complete. Which names hold change records is the domain's call (`landing_format`).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from newsrec_assets.domain.landing_format import FileKind, landing_file_kind


@dataclass(frozen=True, order=True)
class LandingFile:
    """A landed file: its path relative to the zone root and when it landed (ns since the epoch)."""

    landed_at_ns: int
    path: str
    size_bytes: int

    @property
    def table(self) -> str:
        return self.path.split("/", 1)[0]

    @property
    def cursor(self) -> str:
        """A sensor cursor meaning "everything up to and including this file"."""
        return f"{self.landed_at_ns}:{self.path}"


START_OF_TIME_CURSOR = "0:"


def parse_cursor(cursor: str | None) -> tuple[int, str] | None:
    """The (landed_at_ns, path) position a `LandingFile.cursor` string stands for; None for no cursor."""
    if not cursor:
        return None
    landed_at_ns, _, path = cursor.partition(":")
    return int(landed_at_ns), path


class LandingZone(ABC):
    """Lists and reads landed change-record files."""

    @abstractmethod
    def list_files(self, prefix: str = "") -> Iterator[LandingFile]:
        """Every complete file in the zone (under `prefix`, e.g. `articles/`), unordered.

        Unsupported names are listed too, so that ingestion can report them; writers' hidden
        temporaries are not.
        """

    @abstractmethod
    def read_bytes(self, path: str) -> bytes:
        """The content of one landed file."""

    @abstractmethod
    def write_file(self, path: str, content: bytes) -> None:
        """Land a file atomically (used by the API's event intake and the simulator's tests)."""

    def new_files(self, after: tuple[int, str] | None, prefix: str = "") -> list[LandingFile]:
        """Change-record files that landed after a (landed_at_ns, path) cursor, oldest first."""
        files = sorted(f for f in self.list_files(prefix) if landing_file_kind(f.path) is FileKind.RECORDS)
        if after is None:
            return files
        return [file for file in files if (file.landed_at_ns, file.path) > after]


class LocalLandingZone(LandingZone):
    """A folder on local disk standing in for the bucket. With `fsync`, a written file survives a
    crash of the machine (the API acknowledges events only then); without, writes are cheaper."""

    def __init__(self, root: str | os.PathLike[str], fsync: bool = False):
        self.root = Path(root)
        self.fsync = fsync

    def list_files(self, prefix: str = "") -> Iterator[LandingFile]:
        top = self.root / prefix
        if not top.exists():
            return
        for directory, _, names in os.walk(top):
            for name in names:
                if landing_file_kind(name) is FileKind.NOT_A_FILE:
                    continue
                full_path = os.path.join(directory, name)
                stat = os.stat(full_path)
                yield LandingFile(
                    landed_at_ns=stat.st_mtime_ns,
                    path=os.path.relpath(full_path, self.root).replace(os.sep, "/"),
                    size_bytes=stat.st_size,
                )

    def read_bytes(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def write_file(self, path: str, content: bytes) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with open(temporary, "wb") as file:
            file.write(content)
            if self.fsync:
                os.fsync(file.fileno())
        os.replace(temporary, target)
        if self.fsync:  # the rename itself
            directory = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)


class GCSLandingZone(LandingZone):
    """A Cloud Storage prefix, the production landing zone that Datastream writes to."""

    def __init__(self, bucket: str, prefix: str = "", project: str | None = None):
        from google.cloud import storage  # imported here: only the production profile needs it

        self._bucket = storage.Client(project=project).bucket(bucket)
        self.prefix = prefix.strip("/")

    def _blob_name(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def list_files(self, prefix: str = "") -> Iterator[LandingFile]:
        start = len(self.prefix) + 1 if self.prefix else 0
        for blob in self._bucket.client.list_blobs(self._bucket, prefix=self._blob_name(prefix)):
            if landing_file_kind(blob.name) is not FileKind.NOT_A_FILE:
                yield LandingFile(
                    landed_at_ns=int(blob.updated.timestamp() * 1e9),
                    path=blob.name[start:],
                    size_bytes=blob.size or 0,
                )

    def read_bytes(self, path: str) -> bytes:
        return self._bucket.blob(self._blob_name(path)).download_as_bytes()

    def write_file(self, path: str, content: bytes) -> None:
        self._bucket.blob(self._blob_name(path)).upload_from_string(content)
