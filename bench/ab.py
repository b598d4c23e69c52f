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

(the last: how the bare app's tail grows with CPU spent per request, `bench.bare_app`).

Servers run uvicorn with uvloop and httptools, the bare app included; `UVICORN_HTTP` in a
variant's settings picks another `--http` for that variant (an older checkout's own protocol).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench import endpoint
from bench.common import REPO_ROOT, Context
from bench.report import markdown_table

BACKENDS = ("sqlite", "redis", "bare")


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", help="NAME=BACKEND[@CHECKOUT][,ENV=VALUE...]")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="requests per second offered")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
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
    pin = None
    try:
        if "sqlite" in backends:
            stores["sqlite"] = endpoint.sqlite_store(ctx, args.users)
            pin = endpoint.MemoryPin.of(Path(stores["sqlite"].env["NEWSREC_SQLITE_PATH"]))
            if pin is not None:  # held in RAM: no need to read it into the page cache before each run
                stores["sqlite"].warm = None
        if "redis" in backends:
            stores["redis"] = endpoint.redis_store(ctx, args.users, args.redis_url)
        bare_env = endpoint.bare_env(args.users)
        targets = [("bare", endpoint.BARE_APP, "", REPO_ROOT, bare_env)]
        for v in variants:
            if v.backend == "bare":
                targets.append((v.name, endpoint.BARE_APP, "", v.checkout, {**bare_env, **v.env}))
                continue
            env = endpoint.api_env(ctx, stores[v.backend], v.env)
            targets.append((v.name, "serving.main:app", v.backend, v.checkout, env))
        results: dict[str, list[Measured]] = {name: [] for name, *_ in targets}
        for round_ in range(args.rounds):
            for name, app, backend, checkout, env in targets:
                endpoint.warm_store(ctx, list(stores.values()), backend)
                server = endpoint.Server(
                    app, args.workers, env, ctx.work_dir / f"server-{name}.log", cwd=checkout
                )
                try:
                    server.wait_ready()
                    run = endpoint.drive(
                        loadgen, server, args.users, args.rate, args.warmup, args.duration, round_
                    )
                finally:
                    server.stop()
                measured = Measured(
                    run["latency_us"]["p50"] / 1000,
                    run["latency_us"]["p99"] / 1000,
                    endpoint.cpu_us_per_request(run),
                    endpoint.failed_requests(run),
                )
                results[name].append(measured)
                ctx.log(
                    f"ab: round {round_ + 1}/{args.rounds} {name}: p50 {measured.p50_ms:.3f} ms, "
                    f"p99 {measured.p99_ms:.3f} ms, {measured.cpu_us_per_request:.0f} µs CPU/request"
                )
    finally:
        if pin is not None:
            pin.close()
        for store in stores.values():
            if store.backend == "redis" and store.cleanup:
                store.cleanup()
    header = ["target", "p50 ms", "p99 ms", "CPU µs/req", "p99 / bare", "per round", "failed"]
    print(
        f"\n{args.rounds} interleaved rounds, {args.rate:,.0f} req/s, {args.users:,} users, "
        f"{args.workers} worker(s), {args.warmup:g}+{args.duration:g} s per run; medians over rounds\n"
    )
    print(markdown_table(header, summary_rows(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
