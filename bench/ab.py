"""`python -m bench.ab VARIANT ...`: endpoint variants against the bare app, in interleaved rounds.

The endpoint benchmark answers "where do we stand"; this answers "is this change better", on a
machine whose noise moves a p99 by 2x between minutes. Each round serves the bare ASGI app, then
every variant in turn, under the same fixed-rate load as the benchmark (bench/loadgen.c, 32
connections, users drawn uniformly); a variant's ratio in a round is its p99 over that round's
bare p99, and the summary gives the median over rounds. The stores are the benchmark's: the SQLite
file from its cache, Redis filled under a fresh prefix that is deleted at the end.

A variant is `NAME=BACKEND[@CHECKOUT][,ENV=VALUE...]`: the API on `sqlite` or `redis`, served from
another checkout (a `git worktree` of the code to compare, with whatever its install builds) and
with extra environment variables, or the bare app itself (`bare`) with other
settings, e.g.

    python -m bench.ab --rounds 4 now=redis before=redis@/tmp/wt-before
    python -m bench.ab now=sqlite nolog=sqlite,NEWSREC_LOG_EXPOSURES=false
    python -m bench.ab cpu50=bare,NEWSREC_BENCH_BARE_CPU_US=50 cpu100=bare,NEWSREC_BENCH_BARE_CPU_US=100
    python -m bench.ab --capacity raw=bare fastapi=bare,NEWSREC_BENCH_BARE_FRAMEWORK=fastapi

(the third: how the bare app's tail grows with CPU spent per request; the last: the capacity of
the same lookup as a raw ASGI app and behind one FastAPI route, `bench.bare_app`).

`feast-sqlite` and `feast-redis` are the peer a user would otherwise reach for: Feast's feature
server answering one user's 50-item list and scores from its SQLite or Redis online store
(`bench.feast_peer`; needs `make bench-feast-setup`), loaded with the same users and served with
the same worker count. Our API returns k items (10 by default): `NEWSREC_DEFAULT_K=50` in a
variant's settings asks it for as many as Feast returns. `--rate 1000,2000` measures each rate in
turn on the same server; `--capacity` then searches each variant's capacity, the highest offered
rate it serves at p99 <= `--capacity-p99-ms` with nothing failed, e.g.

    python -m bench.ab --rate 1000,2000 --capacity api=sqlite,NEWSREC_DEFAULT_K=50 feast=feast-sqlite

Servers run uvicorn with uvloop and httptools, the bare app included; `UVICORN_HTTP` in a
variant's settings picks another `--http` for that variant (an older checkout's own protocol).

The tables are printed; `--markdown BENCHMARKS.md` also writes them, with the command line and the
date, into that file's `ab` section, which `python -m bench` keeps when it rewrites the file.
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench import endpoint, feast_peer
from bench.common import REPO_ROOT, Context
from bench.report import markdown_table, write_marked_section

BACKENDS = ("sqlite", "redis", "bare", *feast_peer.BACKENDS)
# A capacity probe's p99 rests on at least this many requests (it runs longer at low rates), and
# no probe goes below the floor: on a shared machine one descheduling stall is a p99 of a few
# hundred requests, and the search would chase it down to a rate that means nothing.
CAPACITY_MIN_REQUESTS = 1000
CAPACITY_FLOOR_RPS = 100.0


@dataclass(frozen=True)
class Variant:
    """One server to compare: the API on a backend (or the bare app), from a checkout, with extra
    settings."""

    name: str
    backend: str
    checkout: Path = REPO_ROOT
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> Variant:
        """`NAME=BACKEND[@CHECKOUT][,ENV=VALUE...]` (see the module docstring)."""
        name, sep, rest = spec.partition("=")
        if not sep or not name or name == "bare":
            raise ValueError(f"{spec!r}: expected NAME=BACKEND[@CHECKOUT][,ENV=VALUE...], NAME not 'bare'")
        target, *settings = rest.split(",")
        backend, _, checkout = target.partition("@")
        if backend not in BACKENDS:
            raise ValueError(f"{spec!r}: backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        env = {}
        for setting in settings:
            key, sep, value = setting.partition("=")
            if not sep or not key:
                raise ValueError(f"{spec!r}: {setting!r} is not ENV=VALUE")
            env[key] = value
        if checkout and backend in feast_peer.BACKENDS:
            raise ValueError(f"{spec!r}: a Feast peer is not served from a checkout")
        path = Path(checkout).resolve() if checkout else REPO_ROOT
        if checkout and not (path / "serving" / "main.py").is_file():
            raise ValueError(f"{spec!r}: {path} is not a newsrec checkout (no serving/main.py)")
        return cls(name, backend, path, env)


@dataclass
class Measured:
    """One server's run in one round."""

    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    failed: int


