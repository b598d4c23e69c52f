"""kill -9 of a run mid-step, with each shipped instance's settings and a running dagster-daemon.

Both instances are exercised: the embedded default (`dagster.yaml`, SQLite storage) and the prod
one (`deploy/dagster.yaml`: runs and events in PostgreSQL on this machine, compute logs in a GCS
emulator), with only the polling intervals shortened.

A run of the real ingestion asset, then of the real dbt build, is launched through the instance's
run launcher (MonitoredRunLauncher); mid-step, its worker process and the code server that
started it are SIGKILLed. Run monitoring must mark the run failed, its `duckdb_writer` slot must
be freed and the automatic retry must succeed; the warehouse must then hold every change once and
the marts the truth of tests/faults/world.py: nothing lost, nothing doubled. How long monitoring
and the slot took is reported in the scenario table, not asserted (the machine is shared).

The speed layer runs no run: its sensor writes lists inside the tick. There the daemon and the code
server evaluating the tick are SIGKILLed after the tick's first list write; after a restart the
same events are redone (the cursor had not moved) and every list converges.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import psutil
import pytest
from dagster._core.scheduler.instigation import InstigatorType

from newsrec_assets.defs.ingestion.assets import WAREHOUSE_WRITER_POOL
from newsrec_assets.domain.recommend import ServingSnapshot
from newsrec_assets.orchestration import instance_settings
from newsrec_assets.resources.artifacts import LocalArtifactStore
from newsrec_assets.resources.landing import LocalLandingZone
from newsrec_assets.resources.online_store.sqlite import SQLiteListStore
from newsrec_assets.resources.warehouse import DuckDBWarehouse
from newsrec_assets.run_launcher import RUN_WORKER_HOST_TAG
from newsrec_assets.settings import DAGSTER_INSTANCE_TEMPLATES, REPO_ROOT
from tests.conftest import first_view_record, fresh_postgres_database
from tests.faults.harness import DagsterHarness, wait_until
from tests.faults.location import PAUSED_MARKER
from tests.faults.observed import current_titles, stored_changes, tally, view_events
from tests.faults.speed_location import SPEED_PAUSED_MARKER
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
INSTANCES = DAGSTER_INSTANCE_TEMPLATES
LOG_BUCKET = "newsrec-crash-logs"
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def instance_yaml(profile: str, dagster_home: Path) -> Path:
    """The instance settings the product writes for `profile`: locally the template with the
    event log in one SQLite file under `dagster_home`."""
    if profile == "prod":
        return INSTANCES["prod"]
    written = dagster_home.parent / "local-instance.yaml"
    written.write_text(instance_settings(dagster_home))
    return written


@dataclass
class CrashSetup:
    harness: DagsterHarness
    world: FaultWorld
    newsrec_home: Path
    faults_dir: Path
    instance: str


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
    with ExitStack() as stack:
        if request.param == "prod":
            env |= stack.enter_context(fresh_postgres_database("newsrec_crash"))
            env |= prod_compute_log_bucket(request.getfixturevalue("storage_emulator"))
        # The code location reads the dbt manifest: make it match the models as they are now,
        # parsed with the runs' profile so that their builds can parse partially.
        subprocess.run(
            [
                str(os.path.join(os.path.dirname(sys.executable), "dbt")),
                "parse",
                "--quiet",
                "--target",
                "local",
            ],
            cwd=REPO_ROOT / "dbt_project",
            env={**os.environ, **env, "DBT_PROFILES_DIR": str(REPO_ROOT / "dbt_project")},
            check=True,
        )
        harness = stack.enter_context(
            DagsterHarness(
                home / "dagster_home",
                instance_yaml(request.param, home / "dagster_home"),
                TEST_OVERRIDES,
                "tests.faults.location",
                env,
            )
        )
        yield CrashSetup(harness, world, home / "newsrec", home, request.param)


def prod_compute_log_bucket(storage_emulator_host: str) -> dict[str, str]:
    """The prod instance's compute-log bucket, created in the GCS emulator; its variables."""
    from google.cloud import storage

    env = {
        "STORAGE_EMULATOR_HOST": storage_emulator_host,
        "GOOGLE_CLOUD_PROJECT": "newsrec-test",
        "NEWSREC_DAGSTER_LOG_BUCKET": LOG_BUCKET,
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        client = storage.Client(project=env["GOOGLE_CLOUD_PROJECT"])
        if client.lookup_bucket(LOG_BUCKET) is None:
            client.create_bucket(LOG_BUCKET)
    return env


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
            f"{crash.instance} instance: kill -9 of the run worker and its code server during {step} "
            f"({timings})",
            expected_outcome,
            outcome["summary"],
        )
    landed = len(world.files) + len(world.late_files)
    scenarios.check(
        f"{crash.instance} instance: after the ingestion retry: files registered, changes stored, "
        "lines quarantined (once each)",
        (landed, world.distinct_changes, len(world.quarantine_reasons)),
        (files, stored, quarantined),
    )
    expected_views = Counter(world.views)
    scenarios.check(
        f"{crash.instance} instance: after the dbt retry: view events (count, missing, invented)",
        (sum(expected_views.values()), 0, 0),
        tally(expected_views, views),
    )
    scenarios.check(
        f"{crash.instance} instance: after the dbt retry: current articles", world.articles, articles
    )
    scenarios.verify()


# ---- the speed layer: kill -9 of the daemon (and the code server evaluating the tick) mid-tick


