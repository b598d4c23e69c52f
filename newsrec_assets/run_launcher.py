"""A run launcher whose runs' worker processes run monitoring can check on this host.

Dagster's `DefaultRunLauncher` starts each run in a process of the code location's gRPC server but
cannot tell the monitoring daemon whether that process is alive, so a run whose worker was killed
(`kill -9`, out of memory, a reboot) stays STARTED forever and keeps its concurrency-pool slot:
every later run in the `duckdb_writer` pool waits behind it. `MonitoredRunLauncher` launches the
same way and answers the health check from the worker's pid, which the run's RUN_START event
records. With run monitoring on (deploy/dagster.local.yaml), the daemon fails such a run within one poll
interval; `free_slots_after_run_end_seconds` then frees its slots, and run retries re-execute it.

A pid only means something on the host that ran the process, so each run is tagged with its
worker's host: by `launch_run` (when the code server is on this host: a loopback address or a unix
socket) or by whoever executes a run in its own process (`newsrec materialize` does). Runs whose
worker is elsewhere or unknown are reported as running; max_runtime_seconds is their backstop.

Needs no configuration:

    run_launcher:
      module: newsrec_assets.run_launcher
      class: MonitoredRunLauncher
"""

from __future__ import annotations

import json
import socket
from typing import Any

import psutil
from dagster import DagsterEventType, DagsterRun, DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG

RUN_WORKER_HOST_TAG = "newsrec/run_worker_host"
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
# The worker process exists before it reports RUN_START; a process created after that (plus clock
# granularity) merely reuses the dead worker's pid.
_PID_REUSE_SLACK_SECONDS = 1.0


def this_host() -> str:
    return socket.gethostname()


def worker_host_from_grpc_info(grpc_info: dict[str, Any]) -> str | None:
    """The host a gRPC code server runs its runs on, or None when it is not this one."""
    if "socket" in grpc_info or grpc_info.get("host") in _LOCAL_HOSTS:
        return this_host()
    return grpc_info.get("host")


def _process_status(pid: int, started_at: float | None) -> tuple[bool, str]:
    """Whether the run worker `pid` still runs, and what was found."""
    try:
        process = psutil.Process(pid)
        status, created_at = process.status(), process.create_time()
    except psutil.NoSuchProcess:
        return False, f"run worker process {pid} is gone"
    except psutil.AccessDenied:
        return True, f"run worker process {pid} exists (not ours to inspect)"
    if status == psutil.STATUS_ZOMBIE:
        return False, f"run worker process {pid} has exited (zombie)"
    if started_at is not None and created_at > started_at + _PID_REUSE_SLACK_SECONDS:
        return False, f"run worker process {pid} is gone (the pid now belongs to a newer process)"
    return True, f"run worker process {pid} is running"


class MonitoredRunLauncher(DefaultRunLauncher):
    """`DefaultRunLauncher` plus a run-worker health check for run monitoring (see module doc)."""

    def launch_run(self, context: LaunchRunContext) -> None:
        super().launch_run(context)
        run = self._instance.get_run_by_id(context.dagster_run.run_id)
        grpc_info = json.loads(run.tags.get(GRPC_INFO_TAG, "{}")) if run else {}
        host = worker_host_from_grpc_info(grpc_info)
        if run is not None and host is not None and RUN_WORKER_HOST_TAG not in run.tags:
            self._instance.add_run_tags(run.run_id, {RUN_WORKER_HOST_TAG: host})

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        # Monitoring fails a run on anything but RUNNING or SUCCESS: only a worker known dead is FAILED.
        host = run.tags.get(RUN_WORKER_HOST_TAG)
        if host != this_host():
            where = f"on {host}" if host else "on an unknown host"
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker {where}: not checked from here")
        records = self._instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.RUN_START, limit=1, ascending=False
        ).records
        event = records[0].event_log_entry if records else None
        if event is None or event.dagster_event is None or event.dagster_event.pid is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker has not reported its pid yet")
        alive, message = _process_status(event.dagster_event.pid, event.timestamp)
        return CheckRunHealthResult(
            WorkerStatus.RUNNING if alive else WorkerStatus.FAILED,
            message,
            run_worker_id=str(event.dagster_event.pid),
        )
