"""Evaluation with uncertainty: rankers compared per impression, and the publication gate.

A model is published when it beats the popularity baseline on the test window by more than chance
explains. Both rankers score the same impressions, so the comparison is paired: the test
impressions are resampled with replacement (the bootstrap), each resample gives both rankers' mean
metric and their difference, and the 2.5th and 97.5th percentiles of those make a 95 % interval.
The gate passes when the interval on the AUC difference lies above zero and the test window holds
at least a minimum number of scorable impressions (at least one click and one non-click); below that
minimum the evidence is called insufficient whatever the interval says, because a percentile
interval over a few dozen impressions is itself unreliable.

Numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from newsrec_assets.domain.metrics import per_impression_metrics
from newsrec_assets.domain.ranking import cap_per_group, intra_list_diversity

__all__ = [
    "METRICS",
    "WINDOWS",
    "GateDecision",
    "Interval",
    "RankerComparison",
    "compare_rankers",
    "ctr_interval",
    "diversity_tradeoff",
    "gate_decision",
    "window_summary",
]

WINDOWS = ("train", "validation", "test")
METRICS = ("auc", "mrr", "ndcg@5", "ndcg@10")  # as MIND reports them

GateStatus = Literal["pass", "fail", "insufficient_evidence"]


@dataclass(frozen=True)
class Interval:
    """A point estimate (the mean over the impressions) and its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.estimate:.4f} [{self.low:.4f}, {self.high:.4f}]"


@dataclass(frozen=True)
class RankerComparison:
    """Every ranker's metrics and the candidate's differences to the baseline, with intervals."""

    metrics: dict[str, dict[str, Interval]]  # ranker -> metric -> interval of its mean
    differences: dict[str, Interval]  # metric -> interval of mean(candidate - baseline)
    candidate: str
    baseline: str
    scored_impressions: int  # impressions with at least one click and one non-click
    n_resamples: int
    confidence: float

    def to_dict(self) -> dict:
        return {
            "metrics": {r: {m: i.to_dict() for m, i in ms.items()} for r, ms in self.metrics.items()},
            "differences": {m: i.to_dict() for m, i in self.differences.items()},
            "candidate": self.candidate,
            "baseline": self.baseline,
            "scored_impressions": self.scored_impressions,
            "n_resamples": self.n_resamples,
            "confidence": self.confidence,
        }


def compare_rankers(
    impression_ids: np.ndarray,
    labels: np.ndarray,
    scores: Mapping[str, np.ndarray],
    candidate: str,
    baseline: str,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 100,
) -> RankerComparison:
    """Per-impression metrics of every ranker on the same rows, with paired bootstrap intervals.

    Args:
        impression_ids, labels: one per row (article shown), as ``metrics.evaluate_impressions``.
        scores: ranker name -> one score per row; must include ``candidate`` and ``baseline``.
        candidate, baseline: the pair whose per-metric difference gets an interval.
        n_resamples: bootstrap resamples of the scorable impressions.
        confidence: coverage of the percentile intervals.
        seed: the resampling is deterministic for a seed.
        chunk: resamples drawn at a time (bounds memory to ``chunk x impressions`` counts).

    Impressions without both a click and a non-click are left out for every ranker alike. With no
    scorable impression every interval is NaN.
    """
    if candidate not in scores or baseline not in scores:
        raise ValueError(f"scores must include {candidate!r} and {baseline!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must lie in (0, 1)")
    names = list(scores)
    per_ranker = {name: per_impression_metrics(impression_ids, labels, scores[name]) for name in names}
    metric_names = list(per_ranker[candidate][1])
    n = len(per_ranker[candidate][0])
    # columns: every (ranker, metric), then the candidate's differences to the baseline
    columns = [per_ranker[name][1][metric] for name in names for metric in metric_names]
    columns += [per_ranker[candidate][1][m] - per_ranker[baseline][1][m] for m in metric_names]
    values = np.stack(columns, axis=1) if n else np.zeros((0, len(columns)))  # impressions, columns

    estimates = values.mean(axis=0) if n else np.full(len(columns), np.nan)
    low = high = np.full(len(columns), np.nan)
    if n:
        rng = np.random.default_rng(seed)
        means = []
        for start in range(0, n_resamples, chunk):
            size = min(chunk, n_resamples - start)
            counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(size)])
            means.append(counts @ values / n)  # size, columns
        resampled = np.concatenate(means)
        tail = (1.0 - confidence) / 2.0
        low, high = np.quantile(resampled, [tail, 1.0 - tail], axis=0)

    intervals = [
        Interval(float(e), float(lo), float(hi)) for e, lo, hi in zip(estimates, low, high, strict=True)
    ]
    per_metric = len(metric_names)
    metrics = {
        name: dict(zip(metric_names, intervals[i * per_metric : (i + 1) * per_metric], strict=True))
        for i, name in enumerate(names)
    }
    differences = dict(zip(metric_names, intervals[len(names) * per_metric :], strict=True))
    return RankerComparison(metrics, differences, candidate, baseline, n, n_resamples, confidence)


