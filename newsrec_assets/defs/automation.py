"""The batch cadence, declared once: a freshness policy and the automation derived from it.

The 30-minute batch is not a hidden cron: the recommendation assets carry a visible
`FreshnessPolicy.time_window(30 min)`, and the automation condition that ranks the user shards is
computed from that same window and the batch's measured duration; the publish follows the
shards (`after_every_shard_condition`). Their inputs (ingestion, dbt features,
embeddings) are built by the `batch_features` schedule on the same cadence (`features_schedule`).

Why not a cron of the window itself: a batch started every 30 minutes lands ~30 minutes after the
previous one, so the lists sit at the warn line every cycle and past the fail line whenever one
batch waits longer (for ingestion, for the DuckDB writer) than the one before. The batch is
started often enough that a list is never older than the warn window, even when one batch takes
its whole measured duration longer than the previous one: cadence + 2 x duration <= warn window.

Settings (environment, read when the definitions load): `NEWSREC_BATCH_WINDOW_MINUTES` (fail
window, default 30; the warn window is 5/6 of it), `NEWSREC_BATCH_SECONDS` (the measured
duration of one batch cycle: features, embeddings, lists) and
`NEWSREC_AUTOMATION_INTERVAL_SECONDS` (how often the automation sensor evaluates, default 300).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta

import dagster as dg
from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES

# One steady-state batch cycle (incremental dbt features + embeddings of new articles + lists for
# 3,000 users) on a quiet 2-core machine, estimated from the steps' durations in the demo's first
# build; set NEWSREC_BATCH_SECONDS to the duration the batch runs show where it differs.
DEFAULT_BATCH_SECONDS = 240


def _minutes_setting(name: str, default: float) -> timedelta:
    return timedelta(minutes=float(os.getenv(name, default)))


BATCH_WINDOW = _minutes_setting("NEWSREC_BATCH_WINDOW_MINUTES", 30)
BATCH_WARN_WINDOW = BATCH_WINDOW * 5 / 6
BATCH_DURATION = timedelta(seconds=float(os.getenv("NEWSREC_BATCH_SECONDS", DEFAULT_BATCH_SECONDS)))
# How often the automation sensor evaluates the conditions. Every evaluation stores each asset's
# condition tree in the instance (~10-80 KB an asset, kept 30 days by Dagster): at the default
# 30 s that was ~1.2 GB a day; at 5 minutes ~60 MB. A cron tick waits at most this long to be seen.
AUTOMATION_INTERVAL = timedelta(seconds=float(os.getenv("NEWSREC_AUTOMATION_INTERVAL_SECONDS", 300)))

BATCH_FRESHNESS_POLICY = dg.FreshnessPolicy.time_window(
    fail_window=BATCH_WINDOW, warn_window=BATCH_WARN_WINDOW
)


def batch_cadence(
    warn_window: timedelta, batch_duration: timedelta, evaluation_interval: timedelta = timedelta(0)
) -> timedelta:
    """The longest cadence (whole minutes dividing an hour, so that a cron can tick it) with
    cadence + evaluation_interval + 2 x batch_duration <= warn_window (a tick is seen up to one
    evaluation interval late); one minute if even that does not fit."""
    room = warn_window - 2 * batch_duration - evaluation_interval
    fitting = [m for m in range(1, 61) if 60 % m == 0 and timedelta(minutes=m) <= room]
    return timedelta(minutes=max(fitting, default=1))


BATCH_CADENCE = batch_cadence(BATCH_WARN_WINDOW, BATCH_DURATION, AUTOMATION_INTERVAL)


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


def batch_automation_condition(
    slower_deps: Sequence[str] = (), cadence: timedelta | None = None
) -> dg.AutomationCondition:
    """Materialise once per batch cadence, after the upstream batch assets have been updated.

    `slower_deps` are upstream assets on a slower cadence (the daily model, the weekly encoder):
    the batch uses their latest version and does not wait for them to be updated in this window.
    `cadence` defaults to the one derived from the settings (`BATCH_CADENCE`).
    """
    condition = dg.AutomationCondition.on_cron(cron_for_window(cadence or BATCH_CADENCE)).replace(
        "handled", requested_here()
    )
    if slower_deps:
        condition = condition.ignore(dg.AssetSelection.assets(*slower_deps))
    return condition


def requested_here() -> dg.AutomationCondition:
    """What consumes a cron tick for the batch layer: the automation's own request of the asset.

    Dagster's `since_last_handled` also counts a materialisation and the first evaluation, and
    sees a request or a materialisation only at the evaluation after it: a shard that landed late
    in one cycle was seen in the same evaluation as the next tick, which then went unanswered. A
    request alone carries its time, so a tick after it still counts.
    """
    return dg.AutomationCondition.newly_requested().with_label("requested")


def features_schedule(
    job: dg.UnresolvedAssetJobDefinition,
    asset_keys: Sequence[dg.AssetKey],
    checks_every_run: Sequence[dg.AssetCheckKey],
    first_build_job: str | None = None,
    cadence: timedelta | None = None,
) -> dg.ScheduleDefinition:
    """The batch's inputs, built by `job` in one run per batch cadence, at the tick the batch
    layer's condition waits on: it ranks once they are updated.

    The dbt tests (the asset checks of the features) run with the first build of each hour; the
    other builds run the models and `checks_every_run` only. Each test is three events in the run
    and two in the index: in the demo's instance a build's run file is 1.31 MB with the project's
    130 tests and 393 KB without (docs/scaling.md, "The Dagster instance").

    A schedule rather than automation conditions on those ~30 assets: the automation sensor stores
    the condition tree of every asset it evaluates, each evaluation (~5 KB an asset, ~40 MB a day
    for these at a 5-minute interval), where a schedule stores one tick (~1 KB).

    A tick is skipped while a run of `first_build_job` is unfinished: it builds these inputs
    itself, and a run beside it would wait for the warehouse, then fail to embed articles before
    the first text encoder exists.
    """

    @dg.schedule(
        name=f"{job.name}_schedule",
        job=job,
        cron_schedule=cron_for_window(cadence or BATCH_CADENCE),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="The batch's inputs once per batch cadence (derived from its freshness policy); "
        "the dbt tests with the first build of each hour.",
    )
    def build_batch_inputs(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        if first_build_job and context.instance.get_run_records(
            dg.RunsFilter(job_name=first_build_job, statuses=NOT_FINISHED_STATUSES), limit=1
        ):
            return dg.SkipReason(f"the `{first_build_job}` run is building the batch's inputs")
        if context.scheduled_execution_time.minute == 0:  # the hour's first tick of a */N cron
            return dg.RunRequest(tags={"newsrec/dbt_tests": "true"})
        return dg.RunRequest(
            asset_selection=list(asset_keys),
            asset_check_keys=list(checks_every_run),
            tags={"newsrec/dbt_tests": "false"},
        )

    return build_batch_inputs


def after_every_shard_condition() -> dg.AutomationCondition:
    """After the shards: once every shard's latest requested run has landed and one has landed
    since the last publish (whoever made it).

    Not tied to the cron tick: the automation requests the publish one evaluation after the
    shards (an unpartitioned asset does not share a run with its partitioned upstream), and a
    condition of "every shard updated since the latest tick" lost the cycle whenever the next tick
    came between those two evaluations. A dependency's condition holds for a downstream asset
    when any one of its partitions holds it, hence `~any_deps_match(~landed)`.

    "Since the last publish" counts the automation's request (a failed publish is not retried
    until a shard lands again) and the publish's own landing, so that a publish made outside the
    automation (the demo's first backfill, the UI) is not repeated. Both carry their times: a
    shard that landed after the publish still counts when the two are seen in one evaluation.
    """
    landed = dg.AutomationCondition.newly_updated().since(dg.AutomationCondition.newly_requested())
    shard_landed = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated())
    return (
        dg.AutomationCondition.in_latest_time_window()
        & shard_landed.since(requested_here())
        & shard_landed.since(dg.AutomationCondition.newly_updated().with_label("published"))
        & ~dg.AutomationCondition.any_deps_match(~landed)
        & ~dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested())
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("every shard's latest run landed")


def when_missing_and_ready() -> dg.AutomationCondition:
    """Build a never-built asset (partition) as soon as every input exists.

    Unlike `AutomationCondition.on_missing()`, which fires only for partitions that go missing
    after the condition was first evaluated, this also covers an asset that was missing from the
    start (a new deployment, the demo's first build). A failed attempt is not repeated on every
    evaluation: the cadence's next tick tries again.
    """
    return (
        dg.AutomationCondition.missing()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & ~dg.AutomationCondition.execution_failed()
    ).with_label("missing, with every input built")
