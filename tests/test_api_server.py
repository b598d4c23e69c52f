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
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.test_api import seed, sqlite_settings, sqlite_stores

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


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
        wait_for(lambda: listening_workers(process, port) == 2, "two workers listening")
        wait_for(lambda: get(port, "/healthz") == 200, "the server to answer")
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


def on_port(process: psutil.Process, port: int, status: str) -> int:
    """How many of the process's TCP sockets on `port` are in `status`."""
    try:
        connections = process.net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return 0
    return sum(1 for c in connections if c.status == status and c.laddr.port == port)


def listening_workers(server: subprocess.Popen, port: int) -> int:
    return sum(1 for worker in workers(server) if on_port(worker, port, psutil.CONN_LISTEN))


def test_every_worker_takes_connections_of_its_own(server):
    process, port = server
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(16)]
    try:
        # The kernel spreads connections over the workers' listeners by a hash of their addresses:
        # sixteen all on one worker has a chance of 2 in 65,536.
        per_worker = wait_for(
            lambda: (
                (counts := [on_port(w, port, psutil.CONN_ESTABLISHED) for w in workers(process)])
                and sum(counts) == 16
                and counts
            ),
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
    wait_for(
        lambda: victim.pid not in {w.pid for w in workers(process)} and listening_workers(process, port) == 2,
        "a replacement worker listening",
    )
    wait_for(lambda: all(get(port, "/healthz") == 200 for _ in range(8)), "both workers answering")
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
