"""The figures a benchmark reports, and the two files a run writes: BENCHMARKS.md and results.json.

Every figure is put next to its goal as a ratio, `value / goal`: with an upper limit (`at_most`)
the figure passes when the ratio is <= 1, with a lower limit (`at_least`) when it is >= 1. Goals
that are themselves relative ("p99 at most 2x the bare app's p99", "at least 70 % of the sgemm
peak") are written as the measured ratio against a goal of 2.0 or 0.70, and the reference they
were measured against (in the same run) is named in `reference`. Figures without a goal are
informational (`goal=None`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

GoalKind = Literal["at_most", "at_least"]
Status = Literal["pass", "FAIL", "info", "not run", "error"]


@dataclass
class Figure:
    """One measured number, with its goal (if any) and what it was compared with."""

    name: str
    value: float | None
    unit: str
    goal: float | None = None
    kind: GoalKind | None = None
    reference: str = ""  # "bare ASGI p99 0.61 ms (same run)": what a relative goal was measured against
    note: str = ""
    status_override: Status | None = None  # "not run" for planned figures without a measurement

    @property
    def ratio(self) -> float | None:
        """value / goal, or None without a goal or a value."""
        if self.goal is None or self.value is None or self.goal == 0 or not math.isfinite(self.value):
            return None
        return self.value / self.goal

    @property
    def status(self) -> Status:
        if self.status_override is not None:
            return self.status_override
        if self.value is None:
            return "not run"
        if self.goal is None or self.kind is None:
            return "info"
        if not math.isfinite(self.value):
            return "FAIL"
        ok = self.value <= self.goal if self.kind == "at_most" else self.value >= self.goal
        return "pass" if ok else "FAIL"

    @property
    def goal_text(self) -> str:
        if self.goal is None or self.kind is None:
            return "—"
        sign = "≤" if self.kind == "at_most" else "≥"
        return f"{sign} {fmt(self.goal)} {self.unit}".rstrip()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("status_override")
        data.update(ratio=self.ratio, status=self.status, goal_text=self.goal_text)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Figure:
        names = {"name", "value", "unit", "goal", "kind", "reference", "note"}
        figure = cls(**{k: v for k, v in data.items() if k in names})
        if data.get("status") in ("not run", "error"):
            figure.status_override = data["status"]
        return figure


def planned(name: str, unit: str, goal: float | None, kind: GoalKind | None, note: str = "") -> Figure:
    """A figure that is part of the suite but was not measured in this run."""
    return Figure(name, None, unit, goal, kind, note=note, status_override="not run")


@dataclass
class Outcome:
    """What a benchmark's `run(ctx)` returns: its figures, plus details for the report.

    `tables` are extra Markdown sections (title, body) shown under the benchmark's heading;
    `details` is free-form JSON for results.json (raw latencies summaries, curves, histories).
    """

    figures: list[Figure]
    details: dict[str, Any] = field(default_factory=dict)
    tables: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class BenchmarkResult:
    """One benchmark's entry in a run."""

    name: str
    title: str
    status: Literal["ok", "not run", "error", "skipped"]
    figures: list[Figure] = field(default_factory=list)
    seconds: float | None = None
    started_at: str | None = None
    quick: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)
    tables: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    carried_over_from: str | None = None  # the run this result was copied from (`--only`)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["figures"] = [figure.to_dict() for figure in self.figures]
        data["tables"] = [list(table) for table in self.tables]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchmarkResult:
        result = cls(**{k: v for k, v in data.items() if k not in ("figures", "tables")})
        result.figures = [Figure.from_dict(f) for f in data.get("figures", [])]
        result.tables = [(t[0], t[1]) for t in data.get("tables", [])]
        return result


@dataclass
class RunReport:
    """A whole run: the machine, the command, and every benchmark's result."""

    command: str
    started_at: str
    finished_at: str
    quick: bool
    machine: dict[str, Any]
    results: list[BenchmarkResult]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "quick": self.quick,
            "seconds": self.seconds,
            "machine": self.machine,
            "benchmarks": {r.name: r.to_dict() for r in self.results},
        }


# ---------------------------------------------------------------------------------------------
# formatting


