"""A real Dagster instance for crash tests: an instance yaml, a running daemon, launched runs.

`DagsterHarness(home, instance_yaml, overrides, workspace_module, env)` writes
`<home>/dagster.yaml` (the given instance yaml with `overrides` merged in, e.g. short monitoring
intervals), starts `dagster-daemon run` on a workspace with one code location, and launches runs
the way the UI does: through the instance's run coordinator and run launcher, whose code server
(a child of this process) starts each run worker. Any instance yaml works, so the production
instance (PostgreSQL storage) can run the same tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import pytest
import yaml
from dagster._core.storage.tags import ROOT_RUN_ID_TAG
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget

from newsrec_assets.settings import REPO_ROOT

T = TypeVar("T")
LOCATION = "faults"


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in overrides.items():
        result[key] = (
            merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return result


def wait_until(condition: Callable[[], T], timeout: float, what: str, every: float = 0.2) -> T:
    """The first truthy value of `condition()`, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class DagsterHarness:
    def __init__(
        self,
        home: Path,
        instance_yaml: Path,
        overrides: dict[str, Any],
        workspace_module: str,
        env: dict[str, str],
    ):
        self.home = home
        self.instance_yaml = instance_yaml
        self.overrides = overrides
        self.workspace_module = workspace_module
        self.env = env
        self._stack = ExitStack()
        self.daemon: subprocess.Popen | None = None

    # ---- set-up and tear-down
    def __enter__(self) -> DagsterHarness:
        self.home.mkdir(parents=True, exist_ok=True)
        settings = merged(yaml.safe_load(self.instance_yaml.read_text()), self.overrides)
        (self.home / "dagster.yaml").write_text(yaml.safe_dump(settings))
        workspace = self.home / "workspace.yaml"
        workspace.write_text(
            yaml.safe_dump(
                {
                    "load_from": [
                        {
                            "python_module": {
                                "module_name": self.workspace_module,
                                "location_name": LOCATION,
                                "working_directory": str(REPO_ROOT),
                            }
                        }
                    ]
                }
            )
        )
        environment = {**os.environ, **self.env, "DAGSTER_HOME": str(self.home)}
        # This process's code server and run workers read the same variables as the daemon's.
        patch = self._stack.enter_context(pytest.MonkeyPatch.context())
        for name, value in environment.items():
            patch.setenv(name, value)
        self._environment = environment
        self._start_daemon()
        self._stack.callback(self._stop_daemon)
        self.instance = self._stack.enter_context(dg.DagsterInstance.from_config(str(self.home)))
        self.workspace_file = workspace
        return self

    def __exit__(self, *exc_info) -> None:
        self._stack.close()

    def _start_daemon(self) -> None:
        bin_dir = Path(sys.executable).parent
        log = (self.home / "daemon.log").open("a")
        self._stack.callback(log.close)
        self.daemon = subprocess.Popen(
            [str(bin_dir / "dagster-daemon"), "run", "-w", str(self.home / "workspace.yaml")],
            env={**self._environment, "PATH": f"{bin_dir}{os.pathsep}{self._environment.get('PATH', '')}"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill_daemon(self) -> None:
        """SIGKILL the daemon and everything it started (its code servers share its session)."""
        os.killpg(self.daemon.pid, signal.SIGKILL)
        self.daemon.wait()

    def restart_daemon(self) -> None:
        self._start_daemon()

    def _stop_daemon(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            os.killpg(self.daemon.pid, signal.SIGTERM)
            try:
                self.daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.daemon.pid, signal.SIGKILL)
                self.daemon.wait()

    def daemon_log(self) -> str:
        return (self.home / "daemon.log").read_text()

    # ---- runs
    def launch(self, job_name: str, tags: dict[str, str] | None = None) -> str:
        """Create a run of `job_name` and submit it, as the UI's launch button does.

        Each launch gets its own code server (a child of this process, like the webserver's), so a
        test may kill a run's worker together with the server that started it.
        """
        from dagster._cli.job import _create_run

        workspace = self._stack.enter_context(
            WorkspaceProcessContext(self.instance, WorkspaceFileTarget(paths=[str(self.workspace_file)]))
        )
        context = workspace.create_request_context()
        location = context.get_code_location(LOCATION)
        [repository] = location.get_repositories().values()
        remote_job = repository.get_full_job(job_name)
        run = _create_run(
            instance=self.instance,
            code_location=location,
            remote_repo=repository,
            remote_job=remote_job,
            run_config={},
            tags=tags or {},
            op_selection=None,
            run_id=None,
        )
        return self.instance.submit_run(run.run_id, context).run_id

    def run(self, run_id: str) -> dg.DagsterRun:
        return self.instance.get_run_by_id(run_id)

    def wait_for_status(
        self, run_id: str, statuses: set[dg.DagsterRunStatus], timeout: float
    ) -> dg.DagsterRun:
        wanted = sorted(status.value for status in statuses)
        try:
            return wait_until(
                lambda: (run := self.run(run_id)) is not None and run.status in statuses and run,
                timeout,
                f"run {run_id} to reach {wanted}",
            )
        except TimeoutError as error:
            raise TimeoutError(f"{error}; daemon log:\n{self.daemon_log()[-3000:]}") from None

    def run_worker_pid(self, run_id: str) -> int | None:
        records = self.instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.RUN_START, limit=1
        ).records
        return records[0].event_log_entry.dagster_event.pid if records else None

    def has_event(self, run_id: str, event_type: dg.DagsterEventType) -> bool:
        return bool(self.instance.get_records_for_run(run_id, of_type=event_type, limit=1).records)

    def retries_of(self, run_id: str) -> list[dg.DagsterRun]:
        return list(self.instance.get_runs(filters=dg.RunsFilter(tags={ROOT_RUN_ID_TAG: run_id})))

    def pool_holders(self, pool: str) -> set[str]:
        """Ids of the runs holding a slot of `pool`, or waiting assigned to one."""
        info = self.instance.event_log_storage.get_concurrency_info(pool)
        return info.active_run_ids | info.assigned_run_ids
