"""`python -m serving`: workers with a listener each, supervised by the parent process.

The server runs as a real process tree on a free port against a seeded SQLite store; the tests
look at its workers' TCP connections with psutil.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bench.common import free_port, listening_processes
from tests.faults.harness import wait_until
from tests.test_api import seed, sqlite_settings, sqlite_stores

REPO_ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 60.0


def get(port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return 0
    finally:
        connection.close()


def workers(server: subprocess.Popen) -> list[psutil.Process]:
    """The server's live worker processes (multiprocessing's own helpers excluded)."""
    found = []
    for child in psutil.Process(server.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # exited meanwhile
            pass
    return found


def start_server(tmp_path: Path, port: int, n_workers: int, **extra_env: str) -> subprocess.Popen:
    settings = sqlite_settings(tmp_path)
    env = {
        **os.environ,
        "NEWSREC_STORE_BACKEND": "sqlite",
        "NEWSREC_SQLITE_PATH": str(settings.sqlite_path),
        "NEWSREC_LANDING_KIND": "local",
        "NEWSREC_LANDING_DIR": str(settings.landing_dir),
        **extra_env,
    }
    command = [sys.executable, "-m", "serving", "--port", str(port), "--workers", str(n_workers)]
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture
def seeded(tmp_path) -> Path:
    lists, articles = sqlite_stores(sqlite_settings(tmp_path))
    seed(lists, articles)
    lists.close()
    articles.close()
    return tmp_path


@pytest.fixture
def server(seeded) -> Iterator[tuple[subprocess.Popen, int]]:
    port = free_port()
    process = start_server(seeded, port, 2)
    try:
        wait_until(lambda: listening_processes(process.pid, port) == 2, DEADLINE_S, "two workers listening")
        wait_until(lambda: get(port, "/healthz") == 200, DEADLINE_S, "the server to answer")
        yield process, port
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """Stop the server and whatever workers it still has, gracefully if it answers SIGTERM."""
    if process.poll() is not None:
        return
    children = psutil.Process(process.pid).children(recursive=True)
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()


def established_on(worker: psutil.Process, port: int) -> int:
    """The worker's accepted connections on `port`."""
    try:
        connections = worker.net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return 0
    return sum(1 for c in connections if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port)


def test_every_worker_takes_connections_of_its_own(server):
    process, port = server
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(16)]
    try:
        # The kernel spreads connections over the workers' listeners by a hash of their addresses:
        # sixteen all on one worker has a chance of 2 in 65,536.
        per_worker = wait_until(
            lambda: (
                (counts := [established_on(w, port) for w in workers(process)])
                and sum(counts) == 16
                and counts
            ),
            DEADLINE_S,
            "16 accepted connections",
        )
        assert len(per_worker) == 2 and min(per_worker) > 0, per_worker
        assert get(port, "/v1/users/u000001/recommendations?k=3") == 200
    finally:
        for client in clients:
            client.close()


def test_a_worker_that_dies_is_replaced(server):
    process, port = server
    victim = workers(process)[0]
    victim.kill()
    wait_until(
        lambda: (
            victim.pid not in {w.pid for w in workers(process)}
            and listening_processes(process.pid, port) == 2
        ),
        DEADLINE_S,
        "a replacement worker listening",
    )
    wait_until(
        lambda: all(get(port, "/healthz") == 200 for _ in range(8)), DEADLINE_S, "both workers answering"
    )
    assert process.poll() is None


def test_sigterm_stops_the_server_and_its_workers(server):
    process, _ = server
    children = workers(process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


def test_a_worker_that_cannot_listen_stops_the_server(seeded):
    port = free_port()
    with socket.socket() as taken:  # bound without SO_REUSEPORT: the workers cannot share it
        taken.bind(("127.0.0.1", port))
        taken.listen()
        process = start_server(seeded, port, 2)
        output, _ = process.communicate(timeout=120)
    assert process.returncode == 3, output.decode()
    assert b"cannot listen on 127.0.0.1" in output


def test_a_worker_whose_app_cannot_load_stops_the_server(seeded):
    process = start_server(seeded, free_port(), 2, NEWSREC_DEFAULT_K="80", NEWSREC_MAX_K="50")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 3, output.decode()
    assert b"default_k (80) exceeds max_k (50)" in output


def test_workers_stop_when_their_supervisor_is_killed(server):
    process, port = server
    children = workers(process)
    process.kill()  # no chance to stop its workers itself
    process.wait(timeout=10)
    gone, alive = psutil.wait_procs(children, timeout=60)
    assert not alive, "workers went on serving without their supervisor"
    assert get(port, "/healthz") == 0