def summary_rows(results: dict[str, list[Measured]]) -> list[list[object]]:
    """Per target: median p50, p99, CPU per request, and the median of per-round p99 ratios to bare."""
    bare = results["bare"]
    rows: list[list[object]] = []
    for name, runs in results.items():
        ratios = [run.p99_ms / floor.p99_ms for run, floor in zip(runs, bare, strict=True)]
        rows.append(
            [
                name,
                round(statistics.median(r.p50_ms for r in runs), 3),
                round(statistics.median(r.p99_ms for r in runs), 3),
                round(statistics.median(r.cpu_us_per_request for r in runs)),
                round(statistics.median(ratios), 2),
                " / ".join(f"{ratio:.2f}" for ratio in ratios),
                sum(r.failed for r in runs),
            ]
        )
    return rows


def highest_rate_within(
    passes: Callable[[float], bool],
    start: float,
    resolution: float = 0.1,
    ceiling: float = 200_000.0,
    floor: float = 1.0,
) -> float:
    """The highest offered rate (req/s) at which `passes` holds, within `resolution` (relative).

    Doubles from `start` while it passes (halves while it fails), then bisects geometrically
    between the highest pass and the lowest fail; 0 if no rate from `floor` up passes.
    """
    rate = round(start)
    if passes(rate):
        passed, failed = rate, None
        while failed is None and passed < ceiling:
            rate = round(min(2 * passed, ceiling))
            passed, failed = (rate, None) if passes(rate) else (passed, rate)
        if failed is None:
            return float(passed)
    else:
        passed, failed = None, rate
        while passed is None:
            if failed / 2 < floor:
                return 0.0
            rate = round(failed / 2)
            passed, failed = (rate, failed) if passes(rate) else (None, rate)
    while failed / passed > 1 + resolution:
        rate = round(math.sqrt(passed * failed))
        if rate in (passed, failed):
            break
        passed, failed = (rate, failed) if passes(rate) else (passed, rate)
    return float(passed)


def search_capacity(
    ctx: Context, loadgen: Path, server: endpoint.Server, args: argparse.Namespace, name: str, seed: int
) -> float:
    """A running server's capacity: the highest offered rate served at p99 <= args.capacity_p99_ms
    with nothing failed, searched from the highest fixed rate."""

    def within(rate: float) -> bool:
        duration = max(args.duration, CAPACITY_MIN_REQUESTS / rate)
        run = endpoint.drive(loadgen, server, args.users, rate, args.warmup, duration, seed)
        p99_ms, failed = run["latency_us"]["p99"] / 1000, endpoint.failed_requests(run)
        ctx.log(f"ab: {name} at {rate:,.0f} req/s: p99 {p99_ms:.2f} ms, {failed} failed")
        return p99_ms <= args.capacity_p99_ms and failed == 0

    capacity = highest_rate_within(within, max(args.rate), floor=CAPACITY_FLOOR_RPS)
    ctx.log(f"ab: {name}: capacity {capacity:,.0f} req/s")
    return capacity


def summary_tables(
    args: argparse.Namespace,
    results: dict[float, dict[str, list[Measured]]],
    capacities: dict[str, list[float]],
    loads: list[list[object]],
) -> list[tuple[str, str]]:
    """A run's findings as (caption, Markdown table) pairs: what `main` prints and `--markdown` writes."""
    header = ["target", "p50 ms", "p99 ms", "CPU µs/req", "p99 / bare", "per round", "failed"]
    tables = [
        (
            f"{args.rounds} interleaved rounds, {rate:,.0f} req/s, {args.users:,} users, "
            f"{args.workers} worker(s), {args.warmup:g}+{args.duration:g} s per run; medians over rounds",
            markdown_table(header, summary_rows(results[rate])),
        )
        for rate in args.rate
    ]
    if args.capacity:
        caption = (
            f"Capacity: the highest offered rate served at p99 <= {args.capacity_p99_ms:g} ms with nothing "
            f"failed (searched from {max(args.rate):,.0f} req/s, to within 10 %; 0: not even "
            f"{CAPACITY_FLOOR_RPS:,.0f} req/s); median over rounds"
        )
        rows = [[name, statistics.median(found), " / ".join(f"{c:,.0f}" for c in found)]
                for name, found in capacities.items()]  # fmt: skip
        tables.append((caption, markdown_table(["target", "capacity req/s", "per round"], rows)))
    if loads:
        tables.append(("Store loads", markdown_table(["store", "users", "seconds", "when"], loads)))
    return tables


