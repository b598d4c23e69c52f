"""Paired bootstrap comparison of rankers, the publication gate, and the time-window summary."""

from __future__ import annotations

import numpy as np
import pytest

from newsrec_assets.domain.evaluation import (
    compare_rankers,
    ctr_interval,
    diversity_tradeoff,
    gate_decision,
    window_summary,
)
from newsrec_assets.domain.metrics import evaluate_impressions, per_impression_metrics


def impressions(n: int, seed: int, size: int = 8):
    """`n` impressions of `size` rows; true click probabilities, labels drawn from them."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(n), size)
    truth = rng.random(n * size)
    labels = (rng.random(n * size) < truth * 0.6).astype(int)
    return ids, labels, truth, rng


def test_per_impression_metrics_are_what_the_means_average():
    ids = np.array(["b", "b", "b", "a", "a", "c", "c"])
    labels = np.array([1, 0, 0, 0, 1, 1, 1])  # c has no non-click: not scorable
    scores = np.array([0.9, 0.5, 0.1, 0.8, 0.3, 0.2, 0.1])
    scorable, values = per_impression_metrics(ids, labels, scores)
    assert scorable.tolist() == ["a", "b"]
    assert values["auc"].tolist() == [0.0, 1.0]
    assert values["mrr"].tolist() == [0.5, 1.0]
    means = evaluate_impressions(ids, labels, scores)
    assert means["auc"] == 0.5 and means["n_evaluated"] == 2 and means["n_impressions"] == 3
    for name, per_impression in values.items():
        assert means[name] == pytest.approx(per_impression.mean())


def test_a_better_ranker_gets_an_interval_above_zero_and_an_equal_one_does_not():
    ids, labels, truth, rng = impressions(600, seed=0)
    noise = rng.random(len(truth))
    scores = {"good": truth + 0.3 * noise, "noise": noise, "same": noise.copy()}
    better = compare_rankers(ids, labels, scores, candidate="good", baseline="noise", n_resamples=400)
    assert better.differences["auc"].low > 0
    for metrics in better.metrics.values():
        for interval in metrics.values():
            assert interval.low <= interval.estimate <= interval.high
    means = evaluate_impressions(ids, labels, scores["good"])
    assert better.metrics["good"]["auc"].estimate == pytest.approx(means["auc"])
    assert better.scored_impressions == means["n_evaluated"]

    same = compare_rankers(ids, labels, scores, candidate="same", baseline="noise", n_resamples=400)
    assert (
        same.differences["auc"].estimate == 0
        and same.differences["auc"].low == 0 == same.differences["auc"].high
    )
    again = compare_rankers(ids, labels, scores, candidate="good", baseline="noise", n_resamples=400)
    assert again.to_dict() == better.to_dict()  # deterministic for a seed


def test_intervals_cover_a_zero_difference_about_95_times_in_100_and_shrink_with_more_impressions():
    covered = 0
    widths = {}
    for seed in range(40):
        ids, labels, _, rng = impressions(300, seed=seed)
        scores = {"a": rng.random(len(ids)), "b": rng.random(len(ids))}  # two rankers, equally useless
        difference = compare_rankers(ids, labels, scores, "a", "b", n_resamples=300, seed=seed).differences[
            "auc"
        ]
        covered += difference.low <= 0 <= difference.high
        widths.setdefault(300, difference.high - difference.low)
    assert covered >= 34  # 95 % nominal: 38 expected out of 40
    ids, labels, _, rng = impressions(3000, seed=99)
    scores = {"a": rng.random(len(ids)), "b": rng.random(len(ids))}
    wide = compare_rankers(ids, labels, scores, "a", "b", n_resamples=300).differences["auc"]
    assert wide.high - wide.low < 0.5 * widths[300]  # ~1/sqrt(10) of the width


def test_the_gate_needs_the_interval_above_zero_and_enough_impressions():
    ids, labels, truth, rng = impressions(400, seed=1)
    noise = rng.random(len(truth))
    comparison = compare_rankers(ids, labels, {"m": truth, "p": noise}, "m", "p", n_resamples=300)
    assert gate_decision(comparison, min_scored_impressions=100).status == "pass"
    starved = gate_decision(comparison, min_scored_impressions=comparison.scored_impressions + 1)
    assert starved.status == "insufficient_evidence" and not starved.passed
    assert f"{comparison.scored_impressions} scorable test impressions" in starved.reason
    reversed_ = compare_rankers(ids, labels, {"m": noise, "p": truth}, "m", "p", n_resamples=300)
    failed = gate_decision(reversed_, min_scored_impressions=100)
    assert failed.status == "fail" and failed.to_dict()["auc_difference"]["high"] < 0


def test_no_scorable_impression_is_insufficient_evidence_not_a_crash():
    ids, labels = np.array([1, 1, 2]), np.array([0, 0, 1])
    comparison = compare_rankers(ids, labels, {"m": np.ones(3), "p": np.zeros(3)}, "m", "p")
    assert comparison.scored_impressions == 0 and np.isnan(comparison.differences["auc"].estimate)
    assert gate_decision(comparison, 1).status == "insufficient_evidence"


def test_window_summary_counts_what_each_window_holds():
    ids = np.array(["i1", "i1", "i2", "i2", "i3", "i3", "i3"])
    times = np.array(
        ["2026-11-18T10:00", "2026-11-18T10:00", "2026-11-19T09:00", "2026-11-19T09:00"]
        + ["2026-11-20T08:00"] * 3,
        dtype="datetime64[us]",
    )
    clicked = np.array([1, 0, 0, 0, 1, 1, 0])
    split = np.array(["train", "train", "validation", "validation", "test", "test", "test"])
    summary = window_summary(ids, times, clicked, split)
    assert summary["train"] == {
        "first_shown_at": "2026-11-18T10:00:00",
        "last_shown_at": "2026-11-18T10:00:00",
        "rows": 2,
        "impressions": 1,
        "clicks": 1,
        "scorable_impressions": 1,
        "candidates_per_impression": 2.0,
    }
    assert summary["validation"]["scorable_impressions"] == 0  # no click
    assert summary["test"]["candidates_per_impression"] == 3.0 and summary["test"]["clicks"] == 2


def test_ctr_interval_is_wilsons_and_stays_within_0_and_1():
    interval = ctr_interval(50, 1000)
    assert interval.estimate == 0.05
    assert interval.low == pytest.approx(0.0381, abs=1e-4) and interval.high == pytest.approx(
        0.0653, abs=1e-4
    )
    assert ctr_interval(0, 20).low == 0.0 and ctr_interval(20, 20).high == 1.0
    assert (ctr_interval(0, 0).low, ctr_interval(0, 0).high) == (0.0, 1.0)


def test_diversity_tradeoff_reports_ndcg_and_intra_list_diversity_per_cap():
    # Articles 0, 1 in group x, 2 in y, 3 in z. The first list ranks 0, 1, 2, 3 and the user
    # clicked 2; the second list's user clicked nothing held out: left out.
    groups = np.array(["x", "x", "y", "z"])

    table = diversity_tradeoff([[0, 1, 2, 3], [3, 2]], [{2}, set()], groups, caps=(0, 1), k=3)

    assert table[0]["ndcg@3"] == pytest.approx(0.5)  # 2 third: 1 / log2(4)
    assert table[0]["intra_list_diversity"] == pytest.approx(2 / 3)  # x, x, y
    assert table[1]["ndcg@3"] == pytest.approx(1 / np.log2(3))  # capped: 0, 2, 3
    assert table[1]["intra_list_diversity"] == 1.0
