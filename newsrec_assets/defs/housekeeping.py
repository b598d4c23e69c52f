"""Run history retention: Dagster keeps every run and its events forever.

A daily job deletes the runs that finished more than `NEWSREC_RUN_RETENTION_DAYS` (default 30)
ago, with their events, so the instance's storage is bounded by the retention window times its
daily growth. Assets keep their latest materialisation in the UI only while the run that made it
is kept, so the window must outlast the slowest cadence (the weekly encoder). Sensor and
automation ticks are bounded by Dagster's own retention settings (`retention:` in
`deploy/dagster*.yaml`), automation evaluations by Dagster (30 days).

On the embedded SQLite instance the deleted events' pages are reused by later ones (the file does
not shrink); a home made before the one-file event log keeps an emptied ~120 KB file per deleted
run. The PostgreSQL instance of production frees everything.
"""

import os
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.storage.dagster_run import FINISHED_STATUSES

RUN_RETENTION_DAYS = float(os.getenv("NEWSREC_RUN_RETENTION_DAYS", "30"))


def delete_runs_finished_before(instance: dg.DagsterInstance, cutoff: datetime, batch: int = 200) -> int:
    """Delete the runs that finished before `cutoff`, with their events; how many."""
    deleted = 0
    while records := instance.get_run_records(
        filters=dg.RunsFilter(statuses=FINISHED_STATUSES, updated_before=cutoff), limit=batch
    ):
        for record in records:
            instance.delete_run(record.dagster_run.run_id)
        deleted += len(records)
    return deleted


@dg.op
def delete_old_runs(context: dg.OpExecutionContext) -> dg.Output[int]:
    """Deletes the runs (and their events) that finished more than the retention window ago."""
    cutoff = datetime.now(UTC) - timedelta(days=RUN_RETENTION_DAYS)
    deleted = delete_runs_finished_before(context.instance, cutoff)
    return dg.Output(deleted, metadata={"runs_deleted": deleted, "finished_before": cutoff.isoformat()})


@dg.job(
    description=f"Delete runs that finished more than {RUN_RETENTION_DAYS:g} days ago "
    "(NEWSREC_RUN_RETENTION_DAYS), with their events.",
    executor_def=dg.in_process_executor,
)
def prune_run_history():
    delete_old_runs()


prune_run_history_schedule = dg.ScheduleDefinition(
    job=prune_run_history,
    cron_schedule="17 3 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