def write_markdown(path: Path, command: str, finished: datetime, tables: list[tuple[str, str]]) -> None:
    """The run's tables as the `ab` section of `path` (BENCHMARKS.md), in place of an earlier one;
    `python -m bench` keeps the section when it rewrites the file."""
    lines = [
        "## Endpoint variants: `bench.ab`",
        "",
        f"_Written by `bench.ab --markdown` on {finished:%Y-%m-%d %H:%M} UTC, not by `python -m bench`._",
        "",
        "```sh",
        command,
        "```",
    ]
    for caption, table in tables:
        lines += ["", caption, "", table]
    write_marked_section(path, "ab", "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", help="NAME=BACKEND[@CHECKOUT][,ENV=VALUE...]")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument(
        "--rate",
        type=lambda text: [float(rate) for rate in text.split(",")],
        default=[2000.0],
        help="requests per second offered; a comma-separated list measures each in turn",
    )
    parser.add_argument(
        "--capacity", action="store_true", help="also search each variant's highest rate within the p99"
    )
    parser.add_argument("--capacity-p99-ms", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="also write the tables into this file's `ab` section, e.g. BENCHMARKS.md",
    )
    args = parser.parse_args(argv)
    try:
        variants = [Variant.parse(spec) for spec in args.variants]
    except ValueError as error:
        parser.error(str(error))
    if len({v.name for v in variants}) != len(variants):
        parser.error("variant names must differ")

    ctx = Context()
    loadgen = endpoint.build_loadgen(ctx)
    backends = {v.backend for v in variants}
    stores = {}
    peers: dict[str, feast_peer.FeastPeer] = {}
    pins: list[endpoint.MemoryPin | None] = []
    try:
        if "sqlite" in backends:
            stores["sqlite"] = endpoint.sqlite_store(ctx, args.users)
            pins.append(endpoint.MemoryPin.of(Path(stores["sqlite"].env["NEWSREC_SQLITE_PATH"])))
            if pins[-1] is not None:  # held in RAM: no need to read it into the page cache before each run
                stores["sqlite"].warm = None
        if "redis" in backends:
            stores["redis"] = endpoint.redis_store(ctx, args.users, args.redis_url)
        for backend in sorted(backends & set(feast_peer.BACKENDS)):
            peers[backend] = feast_peer.FeastPeer(
                backend, args.users, ctx.work_dir, redis_url=args.redis_url, seed=ctx.seed, log=ctx.log
            )
            peers[backend].load()
            if peers[backend].sqlite_path:  # in RAM like the API's file, where locking is allowed
                pins.append(endpoint.MemoryPin.of(peers[backend].sqlite_path))
        bare_env = endpoint.bare_env(args.users)
        targets = [("bare", endpoint.BARE_APP, "", REPO_ROOT, bare_env)]
        for v in variants:
            if v.backend == "bare":
                targets.append((v.name, endpoint.BARE_APP, "", v.checkout, {**bare_env, **v.env}))
                continue
            if v.backend in peers:
                targets.append((v.name, "", v.backend, v.checkout, v.env))
                continue
            env = endpoint.api_env(ctx, stores[v.backend], v.env)
            targets.append((v.name, "serving.main:app", v.backend, v.checkout, env))
        results: dict[float, dict[str, list[Measured]]] = {
            rate: {name: [] for name, *_ in targets} for rate in args.rate
        }
        capacities: dict[str, list[float]] = {name: [] for name, *_ in targets if name != "bare"}
        for round_ in range(args.rounds):
            for name, app, backend, checkout, env in targets:
                endpoint.warm_store(ctx, list(stores.values()), backend)
                log_path = ctx.work_dir / f"server-{name}.log"
                if backend in peers:
                    server = peers[backend].serve(args.workers, log_path, env)
                else:
                    server = endpoint.Server(app, args.workers, env, log_path, cwd=checkout)
                try:
                    server.wait_ready()
                    for rate in args.rate:
                        run = endpoint.drive(
                            loadgen, server, args.users, rate, args.warmup, args.duration, round_
                        )
                        measured = Measured(
                            run["latency_us"]["p50"] / 1000,
                            run["latency_us"]["p99"] / 1000,
                            endpoint.cpu_us_per_request(run),
                            endpoint.failed_requests(run),
                        )
                        results[rate][name].append(measured)
                        ctx.log(
                            f"ab: round {round_ + 1}/{args.rounds} {name} at {rate:,.0f} req/s: p50 "
                            f"{measured.p50_ms:.3f} ms, p99 {measured.p99_ms:.3f} ms, "
                            f"{measured.cpu_us_per_request:.0f} µs CPU/request"
                        )
                    if args.capacity and name != "bare":
                        capacities[name].append(search_capacity(ctx, loadgen, server, args, name, round_))
                finally:
                    server.stop()
    finally:
        for pin in pins:
            if pin is not None:
                pin.close()
        for store in stores.values():
            if store.backend == "redis" and store.cleanup:
                store.cleanup()
        for peer in peers.values():
            peer.close()
    loads = [[f"{s.backend} (our store)", s.users, s.fill_seconds, "cached" if s.reused else "this run"]
             for s in stores.values()]  # fmt: skip
    loads += [[p.backend, p.users, p.load_seconds, "this run"] for p in peers.values()]
    tables = summary_tables(args, results, capacities, loads)
    for caption, table in tables:
        print(f"\n{caption}\n")
        print(table)
    if args.markdown:
        command = shlex.join(["python", "-m", "bench.ab", *(sys.argv[1:] if argv is None else argv)])
        write_markdown(args.markdown, command, datetime.now(UTC), tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
