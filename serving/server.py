"""`python -m serving [--workers N]`: the API under uvicorn, each worker with a listener of its own.

`uvicorn --workers N` binds one socket that all workers accept from, and the worker whose event
loop wakes first accepts every connection then waiting. A client that keeps a few connections open
(a load balancer, the benchmark's 32) then lands mostly on one worker: 28 of 32 connections on one
of two workers was measured, that worker saturating its core while the other idled. Here every
worker binds the address itself with `SO_REUSEPORT`, and the kernel spreads new connections over
the workers by a hash of their addresses.

The parent process only supervises: it restarts a worker that dies, and stops them all on SIGINT
or SIGTERM; a worker whose parent is gone stops too. A worker that cannot start (the address is
taken, the app or its settings fail to load, its start-up fails) exits with uvicorn's status 3,
which stops the whole server with that status rather than restarting the worker forever. Access
logs are off unless `--access-log` (the metrics count requests; a log line per request costs CPU
on the hot path).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from multiprocessing.connection import wait

import uvicorn
from uvicorn.config import STARTUP_FAILURE

logger = logging.getLogger("uvicorn.error")
DEFAULT_APP = "serving.main:app"
STOP_SECONDS = 30.0  # a worker's graceful shutdown (open requests, the landing batchers' last flush)


def listener(host: str, port: int, shared: bool) -> socket.socket:
    """A TCP socket bound to `host:port`; `shared`: other processes may bind it too (`SO_REUSEPORT`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def serve_worker(
    app: str, host: str, port: int, log_level: str, access_log: bool, shared: bool = True
) -> None:
    """One worker process: its listener, one uvicorn server (uvloop and httptools when installed)."""
    config = uvicorn.Config(app, log_level=log_level, access_log=access_log)
    try:
        sock = listener(host, port, shared)
    except OSError as error:
        logger.error("cannot listen on %s:%s: %s", host, port, error)
        sys.exit(STARTUP_FAILURE)
    try:
        config.load()  # imports the app, which reads its settings
    except Exception:
        logger.exception("cannot load %s", app)
        sys.exit(STARTUP_FAILURE)
    if (parent := multiprocessing.parent_process()) is not None:
        threading.Thread(target=stop_with, args=(parent,), name="parent-watch", daemon=True).start()
    uvicorn.Server(config).run(sockets=[sock])


def stop_with(parent: multiprocessing.process.BaseProcess) -> None:
    """Shut this worker down gracefully once its supervisor is gone (killed with -9, say): an
    unsupervised worker would go on serving old code beside a restarted server's workers."""
    wait([parent.sentinel])
    os.kill(os.getpid(), signal.SIGTERM)


def serve(
    app: str, host: str, port: int, workers: int, log_level: str = "info", access_log: bool = False
) -> int:
    """Run `workers` worker processes until SIGINT or SIGTERM; the exit status."""
    if workers == 1:  # a port already taken is then an error, as with plain uvicorn
        serve_worker(app, host, port, log_level, access_log, shared=False)
        return 0
    spawn = multiprocessing.get_context("spawn")
    stopping: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: stopping.append(signum))

    def start() -> multiprocessing.process.BaseProcess:
        process = spawn.Process(
            target=serve_worker, args=(app, host, port, log_level, access_log), name="newsrec-api-worker"
        )
        process.start()
        return process

    processes = [start() for _ in range(workers)]
    status = 0
    while not stopping:
        wait([process.sentinel for process in processes], timeout=0.5)
        for index, process in enumerate(processes):
            if process.is_alive() or stopping:
                continue
            if process.exitcode == STARTUP_FAILURE:
                logger.error("worker %s could not start (exit %s); stopping", process.pid, process.exitcode)
                stopping.append(0)
                status = STARTUP_FAILURE
                break
            logger.warning("worker %s exited with %s; starting another", process.pid, process.exitcode)
            processes[index] = start()
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(STOP_SECONDS)
        if process.is_alive():
            process.kill()
            process.join()
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.split("\n\n")[0])
    parser.add_argument("app", nargs="?", default=DEFAULT_APP, help=f"ASGI app (default {DEFAULT_APP})")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes, e.g. one per core")
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return serve(args.app, args.host, args.port, args.workers, args.log_level, args.access_log)
