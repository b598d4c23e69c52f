"""Speed path: a view event lands, the speed-layer sensor runs, and the API serves the new list.

Needs a published batch in `$NEWSREC_HOME` (run `make demo` or `newsrec demo --no-serve` first).
It starts its own `dagster dev` (fresh DAGSTER_HOME, so the sensors start from the present) and the
API on free loopback ports, posts view events through `POST /v1/events` (which lands them as
change records), and polls `GET /v1/users/{id}/recommendations` until the list's layer is `speed`
and its watermark covers the event. Latency = list first served - event file landed. Events come
at the demo's live rate (2/s) by default; the Dagster instance's growth over the measured window is
extrapolated to a day (it counts every sensor and run of `dagster dev`, not only the speed layer's).

Standalone: `python -m bench.speed_path --events 100`.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.common import free_port

API_KEY = "bench-speed-path"


def _get(url: str, timeout: float = 2.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _post(url: str, body: dict) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-API-Key": API_KEY},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status


class Stack:
    """`dagster dev` and the API as child processes, stopped (whole process groups) on exit."""

    def __init__(self, home: Path, log_dir: Path):
        self.home, self.log_dir = home, log_dir
        self.ui_port, self.api_port = free_port(), free_port()
        self.children: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> Stack:
        from newsrec_assets.orchestration import instance_settings, service_commands, start_services

        self.dagster_home = dagster_home = Path(tempfile.mkdtemp(prefix="newsrec-speed-dagster-"))
        (dagster_home / "dagster.yaml").write_text(instance_settings(dagster_home))
        env = {
            "NEWSREC_HOME": str(self.home),
            "DAGSTER_HOME": str(dagster_home),
            "NEWSREC_API_KEYS": API_KEY,
            "TQDM_DISABLE": "1",
        }
        self.children = start_services(service_commands(self.ui_port, self.api_port), env, self.log_dir)
        return self

    def __exit__(self, *exc) -> None:
        from newsrec_assets.orchestration import stop_services

        stop_services(self.children, say=lambda _: None)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


def _instance_bytes(dagster_home: Path) -> dict[str, int]:
    """What the Dagster instance holds on disk, by part: the event log (`history/events`, or in
    an older home per-run files and their index), ticks and automation evaluations, captured logs
    (`storage/`)."""
    parts: dict[str, int] = {}
    for path in dagster_home.rglob("*"):
        if path.is_file():
            relative = path.relative_to(dagster_home)
            if relative.parts[:2] == ("history", "runs") and not relative.name.startswith("index"):
                part = "history/runs/<run>.db"
            elif relative.parts[0] == "storage":  # one folder per run
                part = "storage (captured logs)"
            else:
                part = "/".join(relative.parts[:2]).split("-")[0]
            parts[part] = parts.get(part, 0) + path.stat().st_size
    return parts


def _runs_by_job(dagster_home: Path, since: float) -> dict[str, int]:
    """Runs created after `since` (a timestamp), counted by job: the speed layer should add none."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_run_records(dg.RunsFilter(created_after=datetime.fromtimestamp(since, UTC)))
    counts: dict[str, int] = {}
    for record in runs:
        counts[record.dagster_run.job_name] = counts.get(record.dagster_run.job_name, 0) + 1
    return counts


