"""The Feast peer: Feast's online feature server answering the lookup our API answers, for `bench.ab`.

A team without our serving layer would put precomputed lists in a feature store and read them from
its feature server. This module stands one up: Feast (the pinned version in
`bench/feast/requirements.lock`, in a venv of its own because its dependencies clash with the
project's lock) with a feature repo written to a temporary folder: one entity `user_id`, one
feature view `user_lists` with a user's article ids (`Array(String)`) and scores
(`Array(Float32)`) (`bench/feast/user_lists.py`), on the SQLite or the Redis online store. The
lists are written with Feast's `write_to_online_store` from pandas frames
(`bench/feast/load_lists.py`; ~15,000 users/s into SQLite here), then `feast serve` (gunicorn with
uvicorn workers) serves `POST /get-online-features` for one user, which the load generator sends
with the drawn user in the body.

Feast runs as well as its options allow: access log off, and gunicorn's periodic worker restarts
(`--max-requests`, 1,000 by default: a leak guard) off, so no restart pauses land in its tail. On
Redis the lists live under a fresh Feast project (Feast's keys end with the project name) and
`feast teardown` deletes them at `close()`; SQLite lives in the temporary folder.

    python -m bench.feast_peer feast-sqlite --users 1000   # load, serve, one lookup, tear down

Runs in the project's venv; Feast runs in `bench/feast/.venv` (`make bench-feast-setup`), or the
venv named by `NEWSREC_FEAST_VENV`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.common import REPO_ROOT, free_port, timed
from bench.endpoint import Server

BACKENDS = ("feast-sqlite", "feast-redis")
FEAST_DIR = Path(__file__).with_name("feast")
DEFAULT_VENV = FEAST_DIR / ".venv"
FEATURE_VIEW = "user_lists"
LIST_LENGTH = 50
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class LookupRequest:
    """One HTTP request per user: the body is `body_template % user_number` (printf, `%07ld`)."""

    method: str
    path: str
    body_template: str

    def body(self, user_number: int) -> bytes:
        return (self.body_template % user_number).encode()

    def loadgen_args(self) -> list[str]:
        """bench/loadgen.c's options sending this request for each drawn user."""
        return ["-m", self.method, "-p", self.path, "-b", self.body_template]


# The user ids are the endpoint benchmark's (`u0000042`), so the same draws hit the same users.
LOOKUP = LookupRequest(
    "POST",
    "/get-online-features",
    json.dumps(
        {
            "features": [f"{FEATURE_VIEW}:article_ids", f"{FEATURE_VIEW}:scores"],
            "entities": {"user_id": ["u%07ld"]},
        },
        separators=(",", ":"),
    ),
)


def redis_connection_string(url: str) -> str:
    """Feast's Redis `connection_string` (`host:port,db=N[,password=...]`) for a redis:// URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname:
        raise ValueError(f"{url!r}: the Feast peer takes a redis://host[:port][/db] URL")
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise ValueError(f"{url!r}: the database must be a number, not {db!r}")
    options = [f"{parts.hostname}:{parts.port or 6379}", f"db={db}"]
    if parts.password:
        options.append(f"password={urllib.parse.unquote(parts.password)}")
    return ",".join(options)


def feature_store_yaml(backend: str, project: str, redis_url: str = DEFAULT_REDIS_URL) -> str:
    """The feature repo's `feature_store.yaml`: a local registry file, and the backend's online store."""
    if backend == "feast-sqlite":
        online_store = {"type": "sqlite", "path": "online.db"}
    elif backend == "feast-redis":
        # One writer, the loader: no need for Feast's read-before-write timestamp check.
        online_store = {
            "type": "redis",
            "connection_string": redis_connection_string(redis_url),
            "skip_dedup": True,
        }
    else:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    config = {
        "project": project,
        "provider": "local",
        "registry": "registry.db",
        "online_store": online_store,
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }
    return yaml.safe_dump(config, sort_keys=False)


def lists_served(response: dict, list_length: int) -> bool:
    """Whether a `/get-online-features` response holds one user's full list and its scores."""
    names = response["metadata"]["feature_names"]
    by_name = dict(zip(names, response["results"], strict=True))
    ids, scores = by_name.get("article_ids"), by_name.get("scores")
    return (
        ids is not None
        and scores is not None
        and ids["statuses"] == ["PRESENT"]
        and scores["statuses"] == ["PRESENT"]
        and len(ids["values"][0]) == len(scores["values"][0]) == list_length
    )


