"""The batch lands inside the warn window every cycle: the cadence derived from the window and the
batch's duration, run through Dagster's automation evaluation with a shortened window.

A 6-minute fail window (warn at 5), a 60 s batch and a 60 s automation interval give a 2-minute
cadence. The test plays the daemons: the features schedule's cron starts the features (ingestion,
dbt) on each tick, and every 60 simulated seconds the real `batch_automation_condition` is evaluated
on a features -> lists graph; each run lands 60 s after it starts. Every gap between two landings
of the lists must stay inside the warn window.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.test_utils import freeze_time
from dagster._utils.schedules import cron_string_iterator

from newsrec_assets.defs.automation import (
    BATCH_CADENCE,
    BATCH_WARN_WINDOW,
    BATCH_WINDOW,
    after_every_shard_condition,
    batch_automation_condition,
    batch_cadence,
    cron_for_window,
)

WINDOW, WARN, DURATION = timedelta(minutes=6), timedelta(minutes=5), timedelta(seconds=60)
INTERVAL = timedelta(seconds=60)


def test_the_default_cadence_leaves_room_for_two_batch_durations():
    assert BATCH_WARN_WINDOW < BATCH_WINDOW
    assert BATCH_CADENCE < BATCH_WARN_WINDOW
    assert batch_cadence(timedelta(minutes=25), timedelta(minutes=4)) == timedelta(minutes=15)
    assert batch_cadence(WARN, DURATION) == timedelta(minutes=3)
    assert batch_cadence(timedelta(minutes=2), timedelta(minutes=4)) == timedelta(minutes=1)
    # a tick is seen up to one automation interval late
    assert batch_cadence(timedelta(minutes=25), timedelta(minutes=4), timedelta(minutes=5)) == timedelta(
        minutes=12
    )


@pytest.mark.slow  # ~20 s: 60 automation evaluations
def test_the_batch_lands_inside_the_warn_window_every_cycle():
    cadence = batch_cadence(WARN, DURATION, INTERVAL)
    assert cadence == timedelta(minutes=2)

    @dg.asset
    def features():
        """Ingestion and the dbt features: the features schedule's run."""

    @dg.asset(
        deps=[features],
        automation_condition=batch_automation_condition(cadence=cadence),
        freshness_policy=dg.FreshnessPolicy.time_window(fail_window=WINDOW, warn_window=WARN),
    )
    def lists():
        """The batch's lists."""

    defs = dg.Definitions(assets=[features, lists])
    start = datetime(2026, 12, 5, 0, 1, tzinfo=UTC)
    landings: list[datetime] = []
    pending: list[tuple[datetime, list[dg.AssetKey]]] = []
    schedule_ticks = cron_string_iterator(start.timestamp(), cron_for_window(cadence), "UTC")
    next_schedule_tick = next(schedule_ticks)
    cursor = None
    with dg.instance_for_test() as instance:

        def land(keys):
            for key in keys:
                instance.report_runless_asset_event(dg.AssetMaterialization(key))

        for tick in range(0, 60 * 60, int(INTERVAL.total_seconds())):  # one simulated hour
            now = start + timedelta(seconds=tick)
            with freeze_time(now):
                while next_schedule_tick <= now:
                    pending.append((next_schedule_tick + DURATION, [features.key]))
                    next_schedule_tick = next(schedule_ticks)
                for due, keys in [p for p in pending if p[0] <= now]:
                    pending.remove((due, keys))
                    land(keys)
                    if lists.key in keys:
                        landings.append(due)
                result = dg.evaluate_automation_conditions(defs, instance, evaluation_time=now, cursor=cursor)
                cursor = result.cursor
                requested = [r.key for r in result.results if r.true_subset.size]
                if requested:
                    pending.append((now + DURATION, sorted(requested)))

    gaps = [later - earlier for earlier, later in zip(landings, landings[1:], strict=False)]
    assert max(gaps) <= WARN, gaps
    assert len(landings) >= 60 // 2 - 2  # about one batch per cadence
    # and a cron of the window itself would not: its gaps are the whole fail window
    assert cadence + DURATION < WINDOW


