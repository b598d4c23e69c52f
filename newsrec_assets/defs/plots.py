"""Plots for asset metadata: matplotlib figures embedded as PNG in a markdown metadata value."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import dagster as dg


def figure_markdown(figure) -> dg.MetadataValue:
    """A matplotlib figure as a PNG embedded in markdown metadata (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return dg.MetadataValue.md(f"![plot](data:image/png;base64,{encoded})")


def line_plot(
    series: Mapping[str, Sequence[float]], x_label: str, y_label: str, title: str
) -> dg.MetadataValue:
    """One line per named series, against its index (epoch, step, ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.2))
    for name, values in series.items():
        axis.plot(range(1, len(values) + 1), values, marker="o" if len(values) < 30 else None, label=name)
    axis.set(xlabel=x_label, ylabel=y_label, title=title)
    axis.grid(alpha=0.3)
    axis.legend()
    return figure_markdown(figure)


def grouped_bars(
    table: Mapping[str, Mapping[str, float]],
    title: str,
    intervals: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
) -> dg.MetadataValue:
    """Bars of several metrics (x) for several rankers (one colour each), with (low, high) error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rankers = list(table)
    metrics = list(next(iter(table.values())))
    width = 0.8 / len(rankers)
    figure, axis = plt.subplots(figsize=(7, 3.4))
    for index, ranker in enumerate(rankers):
        positions = [m + index * width for m in range(len(metrics))]
        values = [table[ranker][metric] for metric in metrics]
        errors = None
        if intervals is not None and ranker in intervals:
            spans = [intervals[ranker][metric] for metric in metrics]
            errors = [
                [v - low for v, (low, _) in zip(values, spans, strict=True)],
                [high - v for v, (_, high) in zip(values, spans, strict=True)],
            ]
        axis.bar(positions, values, width=width, label=ranker, yerr=errors, capsize=2)
    axis.set_xticks([m + 0.4 - width / 2 for m in range(len(metrics))], metrics)
    axis.set(title=title, ylim=(0, 1))
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8)
    return figure_markdown(figure)


def markdown_table(
    table: Mapping[str, Mapping[str, object]], digits: int = 4, first: str = "ranker"
) -> dg.MetadataValue:
    """Rows = rankers (or whatever ``first`` names), columns = metrics; numbers with ``digits``."""
    metrics = list(next(iter(table.values())))
    lines = [f"| {first} | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for ranker, values in table.items():
        cells = (
            f"{values[m]:.{digits}f}" if isinstance(values[m], float) else str(values[m]) for m in metrics
        )
        lines.append(f"| {ranker} | " + " | ".join(cells) + " |")
    return dg.MetadataValue.md("\n".join(lines))
