"""Warehouse port and its embedded DuckDB adapter: the append-only raw CDC log and mart reads.

Ingestion stores every distinct change once (`change_key` is the primary key), so re-delivered
records and re-run files add nothing. Each landing file is stored in one transaction together with
its entry in `raw.landing_files`: a crash mid-file leaves the file unregistered and it is simply
ingested again next time. Malformed lines go to `raw.cdc_quarantine` with file, line and reason.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from newsrec_assets.domain.cdc import (
    SOURCE_TABLES,
    ChangeRecord,
    MalformedChangeRecord,
    load_change_document,
    parse_change_document,
)
from newsrec_assets.resources.landing import LandingFile, LandingZone

RAW_SCHEMA = "raw"

_ARROW_TYPES = {"str": pa.string(), "int": pa.int64(), "ts": pa.timestamp("us", tz="UTC")}
_SQL_TYPES = {"str": "varchar", "int": "bigint", "ts": "timestamptz"}

_METADATA_COLUMNS: dict[str, tuple[pa.DataType, str]] = {
    "change_key": (pa.string(), "varchar primary key"),
    "change_uuid": (pa.string(), "varchar not null"),
    "read_timestamp": (pa.timestamp("us", tz="UTC"), "timestamptz not null"),
    "source_timestamp": (pa.timestamp("us", tz="UTC"), "timestamptz not null"),
    "change_type": (pa.string(), "varchar not null"),
    "is_deleted": (pa.bool_(), "boolean not null"),
    "log_file": (pa.string(), "varchar"),
    "log_position": (pa.int64(), "bigint"),
    "lsn": (pa.string(), "varchar"),
    "payload_json": (pa.string(), "varchar not null"),
    "landing_file": (pa.string(), "varchar not null"),
    "landing_line": (pa.int32(), "integer not null"),
    "ingested_at": (pa.timestamp("us", tz="UTC"), "timestamptz not null"),
}


def raw_table_name(table: str) -> str:
    return f"{RAW_SCHEMA}.cdc_{table}"


def _raw_table_ddl(table: str) -> str:
    columns = [f"{name} {sql}" for name, (_, sql) in _METADATA_COLUMNS.items()]
    columns += [f"{name} {_SQL_TYPES[kind]}" for name, kind in SOURCE_TABLES[table].columns.items()]
    return f"create table if not exists {raw_table_name(table)} ({', '.join(columns)})"


_REGISTRY_DDL = [
    f"create schema if not exists {RAW_SCHEMA}",
    f"""create table if not exists {RAW_SCHEMA}.cdc_quarantine (
        landing_file varchar not null, landing_line integer not null, reason varchar not null,
        raw_line varchar not null, quarantined_at timestamptz not null)""",
    f"""create table if not exists {RAW_SCHEMA}.landing_files (
        landing_file varchar not null, sha256 varchar not null, size_bytes bigint not null,
        records integer not null, stored integer not null, duplicates integer not null,
        quarantined integer not null, ingested_at timestamptz not null,
        primary key (landing_file, sha256))""",
]


@dataclass
class IngestReport:
    """What one ingestion pass did; `records = stored + duplicates` and nothing else is dropped."""

    files_seen: int = 0
    files_ingested: int = 0
    files_already_ingested: int = 0
    records: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    stored_by_table: dict[str, int] = field(default_factory=dict)
    newest_source_timestamp: datetime | None = None

    def add_file(self, records: int, stored_by_table: dict[str, int], quarantined: int) -> None:
        stored = sum(stored_by_table.values())
        self.files_ingested += 1
        self.records += records
        self.stored += stored
        self.duplicates += records - stored
        self.quarantined += quarantined
        for table, count in stored_by_table.items():
            if count:
                self.stored_by_table[table] = self.stored_by_table.get(table, 0) + count


@dataclass
class ParsedFile:
    records: list[tuple[int, ChangeRecord, str]]  # line number, record, its payload as delivered (JSON)
    quarantine: list[tuple[int, str, str]]  # line number, reason, the line as delivered


@dataclass
class _PendingFile:
    path: str
    digest: str
    size: int
    parsed: ParsedFile


def parse_landing_file(content: bytes) -> ParsedFile:
    """Split a landing file into valid change records and quarantined lines (nothing is dropped)."""
    parsed = ParsedFile(records=[], quarantine=[])
    for line_number, raw_line in enumerate(content.split(b"\n"), start=1):
        if not raw_line.strip():
            continue
        try:
            document = load_change_document(raw_line)
            record = parse_change_document(document)
        except MalformedChangeRecord as error:
            parsed.quarantine.append((line_number, str(error), raw_line.decode("utf-8", "replace")))
            continue
        parsed.records.append((line_number, record, orjson.dumps(document["payload"]).decode()))
    return parsed


def _arrow_batch(table: str, rows: Sequence[tuple[tuple[int, ChangeRecord, str], str]], now: datetime):
    source = SOURCE_TABLES[table]
    columns: dict[str, list[Any]] = {name: [] for name in _METADATA_COLUMNS}
    columns.update({name: [] for name in source.columns})
    for (line_number, record, payload_json), landing_file in rows:
        columns["change_key"].append(record.change_key)
        columns["change_uuid"].append(record.uuid)
        columns["read_timestamp"].append(record.read_timestamp)
        columns["source_timestamp"].append(record.source_timestamp)
        columns["change_type"].append(record.change_type)
        columns["is_deleted"].append(record.is_deleted)
        columns["log_file"].append(record.log_file)
        columns["log_position"].append(record.log_position)
        columns["lsn"].append(record.lsn)
        columns["payload_json"].append(payload_json)
        columns["landing_file"].append(landing_file)
        columns["landing_line"].append(line_number)
        columns["ingested_at"].append(now)
        for name in source.columns:
            columns[name].append(record.payload[name])
    schema = pa.schema(
        [(name, arrow_type) for name, (arrow_type, _) in _METADATA_COLUMNS.items()]
        + [(name, _ARROW_TYPES[kind]) for name, kind in source.columns.items()]
    )
    return pa.table(columns, schema=schema)


class Warehouse(ABC):
    """Port: the analytical warehouse holding the raw CDC log and the dbt marts."""

    @abstractmethod
    def ingest(self, landing: LandingZone, files: Iterable[LandingFile] | None = None) -> IngestReport:
        """Store every not-yet-ingested landing file (all of them when `files` is None)."""

    @abstractmethod
    def read_table(self, relation: str, columns: str = "*", where: str | None = None) -> pa.Table:
        """Read a relation (e.g. a dbt mart) as an Arrow table."""

    @abstractmethod
    def scalar(self, sql: str) -> Any:
        """One value from a query (counts and checks)."""

    @abstractmethod
    def query(self, sql: str) -> pa.Table:
        """The result of a read-only query as an Arrow table."""

    @abstractmethod
    def replace_rows(self, relation: str, rows: pa.Table, delete_where: str | None = None) -> None:
        """In one transaction: delete rows matching `delete_where` (if given), then append `rows`.

        Creates the relation from `rows`' schema when it does not exist yet.
        """


class DuckDBWarehouse(Warehouse):
    """The embedded warehouse: one DuckDB file, one writing process at a time."""

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only

    def connect(self):
        import duckdb

        if not self.read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        return duckdb.connect(str(self.path), read_only=self.read_only)

    def ensure_raw_tables(self, connection) -> None:
        for statement in _REGISTRY_DDL:
            connection.execute(statement)
        for table in SOURCE_TABLES:
            connection.execute(_raw_table_ddl(table))
            for name, kind in SOURCE_TABLES[table].columns.items():  # a column added to the source later
                connection.execute(
                    f"alter table {raw_table_name(table)} add column if not exists {name} {_SQL_TYPES[kind]}"
                )

    def ingest(
        self,
        landing: LandingZone,
        files: Iterable[LandingFile] | None = None,
        records_per_transaction: int = 50_000,
        progress: bool = False,
    ) -> IngestReport:
        from tqdm.auto import tqdm

        report = IngestReport()
        candidates = sorted(files if files is not None else landing.list_files(), key=lambda f: f.path)
        with self.connect() as connection:
            self.ensure_raw_tables(connection)
            registered = set(
                connection.execute(f"select landing_file, sha256 from {RAW_SCHEMA}.landing_files").fetchall()
            )
            pending: list[_PendingFile] = []
            for landing_file in tqdm(
                candidates, desc="ingesting landing files", unit="file", disable=not progress
            ):
                report.files_seen += 1
                content = landing.read_bytes(landing_file.path)
                digest = hashlib.sha256(content).hexdigest()
                if (landing_file.path, digest) in registered:
                    report.files_already_ingested += 1
                    continue
                registered.add((landing_file.path, digest))
                pending.append(
                    _PendingFile(landing_file.path, digest, len(content), parse_landing_file(content))
                )
                if sum(len(p.parsed.records) for p in pending) >= records_per_transaction:
                    self._store(connection, pending, report)
                    pending = []
            if pending:
                self._store(connection, pending, report)
            newest = connection.execute(
                " union all ".join(
                    f"select max(source_timestamp) as t from {raw_table_name(t)}" for t in SOURCE_TABLES
                )
            ).fetchall()
            moments = [row[0] for row in newest if row[0] is not None]
            report.newest_source_timestamp = max(moments) if moments else None
        return report

    def _store(self, connection, files: list[_PendingFile], report: IngestReport) -> None:
        """Store parsed files and register them, all in one transaction (all or nothing)."""
        now = datetime.now(UTC)
        paths = [file.path for file in files]
        stored: dict[tuple[str, str], int] = {}  # (file, table) -> changes kept from that file
        connection.execute("begin transaction")
        try:
            for table in SOURCE_TABLES:
                rows = [
                    (row, file.path) for file in files for row in file.parsed.records if row[1].table == table
                ]
                if not rows:
                    continue
                batch = _arrow_batch(table, rows, now)  # noqa: F841 - read by DuckDB's replacement scan
                # `or ignore` keeps the first delivery of a change and skips re-deliveries, which the
                # report still counts as duplicates (records - stored); the kept row names its file.
                connection.execute(
                    f"insert or ignore into {raw_table_name(table)} by name select * from batch"
                )
                counts = connection.execute(
                    f"select landing_file, count(*) from {raw_table_name(table)} "
                    f"where ingested_at = ? and landing_file in (select unnest(?)) group by 1",
                    [now, paths],
                ).fetchall()
                stored.update({(path, table): count for path, count in counts})
            quarantine = [
                (file.path, line_number, reason, line, now)
                for file in files
                for line_number, reason, line in file.parsed.quarantine
            ]
            if quarantine:
                connection.executemany(
                    f"insert into {RAW_SCHEMA}.cdc_quarantine values (?, ?, ?, ?, ?)", quarantine
                )
            registry = []
            for file in files:
                kept = sum(stored.get((file.path, table), 0) for table in SOURCE_TABLES)
                records = len(file.parsed.records)
                registry.append(
                    (
                        file.path,
                        file.digest,
                        file.size,
                        records,
                        kept,
                        records - kept,
                        len(file.parsed.quarantine),
                        now,
                    )
                )
            connection.executemany(
                f"insert into {RAW_SCHEMA}.landing_files values (?, ?, ?, ?, ?, ?, ?, ?)", registry
            )
            connection.execute("commit")
        except BaseException:
            connection.execute("rollback")
            raise
        for file in files:
            report.add_file(
                len(file.parsed.records),
                {table: stored.get((file.path, table), 0) for table in SOURCE_TABLES},
                len(file.parsed.quarantine),
            )

    def read_table(self, relation: str, columns: str = "*", where: str | None = None) -> pa.Table:
        return self.query(f"select {columns} from {relation}" + (f" where {where}" if where else ""))

    def query(self, sql: str) -> pa.Table:
        with self.connect() as connection:
            return connection.sql(sql).to_arrow_table()

    def replace_rows(self, relation: str, rows: pa.Table, delete_where: str | None = None) -> None:
        schema = relation.split(".")[0] if "." in relation else None
        with self.connect() as connection:
            if schema:
                connection.execute(f"create schema if not exists {schema}")
            connection.execute(f"create table if not exists {relation} as select * from rows limit 0")
            connection.execute("begin transaction")
            try:
                if delete_where:
                    connection.execute(f"delete from {relation} where {delete_where}")
                connection.execute(f"insert into {relation} by name select * from rows")
                connection.execute("commit")
            except BaseException:
                connection.execute("rollback")
                raise

    def scalar(self, sql: str) -> Any:
        with self.connect() as connection:
            row = connection.execute(sql).fetchone()
            return None if row is None else row[0]
