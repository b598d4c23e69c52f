"""CDC parsing, idempotent append-only ingestion, quarantine and view-event reconstruction."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsrec_assets.domain.cdc import SOURCE_TABLES, ChangeRecord, MalformedChangeRecord, parse_change_line
from newsrec_assets.domain.events import ViewEvent, reconstruct_view_events
from newsrec_assets.resources.landing import LocalLandingZone
from newsrec_assets.resources.warehouse import DuckDBWarehouse
from tests.conftest import T0


def article_payload(article_id: str, **changes) -> dict:
    payload = {
        "article_id": article_id,
        "title": "Storm closes harbour as fishermen wait",
        "body": "The harbour stayed closed for a second day while the storm moved north.",
        "category": "weather",
        "subcategory": "storms",
        "status": "published",
        "published_at": T0,
        "updated_at": T0,
    }
    return payload | changes


def view_payload(user_id: str, article_id: str, view_count: int, at, impression_id=None) -> dict:
    return {
        "user_id": user_id,
        "article_id": article_id,
        "view_count": view_count,
        "first_viewed_at": T0,
        "last_viewed_at": at,
        "last_impression_id": impression_id,
    }


def stored_change_record(row: dict) -> ChangeRecord:
    """A change record rebuilt from what the raw table stored (typed columns, not the payload text)."""
    columns = SOURCE_TABLES["user_article_views"].columns
    return ChangeRecord(
        table="user_article_views",
        change_type=row["change_type"],
        payload={name: row[name] for name in columns},
        source_timestamp=row["source_timestamp"],
        read_timestamp=row["read_timestamp"],
        log_file=row["log_file"],
        log_position=row["log_position"],
        uuid=row["change_uuid"],
    )


def land(zone: LocalLandingZone, path: str, records_or_lines) -> None:
    lines = [r.to_json_line() if isinstance(r, ChangeRecord) else r for r in records_or_lines]
    zone.write_file(path, ("\n".join(lines) + "\n").encode())


def test_change_record_round_trips_through_the_landing_format(make_record):
    record = make_record("user_article_views", "UPDATE-INSERT", view_payload("u1", "a1", 2, T0), T0)
    document = json.loads(record.to_json_line())
    assert document["source_metadata"]["primary_keys"] == ["user_id", "article_id"]
    assert document["sort_keys"] == ["2026-11-20T08:00:00.000Z", "mysql-bin.000001", record.log_position]
    assert parse_change_line(record.to_json_line()) == record


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: "{not json", "invalid JSON"),
        (lambda d: json.dumps([1, 2]), "must be a JSON object"),
        (lambda d: json.dumps({k: v for k, v in d.items() if k != "payload"}), "missing field payload"),
        (
            lambda d: json.dumps(d | {"source_metadata": d["source_metadata"] | {"table": "users"}}),
            "unknown source table",
        ),
        (
            lambda d: json.dumps(d | {"payload": d["payload"] | {"view_count": "3"}}),
            "view_count must be an integer",
        ),
        (lambda d: json.dumps(d | {"source_timestamp": "yesterday"}), "Invalid isoformat"),
        (lambda d: json.dumps(d | {"payload": d["payload"] | {"user_id": None}}), "user_id is null"),
    ],
)
def test_malformed_lines_are_rejected_with_a_reason(make_record, mutate, reason):
    document = make_record("user_article_views", "INSERT", view_payload("u1", "a1", 1, T0), T0).to_json()
    with pytest.raises(MalformedChangeRecord, match=reason):
        parse_change_line(mutate(document))


def land_redeliveries_and_a_broken_line(zone: LocalLandingZone, make_record) -> ChangeRecord:
    """An article inserted and edited; a view delivered twice in one file (next to a broken line)
    and re-read into another; returns the view's first delivery."""
    insert = make_record("articles", "INSERT", article_payload("a1"), T0)
    edit = make_record(
        "articles", "UPDATE-INSERT", article_payload("a1", title="Edited"), T0 + timedelta(minutes=1)
    )
    first_view = make_record("user_article_views", "INSERT", view_payload("u1", "a1", 1, T0), T0)
    re_read = replace(first_view, uuid="another-uuid-same-change")
    land(zone, "articles/2026-11-20/0800-0.jsonl", [insert, edit])
    land(zone, "user_article_views/2026-11-20/0800-0.jsonl", [first_view, "{broken", first_view])
    land(zone, "user_article_views/2026-11-20/0810-0.jsonl", [re_read, ""])
    return first_view