def fmt(value: float | None, digits: int = 3) -> str:
    """A compact human number: 3 significant digits, thousands separators for large values."""
    if value is None:
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude == 0:
        return "0"
    if magnitude >= 1:
        return f"{value:.{max(0, digits - len(str(int(magnitude))))}f}"
    return f"{value:.{digits}g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def figures_table(results: list[BenchmarkResult]) -> str:
    lines = [
        "| benchmark | figure | measured | goal | ratio to goal | compared with (same run) | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for figure in result.figures:
            measured = "—" if figure.value is None else f"{fmt(figure.value)} {figure.unit}".rstrip()
            ratio = "—" if figure.ratio is None else f"{figure.ratio:.2f}"
            verdict = figure.status if result.status != "error" else "error"
            if verdict == "FAIL":
                verdict = "**FAIL**"
            lines.append(
                f"| {result.name} | {_cell(figure.name)} | {measured} | {_cell(figure.goal_text)} | {ratio} "
                f"| {_cell(figure.reference) or '—'} | {verdict} |"
            )
    return "\n".join(lines)


def machine_table(machine: dict[str, Any]) -> str:
    rows = [
        ("CPU", machine.get("cpu_model")),
        ("cores (usable)", machine.get("cores")),
        ("memory", f"{fmt(machine.get('memory_gib'))} GiB" if machine.get("memory_gib") else None),
        ("kernel", machine.get("kernel")),
        ("python", machine.get("python")),
        ("numpy", machine.get("numpy")),
        ("BLAS (numpy)", machine.get("blas")),
        ("torch", machine.get("torch")),
        ("torch threads / BLAS", machine.get("torch_backend")),
        ("serving stack", machine.get("serving_stack")),
        ("redis server", machine.get("redis_server")),
        ("git commit", machine.get("git")),
        ("load average at start / end", machine.get("load_average")),
    ]
    lines = ["| | |", "|---|---|"]
    lines += [f"| {name} | {_cell(str(value))} |" for name, value in rows if value not in (None, "")]
    return "\n".join(lines)


def render_markdown(report: RunReport) -> str:
    """BENCHMARKS.md: machine, command, the table of every figure with its goal, then details."""
    counts: dict[str, int] = {}
    for result in report.results:
        for figure in result.figures:
            counts[figure.status] = counts.get(figure.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    out = [
        "# newsrec benchmarks",
        "",
        "Generated by the benchmark suite (`bench/`, see `bench/README.md`); do not edit by hand.",
        "",
        f"- **Command:** `{report.command}`",
        f"- **Run:** {report.started_at} → {report.finished_at} ({fmt(report.seconds)} s)"
        + (" — **quick sizes** (smoke run, not the real figures)" if report.quick else ""),
        f"- **Verdicts:** {summary}",
        "",
        "Each figure sits next to its goal as `measured / goal`: for an upper limit (≤) a ratio ≤ 1 "
        'passes, for a lower limit (≥) a ratio ≥ 1 passes. Relative goals ("≤ 2× the bare app", '
        '"≥ 70 % of the sgemm peak") were measured against their reference in the same run, '
        "because this machine is shared and noisy; the reference is named in its own column.",
        "",
        "## Machine",
        "",
        machine_table(report.machine),
        "",
        "## Figures",
        "",
        figures_table(report.results),
        "",
    ]
    for result in report.results:
        out += [f"## {result.title} (`{result.name}`)", ""]
        meta = []
        if result.status != "ok":
            meta.append(f"status: **{result.status}**")
        if result.seconds is not None:
            meta.append(f"took {fmt(result.seconds)} s")
        if result.started_at:
            meta.append(f"started {result.started_at}")
        if result.quick:
            meta.append("quick sizes")
        if result.carried_over_from:
            meta.append(f"carried over from the run of {result.carried_over_from}")
        if result.cpu:
            meta.append(
                f"other processes used {result.cpu.get('others_cores', 0):.2f} of "
                f"{result.cpu.get('cores', '?')} cores meanwhile"
            )
        if meta:
            out += ["_" + "; ".join(meta) + "_", ""]
        if result.error:
            out += ["```", result.error.strip()[-3000:], "```", ""]
        for note in result.notes:
            out += [note, ""]
        for title, body in result.tables:
            out += [f"### {title}", "", body, ""]
    return "\n".join(out).rstrip() + "\n"


# A section another tool (`bench.ab`, `bench.soak`) wrote into BENCHMARKS.md, markers included.
MARKED_SECTION = re.compile(r"<!-- (?P<name>[\w-]+):begin -->.*?<!-- (?P=name):end -->", re.DOTALL)


def write_marked_section(path: Path, name: str, body: str) -> None:
    """Put `body` between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in the Markdown file `path`:
    in place of an earlier section of that name, else at the end. `write_reports` keeps it."""
    section = f"<!-- {name}:begin -->\n{body.strip()}\n<!-- {name}:end -->"
    text = path.read_text() if path.exists() else ""
    earlier = next((m for m in MARKED_SECTION.finditer(text) if m.group("name") == name), None)
    if earlier:
        text = text[: earlier.start()] + section + text[earlier.end() :]
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + section + "\n"
    path.write_text(text)


def write_reports(report: RunReport, markdown_path: Path, json_path: Path) -> None:
    """Write both files; the marked sections of the earlier BENCHMARKS.md follow the generated ones,
    since the tools that wrote them are not part of this run."""
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    earlier = markdown_path.read_text() if markdown_path.exists() else ""
    kept = [m.group(0) for m in MARKED_SECTION.finditer(earlier)]
    markdown_path.write_text("\n\n".join([render_markdown(report).rstrip(), *kept]) + "\n")
    json_path.write_text(json.dumps(report.to_dict(), indent=2, default=_json_default) + "\n")


def load_results(json_path: Path) -> dict[str, BenchmarkResult]:
    """The benchmark results of an earlier run (for `--only`), by name; empty if none."""
    try:
        data = json.loads(json_path.read_text())
    except (OSError, ValueError):
        return {}
    results = {}
    for name, entry in data.get("benchmarks", {}).items():
        try:
            result = BenchmarkResult.from_dict(entry)
        except TypeError:
            continue
        result.carried_over_from = result.carried_over_from or data.get("started_at")
        results[name] = result
    return results


def _json_default(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, Path):
        return str(value)
    return str(value)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A small Markdown table; numbers are formatted with `fmt`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [fmt(c) if isinstance(c, int | float) and not isinstance(c, bool) else str(c) for c in row]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)