def _now_ms() -> datetime:
    """Now, to the millisecond: the landing format's timestamp precision."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _served_after(stack: Stack, user_id: str, viewed_at: datetime, deadline: float) -> float | None:
    """Poll until the user's list is a speed-layer list covering `viewed_at`; the time it was seen.

    Checks at least once, even when `deadline` has already passed.
    """
    first = True
    while first or time.monotonic() < deadline:
        first = False
        try:
            body = _get(f"{stack.api}/v1/users/{user_id}/recommendations?k=10")
            provenance = body["provenance"]
            if (
                provenance["layer"] == "speed"
                and datetime.fromisoformat(provenance["watermark"]) >= viewed_at
            ):
                return time.monotonic()
        except OSError:
            pass
        time.sleep(0.05)
    return None


def measure(home: Path, events: int, spacing_s: float, log, timeout_s: float = 90.0, seed: int = 0) -> dict:
    """Run the stack, post `events` view events `spacing_s` apart, and return the latencies."""
    from newsrec_assets.domain.recommend import ServingSnapshot
    from newsrec_assets.resources.artifacts import LocalArtifactStore

    store = LocalArtifactStore(home / "artifacts")
    version = store.latest("serving_snapshot")
    if version is None:
        raise RuntimeError(
            f"no published batch in {home}: run `make demo` (or `newsrec demo --no-serve`) first"
        )
    snapshot = ServingSnapshot.load(store.fetch("serving_snapshot", version))
    rng = random.Random(seed)
    users = rng.sample(snapshot.user_ids.tolist(), events + 1)
    candidates = snapshot.article_ids[snapshot.candidate_rows].tolist()

    log_dir = Path(tempfile.mkdtemp(prefix="newsrec-speed-logs-"))
    latencies: list[float] = []
    missed = 0
    with Stack(home, log_dir) as stack:
        log(f"dagster dev on :{stack.ui_port}, API on :{stack.api_port}, logs in {log_dir}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                _get(f"{stack.api}/readyz")
                break
            except OSError:
                time.sleep(0.5)
        # Warm-up until one event is served: the daemon must start and the sensor tick once (its
        # first tick only sets the cursor, so events posted before it are not the speed layer's).
        log("warm-up events (wait for the daemon and the speed sensor's first tick)")
        warm = users.pop()
        deadline = time.monotonic() + 240
        while True:
            viewed_at = _now_ms()
            _post(
                f"{stack.api}/v1/events",
                {"user_id": warm, "article_id": rng.choice(candidates), "viewed_at": viewed_at.isoformat()},
            )
            if _served_after(stack, warm, viewed_at, time.monotonic() + 20) is not None:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no warm-up event was ever served; see {log_dir}")

        # One poller sweeps the pending users every 0.25 s: the load generator's own CPU must not
        # compete with the pipeline it measures (2 cores), and 0.25 s resolution is ample here.
        pending: dict[str, tuple[datetime, float]] = {}
        lock = threading.Lock()
        posting_done = threading.Event()

        def poll() -> None:
            nonlocal missed
            while not (posting_done.is_set() and not pending):
                with lock:
                    waiting = list(pending.items())
                for user_id, (viewed_at, landed) in waiting:
                    if _served_after(stack, user_id, viewed_at, time.monotonic()) is not None:
                        with lock:
                            latencies.append(time.monotonic() - landed)
                            del pending[user_id]
                    elif time.monotonic() - landed > timeout_s:
                        with lock:
                            missed += 1
                            del pending[user_id]
                time.sleep(0.25)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        instance_before = _instance_bytes(stack.dagster_home)
        posting_started, wall_started = time.monotonic(), time.time()
        for index, user_id in enumerate(users):
            viewed_at = _now_ms()
            _post(
                f"{stack.api}/v1/events",
                {
                    "user_id": user_id,
                    "article_id": rng.choice(candidates),
                    "viewed_at": viewed_at.isoformat(),
                },
            )
            with lock:  # the API returns once the change-record file is in place: it has landed
                pending[user_id] = (viewed_at, time.monotonic())
            if index % 10 == 9:
                log(f"{index + 1}/{len(users)} events posted, {len(latencies)} served so far")
            time.sleep(spacing_s)
        posting_done.set()
        poller.join(timeout_s + 10)
        measured_s = time.monotonic() - posting_started
        instance_after = _instance_bytes(stack.dagster_home)
        growth_by_part = {
            part: instance_after.get(part, 0) - instance_before.get(part, 0)
            for part in sorted(set(instance_before) | set(instance_after))
        }
        instance_growth = sum(growth_by_part.values())
        runs = _runs_by_job(stack.dagster_home, wall_started)
    values = np.array(latencies)
    return {
        "events": len(users),
        "served": len(latencies),
        "missed": missed,
        "p50_s": float(np.percentile(values, 50)) if len(values) else None,
        "p95_s": float(np.percentile(values, 95)) if len(values) else None,
        "max_s": float(values.max()) if len(values) else None,
        "mean_s": float(values.mean()) if len(values) else None,
        "spacing_s": spacing_s,
        "logs": str(log_dir),
        # instance growth over the whole measured window (every sensor, run and daemon, not only the
        # speed layer's), extrapolated to a day at this event rate
        "measured_s": measured_s,
        "events_per_s": len(users) / measured_s,
        "instance_growth_mb": instance_growth / 1e6,
        "instance_growth_mb_per_day": instance_growth / 1e6 * 86400 / measured_s,
        "instance_growth_mb_per_day_by_part": {
            part: round(grown / 1e6 * 86400 / measured_s, 1) for part, grown in growth_by_part.items()
        },
        "runs_by_job": runs,
    }


def run(ctx):
    from bench.report import Figure, Outcome
    from newsrec_assets.settings import local_paths

    home = Path(ctx.option("speed_path.home", str(local_paths().home)))
    events = ctx.size(100, 20, "speed_path.events")
    result = measure(home, events, ctx.option("speed_path.spacing_s", 0.5), ctx.log)
    return Outcome(
        figures=[
            Figure(
                f"event landed → list served, p50 over {result['served']} events",
                result["p50_s"],
                "s",
                4.0,
                "at_most",
            ),
            Figure(
                f"event landed → list served, p95 over {result['served']} events",
                result["p95_s"],
                "s",
                8.0,
                "at_most",
            ),
            Figure("events never served within 90 s", result["missed"], "events", 0, "at_most"),
            Figure(
                f"instance growth per day at {result['events_per_s']:.1f} events/s "
                f"(extrapolated from {result['measured_s'] / 60:.0f} min)",
                result["instance_growth_mb_per_day"],
                "MB",
                200.0,
                "at_most",
            ),
        ],
        details=result,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None, help="NEWSREC_HOME with a published batch")
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--spacing", type=float, default=0.5, help="seconds between events (0.5 = 2/s)")
    args = parser.parse_args()
    from newsrec_assets.settings import local_paths

    home = args.home or local_paths().home
    result = measure(home, args.events, args.spacing, lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