def test_ingestion_is_idempotent_and_quarantines_without_dropping(tmp_path, make_record):
    zone = LocalLandingZone(tmp_path / "landing")
    warehouse = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    land_redeliveries_and_a_broken_line(zone, make_record)

    report = warehouse.ingest(zone)

    assert (report.files_ingested, report.records, report.stored, report.duplicates) == (3, 5, 3, 2)
    assert report.quarantined == 1
    assert report.stored_by_table == {"articles": 2, "user_article_views": 1}
    assert warehouse.scalar("select count(*) from raw.cdc_user_article_views") == 1
    quarantined = warehouse.read_table("raw.cdc_quarantine").to_pylist()
    assert [(q["landing_file"], q["landing_line"], q["raw_line"]) for q in quarantined] == [
        ("user_article_views/2026-11-20/0800-0.jsonl", 2, "{broken")
    ]
    assert "invalid JSON" in quarantined[0]["reason"]
    stored = warehouse.read_table("raw.cdc_articles", "title, landing_line", "change_type = 'UPDATE-INSERT'")
    assert stored.to_pylist() == [{"title": "Edited", "landing_line": 2}]

    again = warehouse.ingest(zone)
    assert (again.files_ingested, again.files_already_ingested, again.stored) == (0, 3, 0)
    assert warehouse.scalar("select count(*) from raw.cdc_quarantine") == 1


def test_a_later_run_downloads_no_registered_file_but_reads_a_changed_one(tmp_path, make_record, monkeypatch):
    zone = LocalLandingZone(tmp_path / "landing")
    warehouse = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    land_redeliveries_and_a_broken_line(zone, make_record)
    warehouse.ingest(zone)
    read: list[str] = []
    read_bytes = LocalLandingZone.read_bytes
    monkeypatch.setattr(
        LocalLandingZone, "read_bytes", lambda self, path: read.append(path) or read_bytes(self, path)
    )

    again = warehouse.ingest(zone)
    assert (read, again.files_already_ingested, again.stored) == ([], 3, 0)

    # The same name with other content (a longer file) is read and its new change stored.
    changed = "articles/2026-11-20/0800-0.jsonl"
    extra = make_record("articles", "INSERT", article_payload("a9"), T0 + timedelta(minutes=5))
    (zone.root / changed).write_bytes(
        (zone.root / changed).read_bytes() + extra.to_json_line().encode() + b"\n"
    )
    changed_run = warehouse.ingest(zone)
    assert (read, changed_run.files_ingested, changed_run.stored) == ([changed], 1, 1)


def test_a_crash_mid_ingestion_loses_nothing(tmp_path, make_record, monkeypatch):
    zone = LocalLandingZone(tmp_path / "landing")
    warehouse = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    for minute in range(3):
        at = T0 + timedelta(minutes=minute)
        land(
            zone,
            f"user_article_views/2026-11-20/08{minute:02d}-0.jsonl",
            [make_record("user_article_views", "INSERT", view_payload(f"u{minute}", "a1", 1, at), at)],
        )

    original = zone.read_bytes
    calls = {"n": 0}

    def failing_read(path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("bucket connection reset")
        return original(path)

    monkeypatch.setattr(zone, "read_bytes", failing_read)
    with pytest.raises(OSError):
        warehouse.ingest(zone, records_per_transaction=1)  # the first file commits on its own
    assert warehouse.scalar("select count(*) from raw.landing_files") == 1
    assert warehouse.scalar("select count(*) from raw.cdc_user_article_views") == 1

    monkeypatch.setattr(zone, "read_bytes", original)
    report = warehouse.ingest(zone)
    assert (report.files_ingested, report.files_already_ingested) == (2, 1)
    assert warehouse.scalar("select count(*) from raw.cdc_user_article_views") == 3


# -- property: in-place row updates, delivered shuffled and duplicated, give back every view ----------

row_histories = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u3"]),
        st.sampled_from(["a1", "a2"]),
        st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=6),  # views per change
    ),
    min_size=1,
    max_size=5,
    unique_by=lambda row: (row[0], row[1]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=row_histories, seed=st.integers(0, 2**32 - 1), files=st.integers(1, 4))
