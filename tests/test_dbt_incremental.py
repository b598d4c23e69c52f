"""The incremental `view_events` mart gives what a full rebuild gives, as changes keep arriving."""

from __future__ import annotations

import random

import pytest

from newsrec_assets.resources.landing import LocalLandingZone
from newsrec_assets.resources.warehouse import DuckDBWarehouse
from serving.services.landing import EventLanding
from serving.services.landing import ViewEvent as ApiView
from tests.test_dbt_project import dbt_args, dbt_env, deliver, release_duckdb, simulate

pytestmark = pytest.mark.slow
EVENTS = (
    "select event_id, user_id, article_id, view_number, viewed_at, impression_id, change_key "
    "from main.view_events"
)


def dbt(tmp, database, *arguments: str) -> None:
    from dbt.cli.main import dbtRunner

    with pytest.MonkeyPatch.context() as patch:
        for name, value in dbt_env(tmp, NEWSREC_DUCKDB_PATH=str(database)).items():
            patch.setenv(name, value)
        result = dbtRunner().invoke(dbt_args("run", tmp, "local", "--select", "+view_events", *arguments))
    release_duckdb()
    assert result.success, result.exception


def test_an_incremental_build_equals_a_full_rebuild(tmp_path):
    app = simulate()
    landing = LocalLandingZone(tmp_path / "landing")
    deliver(app, landing, random.Random(5))
    # Views of the app's rows posted to the API too, in windows of their own (one object each).
    api = EventLanding(landing)
    for view in app.views[::40]:
        api([ApiView(view.user_id, view.article_id, view.viewed_at, view.impression_id)])
    files = sorted(landing.list_files(), key=lambda f: f.path)
    database = tmp_path / "warehouse.duckdb"
    warehouse = DuckDBWarehouse(database)
    # Files arrive out of order: every third file first, so later changes of a row come first.
    early, late = files[::3], [f for i, f in enumerate(files) if i % 3]

    warehouse.ingest(landing, files=early)
    dbt(tmp_path, database)
    first = warehouse.query(EVENTS).num_rows
    warehouse.ingest(landing, files=late)
    dbt(tmp_path, database)  # incremental: only the rows with new changes are rebuilt
    compiled = (
        tmp_path / "target" / "compiled" / "newsrec" / "models" / "marts" / "view_events.sql"
    ).read_text()
    incremental = sorted(tuple(row.values()) for row in warehouse.query(EVENTS).to_pylist())
    dbt(tmp_path, database, "--full-refresh")
    rebuilt = sorted(tuple(row.values()) for row in warehouse.query(EVENTS).to_pylist())

    assert "changed_rows" in compiled  # the second build took the incremental path
    assert 0 < first < len(incremental)
    assert incremental == rebuilt
    api_events = [row for row in incremental if row[0].startswith("api|")]
    assert len(api_events) == len({row[0] for row in api_events}) == len(app.views[::40])
