"""CDC delivery faults through ingestion (the Dagster asset) and `dbt build` to the marts.

The world (tests/faults/world.py) is written by hand: duplicates, re-reads, a late file ingested
by a later run, deletes with and without their key, a delete and re-insert, malformed and
out-of-range values, a BOM, CRLF, gzip and Datastream file names. Beside it, views of one of the
app's rows are posted to the API's landing. The marts must equal that truth, and running ingestion
again must add nothing.
"""

from __future__ import annotations

import time
from collections import Counter

import dagster as dg
import pytest

from newsrec_assets.defs.ingestion.assets import raw_cdc_log
from newsrec_assets.defs.resources import LandingZoneResource, WarehouseResource
from newsrec_assets.resources.landing import LocalLandingZone
from newsrec_assets.resources.warehouse import DuckDBWarehouse
from serving.services.landing import EventLanding
from serving.services.landing import ViewEvent as ApiView
from tests.faults.observed import current_titles, stored_changes, tally, view_events
from tests.faults.world import AVRO, BAD, ExpectedView, build_world, minutes
from tests.test_dbt_project import dbt_args, dbt_env, release_duckdb

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def ingest(home) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [raw_cdc_log],
        resources={
            "landing": LandingZoneResource(root=str(home / "landing")),
            "warehouse": WarehouseResource(duckdb_path=str(home / "warehouse.duckdb")),
        },
        instance=dg.DagsterInstance.ephemeral(),
    )


def dbt_build(home, *select: str) -> dict[str, str]:
    from dbt.cli.main import dbtRunner

    extra = ["--select", *select, "--indirect-selection", "cautious"] if select else []
    with pytest.MonkeyPatch.context() as patch:
        for name, value in dbt_env(home, NEWSREC_DUCKDB_PATH=str(home / "warehouse.duckdb")).items():
            patch.setenv(name, value)
        result = dbtRunner().invoke(dbt_args("build", home, "local", *extra))
    release_duckdb()
    return {r.node.unique_id: str(r.status) for r in (result.result.results if result.result else [])}


def views_of(views, user_id: str) -> list[tuple[int, str]]:
    return sorted((v.view_number, v.viewed_at.strftime("%H:%M")) for v in views if v.user_id == user_id)


def quarantine_metadata(result: dg.ExecuteInProcessResult) -> dict:
    materialization = result.asset_materializations_for_node("raw_cdc_log")[-1]
    return {key: value.value for key, value in materialization.metadata.items()}


