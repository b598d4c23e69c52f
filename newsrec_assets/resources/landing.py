"""Landing zone port: where Datastream change-record files arrive (a bucket prefix; locally a folder).

Files are named `<table>/<YYYY-MM-DD>/<name>.jsonl` by this project's writers and
`<object>/<yyyy>/<mm>/<dd>/<HH>/<MM>/<name>.jsonl[.gz]` by Datastream, relative to the zone's root:
the part after the table is a day partition (or a year folder), the time of the file's first
change. Writers make them appear atomically (a hidden temporary name, then rename; a GCS object
exists only once its upload completed), so a listed file is always complete. Which names hold
change records is the domain's call (`landing_format`).

Sensors ask for the files that landed after their cursor (`new_files`). Both adapters answer
from the day partitions that can hold such files only: a file lands at or after its first change,
and at most `late_file_days` days after it (Datastream writes within minutes; late exports and
backfills land in old partitions, and reach the warehouse through the next ingestion, which
sweeps every file it has not stored yet). On GCS that is one listing per table, starting at the
oldest such partition (`start_offset`) and matching only change-record names (`match_glob`), never
the whole prefix.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from google.cloud import storage

from newsrec_assets.domain.landing_format import RECORD_NAME_GLOB, FileKind, landing_file_kind

DEFAULT_LATE_FILE_DAYS = 1


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


def first_partition_after(landed_at_ns: int, late_file_days: int) -> str:
    """The oldest day partition that can hold a file landing after `landed_at_ns`."""
    landed = datetime.fromtimestamp(landed_at_ns / 1e9, tz=UTC)
    return f"{landed - timedelta(days=late_file_days):%Y-%m-%d}"


class LandingZone(ABC):
    """Lists and reads landed change-record files."""

    late_file_days: int = DEFAULT_LATE_FILE_DAYS

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

    @abstractmethod
    def tables(self, prefix: str = "") -> list[str]:
        """The top-level folders (`<table>/`) under `prefix`, each ending in `/`."""

    @abstractmethod
    def list_partitions_from(self, table_prefix: str, first_partition: str) -> Iterator[LandingFile]:
        """The change-record files of `table_prefix` (`<table>/`) in day partitions >= `first_partition`
        (and in Datastream's year folders from that partition's year on)."""

    def new_files(self, after: tuple[int, str] | None, prefix: str = "") -> list[LandingFile]:
        """Change-record files that landed after a (landed_at_ns, path) cursor, oldest first.

        Without a cursor: every file under `prefix`. With one: only the day partitions that can
        hold a later file are listed (see the module docstring).
        """
        if after is None:
            return sorted(f for f in self.list_files(prefix) if landing_file_kind(f.path) is FileKind.RECORDS)
        first_partition = first_partition_after(after[0], self.late_file_days)
        return sorted(
            file
            for table_prefix in self._table_prefixes(prefix)
            for file in self.list_partitions_from(table_prefix, first_partition)
            if (file.landed_at_ns, file.path) > after and file.path.startswith(prefix)
        )

    def _table_prefixes(self, prefix: str) -> Iterable[str]:
        """`<table>/` prefixes covering `prefix` (itself when it names a table or goes deeper)."""
        if "/" in prefix:
            return [prefix.split("/", 1)[0] + "/"]
        return [table for table in self.tables() if table.startswith(prefix)]


class LocalLandingZone(LandingZone):
    """A folder on local disk standing in for the bucket. With `fsync`, a written file survives a
    crash of the machine (the API acknowledges events only then); without, writes are cheaper."""

    def __init__(
        self, root: str | os.PathLike[str], fsync: bool = False, late_file_days: int = DEFAULT_LATE_FILE_DAYS
    ):
        self.root = Path(root)
        self.fsync = fsync
        self.late_file_days = late_file_days

    def list_files(self, prefix: str = "") -> Iterator[LandingFile]:
        yield from self._walk(self.root / prefix)

    def _walk(self, top: Path) -> Iterator[LandingFile]:
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

    def tables(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(f"{entry.name}/" for entry in os.scandir(self.root) if entry.is_dir())

    def list_partitions_from(self, table_prefix: str, first_partition: str) -> Iterator[LandingFile]:
        folder = self.root / table_prefix
        if not folder.is_dir():
            return
        # The same names a GCS listing with `start_offset=<table>/<first_partition>` returns.
        year = first_partition[:4]
        for entry in os.scandir(folder):
            is_year_folder = len(entry.name) == 4 and entry.name.isdigit()
            if entry.name < first_partition and not (is_year_folder and entry.name >= year):
                continue
            if entry.is_dir():
                yield from (
                    f for f in self._walk(Path(entry.path)) if landing_file_kind(f.path) is FileKind.RECORDS
                )
            elif landing_file_kind(entry.name) is FileKind.RECORDS:
                stat = entry.stat()
                yield LandingFile(stat.st_mtime_ns, f"{table_prefix}{entry.name}", stat.st_size)

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
    """A Cloud Storage prefix, the production landing zone that Datastream writes to.

    `client` is a `google.cloud.storage.Client` (the Dagster resource builds it with dagster-gcp's
    `GCSResource`; without one, the default client of `project` is used).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        project: str | None = None,
        client: storage.Client | None = None,
        late_file_days: int = DEFAULT_LATE_FILE_DAYS,
    ):
        if client is None:
            from google.cloud import storage  # imported here: only the production profile needs it

            client = storage.Client(project=project)
        self._client = client
        self._bucket = client.bucket(bucket)
        self.prefix = prefix.strip("/")
        self.late_file_days = late_file_days

    def _blob_name(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def _landing_files(self, wanted: set[FileKind], **list_arguments) -> Iterator[LandingFile]:
        start = len(self.prefix) + 1 if self.prefix else 0
        for blob in self._client.list_blobs(self._bucket, **list_arguments):
            if landing_file_kind(blob.name) in wanted:
                yield LandingFile(
                    landed_at_ns=int(blob.time_created.timestamp() * 1e9),
                    path=blob.name[start:],
                    size_bytes=blob.size or 0,
                )

    def list_files(self, prefix: str = "") -> Iterator[LandingFile]:
        # Every name, unsupported ones included: ingestion reports those.
        yield from self._landing_files(
            {FileKind.RECORDS, FileKind.UNSUPPORTED}, prefix=self._blob_name(prefix)
        )

    def tables(self, prefix: str = "") -> list[str]:
        # A delimiter listing returns the folder names, not the objects under them.
        pages = self._client.list_blobs(self._bucket, prefix=self._blob_name(prefix), delimiter="/")
        for _ in pages:
            pass
        start = len(self.prefix) + 1 if self.prefix else 0
        return sorted(name[start:] for name in pages.prefixes)

    def list_partitions_from(self, table_prefix: str, first_partition: str) -> Iterator[LandingFile]:
        # `<table>/YYYY-MM-DD` also starts Datastream's `<table>/YYYY/...` names of that year ('-' < '/').
        yield from self._landing_files(
            {FileKind.RECORDS},
            prefix=self._blob_name(table_prefix),
            start_offset=self._blob_name(f"{table_prefix}{first_partition}"),
            match_glob=RECORD_NAME_GLOB,
        )

    def read_bytes(self, path: str) -> bytes:
        return self._bucket.blob(self._blob_name(path)).download_as_bytes()

    def write_file(self, path: str, content: bytes) -> None:
        # One single-request upload: the object appears only once complete.
        self._bucket.blob(self._blob_name(path)).upload_from_string(content)