def test_shuffled_duplicated_delivery_reconstructs_every_view_event(tmp_path_factory, rows, seed, files):
    rng = random.Random(seed)
    records, truth = [], []
    position = 0
    clock = T0
    for user_id, article_id, views_per_change in rows:
        view_count = 0
        for change_number, views in enumerate(views_per_change):
            clock += timedelta(seconds=rng.randint(0, 90))  # ties in source time are allowed
            position += 1
            impression = f"imp{position}" if rng.random() < 0.7 else None
            for view_number in range(view_count + 1, view_count + views + 1):
                truth.append(ViewEvent(user_id, article_id, view_number, clock, impression))
            view_count += views
            records.append(
                ChangeRecord(
                    table="user_article_views",
                    change_type="INSERT" if change_number == 0 else "UPDATE-INSERT",
                    payload=view_payload(user_id, article_id, view_count, clock, impression),
                    source_timestamp=clock,
                    read_timestamp=clock + timedelta(seconds=1),
                    log_file="mysql-bin.000001",
                    log_position=position,
                )
            )
    # At-least-once delivery: re-sent records (same uuid) and re-reads (new uuid), shuffled over files.
    delivered = list(records)
    for record in rng.sample(records, k=rng.randint(0, len(records))):
        delivered.append(record if rng.random() < 0.5 else replace(record, uuid=f"reread-{rng.random()}"))
    rng.shuffle(delivered)

    root = tmp_path_factory.mktemp("delivery")
    zone = LocalLandingZone(root / "landing")
    for index in range(files):
        chunk = delivered[index::files]
        if chunk:
            land(zone, f"user_article_views/2026-11-20/{index:04d}.jsonl", chunk)
    warehouse = DuckDBWarehouse(root / "warehouse.duckdb")
    report = warehouse.ingest(zone)
    assert report.stored == len(records)
    assert report.duplicates == len(delivered) - len(records)

    stored = [
        stored_change_record(row) for row in warehouse.read_table("raw.cdc_user_article_views").to_pylist()
    ]
    assert sorted(r.change_key for r in stored) == sorted(r.change_key for r in records)
    assert Counter(reconstruct_view_events(stored)) == Counter(truth)
    assert Counter(reconstruct_view_events(delivered)) == Counter(truth)


# -- per-record problems never fail a batch; every Datastream file form is read or reported -----------


def test_one_bad_record_never_fails_the_batch_and_a_rerun_adds_nothing(tmp_path, make_record):
    zone = LocalLandingZone(tmp_path / "landing")
    warehouse = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    good = [
        make_record("user_article_views", "INSERT", view_payload(f"u{n}", "a1", 1, T0), T0) for n in range(4)
    ]
    out_of_range = good[1].to_json()
    out_of_range["source_metadata"]["log_position"] = 2**63  # a valid JSON number, too big for a bigint
    too_many_views = good[2].to_json()
    too_many_views["payload"]["view_count"] = 2**64 - 1
    implausible = good[3].to_json()
    implausible["payload"]["view_count"] = 10**12
    unknown_table = good[3].to_json() | {
        "source_metadata": {**good[3].to_json()["source_metadata"], "table": "x"}
    }
    land(zone, "user_article_views/2026-11-20/0800-0.jsonl", [good[0]])
    land(
        zone,
        "user_article_views/2026-11-20/0810-0.jsonl",
        [json.dumps(d) for d in (out_of_range, too_many_views, implausible, unknown_table)]
        + [good[1].to_json_line()],
    )

    report = warehouse.ingest(zone)

    assert (report.files_ingested, report.stored, report.quarantined) == (2, 2, 4)
    quarantined = warehouse.query(
        "select landing_line, reason from raw.cdc_quarantine order by landing_line"
    ).to_pylist()
    assert [q["landing_line"] for q in quarantined] == [1, 2, 3, 4]
    assert "log_position = 9223372036854775808" in quarantined[0]["reason"]
    assert "view_count = 18446744073709551615" in quarantined[1]["reason"]
    assert "plausible maximum" in quarantined[2]["reason"]
    assert "unknown source table" in quarantined[3]["reason"]

    again = warehouse.ingest(zone)
    assert (again.files_ingested, again.files_already_ingested, again.stored, again.quarantined) == (
        0,
        2,
        0,
        0,
    )
    assert warehouse.scalar("select count(*) from raw.cdc_quarantine") == 4


