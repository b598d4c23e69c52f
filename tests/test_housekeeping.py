"""Run history retention deletes the runs that finished before the cutoff, and nothing else."""

from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.test_utils import create_run_for_test

from newsrec_assets.defs.housekeeping import delete_runs_finished_before, prune_run_history


def test_finished_runs_older_than_the_cutoff_are_deleted_with_their_events():
    with dg.instance_for_test() as instance:
        succeeded = create_run_for_test(instance, job_name="a", status=dg.DagsterRunStatus.SUCCESS)
        failed = create_run_for_test(instance, job_name="a", status=dg.DagsterRunStatus.FAILURE)
        running = create_run_for_test(instance, job_name="a", status=dg.DagsterRunStatus.STARTED)
        instance.report_engine_event("something happened", succeeded)
        now = datetime.now(UTC)

        assert delete_runs_finished_before(instance, now - timedelta(days=1)) == 0
        assert len(instance.get_runs()) == 3

        assert delete_runs_finished_before(instance, now + timedelta(minutes=1), batch=1) == 2
        assert [run.run_id for run in instance.get_runs()] == [running.run_id]
        assert not instance.all_logs(succeeded.run_id) and not instance.all_logs(failed.run_id)


def test_the_daily_job_keeps_runs_inside_the_retention_window():
    with dg.instance_for_test() as instance:
        kept = create_run_for_test(instance, job_name="a", status=dg.DagsterRunStatus.SUCCESS)
        result = prune_run_history.execute_in_process(instance=instance)
        assert result.success and result.output_for_node("delete_old_runs") == 0
        assert instance.get_run_by_id(kept.run_id) is not None