def test_cdc_faults_reach_the_marts_as_the_truth_says(tmp_path, scenarios):
    world = build_world()
    home = tmp_path
    zone = LocalLandingZone(home / "landing")
    warehouse = DuckDBWarehouse(home / "warehouse.duckdb", read_only=True)
    started = time.perf_counter()

    # ---- run 1: everything but the late file, and the API's views of u10/a1, the app's row too
    world.write(zone)
    api = EventLanding(zone)  # one landing object per window, two windows
    posted = [ApiView("u10", "a1", minutes(20), "i9"), ApiView("u10", "a1", minutes(30), None)]
    acknowledged = api(posted) + api([ApiView("u10", "a1", minutes(30), None)])
    api_views = [
        ExpectedView(v.user_id, v.article_id, None, v.viewed_at, v.impression_id)
        for v in [*posted, posted[1]]
    ]
    first = ingest(home)
    metadata = quarantine_metadata(first)
    statuses = dbt_build(home, "+view_events", "+current_articles", "+int_rejected_view_jumps")
    views_run_1 = view_events(warehouse)
    expected_run_1 = Counter(world.views_before_late_file) + Counter(api_views)

    # ---- run 2: the late file lands and is ingested by a later run; then the whole build
    world.write(zone, late=True)
    second = ingest(home)
    full_build = dbt_build(home)
    views = view_events(warehouse)
    expected = Counter(world.views) + Counter(api_views)
    api_event_ids = (
        warehouse.query("select event_id from main.view_events where event_id like 'api|%'")
        .column("event_id")
        .to_pylist()
    )
    raw_counts = stored_changes(warehouse)

    # ---- run 3: nothing new; ingesting again adds nothing
    third = ingest(home)
    third_metadata = quarantine_metadata(third)
    raw_counts_again = stored_changes(warehouse)

    quarantined = warehouse.query(
        "select landing_file, landing_line, reason from raw.cdc_quarantine order by all"
    ).to_pylist()
    reasons = [q["reason"] for q in quarantined]

    def quarantined_for(fragment: str) -> str:
        return "quarantined" if any(fragment in reason for reason in reasons) else "not quarantined"

    articles = current_titles(warehouse)
    rejected = [
        (r["user_id"], r["article_id"], r["view_count"])
        for r in warehouse.query(
            "select user_id, article_id, view_count from main.int_rejected_view_jumps"
        ).to_pylist()
    ]
    stored_u1 = warehouse.scalar("select count(*) from raw.cdc_user_article_views where user_id = 'u1'")
    failed_nodes = {k: v for k, v in full_build.items() if v not in ("success", "pass", "warn")}
    warned_nodes = sorted(k.split(".")[-1] for k, v in full_build.items() if v == "warn")

    check = scenarios.check
    check("duplicates: the same changes re-sent (same uuid, gzip file)", 3, stored_u1)
    check(
        "re-reads: the same changes under new uuids (.json file)",
        views_of(expected, "u1"),
        views_of(views, "u1"),
    )
    check(
        "out of order across runs: a late file, first run",
        views_of(expected_run_1, "u7"),
        views_of(views_run_1, "u7"),
    )
    check(
        "out of order across runs: after the late file's run", views_of(expected, "u7"), views_of(views, "u7")
    )
    check("DELETE with only the key (article a2)", False, "a2" in articles)
    check(
        "DELETE with an empty payload (article a3): cannot name a row",
        ("quarantined", True),
        (quarantined_for("DELETE without its primary key"), "a3" in articles),
    )
    check("article deleted and published again (a4)", "Published again", articles.get("a4"))
    check("edit (a1)", "Harbour reopens", articles.get("a1"))
    check("current articles, all", world.articles, articles)
    check(
        "delete + re-insert of a view row (u2): views after it counted",
        views_of(expected, "u2"),
        views_of(views, "u2"),
    )
    check("a write that coalesced 3 views (u3)", views_of(expected, "u3"), views_of(views, "u3"))
    check(
        "view_count 10^12 (above max_view_count): quarantined, the row counts on (u4)",
        ("quarantined", views_of(expected, "u4")),
        (quarantined_for("above the plausible maximum"), views_of(views, "u4")),
    )
    check(
        "jump of 50,000 views (above max_views_per_change): not expanded, listed (u5)",
        (views_of(expected, "u5"), world.rejected_jumps),
        (views_of(views, "u5"), rejected),
    )
    check(
        "the jump warns and the rest of the build goes on",
        ({}, ["warn_no_rejected_view_jumps"]),
        (failed_nodes, warned_nodes),
    )
    check(
        "PostgreSQL LSNs 9/FFFFFFF0 < A/0 < 10/10 in one ms (u6)",
        views_of(expected, "u6"),
        views_of(views, "u6"),
    )
    for fragment, fault in [
        ("invalid JSON", "malformed JSON"),
        ("log_position = 9223372036854775808", "log_position 2^63 (a JSON integer above int64)"),
        ("view_count = 18446744073709551615", "view_count 2^64-1"),
        ("unknown source table", "unknown table"),
        ("not valid UTF-8", "a line that is not UTF-8"),
    ]:
        check(f"{fault}: quarantined, neighbours stored", "quarantined", quarantined_for(fragment))
    check("the good line between bad ones (u8)", views_of(expected, "u8"), views_of(views, "u8"))
    found = Counter(api_event_ids)
    check(
        "the app's row and the API both write u10/a1: the app's views numbered; API views, each once",
        (views_of(world.views, "u10"), len(acknowledged), len(acknowledged)),
        (
            views_of((v for v in views if v.view_number is not None), "u10"),
            len(api_event_ids),
            sum(found[f"api|{answer['event_id']}"] == 1 for answer in acknowledged),
        ),
    )
    matched = sum(any(fragment in reason for fragment in world.quarantine_reasons) for reason in reasons)
    check(
        "bad lines: quarantined with their reason (lines, lines with the expected reason)",
        (len(world.quarantine_reasons),) * 2,
        (len(reasons), matched),
    )
    check(
        "bad lines: their file is registered, not retried",
        [1, 2, 3, 5, 6],
        [q["landing_line"] for q in quarantined if q["landing_file"] == BAD],
    )
    check("UTF-8 BOM + CRLF: first event's time unchanged (u1)", "08:10", views_of(views, "u1")[0][1])
    check(
        "unsupported file (.avro): named in the asset's metadata", [AVRO], metadata["unsupported_file_names"]
    )
    check(
        "all view events, first run: count, missing, invented",
        (sum(expected_run_1.values()), 0, 0),
        tally(expected_run_1, views_run_1),
    )
    check(
        "all view events, final: count, missing, invented",
        (sum(expected.values()), 0, 0),
        tally(expected, views),
    )
    check("distinct changes stored", world.distinct_changes, raw_counts)
    check(
        "ingesting again adds nothing",
        (0, 0, raw_counts),
        (third_metadata["stored"], third_metadata["quarantined"], raw_counts_again),
    )
    check("late file's run stores only it", 1, quarantine_metadata(second)["stored"])
    check(
        "first build (a selection) succeeded",
        {},
        {k: v for k, v in statuses.items() if v not in ("success", "pass", "warn")},
    )
    print(f"CDC fault suite: {time.perf_counter() - started:.1f} s")
    scenarios.verify()