@pytest.fixture(scope="module")
def speed_crash(tmp_path_factory):
    home = tmp_path_factory.mktemp("crash-speed")
    newsrec = home / "newsrec"
    store = LocalArtifactStore(newsrec / "artifacts")
    with tempfile.TemporaryDirectory() as folder:
        speed_snapshot().save(Path(folder))
        store.put("serving_snapshot", "v1", Path(folder))
    store.set_latest("serving_snapshot", "v1")
    env = {"NEWSREC_HOME": str(newsrec), "NEWSREC_FAULTS_DIR": str(home), "DO_NOT_TRACK": "1"}
    with DagsterHarness(
        home / "dagster_home",
        instance_yaml("local", home / "dagster_home"),
        TEST_OVERRIDES,
        "tests.faults.speed_location",
        env,
    ) as harness:
        yield CrashSetup(harness, None, newsrec, home, "local")


def speed_snapshot() -> ServingSnapshot:
    rng = np.random.default_rng(0)
    return ServingSnapshot(
        model_version="naml-faults",
        watermark=SPEED_BATCH_AT,
        article_ids=np.array([f"a{i}" for i in range(8)], dtype=object),
        news_vectors=rng.normal(size=(8, 4)).astype(np.float32),
        published_at_us=np.zeros(8, dtype=np.int64),
        candidate_rows=np.arange(8),
        candidate_priors=np.zeros(8, dtype=np.float32),
        user_ids=np.array(["u1", "u2", "u3"], dtype=object),
        history_rows=np.array([[0, -1], [1, -1], [2, 3]], dtype=np.int32),
        encoder_params={"proj_weight": np.ones((2, 4)), "proj_bias": np.zeros(2), "query": np.ones(2)},
    )


SPEED_BATCH_AT = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def speed_sensor_cursor(harness: DagsterHarness) -> str | None:
    for state in harness.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.name == "speed_layer_sensor" and state.instigator_data is not None:
            return state.instigator_data.cursor
    return None


def land_views(newsrec_home: Path, views: dict[str, tuple[str, datetime]]) -> None:
    """One landing file with one view per user, as the API lands a window of events."""
    lines = [
        first_view_record(user_id, article_id, viewed_at, position).to_json_line()
        for position, (user_id, (article_id, viewed_at)) in enumerate(views.items())
    ]
    moment = max(viewed_at for _, viewed_at in views.values())
    path = f"user_article_views/{moment:%Y-%m-%d}/api-{moment:%Y%m%dT%H%M%S%f}Z.jsonl"
    LocalLandingZone(newsrec_home / "landing").write_file(path, "\n".join(lines).encode() + b"\n")


def test_kill_9_of_the_daemon_during_a_speed_layer_tick(speed_crash, scenarios):
    harness, newsrec = speed_crash.harness, speed_crash.newsrec_home
    lists = SQLiteListStore(newsrec / "online_store.sqlite")
    first_cursor = wait_until(lambda: speed_sensor_cursor(harness), 180, "the speed sensor's first tick")

    viewed_at = datetime.now(UTC).replace(microsecond=0)
    views = {f"u{i}": (f"a{4 + i}", viewed_at + timedelta(milliseconds=i)) for i in (1, 2, 3)}
    land_views(newsrec, views)
    marker = speed_crash.faults_dir / SPEED_PAUSED_MARKER
    wait_until(marker.exists, 120, "the speed tick to stop after its first list write")
    paused_pid = int(wait_until(marker.read_text, 10, "the paused process's pid"))
    speed_lists_at_kill = sum(
        1 for user in views if (got := lists.get_recommendations(user)) and got.layer == "speed"
    )
    cursor_at_kill = speed_sensor_cursor(harness)
    harness.kill_daemon()
    if psutil.pid_exists(paused_pid):  # a code server outside the daemon's session
        os.kill(paused_pid, signal.SIGKILL)
    killed_at = time.monotonic()

    harness.restart_daemon()

    def converged() -> bool:
        served = [lists.get_recommendations(user) for user in views]
        return all(
            got is not None and got.layer == "speed" and got.watermark == views[user][1]
            for user, got in zip(views, served, strict=True)
        )

    try:
        wait_until(converged, 180, "every list to reflect its view after the restart")
    except TimeoutError as error:
        raise TimeoutError(f"{error}; daemon log:\n{harness.daemon_log()[-3000:]}") from None
    converged_after = time.monotonic() - killed_at
    cursor_after = wait_until(
        lambda: (cursor := speed_sensor_cursor(harness)) != first_cursor and cursor, 60, "the cursor to move"
    )
    print(f"speed tick: lists converged {converged_after:.1f} s after the kill")
    probe = lists.get_recommendations("u1")
    later = replace(probe, user_id="u-probe", watermark=probe.watermark + timedelta(seconds=1))
    writable = lists.put_recommendations(later).accepted  # a lock left held would time out here

    at_watermark = sum(1 for user in views if lists.get_recommendations(user).watermark == views[user][1])
    observed = [
        f"{speed_lists_at_kill} of 3 lists written at the kill",
        f"cursor {'not moved' if cursor_at_kill == first_cursor else 'moved'}; after the restart "
        f"{at_watermark} of 3 lists at their views' watermarks",
        f"cursor {'moved past the file' if cursor_after != first_cursor else 'stuck'}",
        f"store {'writable' if writable else 'refused a write'}",
        "a pool slot held" if harness.pool_holders(WAREHOUSE_WRITER_POOL) else "no pool slot held",
    ]
    scenarios.check(
        f"kill -9 of the daemon and its code server mid speed-layer tick "
        f"(lists converged {converged_after:.1f} s after the kill)",
        "1 of 3 lists written at the kill, cursor not moved; after the restart 3 of 3 lists at their "
        "views' watermarks, cursor moved past the file, store writable, no pool slot held",
        ", ".join(observed),
    )
    scenarios.verify()
