"""What every benchmark shares: the run context, progress output, CPU accounting, timing helpers."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback TCP port nobody listens on now, for a server the benchmark starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_processes(pid: int, port: int) -> int:
    """How many of process `pid` and its descendants listen on TCP `port`: a server's workers that
    accept connections (psutil)."""
    import psutil

    root = psutil.Process(pid)
    listening = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            sockets = process.net_connections(kind="tcp")
        except psutil.Error:  # exited meanwhile
            continue
        listening += any(s.status == psutil.CONN_LISTEN and s.laddr.port == port for s in sockets)
    return listening


def default_cache_dir() -> Path:
    """Where slow-to-build inputs (the filled online store, the compiled load generator) are kept."""
    return Path(os.getenv("NEWSREC_BENCH_CACHE", Path(tempfile.gettempdir()) / "newsrec-bench" / "cache"))


@dataclass
class Context:
    """What a benchmark gets: the size profile, folders, and the progress printer.

    `quick` selects small sizes (a couple of minutes for everything, used by the test suite);
    `options` carries per-benchmark overrides from the command line (`--set name.key=value`).
    """

    quick: bool = False
    cache_dir: Path = field(default_factory=default_cache_dir)
    work_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="newsrec-bench-")))
    options: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    verbose: bool = True
    _started: float = field(default_factory=time.perf_counter)

    def log(self, message: str) -> None:
        """One progress line on stderr, with the time since the run started."""
        if self.verbose:
            elapsed = time.perf_counter() - self._started
            print(f"[bench {elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)

    def option(self, name: str, default: T, cast: Callable[[str], T] | None = None) -> T:
        """A `--set` override, cast like the default (`int`, `float`, `str`)."""
        if name not in self.options:
            return default
        raw = self.options[name]
        if cast is not None:
            return cast(raw)
        if isinstance(default, bool):
            return raw.lower() in ("1", "true", "yes", "on")  # type: ignore[return-value]
        return type(default)(raw) if default is not None else raw  # type: ignore[return-value]

    def size(self, full: T, quick: T, name: str | None = None) -> T:
        """The full or quick size, unless `--set <name>=...` overrides it."""
        value = quick if self.quick else full
        return self.option(name, value) if name else value


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """Call fn; return its result and the wall seconds it took."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """The fastest of `repeats` calls, in seconds (the least disturbed by other tenants)."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


# ---------------------------------------------------------------------------------------------
# CPU accounting: how busy the machine was, and how much of that was someone else.

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def process_tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process and its live descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2 :].split()
        ppid = int(rest[1])
        children.setdefault(ppid, []).append(int(entry))
        times[int(entry)] = (int(rest[11]) + int(rest[12])) / _CLK_TCK
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        total += times.get(current, 0.0)
        stack.extend(children.get(current, []))
    return total


class CpuMonitor:
    """Machine CPU use during a block, split into this benchmark's processes and everyone else's.

    `ours` counts this process and every child it has waited for (os.times), plus the live
    process trees registered with `track(pid)` (servers that are still running at `stop`).
    """

    def __init__(self) -> None:
        self.cores = os.cpu_count() or 1
        self._tracked: dict[int, float] = {}
        self._start: tuple[tuple[int, int], float, float] | None = None
        self.result: dict[str, float] = {}

    def _own(self) -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def start(self) -> CpuMonitor:
        self._start = (_machine_ticks(), self._own(), time.perf_counter())
        self.result = {}
        return self

    def track(self, pid: int) -> None:
        self._tracked[pid] = process_tree_cpu_seconds(pid)

    def tracked_delta(self) -> float:
        return sum(process_tree_cpu_seconds(pid) - before for pid, before in self._tracked.items())

    def stop(self) -> dict[str, float]:
        assert self._start is not None, "start() first"
        (busy0, total0), own0, wall0 = self._start
        busy1, total1 = _machine_ticks()
        wall = time.perf_counter() - wall0
        machine_busy = (busy1 - busy0) / _CLK_TCK
        ours = self._own() - own0 + self.tracked_delta()
        capacity = wall * self.cores
        self.result = {
            "wall_s": wall,
            "machine_busy_cores": machine_busy / wall if wall else 0.0,
            "ours_cores": ours / wall if wall else 0.0,
            "others_cores": max(0.0, machine_busy - ours) / wall if wall else 0.0,
            "others_share": max(0.0, machine_busy - ours) / capacity if capacity else 0.0,
            "total_ticks": float(total1 - total0),
        }
        return self.result


@contextmanager
def cpu_monitor() -> Iterator[CpuMonitor]:
    monitor = CpuMonitor().start()
    try:
        yield monitor
    finally:
        monitor.stop()


def load_average() -> tuple[float, float, float]:
    with open("/proc/loadavg") as fh:
        one, five, fifteen = fh.read().split()[:3]
    return float(one), float(five), float(fifteen)


class Phases:
    """Wall time and other processes' CPU use per named phase of a benchmark.

    On a shared machine a phase that ran while someone else kept a core busy can be several
    times slower (torch's thread pool stalls when one of its threads is descheduled); this
    table says which figures were taken under such contention.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, float | str]] = []

    def run(self, name: str, fn: Callable[[], T]) -> tuple[T, float]:
        monitor = CpuMonitor().start()
        result, seconds = timed(fn)
        usage = monitor.stop()
        self.rows.append({"phase": name, "seconds": seconds, **usage})
        return result, seconds

    def table(self) -> tuple[list[str], list[list[Any]]]:
        header = ["phase", "seconds", "our cores", "other processes' cores"]
        rows = [
            [r["phase"], r["seconds"], round(float(r["ours_cores"]), 2), round(float(r["others_cores"]), 2)]
            for r in self.rows
        ]
        return header, rows


def wait_for_quiet(
    ctx: Context, max_wait_s: float, threshold_cores: float = 0.25, window_s: float = 3.0
) -> float:
    """Wait (at most `max_wait_s`) until other processes use under `threshold_cores` for a window.

    A shared machine's other tenants can take a whole core for minutes; starting a benchmark in
    such a burst makes its figures meaningless. Returns the seconds waited.
    """
    if max_wait_s <= 0:
        return 0.0
    start = time.perf_counter()
    while True:
        monitor = CpuMonitor().start()
        time.sleep(window_s)
        others = monitor.stop()["others_cores"]
        waited = time.perf_counter() - start
        if others < threshold_cores:
            return waited
        if waited >= max_wait_s:
            ctx.log(f"machine still busy ({others:.2f} cores used by others) after {waited:.0f} s; going on")
            return waited
        ctx.log(f"waiting for a quieter machine: other processes use {others:.2f} cores")
