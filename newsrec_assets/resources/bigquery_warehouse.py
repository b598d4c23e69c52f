"""The production warehouse adapter: BigQuery, with the DuckDB adapter's ingestion guarantees.

Landing files are parsed by the same `parse_landing_file` as on DuckDB, then stored in batches
(up to `records_per_load` records or `files_per_load` files): each batch is one NDJSON load job
per table into a short-lived staging table (loaded from memory), then one multi-statement
transaction that inserts the changes not stored yet (first delivery wins, dedup on `change_key`
within the day partitions of the batch), the quarantined lines, and the files' registry rows. A
crash before the commit leaves the files unregistered and nothing stored, so the next run stores
them again; a re-run finds them registered and adds nothing.

Raw tables are partitioned by the day of `source_timestamp` (a change's key includes its source
timestamp, so every delivery of a change falls in the same partition) and clustered by
`change_key`; the quarantine and the registry by the day they were written.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa

from newsrec_assets.domain.cdc import DEFAULT_LIMITS, SOURCE_TABLES, RecordLimits
from newsrec_assets.resources.landing import LandingFile, LandingZone
from newsrec_assets.resources.warehouse import (
    _METADATA_COLUMNS,
    ARTICLE_VECTOR_COLUMNS,
    FileRegistry,
    IngestReport,
    RelationLayer,
    SQLWarehouse,
    _PendingFile,
    new_file_batches,
)

if TYPE_CHECKING:
    from google.cloud import bigquery

_BIGQUERY_TYPES = {"str": "STRING", "int": "INT64", "ts": "TIMESTAMP"}
_ARROW_TO_BIGQUERY = {pa.string(): "STRING", pa.int64(): "INT64", pa.int32(): "INT64", pa.bool_(): "BOOL"}
STAGING_TABLE_LIFETIME = timedelta(hours=6)  # a crashed run's staging tables expire on their own


def _field(name: str, field_type: str, required: bool = False, repeated: bool = False):
    from google.cloud import bigquery

    mode = "REPEATED" if repeated else "REQUIRED" if required else "NULLABLE"
    return bigquery.SchemaField(name, field_type, mode=mode)


def raw_table_schema(table: str) -> list:
    """The raw CDC table's columns: the same as DuckDB's (metadata, then the typed payload)."""
    schema = []
    for name, (arrow_type, sql) in _METADATA_COLUMNS.items():
        field_type = "TIMESTAMP" if pa.types.is_timestamp(arrow_type) else _ARROW_TO_BIGQUERY[arrow_type]
        schema.append(_field(name, field_type, required="not null" in sql or "primary key" in sql))
    schema += [_field(name, _BIGQUERY_TYPES[kind]) for name, kind in SOURCE_TABLES[table].columns.items()]
    return schema


def _required(*columns: tuple[str, str]) -> list:
    return [_field(name, field_type, required=True) for name, field_type in columns]


def quarantine_schema() -> list:
    return _required(
        ("landing_file", "STRING"),
        ("landing_line", "INT64"),
        ("reason", "STRING"),
        ("raw_line", "STRING"),
        ("quarantined_at", "TIMESTAMP"),
    )


def registry_schema() -> list:
    return _required(
        ("landing_file", "STRING"),
        ("sha256", "STRING"),
        ("size_bytes", "INT64"),
        ("records", "INT64"),
        ("stored", "INT64"),
        ("duplicates", "INT64"),
        ("quarantined", "INT64"),
        ("ingested_at", "TIMESTAMP"),
    )


def article_vectors_schema() -> list:
    return [
        *_required(("article_id", "STRING"), ("content_hash", "STRING"), ("encoder_version", "STRING")),
        _field("title_vector", "FLOAT64", repeated=True),
        _field("body_vector", "FLOAT64", repeated=True),
        *_required(("embedded_at", "TIMESTAMP")),
    ]


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


def _ndjson(rows: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps({k: _json_value(v) for k, v in row.items()}) + b"\n" for row in rows)


def _naive_utc_timestamps(table: pa.Table) -> pa.Table:
    """BigQuery's TIMESTAMP columns as DuckDB's dbt models return them: naive UTC."""
    for index, column_field in enumerate(table.schema):
        if pa.types.is_timestamp(column_field.type) and column_field.type.tz is not None:
            naive = pa.timestamp(column_field.type.unit)
            table = table.set_column(index, column_field.name, table.column(index).cast(naive))
    return table


class BigQueryWarehouse(SQLWarehouse):
    """Raw CDC log, dbt marts and article vectors in BigQuery datasets of one project.

    `client` is a `google.cloud.bigquery.Client` (the Dagster resource gets it from dagster-gcp's
    `BigQueryResource`). dbt builds the marts in `marts_dataset`; ingestion writes `raw_dataset`.
    """

    def __init__(
        self,
        client: bigquery.Client,
        marts_dataset: str,
        raw_dataset: str = "raw",
        embeddings_dataset: str = "embeddings",
        location: str | None = None,
        records_per_load: int = 50_000,
        files_per_load: int = 500,
        limits: RecordLimits = DEFAULT_LIMITS,
    ):
        self.client = client
        self.limits = limits
        self.project = client.project
        self.location = location or client.location
        self.datasets: dict[RelationLayer, str] = {
            "raw": raw_dataset,
            "marts": marts_dataset,
            "embeddings": embeddings_dataset,
        }
        self.records_per_load = records_per_load
        self.files_per_load = files_per_load

    # -- plumbing ---------------------------------------------------------------------------------

    def table_id(self, layer: RelationLayer, name: str) -> str:
        return f"{self.project}.{self.datasets[layer]}.{name}"

    def relation(self, layer: RelationLayer, name: str) -> str:
        return f"`{self.table_id(layer, name)}`"

    def parameter(self, name: str) -> str:
        return f"@{name}"

    def user_hash(self, column: str) -> str:
        return f"cast(concat('0x', substr(to_hex(md5({column})), 1, 8)) as int64)"

    def _job_config(self, parameters: dict[str, Any] | None):
        from google.cloud import bigquery

        query_parameters = []
        for name, value in (parameters or {}).items():
            if isinstance(value, list):
                element = "DATE" if value and isinstance(value[0], date) else "STRING"
                query_parameters.append(bigquery.ArrayQueryParameter(name, element, value))
            elif isinstance(value, datetime):
                query_parameters.append(bigquery.ScalarQueryParameter(name, "TIMESTAMP", value))
            elif isinstance(value, bool):
                query_parameters.append(bigquery.ScalarQueryParameter(name, "BOOL", value))
            elif isinstance(value, int):
                query_parameters.append(bigquery.ScalarQueryParameter(name, "INT64", value))
            else:
                query_parameters.append(bigquery.ScalarQueryParameter(name, "STRING", value))
        return bigquery.QueryJobConfig(query_parameters=query_parameters)

    def execute(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        """Run a statement or script to completion (DDL, DML, transactions)."""
        self.client.query(sql, job_config=self._job_config(parameters), location=self.location).result()

    def run_query(self, sql: str, parameters: dict[str, Any] | None = None) -> pa.Table:
        job = self.client.query(sql, job_config=self._job_config(parameters), location=self.location)
        return _naive_utc_timestamps(job.result().to_arrow(create_bqstorage_client=False))

    def has_relation(self, layer: RelationLayer, name: str) -> bool:
        from google.api_core.exceptions import NotFound

        try:
            self.client.get_table(self.table_id(layer, name))
        except NotFound:
            return False
        return True

    def _ensure_dataset(self, layer: RelationLayer) -> None:
        from google.cloud import bigquery

        dataset = bigquery.Dataset(f"{self.project}.{self.datasets[layer]}")
        if self.location:
            dataset.location = self.location
        self.client.create_dataset(dataset, exists_ok=True)

    def _ensure_table(
        self, layer: RelationLayer, name: str, schema: list, partition_by: str | None, cluster_by: list[str]
    ) -> None:
        from google.cloud import bigquery

        table = bigquery.Table(self.table_id(layer, name), schema=schema)
        if partition_by:
            table.time_partitioning = bigquery.TimePartitioning(
                type_=bigquery.TimePartitioningType.DAY, field=partition_by
            )
        table.clustering_fields = cluster_by or None
        existing = self.client.create_table(table, exists_ok=True)
        # A nullable column added to the source later (e.g. articles.url) is added to the table too.
        missing = [field for field in schema if field.name not in {f.name for f in existing.schema}]
        if missing:
            existing.schema = [*existing.schema, *missing]
            self.client.update_table(existing, ["schema"])

    def ensure_raw_tables(self) -> None:
        self._ensure_dataset("raw")
        for table in SOURCE_TABLES:
            self._ensure_table(
                "raw", f"cdc_{table}", raw_table_schema(table), "source_timestamp", ["change_key"]
            )
        self._ensure_table("raw", "cdc_quarantine", quarantine_schema(), "quarantined_at", ["landing_file"])
        self._ensure_table("raw", "landing_files", registry_schema(), "ingested_at", ["landing_file"])

    def _load_staging(self, name: str, schema: list, rows: list[dict[str, Any]]) -> str:
        """Load rows into a new staging table of the raw dataset (one load job); returns its id."""
        from google.cloud import bigquery

        table = bigquery.Table(
            self.table_id("raw", f"_staging_{name}_{uuid.uuid4().hex[:12]}"), schema=schema
        )
        table.expires = datetime.now(UTC) + STAGING_TABLE_LIFETIME
        self.client.create_table(table)
        job = self.client.load_table_from_file(
            io.BytesIO(_ndjson(rows)),
            table.reference,
            job_config=bigquery.LoadJobConfig(
                schema=schema,
                source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
                write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            ),
            location=self.location,
        )
        job.result()
        return f"`{table.project}.{table.dataset_id}.{table.table_id}`"

    def _drop(self, staged: Iterable[str]) -> None:
        for relation in staged:
            self.client.delete_table(relation.strip("`"), not_found_ok=True)

    # -- ingestion --------------------------------------------------------------------------------

    def ingest(
        self, landing: LandingZone, files: Iterable[LandingFile] | None = None, progress: bool = False
    ) -> IngestReport:
        """Store every not-yet-ingested landing file; `newest_source_timestamp` is the newest
        change this run stored (a scan of the day partitions it touched, not of the whole log)."""
        report = IngestReport()
        self.ensure_raw_tables()
        candidates = list(files if files is not None else landing.list_files())
        registered = self._registered([file.path for file in candidates])
        batches = new_file_batches(
            landing,
            candidates,
            registered,
            report,
            self.limits,
            self.records_per_load,
            progress,
            self.files_per_load,
        )
        for batch in batches:
            newest = self._store(batch, report)
            if newest is not None and (report.newest_source_timestamp or newest) <= newest:
                report.newest_source_timestamp = newest
        return report

    def _registered(self, paths: list[str]) -> FileRegistry:
        if not paths:
            return FileRegistry.of([])
        rows = self.run_query(
            f"select landing_file, sha256, size_bytes from {self.relation('raw', 'landing_files')} "
            "where landing_file in unnest(@paths)",
            {"paths": paths},
        )
        return FileRegistry.of(
            zip(
                rows["landing_file"].to_pylist(),
                rows["sha256"].to_pylist(),
                rows["size_bytes"].to_pylist(),
                strict=True,
            )
        )

    def _store(self, files: list[_PendingFile], report: IngestReport) -> datetime | None:
        """Store parsed files and register them in one transaction; returns the newest change stored."""
        now = datetime.now(UTC)  # every row of this batch carries it: it names the batch's rows
        staged: dict[str, str] = {}
        days = sorted(
            {record.source_timestamp.date() for file in files for _, record, _ in file.parsed.records}
        )
        try:
            for table in SOURCE_TABLES:
                rows = [
                    self._raw_row(record, payload_json, file.path, line_number, now)
                    for file in files
                    for line_number, record, payload_json in file.parsed.records
                    if record.table == table
                ]
                if rows:
                    staged[table] = self._load_staging(f"cdc_{table}", raw_table_schema(table), rows)
            quarantine = [
                {
                    "landing_file": f.path,
                    "landing_line": n,
                    "reason": r,
                    "raw_line": line,
                    "quarantined_at": now,
                }
                for f in files
                for n, r, line in f.parsed.quarantine
            ]
            if quarantine:
                staged["quarantine"] = self._load_staging("cdc_quarantine", quarantine_schema(), quarantine)
            staged["files"] = self._load_staging(
                "landing_files",
                [f for f in registry_schema() if f.name not in ("stored", "duplicates", "ingested_at")],
                [
                    {
                        "landing_file": f.path,
                        "sha256": f.digest,
                        "size_bytes": f.size,
                        "records": len(f.parsed.records),
                        "quarantined": len(f.parsed.quarantine),
                    }
                    for f in files
                ],
            )
            self.execute(self._store_script(staged), {"now": now, "days": days})
            kept = self.run_query(self._kept_query(list(SOURCE_TABLES)), {"now": now, "days": days})
        finally:
            self._drop(staged.values())
        stored: dict[tuple[str, str], int] = {}
        newest = None
        for row in kept.to_pylist():
            stored[(row["landing_file"], row["source_table"])] = row["kept"]
            moment = row["newest"].replace(tzinfo=UTC)
            newest = moment if newest is None or moment > newest else newest
        for file in files:
            report.add_file(
                len(file.parsed.records),
                {table: stored.get((file.path, table), 0) for table in SOURCE_TABLES},
                len(file.parsed.quarantine),
            )
        return newest

    @staticmethod
    def _raw_row(record, payload_json: str, landing_file: str, line_number: int, now: datetime) -> dict:
        return {
            "change_key": record.change_key,
            "change_uuid": record.uuid,
            "read_timestamp": record.read_timestamp,
            "source_timestamp": record.source_timestamp,
            "change_type": record.change_type,
            "is_deleted": record.is_deleted,
            "log_file": record.log_file,
            "log_position": record.log_position,
            "lsn": record.lsn,
            "payload_json": payload_json,
            "landing_file": landing_file,
            "landing_line": line_number,
            "ingested_at": now,
            **record.payload,
        }

    def _kept_query(self, tables: list[str]) -> str:
        """Per file and table, the changes this batch stored (rows carrying its `ingested_at`)."""
        return " union all ".join(
            f"select '{table}' as source_table, landing_file, count(*) as kept, "
            f"max(source_timestamp) as newest from {self.relation('raw', f'cdc_{table}')} "
            "where ingested_at = @now and date(source_timestamp) in unnest(@days) group by landing_file"
            for table in tables
        )

    def _store_script(self, staged: dict[str, str]) -> str:
        statements = []
        for table in SOURCE_TABLES:
            if table not in staged:
                continue
            target = self.relation("raw", f"cdc_{table}")
            columns = ", ".join(field.name for field in raw_table_schema(table))
            # The first delivery of a change in this batch (file, line order, as on DuckDB) is
            # stored unless a delivery is stored already; the day filter keeps the check to the
            # partitions a delivery of these changes can be in.
            statements.append(
                f"""insert into {target} ({columns})
                select {columns} from (
                    select *, row_number() over (
                        partition by change_key order by landing_file, landing_line) as delivery
                    from {staged[table]}) as batch
                where delivery = 1 and not exists (
                    select 1 from {target} as stored
                    where stored.change_key = batch.change_key
                      and date(stored.source_timestamp) in unnest(@days))"""
            )
        if "quarantine" in staged:
            statements.append(
                f"insert into {self.relation('raw', 'cdc_quarantine')} "
                "(landing_file, landing_line, reason, raw_line, quarantined_at) "
                "select landing_file, landing_line, reason, raw_line, quarantined_at "
                f"from {staged['quarantine']}"
            )
        kept = self._kept_query([table for table in SOURCE_TABLES if table in staged])
        kept_by_file = f"select landing_file, sum(kept) as kept from ({kept}) group by landing_file"
        statements.append(
            f"""insert into {self.relation("raw", "landing_files")}
            (landing_file, sha256, size_bytes, records, stored, duplicates, quarantined, ingested_at)
            select files.landing_file, files.sha256, files.size_bytes, files.records,
                   coalesce(kept.kept, 0), files.records - coalesce(kept.kept, 0), files.quarantined, @now
            from {staged["files"]} as files
            left join ({kept_by_file}) as kept on kept.landing_file = files.landing_file"""
            if kept
            else f"""insert into {self.relation("raw", "landing_files")}
            (landing_file, sha256, size_bytes, records, stored, duplicates, quarantined, ingested_at)
            select landing_file, sha256, size_bytes, records, 0, records, quarantined, @now
            from {staged["files"]}"""
        )
        return "begin transaction;\n" + ";\n".join(statements) + ";\ncommit transaction;"

    # -- article vectors --------------------------------------------------------------------------

    def store_article_vectors(self, rows: pa.Table, encoder_version: str) -> None:
        self._ensure_dataset("embeddings")
        self._ensure_table("embeddings", "article_vectors", article_vectors_schema(), None, ["article_id"])
        staged = self._load_staging(
            "article_vectors", article_vectors_schema(), rows.select(list(ARTICLE_VECTOR_COLUMNS)).to_pylist()
        )
        target = self.relation("embeddings", "article_vectors")
        columns = ", ".join(ARTICLE_VECTOR_COLUMNS)
        try:
            self.execute(
                f"""begin transaction;
                delete from {target}
                where article_id in (select article_id from {staged}) or encoder_version <> @encoder_version;
                insert into {target} ({columns}) select {columns} from {staged};
                commit transaction;""",
                {"encoder_version": encoder_version},
            )
        finally:
            self._drop([staged])
