"""The batch cadence, declared once: a freshness policy and the automation condition derived from it.

The 30-minute batch is not a hidden cron: the recommendation assets carry a visible
`FreshnessPolicy.time_window(30 min)`, and the automation condition that drives them (and the
features and embeddings upstream) is computed from that same window.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import dagster as dg

BATCH_WINDOW = timedelta(minutes=30)

BATCH_FRESHNESS_POLICY = dg.FreshnessPolicy.time_window(
    fail_window=BATCH_WINDOW, warn_window=BATCH_WINDOW - timedelta(minutes=5)
)


def cron_for_window(window: timedelta) -> str:
    """A cron schedule that ticks once per window (windows that divide an hour or a day)."""
    minutes = int(window.total_seconds() // 60)
    if minutes <= 0 or window.total_seconds() % 60:
        raise ValueError(f"window must be a whole number of minutes, got {window}")
    if minutes < 60 and 60 % minutes == 0:
        return f"*/{minutes} * * * *"
    if minutes % 60 == 0 and 24 % (minutes // 60) == 0:
        return f"0 */{minutes // 60} * * *"
    raise ValueError(f"window {window} does not divide an hour or a day evenly")


def batch_automation_condition(slower_deps: Sequence[str] = ()) -> dg.AutomationCondition:
    """Materialise once per batch window, after the upstream batch assets have been updated.

    `slower_deps` are upstream assets on a slower cadence (the daily model, the weekly encoder):
    the batch uses their latest version and does not wait for them to be updated in this window.
    """
    condition = dg.AutomationCondition.on_cron(cron_for_window(BATCH_WINDOW))
    if slower_deps:
        condition = condition.ignore(dg.AssetSelection.assets(*slower_deps))
    return condition


def after_every_shard_condition() -> dg.AutomationCondition:
    """Once per batch window, after every partition of its (sharded) upstream has been updated.

    `on_cron` would fire after the first shard of the window: a dependency's condition holds for
    a downstream asset when any one of its partitions holds it. So: no upstream partition may be
    left un-updated since the tick (`~any_deps_match(~updated)`), and the publish sees all of them.
    """
    cron = cron_for_window(BATCH_WINDOW)
    tick = dg.AutomationCondition.cron_tick_passed(cron)
    updated = (dg.AutomationCondition.newly_updated() | dg.AutomationCondition.will_be_requested()).since(
        tick
    )
    return (
        dg.AutomationCondition.in_latest_time_window()
        & tick.since_last_handled()
        & ~dg.AutomationCondition.any_deps_match(~updated)
    ).with_label(f"on_cron({cron}) once every shard is updated")