class FeastServer(Server):
    """`feast serve` (gunicorn + uvicorn workers) in its own process group, driven like the API's
    uvicorn: the same readiness wait, CPU accounting and stop; the load generator sends `LOOKUP`."""

    HEALTH_PATH = "/health"

    def __init__(self, feast: Path, repo: Path, workers: int, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.workers = workers
        self.loop, self.http = "gunicorn", "uvicorn_worker"
        command = [
            str(feast), "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(workers), "--no-access-log", "--max-requests", "0",
        ]  # fmt: skip
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, cwd=repo, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def request_args(self) -> list[str]:
        return LOOKUP.loadgen_args()

    def post_json(self, user_number: int) -> dict:
        request = urllib.request.Request(
            self.url(LOOKUP.path),
            data=LOOKUP.body(user_number),
            method=LOOKUP.method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


class FeastPeer:
    """A Feast feature repo for `backend` in `work_dir`, filled with `users` lists, served on demand.

    `load()` applies the repo and writes the lists (returns the seconds the writes took); `serve()`
    starts a server; `close()` deletes the Redis keys (if any) and the folder.
    """

    def __init__(
        self,
        backend: str,
        users: int,
        work_dir: Path,
        *,
        list_length: int = LIST_LENGTH,
        redis_url: str = DEFAULT_REDIS_URL,
        venv: Path | None = None,
        seed: int = 0,
        log: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
    ) -> None:
        self.venv = Path(venv or os.getenv("NEWSREC_FEAST_VENV") or DEFAULT_VENV)
        if not (self.venv / "bin" / "feast").is_file():
            raise FileNotFoundError(
                f"no Feast in {self.venv}: run `make bench-feast-setup` (or set NEWSREC_FEAST_VENV)"
            )
        self.backend, self.users, self.list_length, self.seed, self.log = (
            backend,
            users,
            list_length,
            seed,
            log,
        )
        self.project = f"newsrec_bench_{os.getpid()}_{secrets.token_hex(3)}"
        self.config = feature_store_yaml(backend, self.project, redis_url)
        self.repo = Path(work_dir) / self.project
        self.load_seconds: float | None = None
        self._applied = False

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite online store file, for the harness to hold in RAM like the API's."""
        return self.repo / "online.db" if self.backend == "feast-sqlite" else None

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        # No usage telemetry; gunicorn's control socket in the repo, not in $HOME.
        return {**env, "FEAST_USAGE": "False", "XDG_RUNTIME_DIR": str(self.repo)}

    def _feast(self, *args: str) -> str:
        """Run a Feast CLI command in the repo; its stdout, or an error carrying its output."""
        done = subprocess.run(
            [str(self.venv / "bin" / "feast"), *args],
            cwd=self.repo,
            env=self._env(),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"feast {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return done.stdout

    def load(self) -> float:
        """Write and apply the feature repo, then fill the online store; the writes' seconds."""
        self.repo.mkdir(parents=True)
        (self.repo / "feature_store.yaml").write_text(self.config)
        shutil.copy(FEAST_DIR / "user_lists.py", self.repo / "user_lists.py")
        _, apply_seconds = timed(lambda: self._feast("apply"))
        self._applied = True
        self.log(f"feast: {self.backend} repo applied in {apply_seconds:.1f} s ({self.repo})")
        command = [
            str(self.venv / "bin" / "python"), str(FEAST_DIR / "load_lists.py"), "--repo", str(self.repo),
            "--users", str(self.users), "--list-length", str(self.list_length), "--seed", str(self.seed),
        ]  # fmt: skip
        # Progress lines pass through on stderr; the summary is the last stdout line.
        done = subprocess.run(command, cwd=self.repo, env=self._env(), stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"loading the Feast {self.backend} store failed ({done.returncode})")
        self.load_seconds = float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])
        self.log(f"feast: {self.users:,} lists written to {self.backend} in {self.load_seconds:.1f} s")
        return self.load_seconds

    def serve(self, workers: int, log_path: Path, env: dict[str, str] | None = None) -> FeastServer:
        """A ready `feast serve`, checked to answer the last user's full list."""
        server = FeastServer(
            self.venv / "bin" / "feast", self.repo, workers, {**self._env(), **(env or {})}, log_path
        )
        try:
            server.wait_ready()
            response = server.post_json(self.users - 1)
            if not lists_served(response, self.list_length):
                raise RuntimeError(f"Feast did not serve the last user's list: {json.dumps(response)[:1000]}")
        except BaseException:
            server.stop()
            raise
        return server

    def close(self) -> None:
        """Delete what the peer stored: the project's Redis keys (`feast teardown`) and the folder."""
        try:
            if self._applied and self.backend == "feast-redis":
                self._feast("teardown")
                self.log(f"feast: Redis keys of project {self.project} deleted")
        finally:
            self._applied = False
            shutil.rmtree(self.repo, ignore_errors=True)

    def __enter__(self) -> FeastPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.feast_peer", description=__doc__.split("\n\n")[0])
    parser.add_argument("backend", choices=BACKENDS)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--list-length", type=int, default=LIST_LENGTH)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / "var" / "feast-peer")
    args = parser.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    with FeastPeer(
        args.backend, args.users, args.work_dir, list_length=args.list_length, redis_url=args.redis_url
    ) as peer:
        peer.load()
        server = peer.serve(1, args.work_dir / f"{peer.project}-serve.log")
        try:
            user = args.users // 2
            response = server.post_json(user)
            assert lists_served(response, args.list_length), response
            print(
                f"Feast {args.backend}: {args.users:,} lists of {args.list_length} loaded in "
                f"{peer.load_seconds:.1f} s; {LOOKUP.method} {server.url(LOOKUP.path)} "
                f"{LOOKUP.body(user).decode()} -> {len(json.dumps(response)):,} bytes"
            )
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