@dataclass(frozen=True)
class GateDecision:
    """Whether a model may be published, and why."""

    status: GateStatus
    reason: str
    scored_impressions: int
    min_scored_impressions: int
    auc_difference: Interval

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "passed": self.passed,
            "reason": self.reason,
            "scored_impressions": self.scored_impressions,
            "min_scored_impressions": self.min_scored_impressions,
            "auc_difference": self.auc_difference.to_dict(),
        }


def gate_decision(comparison: RankerComparison, min_scored_impressions: int) -> GateDecision:
    """Pass when the AUC difference's interval lies above 0 on at least the minimum of impressions.

    Below the minimum the status is ``insufficient_evidence`` (nothing is published, and it is a
    warning, not a failure: more data will come); with enough impressions and an interval that
    reaches 0 or below it is ``fail``.
    """
    difference = comparison.differences["auc"]
    n = comparison.scored_impressions
    versus = f"{comparison.candidate} - {comparison.baseline} AUC {difference}"
    if n < min_scored_impressions:
        return GateDecision(
            "insufficient_evidence",
            f"{n} scorable test impressions, fewer than the {min_scored_impressions} required ({versus})",
            n,
            min_scored_impressions,
            difference,
        )
    if difference.low > 0:
        return GateDecision(
            "pass", f"{versus}: the interval lies above 0", n, min_scored_impressions, difference
        )
    return GateDecision(
        "fail", f"{versus}: the interval does not lie above 0", n, min_scored_impressions, difference
    )


def window_summary(
    impression_ids: np.ndarray, shown_times: np.ndarray, clicked: np.ndarray, split: np.ndarray
) -> dict[str, dict[str, object]]:
    """What each time window holds: its span, rows, impressions, clicks, scorable impressions.

    ``scorable_impressions`` have at least one click and one non-click (the only ones any metric
    is computed on); ``candidates_per_impression`` is the mean number of articles shown per
    impression. Times are ``datetime64``; spans are ISO strings (None for an empty window).
    """
    impression_ids = np.asarray(impression_ids)
    shown_times = np.asarray(shown_times)
    clicked = np.asarray(clicked).astype(bool)
    split = np.asarray(split).astype(str)
    summary: dict[str, dict[str, object]] = {}
    for window in WINDOWS:
        rows = split == window
        ids = impression_ids[rows]
        n_rows = int(rows.sum())
        if n_rows:
            _, codes = np.unique(ids, return_inverse=True)
            shown = np.bincount(codes)
            hits = np.bincount(codes, weights=clicked[rows])
            times = shown_times[rows]
            first, last = str(times.min())[:19], str(times.max())[:19]
        else:
            shown = hits = np.zeros(0)
            first = last = None
        summary[window] = {
            "first_shown_at": first,
            "last_shown_at": last,
            "rows": n_rows,
            "impressions": len(shown),
            "clicks": int(clicked[rows].sum()),
            "scorable_impressions": int(((hits > 0) & (hits < shown)).sum()),
            "candidates_per_impression": round(float(shown.mean()), 2) if len(shown) else 0.0,
        }
    return summary


def ctr_interval(clicks: int, impressions: int, z: float = 1.96) -> Interval:
    """Click-through rate with its Wilson score interval (95 % by default). It treats impressions
    as independent, which clicks within one list are not quite: read it as a lower bound on the
    uncertainty."""
    if impressions <= 0:
        return Interval(0.0, 0.0, 1.0)
    rate = clicks / impressions
    centre = (rate + z * z / (2 * impressions)) / (1 + z * z / impressions)
    half = (
        z
        * np.sqrt(rate * (1 - rate) / impressions + z * z / (4 * impressions**2))
        / (1 + z * z / impressions)
    )
    return Interval(rate, max(0.0, centre - half), min(1.0, centre + half))


def diversity_tradeoff(
    lists: Sequence[Sequence[int]],
    relevant: Sequence[set[int]],
    groups: np.ndarray,
    caps: tuple[int, ...] = (0, 3, 2, 1),
    k: int = 10,
) -> dict[int, dict[str, float]]:
    """What serving's diversity re-rank does to the top k: each ranked candidate list (article
    indices, best first, as stored for a user) reordered by `cap_per_group` over the articles'
    `groups` (at most `cap` per subcategory ahead of the rest; 0 = off), then the mean nDCG@k
    against the user's `relevant` (held-out clicked) articles and the mean intra-list diversity
    of the top k. Lists without a relevant article are left out."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    scored = [
        (np.asarray(ranked), clicked) for ranked, clicked in zip(lists, relevant, strict=True) if clicked
    ]
    result = {}
    for cap in caps:
        ndcg, diversity = [], []
        for ranked, clicked in scored:
            top = ranked[cap_per_group(groups[ranked].tolist(), cap)][:k]
            gains = np.array([article in clicked for article in top.tolist()], dtype=float)
            ndcg.append(float(discounts[: len(top)] @ gains) / discounts[: min(len(clicked), k)].sum())
            diversity.append(intra_list_diversity(groups[top].tolist()))
        result[cap] = {f"ndcg@{k}": float(np.mean(ndcg)), "intra_list_diversity": float(np.mean(diversity))}
    return result
