"""The speed-layer sensor: lists written inside the tick, reported runless, cursor moved only after.

A tiny serving snapshot and online store on disk, view events landed as change records, and the
real `speed_layer_sensor` evaluated as the sensor daemon would (`evaluate_tick`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import pytest

from newsrec_assets.defs.recommendations.speed import (
    REPORT_INTERVAL_SECONDS,
    SPEED_RECOMMENDATIONS,
    speed_layer_sensor,
)
from newsrec_assets.defs.resources import ArtifactStoreResource, LandingZoneResource, OnlineStoreResource
from newsrec_assets.domain.recommend import NO_ARTICLE, ServingSnapshot
from newsrec_assets.resources.artifacts import LocalArtifactStore
from newsrec_assets.resources.landing import START_OF_TIME_CURSOR, LocalLandingZone
from newsrec_assets.resources.online_store.base import StoreUnavailable
from newsrec_assets.resources.online_store.sqlite import SQLiteListStore
from serving.services.landing import EventLanding
from serving.services.landing import ViewEvent as ApiView
from tests.conftest import first_view_record

BATCH_AT = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
DIM = 4


class WritesFailOnce(OnlineStoreResource):
    """The online store, except that list writes fail while `failing` names an existing file."""

    failing: str

    def lists(self):
        from pathlib import Path

        store = super().lists()
        if Path(self.failing).exists():

            def refuse(record):
                raise StoreUnavailable("the online store is down")

            store.put_recommendations = refuse
        return store


@pytest.fixture
def speed_home(tmp_path):
    rng = np.random.default_rng(0)
    snapshot = ServingSnapshot(
        model_version="naml-test",
        watermark=BATCH_AT,
        article_ids=np.array([f"a{i}" for i in range(6)], dtype=object),
        news_vectors=rng.normal(size=(6, DIM)).astype(np.float32),
        published_at_us=np.arange(6, dtype=np.int64),
        candidate_rows=np.arange(6),
        candidate_priors=np.zeros(6, dtype=np.float32),
        user_ids=np.array(["u2", "u1"], dtype=object),
        history_rows=np.array([[3, NO_ARTICLE, NO_ARTICLE], [0, 1, NO_ARTICLE]], dtype=np.int32),
        encoder_params={"proj_weight": np.ones((2, DIM)), "proj_bias": np.zeros(2), "query": np.ones(2)},
    )
    store = LocalArtifactStore(tmp_path / "artifacts")
    snapshot.save(tmp_path / "snapshot")
    store.put("serving_snapshot", "v1", tmp_path / "snapshot")
    store.set_latest("serving_snapshot", "v1")
    return tmp_path


def land_view(home, user_id: str, article_id: str, viewed_at: datetime) -> None:
    record = first_view_record(user_id, article_id, viewed_at, int(viewed_at.timestamp() * 1e6))
    path = f"user_article_views/{viewed_at:%Y-%m-%d}/test-{viewed_at:%H%M%S%f}-{user_id}.jsonl"
    LocalLandingZone(home / "landing").write_file(path, record.to_json_line().encode() + b"\n")


def tick(home, cursor: str | None, fail_marker=None):
    online = {"sqlite_path": str(home / "online.sqlite")}
    resources = {
        "landing": LandingZoneResource(root=str(home / "landing")),
        "artifacts": ArtifactStoreResource(root=str(home / "artifacts")),
        "online_store": WritesFailOnce(**online, failing=str(fail_marker or home / "no-such-file")),
    }
    context = dg.build_sensor_context(cursor=cursor, resources=resources)
    return speed_layer_sensor.evaluate_tick(context)


def test_a_tick_writes_the_lists_and_reports_a_runless_materialisation(speed_home):
    viewed_at = BATCH_AT + timedelta(minutes=5)
    land_view(speed_home, "u1", "a4", viewed_at)
    land_view(speed_home, "u9", "a2", viewed_at + timedelta(seconds=1))  # unknown to the batch

    result = tick(speed_home, START_OF_TIME_CURSOR)

    assert result.run_requests == []  # no run launched: the tick did the work
    assert "2 lists written within the tick" in result.skip_message
    (event,) = result.asset_events
    assert event.asset_key == SPEED_RECOMMENDATIONS
    assert {k: event.metadata[k].value for k in ("ticks", "events", "lists_written")} == {
        "ticks": 1,
        "events": 2,
        "lists_written": 2,
    }
    lists = SQLiteListStore(speed_home / "online.sqlite")
    served = lists.get_recommendations("u1")
    assert served.layer == "speed" and served.watermark == viewed_at
    assert not {"a0", "a1", "a4"} & set(served.article_ids)  # clicked before and since: left out
    assert "a2" not in lists.get_recommendations("u9").article_ids

    again = tick(speed_home, result.cursor)
    assert again.asset_events == [] and "No new change records" in again.skip_message


def test_ticks_within_a_minute_of_the_last_report_are_reported_together(speed_home):
    land_view(speed_home, "u1", "a4", BATCH_AT + timedelta(minutes=5))
    reported = tick(speed_home, START_OF_TIME_CURSOR)
    assert len(reported.asset_events) == 1

    land_view(speed_home, "u2", "a5", BATCH_AT + timedelta(minutes=6))
    quiet = tick(speed_home, reported.cursor)
    assert quiet.asset_events == [] and "reported with the next materialisation" in quiet.skip_message
    assert SQLiteListStore(speed_home / "online.sqlite").get_recommendations("u2").layer == "speed"
    nothing_new = tick(speed_home, quiet.cursor)
    assert nothing_new.asset_events == []

    # a minute after the report, the next tick reports both ticks' work, new files or not
    state = json.loads(nothing_new.cursor)
    state["reported_at"] -= REPORT_INTERVAL_SECONDS
    due = tick(speed_home, json.dumps(state))
    (event,) = due.asset_events
    assert {k: event.metadata[k].value for k in ("ticks", "events", "lists_written")} == {
        "ticks": 1,
        "events": 1,
        "lists_written": 1,
    }
    assert tick(speed_home, due.cursor).asset_events == []


def test_a_failed_store_write_keeps_the_cursor_and_the_next_tick_serves(speed_home):
    land_view(speed_home, "u2", "a5", BATCH_AT + timedelta(minutes=1))
    marker = speed_home / "store-down"
    marker.touch()

    with pytest.raises(Exception, match="the online store is down"):
        tick(speed_home, START_OF_TIME_CURSOR, fail_marker=marker)
    # The daemon keeps the cursor of a tick that raised: the same events come again.
    assert SQLiteListStore(speed_home / "online.sqlite").get_recommendations("u2") is None

    marker.unlink()
    retried = tick(speed_home, START_OF_TIME_CURSOR, fail_marker=marker)
    assert retried.asset_events[0].metadata["lists_written"].value == 1
    assert SQLiteListStore(speed_home / "online.sqlite").get_recommendations("u2").layer == "speed"
    assert retried.cursor != START_OF_TIME_CURSOR


def test_events_before_any_batch_move_the_cursor_without_a_materialisation(tmp_path):
    land_view(tmp_path, "u1", "a1", BATCH_AT)
    (tmp_path / "artifacts").mkdir()
    result = tick(tmp_path, START_OF_TIME_CURSOR)
    assert result.asset_events == [] and "first batch publish will cover" in result.skip_message
    assert result.cursor != START_OF_TIME_CURSOR


def test_a_view_posted_to_the_api_reaches_the_speed_layer_in_the_next_tick(speed_home):
    """The API's views land under their own table; one cursor covers it and the app's rows."""
    zone = LocalLandingZone(speed_home / "landing")
    first = tick(speed_home, START_OF_TIME_CURSOR)  # nothing landed yet
    viewed_at = BATCH_AT + timedelta(minutes=2)
    land_view(speed_home, "u2", "a5", viewed_at)
    EventLanding(zone)([ApiView("u1", "a4", viewed_at + timedelta(seconds=1), impression_id=None)])

    result = tick(speed_home, first.cursor)

    assert result.asset_events[0].metadata["events"].value == 2
    served = SQLiteListStore(speed_home / "online.sqlite").get_recommendations("u1")
    assert served.layer == "speed" and served.watermark == viewed_at + timedelta(seconds=1)
    assert "a4" not in served.article_ids
    assert "No new change records" in tick(speed_home, result.cursor).skip_message