def test_compressed_and_datastream_named_files_are_ingested_and_others_reported(tmp_path, make_record):
    import gzip

    zone = LocalLandingZone(tmp_path / "landing")
    warehouse = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    records = [
        make_record("user_article_views", "INSERT", view_payload(f"u{n}", "a1", 1, T0), T0) for n in range(4)
    ]
    datastream = "newsapp_user_article_views/2026/11/20/08/00/5f1e_mysql-cdc-binlog_1_0"
    zone.write_file(f"{datastream}.jsonl.gz", gzip.compress((records[0].to_json_line() + "\n").encode()))
    zone.write_file(f"{datastream}.json", b"\xef\xbb\xbf" + records[1].to_json_line().encode() + b"\r\n")
    zone.write_file(
        "user_article_views/2026-11-20/0800-0.json.gz", gzip.compress(records[2].to_json_line().encode())
    )
    land(zone, "user_article_views/2026-11-20/0810-0.jsonl", [records[3]])
    zone.write_file(f"{datastream}.avro", b"Obj\x01")
    zone.write_file("user_article_views/2026-11-20/.0820-0.jsonl.tmp", b"half a li")

    report = warehouse.ingest(zone)

    assert (report.files_ingested, report.stored, report.quarantined) == (4, 4, 0)
    assert report.unsupported_files == [f"{datastream}.avro"]
    stored = warehouse.query("select user_id, last_viewed_at from raw.cdc_user_article_views").to_pylist()
    assert sorted(row["user_id"] for row in stored) == ["u0", "u1", "u2", "u3"]
    assert {row["last_viewed_at"] for row in stored} == {T0}
    assert warehouse.ingest(zone).unsupported_files == [f"{datastream}.avro"]  # reported every time
    assert {f.path for f in zone.new_files(after=None)} == {
        f"{datastream}.jsonl.gz",
        f"{datastream}.json",
        "user_article_views/2026-11-20/0800-0.json.gz",
        "user_article_views/2026-11-20/0810-0.jsonl",
    }


def test_a_delete_that_carries_only_the_key_is_stored(tmp_path, make_record):
    zone = LocalLandingZone(tmp_path / "landing")
    warehouse = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    insert = make_record("articles", "INSERT", article_payload("a1"), T0)
    delete = make_record("articles", "DELETE", {"article_id": "a1"}, T0 + timedelta(minutes=1))
    keyless = delete.to_json() | {"payload": {}}
    land(zone, "articles/2026-11-20/0800-0.jsonl", [insert, delete, json.dumps(keyless)])

    report = warehouse.ingest(zone)

    assert (report.stored, report.quarantined) == (2, 1)
    rows = warehouse.query(
        "select change_type, article_id, title from raw.cdc_articles order by 1"
    ).to_pylist()
    assert rows == [
        {"change_type": "DELETE", "article_id": "a1", "title": None},
        {"change_type": "INSERT", "article_id": "a1", "title": "Storm closes harbour as fishermen wait"},
    ]
    assert "DELETE without its primary key" in warehouse.scalar("select reason from raw.cdc_quarantine")


def test_the_ingestion_asset_names_unsupported_files_and_warns(tmp_path, make_record):
    import dagster as dg

    from newsrec_assets.defs.ingestion.assets import NO_UNSUPPORTED_FILES_CHECK, QUARANTINE_KEY, raw_cdc_log
    from newsrec_assets.defs.resources import LandingZoneResource, WarehouseResource

    zone = LocalLandingZone(tmp_path / "landing")
    land(
        zone,
        "articles/2026-11-20/0800-0.jsonl",
        [make_record("articles", "INSERT", article_payload("a1"), T0)],
    )
    zone.write_file("newsapp_articles/2026/11/20/08/00/x.avro", b"Obj\x01")

    result = dg.materialize(
        [raw_cdc_log],
        resources={
            "landing": LandingZoneResource(root=str(tmp_path / "landing")),
            "warehouse": WarehouseResource(duckdb_path=str(tmp_path / "warehouse.duckdb")),
        },
        instance=dg.DagsterInstance.ephemeral(),
    )

    metadata = result.asset_materializations_for_node("raw_cdc_log")[-1].metadata
    assert result.asset_materializations_for_node("raw_cdc_log")[-1].asset_key == QUARANTINE_KEY
    assert metadata["unsupported_files"].value == 1
    assert metadata["unsupported_file_names"].value == ["newsapp_articles/2026/11/20/08/00/x.avro"]
    checks = {check.check_name: check for check in result.get_asset_check_evaluations()}
    assert not checks[NO_UNSUPPORTED_FILES_CHECK].passed
