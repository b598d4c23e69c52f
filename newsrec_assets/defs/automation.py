"""The batch cadence, declared once: a freshness policy and the automation condition derived from it.

The 30-minute batch is not a hidden cron: the recommendation assets carry a visible
`FreshnessPolicy.time_window(30 min)`, and the automation condition that drives them (and the
features and embeddings upstream) is computed from that same window.
"""

from __future__ import annotations

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


def batch_automation_condition() -> dg.AutomationCondition:
    """Materialise once per batch window, after the upstream batch assets have been updated."""
    return dg.AutomationCondition.on_cron(cron_for_window(BATCH_WINDOW))


def batch_root_automation_condition() -> dg.AutomationCondition:
    """For the first assets of the batch (no upstream batch asset): once per window, unconditionally."""
    return (
        dg.AutomationCondition.cron_tick_passed(cron_for_window(BATCH_WINDOW)).since_last_handled()
        & ~dg.AutomationCondition.in_progress()
    ).with_label(f"every {BATCH_WINDOW}")
