"""The BigQuery warehouse adapter keeps the DuckDB adapter's ingestion guarantees (BigQuery emulator).

Each test writes its own datasets, so tests share one emulator.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from newsrec_assets.resources.bigquery_warehouse import BigQueryWarehouse
from newsrec_assets.resources.landing import LocalLandingZone
from newsrec_assets.resources.warehouse import DuckDBWarehouse
from tests.conftest import T0
from tests.emulators import EmulatorBigQueryResource
from tests.test_ingestion import land, land_redeliveries_and_a_broken_line, view_payload

pytestmark = pytest.mark.prod


@pytest.fixture
def bigquery(bigquery_emulator) -> BigQueryWarehouse:
    resource = EmulatorBigQueryResource(project="newsrec-test", location="US", api_endpoint=bigquery_emulator)
    suffix = uuid.uuid4().hex[:8]
    with resource.get_client() as client:
        return BigQueryWarehouse(
            client, marts_dataset=f"marts_{suffix}", raw_dataset=f"raw_{suffix}", location="US"
        )


def rows(warehouse: BigQueryWarehouse, table: str, columns: str, order: str) -> list[dict]:
    return warehouse.run_query(
        f"select {columns} from {warehouse.relation('raw', table)} order by {order}"
    ).to_pylist()


def test_ingestion_stores_what_duckdb_stores_and_a_rerun_adds_nothing(bigquery, tmp_path, make_record):
    zone = LocalLandingZone(tmp_path / "landing")
    first_view = land_redeliveries_and_a_broken_line(zone, make_record)
    duckdb = DuckDBWarehouse(tmp_path / "warehouse.duckdb")

    report = bigquery.ingest(zone)

    expected = duckdb.ingest(zone)
    for field in ("files_ingested", "records", "stored", "duplicates", "quarantined", "stored_by_table"):
        assert getattr(report, field) == getattr(expected, field), field
    assert (report.stored, report.duplicates, report.quarantined) == (3, 2, 1)
    assert rows(bigquery, "cdc_user_article_views", "change_key, change_uuid", "change_key") == [
        {"change_key": first_view.change_key, "change_uuid": first_view.uuid}  # the first delivery wins
    ]
    quarantined = rows(
        bigquery, "cdc_quarantine", "landing_file, landing_line, raw_line, reason", "landing_line"
    )
    assert [(q["landing_file"], q["landing_line"], q["raw_line"]) for q in quarantined] == [
        ("user_article_views/2026-11-20/0800-0.jsonl", 2, "{broken")
    ]
    assert "invalid JSON" in quarantined[0]["reason"]
    registry = rows(bigquery, "landing_files", "landing_file, records, stored, duplicates", "landing_file")
    assert (
        registry
        == duckdb.query(
            "select landing_file, records, stored, duplicates from raw.landing_files order by landing_file"
        ).to_pylist()
    )

    again = bigquery.ingest(zone)
    assert (again.files_ingested, again.files_already_ingested, again.stored) == (0, 3, 0)
    assert len(rows(bigquery, "cdc_quarantine", "landing_line", "landing_line")) == 1
    assert len(rows(bigquery, "cdc_articles", "change_key", "change_key")) == 2


def test_a_failed_transaction_stores_and_registers_nothing(bigquery, tmp_path, make_record, monkeypatch):
    zone = LocalLandingZone(tmp_path / "landing")
    for minute in range(3):
        at = T0 + timedelta(minutes=minute)
        record = make_record("user_article_views", "INSERT", view_payload(f"u{minute}", "a1", 1, at), at)
        land(zone, f"user_article_views/2026-11-20/08{minute:02d}-0.jsonl", [record])
    bigquery.files_per_load = 1
    original = bigquery.execute
    calls = {"n": 0}

    def failing_second_batch(sql, parameters=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("connection reset during the transaction")
        return original(sql, parameters)

    monkeypatch.setattr(bigquery, "execute", failing_second_batch)
    with pytest.raises(ConnectionError):
        bigquery.ingest(zone)
    assert len(rows(bigquery, "landing_files", "landing_file", "landing_file")) == 1
    assert len(rows(bigquery, "cdc_user_article_views", "change_key", "change_key")) == 1
    staging = [t.table_id for t in bigquery.client.list_tables(bigquery.datasets["raw"])]
    assert not [name for name in staging if name.startswith("_staging")]

    monkeypatch.setattr(bigquery, "execute", original)
    report = bigquery.ingest(zone)
    assert (report.files_ingested, report.files_already_ingested, report.stored) == (2, 1, 2)
    assert len(rows(bigquery, "cdc_user_article_views", "change_key", "change_key")) == 3


def test_the_shard_filter_hashes_user_ids_as_python_and_duckdb_do(bigquery, tmp_path):
    """A shard's reads are filtered in the warehouse: BigQuery's SQL hash must be Python's."""
    from newsrec_assets.domain.sharding import user_hash

    users = ["u0000001", "U87654", "ü-ñ"]
    column = "', '".join(users)
    sql = f"select u, {{}} as h from unnest(['{column}']) as u order by u"
    duck = DuckDBWarehouse(tmp_path / "w.duckdb")
    duck_sql = f"select u, {{}} as h from (select unnest(['{column}']) as u) order by u"
    expected = {u: user_hash(u) for u in users}
    assert {
        r["u"]: r["h"] for r in bigquery.run_query(sql.format(bigquery.user_hash("u"))).to_pylist()
    } == expected
    with duck.connect() as connection:
        found = connection.execute(duck_sql.format(duck.user_hash("u"))).fetchall()
    assert dict(found) == expected
