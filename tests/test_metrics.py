"""Ranking metrics against MIND's evaluate.py, popularity baselines against brute force."""

from __future__ import annotations

import time

import numpy as np
import pytest

from newsrec_assets.domain.metrics import (
    auc_lift,
    evaluate_impressions,
    popularity_scores,
    recency_popularity_scores,
    to_seconds,
)

# --- MIND's evaluate.py, verbatim in substance, as the reference -------------------------------


def mind_dcg_score(y_true, y_score, k=10):
    order = np.argsort(y_score)[::-1]
    y_true = np.take(y_true, order[:k])
    gains = 2**y_true - 1
    discounts = np.log2(np.arange(len(y_true)) + 2)
    return np.sum(gains / discounts)


def mind_ndcg_score(y_true, y_score, k=10):
    best = mind_dcg_score(y_true, y_true, k)
    actual = mind_dcg_score(y_true, y_score, k)
    return actual / best


def mind_mrr_score(y_true, y_score):
    order = np.argsort(y_score)[::-1]
    y_true = np.take(y_true, order)
    rr_score = y_true / (np.arange(len(y_true)) + 1)
    return np.sum(rr_score) / np.sum(y_true)


def _reference(impression_ids, labels, scores):
    roc_auc_score = pytest.importorskip("sklearn.metrics").roc_auc_score
    out = {"auc": [], "mrr": [], "ndcg@5": [], "ndcg@10": []}
    for imp in np.unique(impression_ids):
        sel = impression_ids == imp
        y, s = labels[sel], scores[sel]
        if y.sum() == 0 or y.sum() == len(y):
            continue
        out["auc"].append(roc_auc_score(y, s))
        out["mrr"].append(mind_mrr_score(y, s))
        out["ndcg@5"].append(mind_ndcg_score(y, s, 5))
        out["ndcg@10"].append(mind_ndcg_score(y, s, 10))
    return {k: float(np.mean(v)) for k, v in out.items()}


# --- evaluate_impressions ----------------------------------------------------------------------


def test_perfect_ranking_scores_one():
    ids = np.array([1, 1, 1, 1, 2, 2, 2])
    labels = np.array([1, 0, 0, 1, 0, 1, 0])
    scores = labels + np.array([0.1, 0.2, 0.3, 0.4, 0.1, 0.2, 0.3])
    m = evaluate_impressions(ids, labels, scores)
    assert m["auc"] == pytest.approx(1.0)
    assert m["ndcg@5"] == pytest.approx(1.0)
    assert m["ndcg@10"] == pytest.approx(1.0)
    # MRR as MIND defines it averages 1/rank over all clicks: ranks 1 and 2 in impression 1
    assert m["mrr"] == pytest.approx(((1 + 1 / 2) / 2 + 1.0) / 2)
    assert (m["n_impressions"], m["n_evaluated"]) == (2, 2)


def test_hand_computed_example():
    # one impression, four items; the click sits at rank 2 (scores descending: b, a, d, c)
    ids = np.array(["i1"] * 4)
    labels = np.array([1, 0, 0, 0])
    scores = np.array([0.8, 0.9, 0.1, 0.5])
    m = evaluate_impressions(ids, labels, scores)
    assert m["auc"] == pytest.approx(2 / 3)  # the click beats 2 of 3 non-clicks
    assert m["mrr"] == pytest.approx(1 / 2)
    assert m["ndcg@5"] == pytest.approx(1 / np.log2(3))
    assert m["ndcg@10"] == pytest.approx(1 / np.log2(3))


def test_ndcg_cutoff_and_ties_in_auc():
    ids = np.zeros(7, dtype=np.int64)
    labels = np.array([0, 0, 0, 0, 0, 0, 1])
    scores = np.array([7, 6, 5, 4, 3, 2, 1], dtype=float)  # the click is last: rank 7
    m = evaluate_impressions(ids, labels, scores)
    assert m["ndcg@5"] == 0.0
    assert m["ndcg@10"] == pytest.approx(1 / np.log2(6 + 2))  # 0-based rank 6
    assert m["auc"] == 0.0
    tied = evaluate_impressions(ids, labels, np.ones(7))
    assert tied["auc"] == pytest.approx(0.5)  # ties count one half, as in sklearn


def test_impressions_without_both_classes_are_skipped():
    ids = np.array([1, 1, 2, 2, 3, 3])
    labels = np.array([1, 0, 0, 0, 1, 1])
    scores = np.array([0.9, 0.1, 0.5, 0.4, 0.3, 0.2])
    m = evaluate_impressions(ids, labels, scores)
    assert (m["n_impressions"], m["n_evaluated"]) == (3, 1)
    assert m["auc"] == 1.0
    empty = evaluate_impressions(np.array([1, 1]), np.array([0, 0]), np.array([0.1, 0.2]))
    assert np.isnan(empty["auc"]) and empty["n_evaluated"] == 0