def batch_layer(cadence: timedelta) -> tuple[dg.AssetsDefinition, ...]:
    """The batch layer's shape: features -> two user shards on the cadence -> their publish."""

    @dg.asset
    def features():
        """Ingestion and the dbt features: the features schedule's run."""

    @dg.asset(
        deps=[features],
        partitions_def=dg.StaticPartitionsDefinition(["0", "1"]),
        automation_condition=batch_automation_condition(cadence=cadence),
    )
    def shards():
        """The user shards' lists."""

    @dg.asset(deps=[shards], automation_condition=after_every_shard_condition())
    def publish():
        """The publish of every shard."""

    return features, shards, publish


def test_a_publish_made_outside_the_automation_is_not_repeated():
    # The demo's first lists come from a backfill of the shards and the publish; the UI can
    # launch the same. A second publish would find nothing staged and fail.
    features, shards, publish = batch_layer(timedelta(minutes=12))
    defs = dg.Definitions(assets=[features, shards, publish])
    start = datetime(2026, 12, 5, 0, 1, 40, tzinfo=UTC)  # the next cron tick is at 00:12
    cursor = None

    def land(minutes: float, key: dg.AssetKey, *partitions: str | None) -> None:
        with freeze_time(start + timedelta(minutes=minutes)):
            for partition in partitions:
                instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=partition))

    def requested_at(minutes: float) -> set[str]:
        nonlocal cursor
        now = start + timedelta(minutes=minutes)
        with freeze_time(now):
            result = dg.evaluate_automation_conditions(defs, instance, evaluation_time=now, cursor=cursor)
        cursor = result.cursor
        return {r.key.to_user_string() for r in result.results if r.true_subset.size}

    with dg.instance_for_test() as instance:
        assert requested_at(0) == set()
        land(0.5, features.key, None)
        land(1, shards.key, "0", "1")  # the backfill's shards
        land(2, publish.key, None)  # and its publish
        assert requested_at(5) == set()
        assert requested_at(9) == set()
        land(9.5, shards.key, "0", "1")  # ranked again from the UI, not published
        land(9.7, publish.key, None)  # published from the UI too
        land(9.9, shards.key, "1")  # one more shard, seen in the same evaluation as the publish
        assert requested_at(10) == {"publish"}


@pytest.mark.slow  # ~15 s: 25 automation evaluations
def test_a_publish_that_lands_just_before_a_tick_does_not_cost_the_next_cycle():
    # The demo's timeline on a loaded machine: a 12-minute cadence, the automation evaluated every
    # 5 minutes (at :01:40, :06:40, ...), the features run 200 s after each tick; the shards are
    # requested at one evaluation and the publish at the next, so each cycle's publish lands at
    # minute 11:40 + 35 s of the hour's 12-minute slot, or just before the next tick.
    cadence, interval = timedelta(minutes=12), timedelta(minutes=5)
    durations = {"features": timedelta(seconds=200), "shards": timedelta(seconds=70)}
    durations["publish"] = timedelta(seconds=35)

    features, shards, publish = batch_layer(cadence)
    defs = dg.Definitions(assets=[features, shards, publish])
    start = datetime(2026, 12, 5, 0, 1, 40, tzinfo=UTC)
    ticks = cron_string_iterator(start.timestamp(), cron_for_window(cadence), "UTC")
    next_tick = next(ticks)
    pending: list[tuple[datetime, dg.AssetKey, str | None]] = []
    published: list[datetime] = []
    cursor = None
    with dg.instance_for_test() as instance:
        for step in range(25):  # two simulated hours
            now = start + step * interval
            while next_tick <= now:  # the features schedule's runs, one per tick
                pending.append((next_tick + durations["features"], features.key, None))
                next_tick = next(ticks)
            for landing in sorted(p for p in pending if p[0] <= now):
                pending.remove(landing)
                due, key, partition = landing
                with freeze_time(due):
                    instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=partition))
                if key == publish.key:
                    published.append(due)
            with freeze_time(now):
                result = dg.evaluate_automation_conditions(defs, instance, evaluation_time=now, cursor=cursor)
            cursor = result.cursor
            for requested in result.results:
                for asset_partition in requested.true_subset.expensively_compute_asset_partitions():
                    duration = durations[asset_partition.asset_key.path[-1]]
                    pending.append((now + duration, asset_partition.asset_key, asset_partition.partition_key))

    gaps = [later - earlier for earlier, later in zip(published, published[1:], strict=False)]
    assert gaps and max(gaps) <= 2 * cadence - interval, published  # no cycle left unpublished
    assert len(published) >= 2 * 60 // 12 - 2, published
