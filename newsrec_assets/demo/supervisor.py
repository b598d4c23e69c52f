"""`newsrec demo`: start the services a newcomer needs, in the order that gets URLs up first.

1. Dagster (webserver + daemon) and the API start at once; the terminal shows their URLs.
2. The news app's history is simulated unless the landing folder holds one (a second demo reuses
   it); then `seed-popular` puts the popularity list in the online store, so the API serves it
   while nothing else is built.
3. The `initial_build` job is launched in Dagster for the assets never materialised (none on a
   second demo), so the lineage turns green in the UI; then a backfill of the batch layer (every
   user shard, then the publish) replaces the popularity list with the batch's lists, without
   waiting for the automation sensor's next evaluation (every 5 minutes). Automation and sensors
   keep everything current from there.
4. Once everything is built, the live app appends view events to the landing folder.

This process imports neither dagster nor torch (it stays small while the demo idles): children do
the work, Dagster is asked over HTTP, and every child's output goes to `$NEWSREC_HOME/logs/`.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from newsrec_assets.demo.dagster_client import DagsterClient, DagsterUnavailable, RunState
from newsrec_assets.orchestration import ensure_dagster_home, service_commands, start_services, stop_services
from newsrec_assets.settings import local_paths

LOCATION, INITIAL_BUILD_JOB = "newsrec", "initial_build"
BATCH_LAYER = [["batch_shard_lists"], ["batch_recommendations"]]
API_KEY_FILE = "api_key"
DEMO_USER = "u000001"
DEMO_TAG = ("newsrec/trigger", "demo")


@dataclass
class DemoOptions:
    users: int = 3000
    articles: int = 3000
    days: float = 7.0
    ui_port: int = 3000
    api_port: int = 8000
    live_rate: float = 2.0


@dataclass
class DemoState:
    """What the status shows; `render_status` turns it into lines."""

    ui_url: str
    api_url: str
    api_key: str
    key_file: Path
    log_dir: Path
    ui_ready: bool = False
    api_ready: bool = False
    history: str = "starting"
    serving: str = "nothing yet"
    live: str = "starts when the initial build is done"
    build: str = "waits for the history and Dagster"
    run_url: str | None = None
    steps: list[tuple[str, str, float | None]] = field(default_factory=list)  # name, status, seconds
    problem: str | None = None
    article_id: str = "ARTICLE_ID"  # a served article, once there is one: the curl is ready to paste


_MARK = {
    "SUCCESS": "done",
    "EARLIER": "built before",
    "FAILURE": "FAILED",
    "IN_PROGRESS": "running",
    "SKIPPED": "skipped",
}


def render_status(state: DemoState) -> list[str]:
    """The compact status: where to click, how to call the API, what is being built, where logs are."""
    api = state.api_url
    event = json.dumps({"user_id": DEMO_USER, "article_id": state.article_id})
    lines = [
        "newsrec demo (Ctrl-C stops everything)",
        f"  Dagster UI  {state.ui_url}  {'ready' if state.ui_ready else 'starting...'}",
        f"  API         {api}/docs  {'ready' if state.api_ready else 'starting...'}; serving {state.serving}",
        f"  API key     {state.api_key}  (also in {state.key_file})",
        f"  demo feed   {api}/demo?key={state.api_key}  (pick a user, click an article)",
        f"  a list      curl -s '{api}/v1/users/{DEMO_USER}/recommendations?k=5'",
        f"  a view      curl -s -X POST {api}/v1/events -H 'X-API-Key: {state.api_key}' \\",
        f"                -H 'Content-Type: application/json' -d '{event}'",
        f"  history     {state.history}",
        f"  live app    {state.live}",
        f"  build       {state.build}" + (f"  {state.run_url}" if state.run_url else ""),
    ]
    for name, status, seconds in state.steps:
        took = f" {seconds:.0f} s" if seconds is not None else ""
        lines.append(f"    {_MARK.get(status, 'waiting'):<12} {name}{took}")
    lines.append(f"  logs        {state.log_dir}/ (dagster, api, live, simulate, seed)")
    if state.problem:
        lines.append(f"  PROBLEM     {state.problem}")
    return lines


class StatusWriter:
    """On a terminal, redraws the status in place; otherwise prints each line that changed."""

    def __init__(self, out=None) -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self._shown: list[str] = []

    def show(self, lines: list[str]) -> None:
        if self.tty:
            up = f"\x1b[{len(self._shown)}F" if self._shown else ""
            self.out.write(up + "".join(f"\x1b[2K{line}\n" for line in lines) + "\x1b[J")
        else:
            changed = [line for line in lines if line not in self._shown]
            self.out.write("".join(f"{line}\n" for line in changed))
        self.out.flush()
        self._shown = lines


def api_key_for_demo(home: Path) -> tuple[str, Path]:
    """`NEWSREC_API_KEYS` if set, else the key saved by an earlier demo, else a new random one."""
    key_file = home / API_KEY_FILE
    key = os.environ.get("NEWSREC_API_KEYS")
    if not key:
        key = key_file.read_text().strip() if key_file.exists() else f"demo-{secrets.token_hex(8)}"
    home.mkdir(parents=True, exist_ok=True)
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    return key, key_file


def _get_json(url: str, timeout_s: float = 2.0) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return json.load(response)
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return None


class DemoSupervisor:
    def __init__(self, options: DemoOptions, writer: StatusWriter | None = None) -> None:
        self.options = options
        self.paths = local_paths()
        self.log_dir = self.paths.home / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        key, key_file = api_key_for_demo(self.paths.home)
        self.ui_url = f"http://127.0.0.1:{options.ui_port}"
        self.api_url = f"http://127.0.0.1:{options.api_port}"
        self.state = DemoState(self.ui_url, self.api_url, key, key_file, self.log_dir)
        self.writer = writer or StatusWriter()
        self.dagster = DagsterClient(self.ui_url)
        self.children: dict[str, subprocess.Popen] = {}
        self.run_id: str | None = None
        self._step_names: list[str] = []
        self.launches = 0
        self.built = False
        self.batch_requested = False
        self._api_checked = -math.inf
        self.started = time.monotonic()
        self.stopping = False
        self.events: dict[str, float] = {}  # milestone -> seconds since start (printed at the end)

    # -- children ---------------------------------------------------------------------------
    def _newsrec(self, *args: str) -> list[str]:
        return [str(Path(sys.executable).parent / "newsrec"), *args]

    def _start(self, name: str, command: list[str]) -> None:
        env = {"NEWSREC_API_KEYS": self.state.api_key, "NEWSREC_HOME": str(self.paths.home)}
        self.children.update(start_services({name: command}, env, log_dir=self.log_dir))

    def _milestone(self, name: str) -> None:
        self.events.setdefault(name, round(time.monotonic() - self.started, 1))

    # -- the phases -------------------------------------------------------------------------
    def run(self) -> int:
        ensure_dagster_home()
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGTERM, self._stop)
        commands = service_commands(self.options.ui_port, self.options.api_port)
        try:
            self._start("dagster", commands["dagster"])
            self._start("api", commands["api"])
            history_ready = self._has_history()
            if history_ready:
                self.state.history = f"reusing {self.paths.landing}"
            else:
                o = self.options
                self.state.history = f"simulating {o.users} users, {o.articles} articles, {o.days:g} days..."
                self._start(
                    "simulate",
                    self._newsrec(
                        "simulate", "--users", str(o.users), "--articles", str(o.articles),
                        "--days", str(o.days), "--at-least-once",
                    ),
                )  # fmt: skip
            seeded = False
            while not self.stopping:
                self._check_children()
                if not history_ready and self.children["simulate"].poll() == 0:
                    history_ready = True
                    self.state.history = f"simulated in {time.monotonic() - self.started:.0f} s"
                    self._milestone("history simulated")
                if history_ready and not seeded:
                    self.state.serving = "nothing yet (computing the popularity list...)"
                    self._show()
                    seeded = self._seed()
                    self.state.live = "starts when the initial build is done"
                if self.built and "live" not in self.children:
                    # not before: the speed layer needs the batch's published model and lists
                    rate = self.options.live_rate
                    self._start("live", self._newsrec("simulate", "--live", "--rate", str(rate)))
                    self.state.live = f"~{rate:g} view events/s into {self.paths.landing}"
                self._poll_api()
                self._poll_dagster(history_ready)
                self._show()
                time.sleep(1.0)
        finally:
            self._show()
            stop_services(self.children, say=lambda message: print(message, flush=True))
            print(f"milestones (s since start): {json.dumps(self.events)}", flush=True)
        return 0

    def _has_history(self) -> bool:
        landing = self.paths.landing
        return landing.exists() and any(landing.rglob("*.jsonl"))

    def _seed(self) -> bool:
        with open(self.log_dir / "seed.log", "w") as log:
            done = subprocess.run(self._newsrec("seed-popular"), stdout=log, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            self.state.problem = f"seed-popular failed: see {self.log_dir}/seed.log"
        return True

    def _poll_api(self) -> None:
        if not self.state.api_ready:
            if _get_json(f"{self.api_url}/healthz") is None:
                return
            self.state.api_ready = True
            self._milestone("API up")
        # every list served is an exposure the API logs to the landing zone: look every 10 s only
        if time.monotonic() - self._api_checked < 10:
            return
        self._api_checked = time.monotonic()
        answer = _get_json(f"{self.api_url}/v1/users/{DEMO_USER}/recommendations?k=5")
        if not answer or not answer.get("items"):
            return
        provenance = answer["provenance"]
        self.state.article_id = answer["items"][0]["article_id"]
        if provenance["layer"] == "cold_start":
            self.state.serving = "the popularity list (until a batch publishes)"
            self._milestone("API serves popularity list")
        else:
            layer, model = provenance["layer"], provenance["model_version"]
            self.state.serving = f"personalised lists ({layer} layer, model {model})"
            self._milestone("API serves personalised list")

    def _poll_dagster(self, history_ready: bool) -> None:
        try:
            if not self.state.ui_ready:
                if not self.dagster.ready():
                    return
                self.state.ui_ready = True
                self._milestone("Dagster UI up")
            if not history_ready:
                return
            if self.run_id is None:
                # an earlier launch whose answer timed out, or a run left by an earlier demo
                self.run_id = self.dagster.unfinished_run(INITIAL_BUILD_JOB, DEMO_TAG)
            if self.run_id is None:
                missing = self.dagster.unmaterialized_assets(LOCATION, INITIAL_BUILD_JOB)
                if not missing:
                    self.state.build = "everything built before: reusing it (automation keeps it fresh)"
                    self.run_id, self.built = "", True
                    return
                self.launches += 1
                self.run_id = self.dagster.launch(LOCATION, INITIAL_BUILD_JOB, missing, dict([DEMO_TAG]))
                self._milestone("initial build launched")
            if self.built and not self.batch_requested:
                self._request_batch_layer()
            if self.run_id:
                if not self._step_names:
                    self.state.run_url = f"{self.ui_url}/runs/{self.run_id}"
                    self._step_names = self.dagster.job_steps(LOCATION, INITIAL_BUILD_JOB)
                self._follow(self.dagster.run_state(self.run_id))
        except DagsterUnavailable:
            return

    def _request_batch_layer(self) -> None:
        """A backfill of the batch layer, unless the automation has built part of it: its conditions
        build never-built shards, then the publish, once their inputs exist (often while the
        initial build's last step runs), and a backfill beside them would rank the shards twice."""
        self.batch_requested = True
        if len(self.dagster.unmaterialized(BATCH_LAYER)) < len(BATCH_LAYER):
            return
        self.dagster.launch_backfill(BATCH_LAYER, dict([DEMO_TAG]))
        self._milestone("batch layer backfill launched")

    def _follow(self, run: RunState) -> None:
        by_key = {step.key: step for step in run.steps}
        names = [n for n in self._step_names if n in by_key] + [
            n for n in self._step_names if n not in by_key
        ]
        finished = run.status in ("SUCCESS", "FAILURE", "CANCELED")
        # a run for what was missing leaves out what an earlier run built
        absent = "EARLIER" if finished else "NOT_STARTED"
        self.state.steps = [
            (n, by_key[n].status, by_key[n].seconds) if n in by_key else (n, absent, None) for n in names
        ]
        done = sum(1 for _, status, _ in self.state.steps if status in ("SUCCESS", "EARLIER"))
        self.state.build = f"initial_build run: {run.status.lower()}, {done}/{len(names)} steps done"
        if run.status == "SUCCESS":
            self.built = True
            self._milestone("initial build done")
        elif run.status in ("FAILURE", "CANCELED") and self.launches < 2:
            # e.g. a run an earlier demo left when it was stopped: build what is missing once more
            self.run_id, self._step_names, self.state.run_url = None, [], None
        elif run.status in ("FAILURE", "CANCELED"):
            self.state.problem = f"the initial build failed: see {self.state.run_url}"

    def _check_children(self) -> None:
        for name, child in self.children.items():
            code = child.poll()
            if code is not None and name != "simulate":
                self.state.problem = f"{name} exited with {code}: see {self.log_dir}/{name}.log"
                self.stopping = True
            elif name == "simulate" and code not in (None, 0):
                self.state.problem = f"the simulation failed: see {self.log_dir}/simulate.log"
                self.stopping = True

    def _show(self) -> None:
        lines = render_status(self.state)
        self.writer.show(lines)
        # the whole status, also for a terminal that only got the changed lines
        (self.log_dir / "status.txt").write_text("\n".join(lines) + "\n")

    def _stop(self, *_: object) -> None:
        self.stopping = True
