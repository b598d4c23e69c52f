"""Ingestion: CDC change-record files in the landing zone become the append-only raw log.

Ingestion runs once per batch cadence, in the same run as the dbt features it feeds (the
`batch_features` schedule), so each batch sees every file landed up to its tick. The speed
layer and the fresh-article vectors read the landing zone themselves and do not wait for it. A
separate run per few minutes of landed files (a landing sensor) was ~700 runs a day, a third of the
local instance's growth, for a raw log that only the batch reads.
"""

import dagster as dg

from newsrec_assets.defs.resources import LandingZoneResource, WarehouseResource
from newsrec_assets.domain.cdc import SOURCE_TABLES
from newsrec_assets.resources.warehouse import RAW_SCHEMA
from newsrec_assets.settings import warehouse_kind

GROUP = "ingestion"
# DuckDB allows one writing process per file: every asset that writes the warehouse runs in this
# pool (limit 1, see deploy/dagster.local.yaml) so runs queue for it instead of failing on the file lock.
WAREHOUSE_WRITER_POOL = "duckdb_writer"
# For idempotent warehouse steps whose failures can pass: a read of the bucket that broke off, the
# file lock still held by a writer that outlived its killed run. Bad records never raise.
TRANSIENT_FAILURE_RETRIES = dg.RetryPolicy(
    max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

RAW_TABLE_KEYS = {table: dg.AssetKey([RAW_SCHEMA, f"cdc_{table}"]) for table in SOURCE_TABLES}
QUARANTINE_KEY = dg.AssetKey([RAW_SCHEMA, "cdc_quarantine"])
NO_NEW_QUARANTINE_CHECK = "no_new_quarantined_lines"
NO_UNSUPPORTED_FILES_CHECK = "no_unsupported_landing_files"
UNSUPPORTED_NAMES_SHOWN = 20

_TABLE_DESCRIPTIONS = {
    "articles": "Every CMS change to `articles` (publish, edit, unpublish, delete), one row per change.",
    "user_article_views": (
        "Every change to the in-place-updated `user_article_views` row: each UPDATE is a view event "
        "that a plain table sync would have overwritten."
    ),
    "impressions": "The exposure log: every article the app showed to a user, with its position.",
    "served_lists": "The API's exposure log: every list it served, its articles in rank order.",
    "api_view_events": "Views posted to the API (`POST /v1/events`), one INSERT per acknowledged view.",
}


@dg.multi_asset(
    specs=[
        *(
            dg.AssetSpec(
                key,
                description=_TABLE_DESCRIPTIONS[table],
                kinds={warehouse_kind()},
                group_name=GROUP,
            )
            for table, key in RAW_TABLE_KEYS.items()
        ),
        dg.AssetSpec(
            QUARANTINE_KEY,
            description=(
                "Landing lines that could not be stored, with file, line and reason. Nothing is dropped."
            ),
            kinds={warehouse_kind()},
            group_name=GROUP,
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            NO_NEW_QUARANTINE_CHECK,
            asset=QUARANTINE_KEY,
            description="Warns when a run quarantined malformed change records.",
        ),
        dg.AssetCheckSpec(
            NO_UNSUPPORTED_FILES_CHECK,
            asset=QUARANTINE_KEY,
            description=(
                "Warns when the landing zone holds files that are not change-record files "
                "(.jsonl/.json, optionally .gz): they are listed, never read."
            ),
        ),
    ],
    pool=WAREHOUSE_WRITER_POOL,
    retry_policy=TRANSIENT_FAILURE_RETRIES,
)
def raw_cdc_log(
    context: dg.AssetExecutionContext, landing: LandingZoneResource, warehouse: WarehouseResource
):
    """Append every not-yet-ingested landing file to the raw CDC tables.

    Idempotent: a change delivered twice (same `uuid`, or a re-read with the same sort keys) is
    stored once, and a file already ingested is skipped, so re-running adds nothing. A bad record
    is quarantined with its reason and never fails the run; files that are not change-record files
    are named in the metadata and flagged by a warning check. Being idempotent, a failed attempt
    (bucket read, file lock) is retried.
    """
    report = warehouse.get().ingest(landing.get())
    context.log.info(
        f"{report.files_ingested} new files ({report.files_already_ingested} already ingested): "
        f"{report.records} records, {report.stored} stored, {report.duplicates} duplicates, "
        f"{report.quarantined} quarantined, {len(report.unsupported_files)} unsupported files"
    )
    newest = report.newest_source_timestamp.isoformat() if report.newest_source_timestamp else None
    unsupported_names = dg.MetadataValue.json(report.unsupported_files[:UNSUPPORTED_NAMES_SHOWN])
    for table, key in RAW_TABLE_KEYS.items():
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={
                "stored_this_run": report.stored_by_table.get(table, 0),
                "newest_source_timestamp": newest,
            },
        )
    yield dg.MaterializeResult(
        asset_key=QUARANTINE_KEY,
        metadata={
            "files_ingested": report.files_ingested,
            "files_already_ingested": report.files_already_ingested,
            "records": report.records,
            "stored": report.stored,
            "duplicates": report.duplicates,
            "quarantined": report.quarantined,
            "unsupported_files": len(report.unsupported_files),
            "unsupported_file_names": unsupported_names,
        },
    )
    yield dg.AssetCheckResult(
        check_name=NO_NEW_QUARANTINE_CHECK,
        asset_key=QUARANTINE_KEY,
        passed=report.quarantined == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"quarantined_this_run": report.quarantined},
    )
    yield dg.AssetCheckResult(
        check_name=NO_UNSUPPORTED_FILES_CHECK,
        asset_key=QUARANTINE_KEY,
        passed=not report.unsupported_files,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "unsupported_files": len(report.unsupported_files),
            "first_names": unsupported_names,
        },
    )
