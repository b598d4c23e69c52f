"""Warehouse port and its embedded DuckDB adapter: the append-only raw CDC log and mart reads.

The port (`Warehouse`) is what assets use: ingestion plus named reads and writes, whose SQL both
DuckDB and BigQuery run (`SQLWarehouse`); `bigquery_warehouse` holds the production adapter.
Both parse landing files with the one `parse_landing_file`.

Ingestion stores every distinct change once (`change_key` is the primary key), so re-delivered
records and re-run files add nothing. Each landing file is stored in one transaction together with
its entry in `raw.landing_files`: a crash mid-file leaves the file unregistered and it is simply
ingested again next time. Files are decoded by the domain's `parse_landing_file`: a line that is
not a valid change (type, range, encoding, unknown table, implausible value) goes to
`raw.cdc_quarantine` with file, line and reason, and the rest of the file is stored, so one bad
line never fails a batch and a re-run finds the file registered. Unsupported file names are
reported in the `IngestReport`, not read.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from newsrec_assets.domain.cdc import DEFAULT_LIMITS, SOURCE_TABLES, ChangeRecord, RecordLimits
from newsrec_assets.domain.landing_format import FileKind, ParsedFile, landing_file_kind, parse_landing_file
from newsrec_assets.domain.sharding import Shard
from newsrec_assets.resources.landing import LandingFile, LandingZone

RAW_SCHEMA = "raw"
# Where the embedded warehouse keeps each layer: dbt builds its models in DuckDB's `main` schema.
_DUCKDB_SCHEMAS = {"raw": RAW_SCHEMA, "marts": "main", "embeddings": "embeddings"}

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
    unsupported_files: list[str] = field(default_factory=list)  # listed, not read: see landing_format

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
class _PendingFile:
    path: str
    digest: str
    size: int
    parsed: ParsedFile


@dataclass
class FileRegistry:
    """The landing files already ingested, from `raw.landing_files`.

    A file listed again with its registered size is skipped without being downloaded: landing files
    are written once under a new name (Datastream, the API's batcher), so re-reading every old file
    on every run would cost a download of the whole landing history. A file whose size differs from
    what was registered under its name is read and checked by content digest.
    """

    digests: set[tuple[str, str]]
    sizes: set[tuple[str, int]]

    @classmethod
    def of(cls, rows: Iterable[tuple[str, str, int]]) -> FileRegistry:
        rows = list(rows)
        return cls({(path, digest) for path, digest, _ in rows}, {(path, size) for path, _, size in rows})


def new_file_batches(
    landing: LandingZone,
    candidates: Iterable[LandingFile],
    registered: FileRegistry,
    report: IngestReport,
    limits: RecordLimits,
    records_per_batch: int,
    progress: bool = False,
    files_per_batch: int | None = None,
) -> Iterator[list[_PendingFile]]:
    """The candidates not registered yet (by path and size, then content digest), read and parsed, in batches
    of about `records_per_batch` records (and at most `files_per_batch` files), in path order.

    Counts every candidate into `report` (seen, already ingested, unsupported); each adapter stores a
    batch and registers its files in one transaction.
    """
    from tqdm.auto import tqdm

    pending: list[_PendingFile] = []
    ordered = sorted(candidates, key=lambda f: f.path)
    for landing_file in tqdm(ordered, desc="ingesting landing files", unit="file", disable=not progress):
        kind = landing_file_kind(landing_file.path)
        if kind is FileKind.NOT_A_FILE:
            continue
        report.files_seen += 1
        if kind is FileKind.UNSUPPORTED:
            report.unsupported_files.append(landing_file.path)
            continue
        if (landing_file.path, landing_file.size_bytes) in registered.sizes:
            report.files_already_ingested += 1
            continue
        content = landing.read_bytes(landing_file.path)
        digest = hashlib.sha256(content).hexdigest()
        if (landing_file.path, digest) in registered.digests:
            report.files_already_ingested += 1
            continue
        registered.digests.add((landing_file.path, digest))
        parsed = parse_landing_file(content, landing_file.path, limits)
        # The listed size is what the next listing is checked against (a download may be transcoded).
        pending.append(
            _PendingFile(landing_file.path, digest, landing_file.size_bytes or len(content), parsed)
        )
        if (
            sum(len(p.parsed.records) for p in pending) >= records_per_batch
            or len(pending) == files_per_batch
        ):
            yield pending
            pending = []
    if pending:
        yield pending


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
    """Port: the analytical warehouse holding the raw CDC log, the dbt marts and the article vectors.

    Assets read and write through these named methods only, so the same asset code runs on the
    embedded DuckDB file and on BigQuery. Tables come back as Arrow with the same column types on
    both: timestamps are naive UTC (`timestamp[us]`), vectors lists of floats.
    """

    @abstractmethod
    def ingest(self, landing: LandingZone, files: Iterable[LandingFile] | None = None) -> IngestReport:
        """Store every not-yet-ingested landing file (all of them when `files` is None)."""

    @abstractmethod
    def embedded_articles(self, live_only: bool = False) -> pa.Table:
        """Current articles that have vectors for their current text, by article id.

        Columns: article_id, published_at, category, subcategory, title_vector, body_vector.
        """

    @abstractmethod
    def view_events(self) -> pa.Table:
        """Every reconstructed view event, oldest first: user_id, article_id, viewed_at."""

    @abstractmethod
    def training_impressions(self) -> pa.Table:
        """Labelled impressions by (shown_at, impression_id, position): impression_id, user_id,
        shown_at, article_id, position, clicked, first_clicked_at, split."""

    @abstractmethod
    def article_texts(self, limit: int) -> pa.Table:
        """The newest `limit` current articles' title, body and subcategory (encoder training)."""

    @abstractmethod
    def articles_to_embed(self, encoder_version: str) -> pa.Table:
        """Current articles without vectors of `encoder_version` for their current text:
        article_id, content_hash, title, body."""

    @abstractmethod
    def store_article_vectors(self, rows: pa.Table, encoder_version: str) -> None:
        """In one transaction: replace the vectors of `rows`' articles and drop every vector of
        another encoder version. `rows` has `ARTICLE_VECTOR_COLUMNS`."""

    @abstractmethod
    def count_article_vectors(self) -> int:
        """How many article vectors are stored (0 before the first are written)."""

    @abstractmethod
    def features_as_of(self) -> datetime | None:
        """The event time the article features reflect (aware UTC), None before the first build."""

    @abstractmethod
    def live_articles(self) -> pa.Table:
        """Live articles with their features: article_id, title, category, subcategory,
        published_at, popularity, age_hours, clicks, impressions."""

    @abstractmethod
    def user_click_histories(self, shard: Shard | None = None) -> pa.Table:
        """user_id, click_rank (1 = newest), article_id for every user's recent distinct clicks
        (the users of `shard` only, filtered in the warehouse, when one is given)."""

    @abstractmethod
    def user_subcategory_counts(self, shard: Shard | None = None) -> pa.Table:
        """Every user's impressions and clicks per subcategory so far, over current articles:
        user_id, subcategory, impressions, clicks (the users of `shard` only, when given)."""

    @abstractmethod
    def user_live_exposures(self, shard: Shard | None = None) -> pa.Table:
        """Per user and live article the user was shown or clicked: user_id, article_id,
        impressions (times served), clicked (ever clicked, every click, not only the latest 50);
        the users of `shard` only, when given. Unordered (a sort of the whole log costs)."""

    @abstractmethod
    def variant_ctr(self) -> pa.Table:
        """Per A/B variant of the API (impressions without one left out): variant, lists,
        impressions, clicks (shown articles clicked from their list)."""

    @abstractmethod
    def summary(self) -> dict[str, int]:
        """Counts that show the spine worked: landed, stored, duplicates, quarantined, view events."""


# Names of the relations the reads below use, by layer: raw (ingestion), marts (dbt) and the
# embeddings the `article_embeddings` asset writes. Each adapter maps them onto its namespaces.
RelationLayer = Literal["raw", "marts", "embeddings"]
ARTICLE_VECTOR_COLUMNS = (
    "article_id",
    "content_hash",
    "encoder_version",
    "title_vector",
    "body_vector",
    "embedded_at",
)


class SQLWarehouse(Warehouse):
    """The named reads, in SQL that DuckDB and BigQuery both run; adapters supply the plumbing."""

    @abstractmethod
    def relation(self, layer: RelationLayer, name: str) -> str:
        """The qualified name of a relation of `layer` (e.g. `main.view_events`)."""

    @abstractmethod
    def parameter(self, name: str) -> str:
        """How a named query parameter is written in this dialect."""

    @abstractmethod
    def run_query(self, sql: str, parameters: dict[str, Any] | None = None) -> pa.Table:
        """A read-only query's result, timestamps as naive UTC."""

    @abstractmethod
    def has_relation(self, layer: RelationLayer, name: str) -> bool: ...

    @abstractmethod
    def user_hash(self, column: str) -> str:
        """SQL for `sharding.user_hash` of a string column (an int64 in [0, 2**32))."""

    def _shard_filter(self, column: str, shard: Shard | None, keyword: str = "where") -> str:
        """`where mod(hash, count) = index` for a shard's users (ints only: nothing to escape)."""
        if shard is None:
            return ""
        return f"{keyword} mod({self.user_hash(column)}, {int(shard.count)}) = {int(shard.index)}"

    def _scalar(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        table = self.run_query(sql, parameters)
        return table.column(0)[0].as_py() if table.num_rows else None

    def embedded_articles(self, live_only: bool = False) -> pa.Table:
        return self.run_query(
            f"""select a.article_id, a.published_at, a.category, a.subcategory, v.title_vector, v.body_vector
            from {self.relation("marts", "current_articles")} a
            join {self.relation("embeddings", "article_vectors")} v
              on v.article_id = a.article_id and v.content_hash = a.content_hash
            {"where a.is_live" if live_only else ""}
            order by a.article_id"""
        )

    def view_events(self) -> pa.Table:
        # event_id breaks ties: the views of one coalesced change share their viewed_at.
        return self.run_query(
            f"select user_id, article_id, viewed_at from {self.relation('marts', 'view_events')} "
            "order by viewed_at, event_id"
        )

    def training_impressions(self) -> pa.Table:
        return self.run_query(
            "select impression_id, user_id, shown_at, article_id, position, clicked, first_clicked_at, split "
            f"from {self.relation('marts', 'training_impressions')} "
            "order by shown_at, impression_id, position"
        )

    def article_texts(self, limit: int) -> pa.Table:
        return self.run_query(
            f"select title, body, subcategory from {self.relation('marts', 'current_articles')} "
            f"order by published_at desc, article_id limit {int(limit)}"
        )

    def articles_to_embed(self, encoder_version: str) -> pa.Table:
        articles = self.relation("marts", "current_articles")
        columns = "a.article_id, a.content_hash, a.title, a.body"
        if not self.has_relation("embeddings", "article_vectors"):
            return self.run_query(f"select {columns} from {articles} a order by a.article_id")
        return self.run_query(
            f"""select {columns} from {articles} a
            where not exists (
                select 1 from {self.relation("embeddings", "article_vectors")} v
                where v.article_id = a.article_id and v.content_hash = a.content_hash
                  and v.encoder_version = {self.parameter("encoder_version")})
            order by a.article_id""",
            {"encoder_version": encoder_version},
        )

    def count_article_vectors(self) -> int:
        if not self.has_relation("embeddings", "article_vectors"):
            return 0
        return int(self._scalar(f"select count(*) from {self.relation('embeddings', 'article_vectors')}"))

    def features_as_of(self) -> datetime | None:
        as_of = self._scalar(f"select max(as_of) from {self.relation('marts', 'article_features')}")
        return None if as_of is None else as_of.replace(tzinfo=UTC)

    def live_articles(self) -> pa.Table:
        return self.run_query(
            "select a.article_id, a.title, a.category, a.subcategory, a.published_at, f.popularity, "
            "coalesce(f.age_hours, 0) as age_hours, coalesce(f.clicks_total, 0) as clicks, "
            "coalesce(f.impressions_total, 0) as impressions "
            f"from {self.relation('marts', 'current_articles')} a "
            f"left join {self.relation('marts', 'article_features')} f on f.article_id = a.article_id "
            "where a.is_live order by a.article_id"
        )

    def user_click_histories(self, shard: Shard | None = None) -> pa.Table:
        return self.run_query(
            f"select user_id, click_rank, article_id from {self.relation('marts', 'user_click_histories')} "
            f"{self._shard_filter('user_id', shard)} order by user_id, click_rank"
        )

    def user_subcategory_counts(self, shard: Shard | None = None) -> pa.Table:
        return self.run_query(
            "select i.user_id, a.subcategory, count(*) as impressions, count(i.first_clicked_at) as clicks "
            f"from {self.relation('marts', 'training_impressions')} i "
            f"join {self.relation('marts', 'current_articles')} a on a.article_id = i.article_id "
            f"{self._shard_filter('i.user_id', shard)} "
            "group by i.user_id, a.subcategory order by i.user_id, a.subcategory"
        )

    def variant_ctr(self) -> pa.Table:
        return self.run_query(
            "select variant, count(distinct impression_id) as lists, count(*) as impressions, "
            "count(first_clicked_at) as clicks "
            f"from {self.relation('marts', 'training_impressions')} "
            "where variant is not null group by variant order by variant"
        )

    def user_live_exposures(self, shard: Shard | None = None) -> pa.Table:
        # Clicks come from the view events too: a click need not follow a logged impression
        # (imported histories, shared links).
        marts = partial(self.relation, "marts")
        return self.run_query(
            f"""with shown as (
                select user_id, article_id, count(*) as impressions, max(clicked) as clicked
                from {marts("training_impressions")} {self._shard_filter("user_id", shard)}
                group by user_id, article_id),
            viewed as (
                select distinct user_id, article_id from {marts("view_events")}
                {self._shard_filter("user_id", shard)}),
            exposures as (
                select coalesce(s.user_id, v.user_id) as user_id,
                    coalesce(s.article_id, v.article_id) as article_id,
                    coalesce(s.impressions, 0) as impressions,
                    coalesce(s.clicked, false) or v.user_id is not null as clicked
                from shown s full outer join viewed v
                  on v.user_id = s.user_id and v.article_id = s.article_id)
            select e.user_id, e.article_id, e.impressions, e.clicked from exposures e
            join {marts("current_articles")} a on a.article_id = e.article_id and a.is_live"""
        )

    def summary(self) -> dict[str, int]:
        files, quarantine = self.relation("raw", "landing_files"), self.relation("raw", "cdc_quarantine")
        marts = partial(self.relation, "marts")
        counts = {
            "landing_files": f"select count(*) from {files}",
            "records_landed": f"select coalesce(sum(records) + sum(quarantined), 0) from {files}",
            "records_stored": f"select coalesce(sum(stored), 0) from {files}",
            "duplicates_skipped": f"select coalesce(sum(duplicates), 0) from {files}",
            "records_quarantined": f"select count(*) from {quarantine}",
            "view_events_reconstructed": f"select count(*) from {marts('view_events')}",
            "current_articles": f"select count(*) from {marts('current_articles')}",
            "users_with_history": f"select count(distinct user_id) from {marts('user_click_histories')}",
            "training_impressions": f"select count(*) from {marts('training_impressions')}",
        }
        row = self.run_query("select " + ", ".join(f"({sql}) as {name}" for name, sql in counts.items()))
        return {name: int(value) for name, value in row.to_pylist()[0].items()}


class DuckDBWarehouse(SQLWarehouse):
    """The embedded warehouse: one DuckDB file, one writing process at a time."""

    def __init__(self, path: str | Path, read_only: bool = False, limits: RecordLimits = DEFAULT_LIMITS):
        self.path = Path(path)
        self.read_only = read_only
        self.limits = limits

    # How long a connection waits for another process's lock on the file. DuckDB allows one process
    # to open the file for writing and none to read it meanwhile: a step that reads (the encoder,
    # NAML, the batch) while an ingestion run writes, or the reverse, waits for it here instead
    # of failing. Writers hold it for a step (minutes at most); the pool keeps writers in line.
    lock_wait_seconds: float = 600.0

    def connect(self):
        import duckdb

        if not self.read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_wait_seconds
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=self.read_only)
            except duckdb.IOException as error:
                if "lock" not in str(error).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

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
        report = IngestReport()
        candidates = files if files is not None else landing.list_files()
        with self.connect() as connection:
            self.ensure_raw_tables(connection)
            registered = FileRegistry.of(
                connection.execute(
                    f"select landing_file, sha256, size_bytes from {RAW_SCHEMA}.landing_files"
                ).fetchall()
            )
            for batch in new_file_batches(
                landing, candidates, registered, report, self.limits, records_per_transaction, progress
            ):
                self._store(connection, batch, report)
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

    # -- the port's reads and the article vectors ------------------------------------------------

    def user_hash(self, column: str) -> str:
        return f"cast(('0x' || substr(md5({column}), 1, 8)) as bigint)"

    def relation(self, layer: RelationLayer, name: str) -> str:
        return f"{_DUCKDB_SCHEMAS[layer]}.{name}"

    def parameter(self, name: str) -> str:
        return f"${name}"

    def run_query(self, sql: str, parameters: dict[str, Any] | None = None) -> pa.Table:
        with self.connect() as connection:
            return connection.sql(sql, params=parameters).to_arrow_table()

    def has_relation(self, layer: RelationLayer, name: str) -> bool:
        return bool(
            self._scalar(
                "select count(*) from information_schema.tables where table_schema = $schema "
                "and table_name = $name",
                {"schema": _DUCKDB_SCHEMAS[layer], "name": name},
            )
        )

    def store_article_vectors(self, rows: pa.Table, encoder_version: str) -> None:
        relation = self.relation("embeddings", "article_vectors")
        with self.connect() as connection:
            connection.execute(f"create schema if not exists {_DUCKDB_SCHEMAS['embeddings']}")
            connection.execute(f"create table if not exists {relation} as select * from rows limit 0")
            connection.execute("begin transaction")
            try:
                connection.execute(
                    f"delete from {relation} where article_id in (select article_id from rows) "
                    "or encoder_version <> $encoder_version",
                    {"encoder_version": encoder_version},
                )
                connection.execute(f"insert into {relation} by name select * from rows")
                connection.execute("commit")
            except BaseException:
                connection.execute("rollback")
                raise

    # -- direct SQL, for this adapter's own tests and tools (never for assets) ----------------------

    def query(self, sql: str) -> pa.Table:
        return self.run_query(sql)

    def read_table(self, relation: str, columns: str = "*", where: str | None = None) -> pa.Table:
        return self.query(f"select {columns} from {relation}" + (f" where {where}" if where else ""))

    def scalar(self, sql: str) -> Any:
        return self._scalar(sql)
