"""kill -9 of a run mid-step, with the shipped instance settings and a running dagster-daemon.

A run of the real ingestion asset, then of the real dbt build, is launched through the instance's
run launcher (MonitoredRunLauncher); mid-step, its worker process and the code server that
started it are SIGKILLed. Run monitoring must mark the run failed, its `duckdb_writer` slot must
be freed and the automatic retry must succeed; the warehouse must then hold every change once and
the marts the truth of tests/faults/world.py: nothing lost, nothing doubled. How long monitoring
and the slot took is reported in the scenario table, not asserted (the machine is shared).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psutil
import pytest

from newsrec_assets.defs.ingestion.assets import WAREHOUSE_WRITER_POOL
from newsrec_assets.resources.landing import LocalLandingZone
from newsrec_assets.resources.warehouse import DuckDBWarehouse
from newsrec_assets.run_launcher import RUN_WORKER_HOST_TAG
from newsrec_assets.settings import DAGSTER_INSTANCE_TEMPLATES, REPO_ROOT
from tests.faults.harness import DagsterHarness, wait_until
from tests.faults.location import PAUSED_MARKER
from tests.faults.observed import current_titles, stored_changes, tally, view_events
from tests.faults.world import FaultWorld, build_world

pytestmark = [pytest.mark.faults, pytest.mark.slow]

POLL_SECONDS = 1
# Short intervals for the test; everything else is the instance yaml under test.
TEST_OVERRIDES = {
    "run_monitoring": {"poll_interval_seconds": POLL_SECONDS, "free_slots_after_run_end_seconds": 1},
    # No automation: the only runs are the ones the test launches (and their retries).
    "auto_materialize": {"enabled": False, "use_sensors": False},
    "freshness": {"enabled": False},
}
INSTANCES = {"local": DAGSTER_INSTANCE_TEMPLATES["local"]}
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@dataclass
class CrashSetup:
    harness: DagsterHarness
    world: FaultWorld
    newsrec_home: Path
    faults_dir: Path


@pytest.fixture(scope="module", params=sorted(INSTANCES))
def crash(request, tmp_path_factory):
    home = tmp_path_factory.mktemp(f"crash-{request.param}")
    world = build_world()
    world.write(LocalLandingZone(home / "newsrec" / "landing"))
    world.write(LocalLandingZone(home / "newsrec" / "landing"), late=True)
    env = {
        "NEWSREC_HOME": str(home / "newsrec"),
        "NEWSREC_DUCKDB_PATH": str(home / "newsrec" / "warehouse.duckdb"),
        "NEWSREC_FAULTS_DIR": str(home),
        "DO_NOT_TRACK": "1",
    }
    # The code location reads the dbt manifest: make it match the models as they are now, parsed
    # with the runs' profile so that their builds can parse partially.
    subprocess.run(
        [str(os.path.join(os.path.dirname(sys.executable), "dbt")), "parse", "--quiet", "--target", "local"],
        cwd=REPO_ROOT / "dbt_project",
        env={**os.environ, **env, "DBT_PROFILES_DIR": str(REPO_ROOT / "dbt_project")},
        check=True,
    )
    with DagsterHarness(
        home / "dagster_home", INSTANCES[request.param], TEST_OVERRIDES, "tests.faults.location", env
    ) as harness:
        yield CrashSetup(harness, world, home / "newsrec", home)


def failure_message(harness: DagsterHarness, run_id: str) -> str:
    records = harness.instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    return " ".join(record.event_log_entry.message or "" for record in records)


def kill_mid_step(harness: DagsterHarness, run_id: str, mid_step: callable, what: str) -> dict:
    """SIGKILL the run's worker and the code server that started it once `mid_step()` holds.

    With its code server alive, a dead worker is reported by that server; with both gone (the
    machine's OOM killer, a crashed `dagster dev`), only run monitoring can fail the run.
    """
    launched_at = time.monotonic()
    wait_until(mid_step, 120, what)
    run = harness.run(run_id)
    assert run.status == dg.DagsterRunStatus.STARTED, run.status
    holds_slot = run_id in harness.pool_holders(WAREHOUSE_WRITER_POOL)
    worker = psutil.Process(harness.run_worker_pid(run_id))
    code_server = worker.parent()
    for process in (worker, code_server):
        os.kill(process.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    # Deadlines, not expectations: on a loaded 2-core machine the daemon's loops run late.
    failed = harness.wait_for_status(run_id, FINISHED, timeout=180)
    failed_after = time.monotonic() - killed_at
    wait_until(
        lambda: run_id not in harness.pool_holders(WAREHOUSE_WRITER_POOL), 180, "the pool slot to be freed"
    )
    freed_after = time.monotonic() - killed_at
    try:
        retry = wait_until(lambda: harness.retries_of(run_id), 180, "the automatic retry")[0]
    except TimeoutError as error:
        raise TimeoutError(f"{error}; daemon log:\n{harness.daemon_log()[-3000:]}") from None
    retried = harness.wait_for_status(retry.run_id, FINISHED, timeout=240)
    attempts = 1 + len(
        harness.instance.get_records_for_run(
            retry.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY
        ).records
    )
    print(
        f"{what}: reached after {killed_at - launched_at:.1f} s; failed {failed_after:.1f} s after the kill, "
        f"slot freed after {freed_after:.1f} s, retry done after {time.monotonic() - killed_at:.1f} s "
        f"({attempts} step attempts)"
    )
    by_monitoring = "Detected run worker status FAILED" in failure_message(harness, run_id)
    summary = (
        f"{'held' if holds_slot else 'did not hold'} the slot; worker host "
        f"{'tagged' if run.tags.get(RUN_WORKER_HOST_TAG) else 'unknown'}; {failed.status.value} "
        f"{'by run monitoring' if by_monitoring else 'not by run monitoring'}; "
        f"slot freed; automatic retry {retried.status.value}"
    )
    return {
        "summary": summary,
        "failed_after_s": round(failed_after, 1),
        "freed_after_s": round(freed_after, 1),
    }


def test_kill_9_during_ingestion_then_during_dbt(crash, scenarios):
    harness, world = crash.harness, crash.world
    warehouse = DuckDBWarehouse(crash.newsrec_home / "warehouse.duckdb", read_only=True)

    # ---- ingestion: stopped before its third file (the two before it committed one by one)
    ingest = harness.launch("ingest")
    ingest_outcome = kill_mid_step(
        harness, ingest, lambda: (crash.faults_dir / PAUSED_MARKER).exists(), "ingestion to reach its stop"
    )
    files = warehouse.scalar("select count(*) from raw.landing_files")
    stored = stored_changes(warehouse)
    quarantined = warehouse.scalar("select count(*) from raw.cdc_quarantine")

    # ---- dbt: killed once the build has materialised its first model
    features = harness.launch("features")
    dbt_outcome = kill_mid_step(
        harness,
        features,
        lambda: harness.has_event(features, dg.DagsterEventType.ASSET_MATERIALIZATION),
        "dbt to materialise its first model",
    )
    views = view_events(warehouse)
    articles = current_titles(warehouse)

    expected_outcome = (
        "held the slot; worker host tagged; FAILURE by run monitoring; slot freed; automatic retry SUCCESS"
    )
    for step, outcome in [("ingestion", ingest_outcome), ("dbt build", dbt_outcome)]:
        timings = (
            f"failed {outcome['failed_after_s']} s, slot freed {outcome['freed_after_s']} s after the kill"
        )
        scenarios.check(
            f"kill -9 of the run worker and its code server during {step} ({timings})",
            expected_outcome,
            outcome["summary"],
        )
    landed = len(world.files) + len(world.late_files)
    scenarios.check(
        "after the ingestion retry: files registered, changes stored, lines quarantined (once each)",
        (landed, world.distinct_changes, len(world.quarantine_reasons)),
        (files, stored, quarantined),
    )
    expected_views = Counter(world.views)
    scenarios.check(
        "after the dbt retry: view events (count, missing, invented)",
        (sum(expected_views.values()), 0, 0),
        tally(expected_views, views),
    )
    scenarios.check("after the dbt retry: current articles", world.articles, articles)
    scenarios.verify()
