"""Ingestion: CDC change-record files in the landing zone become the append-only raw log."""

import dagster as dg

from newsrec_assets.defs.resources import LandingZoneResource, OnlineStoreResource, WarehouseResource
from newsrec_assets.domain.cdc import SOURCE_TABLES
from newsrec_assets.resources.warehouse import RAW_SCHEMA
from newsrec_assets.settings import online_store_kind, warehouse_kind

GROUP = "ingestion"
# DuckDB allows one writing process per file: every asset that writes the warehouse runs in this
# pool (limit 1, see dagster.yaml) so runs queue for it instead of failing on the file lock.
WAREHOUSE_WRITER_POOL = "duckdb_writer"

RAW_TABLE_KEYS = {table: dg.AssetKey([RAW_SCHEMA, f"cdc_{table}"]) for table in SOURCE_TABLES}
QUARANTINE_KEY = dg.AssetKey([RAW_SCHEMA, "cdc_quarantine"])
NO_NEW_QUARANTINE_CHECK = "no_new_quarantined_lines"

_TABLE_DESCRIPTIONS = {
    "articles": "Every CMS change to `articles` (publish, edit, unpublish, delete), one row per change.",
    "user_article_views": (
        "Every change to the in-place-updated `user_article_views` row: each UPDATE is a view event "
        "that a plain table sync would have overwritten."
    ),
    "impressions": "The exposure log: every article the app showed to a user, with its position.",
}


@dg.multi_asset(
    specs=[
        *(
            dg.AssetSpec(
                key, description=_TABLE_DESCRIPTIONS[table], kinds={warehouse_kind()}, group_name=GROUP
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
        )
    ],
    pool=WAREHOUSE_WRITER_POOL,
)
def raw_cdc_log(
    context: dg.AssetExecutionContext, landing: LandingZoneResource, warehouse: WarehouseResource
):
    """Append every not-yet-ingested landing file to the raw CDC tables.

    Idempotent: a change delivered twice (same `uuid`, or a re-read with the same sort keys) is
    stored once, and a file already ingested is skipped, so re-running adds nothing.
    """
    report = warehouse.get().ingest(landing.get())
    context.log.info(
        f"{report.files_ingested} new files ({report.files_already_ingested} already ingested): "
        f"{report.records} records, {report.stored} stored, {report.duplicates} duplicates, "
        f"{report.quarantined} quarantined"
    )
    newest = report.newest_source_timestamp.isoformat() if report.newest_source_timestamp else None
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
        },
    )
    yield dg.AssetCheckResult(
        check_name=NO_NEW_QUARANTINE_CHECK,
        asset_key=QUARANTINE_KEY,
        passed=report.quarantined == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"quarantined_this_run": report.quarantined},
    )


EXPOSURE_LOG_FILE = "api-exposures"
POSITIONS_PER_EXPOSURE = 1000  # log position = the exposure's position * 1000 + list position


@dg.asset(group_name=GROUP, kinds={online_store_kind()})
def api_exposures(
    context: dg.AssetExecutionContext, landing: LandingZoneResource, online_store: OnlineStoreResource
) -> dg.MaterializeResult:
    """What the API served, shipped from the online store's exposure log to the landing zone.

    Each served list becomes `impressions` change records (one per article and position), so clicks
    on served lists join to real exposures in training. Shipped exposures are then trimmed from the
    log; a crash in between re-ships them with the same log positions, which ingestion dedups.
    """
    from datetime import timedelta

    from newsrec_assets.domain.cdc import ChangeRecord

    store = online_store.get()
    zone = landing.get()
    shipped = rows = 0
    while exposures := store.read_exposures(limit=5000):
        lines = [
            ChangeRecord(
                table="impressions",
                change_type="INSERT",
                payload={
                    "impression_id": exposure.request_id,
                    "user_id": exposure.user_id,
                    "article_id": article_id,
                    "position": position,
                    "shown_at": exposure.served_at,
                },
                source_timestamp=exposure.served_at,
                read_timestamp=exposure.served_at + timedelta(seconds=1),
                log_file=EXPOSURE_LOG_FILE,
                log_position=exposure.position * POSITIONS_PER_EXPOSURE + position,
                read_method="api-exposure-log",
            ).to_json_line()
            for exposure in exposures
            for position, article_id in enumerate(exposure.article_ids)
        ]
        first, last = exposures[0], exposures[-1]
        zone.write_file(
            f"impressions/{first.served_at:%Y-%m-%d}/{EXPOSURE_LOG_FILE}-{first.cursor}-{last.cursor}.jsonl",
            ("\n".join(lines) + "\n").encode(),
        )
        store.trim_exposures(up_to=last.cursor)
        shipped += len(exposures)
        rows += len(lines)
    context.log.info(f"shipped {shipped} served lists ({rows} impression rows) to the landing zone")
    return dg.MaterializeResult(metadata={"exposures_shipped": shipped, "impression_rows": rows})
