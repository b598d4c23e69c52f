"""`python -m bench [--quick] [--only NAME ...]`: run the benchmark suite and write the reports.

Writes `BENCHMARKS.md` (repo root) and `bench/results.json`; with `--quick` (small sizes, a couple
of minutes) both go to a temporary folder instead unless `--markdown`/`--json` say otherwise, so
a smoke run never overwrites the real figures. See `bench/README.md`.

The registry below is the whole list of benchmarks. Each entry names a module with a
`run(ctx: bench.common.Context)` function that returns a `bench.report.Outcome` (or a plain list of
`Figure`s), plus the figures it is planned to produce, which the report shows as "not run" when
the module does not exist yet (e.g. `bench.speed_path`) or was not selected.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.common import REPO_ROOT, Context, CpuMonitor, default_cache_dir, load_average, wait_for_quiet
from bench.report import (
    BenchmarkResult,
    Figure,
    Outcome,
    RunReport,
    load_results,
    planned,
    write_reports,
)


@dataclass(frozen=True)
class Benchmark:
    """One registry entry: `module.run(ctx)` produces the figures."""

    name: str
    module: str
    title: str
    planned: tuple[Figure, ...] = field(default_factory=tuple)


REGISTRY: tuple[Benchmark, ...] = (
    Benchmark(
        "scoring",
        "bench.scoring",
        "Batch scoring: top-k for every user",
        (
            planned("scoring matmul, share of sgemm peak", "× peak", 0.70, "at_least"),
            planned("whole top-k (1M users × 10k articles, d=128, k=100)", "s", 180.0, "at_most"),
        ),
    ),
    Benchmark(
        "model",
        "bench.model",
        "Model: encoder fine-tuning and its effect, NAML against the data's ceiling, user encoding",
        (
            planned("text encoder fine-tuning (SimCSE) wall time", "s", 180.0, "at_most"),
            planned("NAML training to early stop", "s", 300.0, "at_most"),
            planned("NAML lift / position-blind ceiling lift (the restated goal)", "×", 0.95, "at_least"),
        ),
    ),
    Benchmark(
        "ceiling",
        "bench.ceiling",
        "Model ceiling: how much of the oracle's AUC lift the data lets any ranker reach",
        (
            planned(
                "5.2 sessions/user/day (default demo): lift of the position-blind ceiling "
                "(every term estimated)",
                "×",
                None,
                None,
            ),
        ),
    ),
    Benchmark(
        "endpoint",
        "bench.endpoint",
        "Endpoint: GET /v1/users/{id}/recommendations at a fixed 2,000 req/s",
        (
            planned("SQLite API p99 at 2,000 req/s", "ms", 5.0, "at_most"),
            planned("SQLite API p99 / bare ASGI p99", "×", 2.0, "at_most"),
            planned("Redis API p99 at 2,000 req/s", "ms", 5.0, "at_most"),
            planned("Redis API p99 / bare ASGI p99", "×", 2.0, "at_most"),
        ),
    ),
    Benchmark(
        "batch_layer",
        "bench.batch_layer",
        "Batch layer by user shard: encode, score, top-k, stage each shard, publish atomically (SQLite)",
        (
            planned(
                "batch layer, 1,000,000 users × 10,000 articles, 1 shard: wall per shard (slowest) + publish",
                "s",
                None,
                None,
            ),
        ),
    ),
    Benchmark(
        "speed_update",
        "bench.speed_update",
        "Speed update: one speed-layer update with 10k and 1M users in the store",
        (planned("speed update time, 1,000,000 / 10,000 users", "×", 1.5, "at_most"),),
    ),
    Benchmark(
        # Needs a published batch (`make demo`) and starts its own `dagster dev` and API.
        "speed_path",
        "bench.speed_path",
        "Speed path: event landed → list served",
        (
            planned("event landed → list served, p50 over ≥ 100 events", "s", 4.0, "at_most"),
            planned("event landed → list served, p95 over ≥ 100 events", "s", 8.0, "at_most"),
        ),
    ),
)


def find(name: str) -> Benchmark:
    for benchmark in REGISTRY:
        if benchmark.name == name:
            return benchmark
    raise KeyError(name)


def _module_run(benchmark: Benchmark):
    """The benchmark's `run` function, or None if its module (or the function) does not exist."""
    try:
        module = importlib.import_module(benchmark.module)
    except ModuleNotFoundError as error:
        if error.name == benchmark.module:
            return None
        raise
    return getattr(module, "run", None)