def test_matches_mind_reference_on_random_impressions():
    rng = np.random.default_rng(0)
    sizes = rng.integers(2, 16, size=300)  # <= 16 items: numpy's argsort is stable, as assumed
    ids = np.repeat(rng.permutation(10_000)[:300], sizes)
    labels = (rng.random(ids.size) < 0.25).astype(np.int64)
    scores = rng.normal(size=ids.size)
    scores[::7] = np.round(scores[::7], 1)  # some ties (only AUC treats them specially)
    shuffle = rng.permutation(ids.size)  # rows of an impression need not be contiguous
    ids, labels, scores = ids[shuffle], labels[shuffle], scores[shuffle]
    got = evaluate_impressions(ids, labels, scores)
    want = _reference(ids, labels, scores)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_string_impression_ids_match_integer_ids():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 50, size=500)
    labels = (rng.random(500) < 0.3).astype(int)
    scores = rng.random(500)
    a = evaluate_impressions(ids, labels, scores)
    b = evaluate_impressions(np.array([f"imp-{i}" for i in ids]), labels, scores)
    assert a == pytest.approx(b, rel=1e-12)  # only the order of summation differs


def test_100k_rows_well_under_a_second():
    rng = np.random.default_rng(2)
    ids = np.repeat(np.arange(10_000), 10)
    labels = (rng.random(ids.size) < 0.1).astype(np.int64)
    scores = rng.random(ids.size)
    evaluate_impressions(ids[:100], labels[:100], scores[:100])  # warm-up
    start = time.perf_counter()
    m = evaluate_impressions(ids, labels, scores)
    assert time.perf_counter() - start < 0.5
    assert 0.45 < m["auc"] < 0.55


def test_auc_lift():
    assert auc_lift(0.5) == 0.0
    assert auc_lift(1.0) == 1.0
    assert auc_lift(0.65, oracle_auc=0.8) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        auc_lift(0.7, oracle_auc=0.5)


# --- popularity baselines ----------------------------------------------------------------------


def _brute_popularity(arts, times, c_arts, c_times, window):
    return np.array(
        [
            np.sum((c_arts == a) & (c_times < t) & (c_times >= t - window))
            for a, t in zip(arts, times, strict=True)
        ],
        dtype=float,
    )


def _brute_recency(arts, times, c_arts, c_times, half_life):
    return np.array(
        [
            np.sum(np.where((c_arts == a) & (c_times < t), 0.5 ** ((t - c_times) / half_life), 0.0))
            for a, t in zip(arts, times, strict=True)
        ]
    )


def test_popularity_counts_clicks_in_the_window_before():
    h = 3600.0
    c_arts = np.array(["a", "a", "a", "b", "a"])
    c_times = np.array([0.0, 10 * h, 30 * h, 30 * h, 40 * h])
    arts = np.array(["a", "a", "b", "c"])
    times = np.array([30 * h, 30 * h + 1, 31 * h, 31 * h])
    got = popularity_scores(arts, times, c_arts, c_times, window_hours=24)
    # at 30h: the click at 10h is inside (>= 6h), the one at 30h is not strictly before
    np.testing.assert_array_equal(got, [1.0, 2.0, 1.0, 0.0])


def test_popularity_and_recency_match_brute_force():
    rng = np.random.default_rng(3)
    c_arts = rng.integers(0, 20, size=2000)
    c_times = rng.uniform(0, 7 * 86400, size=2000).round(-2)  # rounded: some equal times
    arts = rng.integers(0, 25, size=500)
    times = rng.uniform(0, 7 * 86400, size=500).round(-2)
    np.testing.assert_array_equal(
        popularity_scores(arts, times, c_arts, c_times, 24),
        _brute_popularity(arts, times, c_arts, c_times, 24 * 3600.0),
    )
    np.testing.assert_allclose(
        recency_popularity_scores(arts, times, c_arts, c_times, half_life_hours=6),
        _brute_recency(arts, times, c_arts, c_times, 6 * 3600.0),
        rtol=1e-9,
        atol=1e-12,
    )


def test_recency_accepts_datetimes_and_halves_per_half_life():
    t0 = np.datetime64("2026-11-20T10:00:00")
    c_times = np.array([t0, t0 + np.timedelta64(6, "h")])
    got = recency_popularity_scores(
        ["x"], [t0 + np.timedelta64(12, "h")], ["x", "x"], c_times, half_life_hours=6
    )
    assert got[0] == pytest.approx(0.25 + 0.5)
    assert to_seconds(np.array([t0]))[0] == pytest.approx(t0.astype("datetime64[s]").astype(np.int64))
