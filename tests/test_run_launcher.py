"""MonitoredRunLauncher tells run monitoring whether a run's worker process is still alive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import dagster as dg
import psutil
import pytest

from newsrec_assets.defs.ingestion.assets import WAREHOUSE_WRITER_POOL
from newsrec_assets.run_launcher import (
    RUN_WORKER_HOST_TAG,
    MonitoredRunLauncher,
    _process_status,
    this_host,
    worker_host_from_grpc_info,
)
from newsrec_assets.settings import DAGSTER_INSTANCE_TEMPLATES
from tests.conftest import fresh_postgres_database
from tests.faults.harness import wait_until

WORKER = textwrap.dedent(
    """
    import sys, time
    import dagster as dg

    home, marker, host = sys.argv[1:]

    @dg.asset
    def blocks() -> None:
        open(marker, "w").close()
        time.sleep(300)

    with dg.DagsterInstance.from_config(home) as instance:
        dg.materialize([blocks], instance=instance, tags={"newsrec/run_worker_host": host})
    """
)


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster.yaml").write_text(DAGSTER_INSTANCE_TEMPLATES["local"].read_text())
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        yield instance


def start_worker(instance, tmp_path, host: str) -> tuple[subprocess.Popen, dg.DagsterRun]:
    marker = tmp_path / f"started-{host}"
    worker = subprocess.Popen([sys.executable, "-c", WORKER, instance.root_directory, str(marker), host])
    wait_until(lambda: marker.exists() or worker.poll() is not None, 120, "the worker to start its step")
    assert worker.poll() is None, "the worker exited before its step started"
    [run] = [r for r in instance.get_runs() if r.tags.get(RUN_WORKER_HOST_TAG) == host]
    return worker, run


@pytest.mark.slow
def test_a_killed_run_worker_is_reported_failed_and_a_live_one_running(instance, tmp_path):
    launcher = instance.run_launcher
    assert isinstance(launcher, MonitoredRunLauncher) and launcher.supports_check_run_worker_health
    worker, run = start_worker(instance, tmp_path, this_host())
    assert run.status == dg.DagsterRunStatus.STARTED

    alive = launcher.check_run_worker_health(run)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    dead = launcher.check_run_worker_health(run)

    assert (alive.status.value, alive.run_worker_id) == ("RUNNING", str(worker.pid))
    assert dead.status.value == "FAILED" and f"process {worker.pid} is gone" in dead.msg


@pytest.mark.slow
def test_a_worker_on_another_host_is_not_judged_from_here(instance, tmp_path):
    worker, run = start_worker(instance, tmp_path, "another-host")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    health = instance.run_launcher.check_run_worker_health(run)
    assert health.status.value == "RUNNING" and "another-host: not checked" in health.msg


def test_a_reused_pid_is_not_taken_for_the_worker():
    me = psutil.Process()
    assert _process_status(me.pid, started_at=me.create_time() + 5) == (
        True,
        f"run worker process {me.pid} is running",
    )
    alive, message = _process_status(me.pid, started_at=me.create_time() - 60)
    assert not alive and "belongs to a newer process" in message


def test_the_worker_host_follows_the_code_server():
    assert worker_host_from_grpc_info({"host": "localhost", "port": 4000}) == this_host()
    assert worker_host_from_grpc_info({"socket": "/tmp/grpc.sock"}) == this_host()
    assert (
        worker_host_from_grpc_info({"host": "code-server.internal", "port": 4000}) == "code-server.internal"
    )


def test_the_instance_in_dagster_home_follows_the_shipped_settings(tmp_path, monkeypatch):
    from newsrec_assets.orchestration import ensure_dagster_home
    from newsrec_assets.settings import DAGSTER_INSTANCE_TEMPLATES

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # made before monitoring
    ensure_dagster_home()
    assert (tmp_path / "dagster.yaml").read_text().startswith(DAGSTER_INSTANCE_TEMPLATES["local"].read_text())
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
        assert isinstance(instance.run_launcher, MonitoredRunLauncher)


@dg.asset(pool=WAREHOUSE_WRITER_POOL)
def recorded_here() -> dg.MaterializeResult:
    """An asset in the pool the warehouse's writers share, whose runs the instance records."""
    return dg.MaterializeResult(metadata={"rows": 3})


def test_a_local_instance_keeps_its_event_log_in_one_sqlite_file(tmp_path, monkeypatch):
    from dagster._core.storage.event_log import ConsolidatedSqliteEventLogStorage

    from newsrec_assets.orchestration import EVENT_LOG_FOLDER, ensure_dagster_home

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.delenv("NEWSREC_DAGSTER_STORAGE", raising=False)
    ensure_dagster_home()
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.event_log_storage, ConsolidatedSqliteEventLogStorage)
        # The pools that keep DuckDB's writers apart need the storage's concurrency tables.
        assert instance.event_log_storage.supports_global_concurrency_limits
        for _ in range(2):
            assert dg.materialize([recorded_here], instance=instance).success
        materialisations = instance.fetch_materializations(recorded_here.key, limit=5).records
        assert [m.asset_materialization.metadata["rows"].value for m in materialisations] == [3, 3]
        run = instance.get_runs()[0]
        assert any(e.is_dagster_event for e in instance.all_logs(run.run_id))  # the run's own log
    assert [p.name for p in (tmp_path / EVENT_LOG_FOLDER).iterdir() if p.suffix == ".db"] == ["event_log.db"]
    assert not (tmp_path / "history" / "runs").exists()  # no file per run


def test_a_home_with_per_run_event_logs_keeps_reading_them(tmp_path, monkeypatch):
    from newsrec_assets.orchestration import ensure_dagster_home

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.delenv("NEWSREC_DAGSTER_STORAGE", raising=False)
    (tmp_path / "dagster.yaml").write_text(DAGSTER_INSTANCE_TEMPLATES["local"].read_text())
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:  # a home made before
        assert dg.materialize([recorded_here], instance=instance).success
    ensure_dagster_home()
    assert (tmp_path / "dagster.yaml").read_text() == DAGSTER_INSTANCE_TEMPLATES["local"].read_text()
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.fetch_materializations(recorded_here.key, limit=5).records  # its history


def test_the_local_instance_keeps_its_history_in_postgresql_when_asked(tmp_path, monkeypatch):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    from newsrec_assets.orchestration import ensure_dagster_home

    @dg.asset
    def recorded() -> None:
        """An asset whose run the instance records."""

    with fresh_postgres_database("newsrec_local_instance") as variables:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("NEWSREC_DAGSTER_STORAGE", "postgres")
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
        ensure_dagster_home()
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            assert isinstance(instance.run_storage, PostgresRunStorage)
            assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
            # The rest of the local settings stay: monitoring, retries, the pools, the launcher.
            assert instance.run_monitoring_enabled and instance.run_retries_enabled
            assert isinstance(instance.run_launcher, MonitoredRunLauncher)
            assert dg.materialize([recorded], instance=instance).success
            assert [run.job_name for run in instance.get_runs()] == ["__ephemeral_asset_job__"]
        assert not (tmp_path / "history").exists()  # no per-run SQLite files


def test_an_unknown_instance_storage_is_refused_by_name(tmp_path, monkeypatch):
    from newsrec_assets.orchestration import ensure_dagster_home

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("NEWSREC_DAGSTER_STORAGE", "mysql")
    with pytest.raises(ValueError, match="NEWSREC_DAGSTER_STORAGE must be 'sqlite' or 'postgres'"):
        ensure_dagster_home()
    assert not (tmp_path / "dagster.yaml").exists()