def run_benchmark(benchmark: Benchmark, ctx: Context) -> BenchmarkResult:
    """Run one benchmark; failures become an `error` result with the traceback, never an exception."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    result = BenchmarkResult(benchmark.name, benchmark.title, "not run", started_at=started, quick=ctx.quick)
    try:
        run = _module_run(benchmark)
    except Exception:  # noqa: BLE001 - an import error is a result too
        run = None
        result.status, result.error = "error", traceback.format_exc()
    if run is None:
        if result.status != "error":
            result.notes.append(f"`{benchmark.module}.run` does not exist yet: not run.")
        result.figures = [planned(f.name, f.unit, f.goal, f.kind, f.note) for f in benchmark.planned]
        return result
    ctx.log(f"== {benchmark.name}: {benchmark.title}")
    waited = wait_for_quiet(ctx, ctx.option("quiet_wait_s", 0.0 if ctx.quick else 180.0))
    if waited > 5:
        result.notes.append(f"Waited {waited:.0f} s for other processes to quieten down before starting.")
    monitor = CpuMonitor().start()
    start = time.perf_counter()
    try:
        outcome = run(ctx)
        if isinstance(outcome, list):
            outcome = Outcome(figures=outcome)
        if not outcome.figures:
            raise ValueError(f"{benchmark.module}.run returned no figures")
        result.status = "ok"
        result.figures = outcome.figures
        result.details = outcome.details
        result.tables = outcome.tables
        result.notes += outcome.notes
    except Exception:  # noqa: BLE001 - keep going with the other benchmarks
        result.status, result.error = "error", traceback.format_exc()
        result.figures = [planned(f.name, f.unit, f.goal, f.kind, f.note) for f in benchmark.planned]
        for figure in result.figures:
            figure.status_override = "error"
        ctx.log(f"!! {benchmark.name} failed:\n{result.error}")
    result.seconds = time.perf_counter() - start
    result.cpu = {**monitor.stop(), "cores": monitor.cores}
    ctx.log(f"== {benchmark.name}: {result.status} in {result.seconds:.0f} s")
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the newsrec benchmark suite and write BENCHMARKS.md and bench/results.json.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a couple of minutes in all")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=[b.name for b in REGISTRY],
        help="run only these benchmarks; the others are carried over from the existing results.json",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--markdown", type=Path, help="report path (default: BENCHMARKS.md at the repo root)")
    parser.add_argument("--json", type=Path, help="results path (default: bench/results.json)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: $TMPDIR/newsrec-bench/cache")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a size or setting, e.g. --set endpoint.users=200000 (see bench/README.md)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for benchmark in REGISTRY:
            available = "" if _module_run(benchmark) else "  (not implemented yet)"
            print(f"{benchmark.name:12s} {benchmark.title}{available}")
        return 0
    options = {}
    for item in args.set:
        key, _, value = item.partition("=")
        options[key.strip()] = value.strip()
    if args.quick:
        default_dir = Path(tempfile.gettempdir()) / "newsrec-bench" / "quick"
        markdown = args.markdown or default_dir / "BENCHMARKS.md"
        json_path = args.json or default_dir / "results.json"
    else:
        markdown = args.markdown or REPO_ROOT / "BENCHMARKS.md"
        json_path = args.json or REPO_ROOT / "bench" / "results.json"
    ctx = Context(
        quick=args.quick,
        cache_dir=args.cache_dir or default_cache_dir(),
        options=options,
        seed=args.seed,
        verbose=not args.quiet,
    )
    ctx.cache_dir.mkdir(parents=True, exist_ok=True)

    from bench.machine import describe_machine

    command = "python -m bench" + (
        ""
        if argv is None and len(sys.argv) <= 1
        else " " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    )
    started = datetime.now(UTC)
    machine = describe_machine()
    ctx.log(f"machine: {machine['cpu_model']}, {machine['cores']} cores, {machine['memory_gib']:.1f} GiB")
    previous = load_results(json_path) if args.only else {}
    results = []
    for benchmark in REGISTRY:
        if args.only and benchmark.name not in args.only:
            if benchmark.name in previous and previous[benchmark.name].status == "ok":
                results.append(previous[benchmark.name])
                continue
            if _module_run(benchmark) is None:
                results.append(run_benchmark(benchmark, ctx))  # reports it as not implemented
                continue
            result = BenchmarkResult(benchmark.name, benchmark.title, "skipped", quick=args.quick)
            result.figures = [planned(f.name, f.unit, f.goal, f.kind, f.note) for f in benchmark.planned]
            result.notes.append("Not selected in this run (`--only`).")
            results.append(result)
            continue
        results.append(run_benchmark(benchmark, ctx))
    one, five, fifteen = load_average()
    machine["load_average"] = f"{machine['load_average']}; {one:.2f} / {five:.2f} / {fifteen:.2f} at end"
    finished = datetime.now(UTC)
    report = RunReport(
        command=command,
        started_at=started.isoformat(timespec="seconds"),
        finished_at=finished.isoformat(timespec="seconds"),
        quick=args.quick,
        machine=machine,
        results=results,
        seconds=(finished - started).total_seconds(),
    )
    write_reports(report, markdown, json_path)
    ctx.log(f"wrote {markdown} and {json_path}")
    failed = [r.name for r in results if r.status == "error" and not r.carried_over_from]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
