"""Ranking rules: top-k against brute force, the cold-start mixture and the fresh merge, by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsrec_assets.domain.ranking import (
    assign_variant,
    cap_per_group,
    cold_start_list,
    exclusion_csr,
    intra_list_diversity,
    merge_by_score,
    merge_fresh_articles,
    top_k_scores,
)


def brute_force_top_k(users, articles, k, excluded):
    """Per-user Python reference: sort every eligible article by (-score, index)."""
    out_idx, out_scores = [], []
    for u, user in enumerate(users):
        scores = [(float(user @ article), a) for a, article in enumerate(articles) if a not in excluded[u]]
        scores.sort(key=lambda pair: (-pair[0], pair[1]))
        out_idx.append([a for _, a in scores[:k]])
        out_scores.append([s for s, _ in scores[:k]])
    return out_idx, out_scores


def test_top_k_by_hand():
    users = np.array([[1.0, 0.0], [0.0, 1.0]])
    articles = np.array([[3.0, 0.0], [1.0, 1.0], [0.0, 2.0], [2.0, 5.0]])
    # user 0 scores 3, 1, 0, 2 ; user 1 scores 0, 1, 2, 5
    indices, scores = top_k_scores(users, articles, k=2)
    assert indices.tolist() == [[0, 3], [3, 2]]
    assert scores.tolist() == [[3.0, 2.0], [5.0, 2.0]]
    assert scores.dtype == np.float32

    indices, scores = top_k_scores(users, articles, k=2, exclude=[[0], [3, 2]])
    assert indices.tolist() == [[3, 1], [1, 0]]
    assert scores.tolist() == [[2.0, 1.0], [1.0, 0.0]]


@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_top_k_matches_brute_force(chunk_size):
    rng = np.random.default_rng(7)
    users = rng.normal(size=(53, 16)).astype(np.float32)
    articles = rng.normal(size=(211, 16)).astype(np.float32)
    excluded = [set(rng.choice(211, size=rng.integers(0, 30), replace=False).tolist()) for _ in range(53)]
    k = 10

    indices, scores = top_k_scores(
        users, articles, k, exclude=[sorted(e) for e in excluded], chunk_size=chunk_size
    )

    ref_idx, ref_scores = brute_force_top_k(users, articles, k, excluded)
    assert indices.tolist() == ref_idx
    np.testing.assert_allclose(scores, np.array(ref_scores), rtol=1e-5, atol=1e-5)
    for u in range(len(users)):
        assert not excluded[u] & set(indices[u].tolist())


def test_exclusion_formats_agree():
    rng = np.random.default_rng(1)
    users = rng.normal(size=(5, 4))
    articles = rng.normal(size=(12, 4))
    per_user = [[0, 1], [], [11], [2, 3, 4], []]
    indptr, indices = exclusion_csr(per_user, 5)
    assert indptr.tolist() == [0, 2, 2, 3, 6, 6]
    assert indices.tolist() == [0, 1, 11, 2, 3, 4]

    class Csr:  # anything with .indptr/.indices, e.g. a scipy CSR matrix
        pass

    csr = Csr()
    csr.indptr, csr.indices = indptr, indices
    expected = top_k_scores(users, articles, 4, exclude=per_user)
    for exclude in ((indptr, indices), csr):
        got = top_k_scores(users, articles, 4, exclude=exclude, chunk_size=2)
        assert got[0].tolist() == expected[0].tolist()


def test_top_k_when_fewer_articles_are_eligible_than_k():
    users = np.array([[1.0]])
    articles = np.array([[1.0], [2.0], [3.0]])
    indices, scores = top_k_scores(users, articles, k=5, exclude=[[1, 2]])
    assert indices.shape == (1, 3)  # k clamped to the number of articles
    assert indices[0, 0] == 0 and scores[0, 0] == 1.0
    assert np.isneginf(scores[0, 1:]).all()  # the tail is excluded articles, flagged -inf


def test_top_k_rejects_bad_input():
    with pytest.raises(ValueError):
        top_k_scores(np.ones((2, 3)), np.ones((4, 2)), k=1)
    with pytest.raises(ValueError):
        top_k_scores(np.ones((2, 3)), np.ones((4, 3)), k=0)
    with pytest.raises(ValueError):
        top_k_scores(np.ones((2, 3)), np.ones((4, 3)), k=1, exclude=[[4], []])


def test_cold_start_list_by_hand():
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    ids = ["old_popular", "fresh_unknown", "fresh_popular", "future"]
    published = [now - timedelta(hours=12), now, now - timedelta(hours=6), now + timedelta(hours=1)]
    popularity = [np.e**2 - 1, 0.0, np.e - 1, 1000.0]  # log1p: 2, 0, 1 (future: left out)

    got_ids, got_scores = cold_start_list(ids, published, popularity, now, k=3, freshness_half_life_hours=6)

    # score = 0.5 * log1p(pop) / 2 + 0.5 * 0.5 ** (age_h / 6)
    expected = {
        "old_popular": 0.5 * 1.0 + 0.5 * 0.25,  # 0.625
        "fresh_unknown": 0.5 * 0.0 + 0.5 * 1.0,  # 0.5
        "fresh_popular": 0.5 * 0.5 + 0.5 * 0.5,  # 0.5 (tie: earlier input first)
    }
    assert got_ids.tolist() == ["old_popular", "fresh_unknown", "fresh_popular"]
    np.testing.assert_allclose(got_scores, [expected[i] for i in got_ids], rtol=1e-6)


def test_cold_start_list_weights_and_time_types():
    now = np.datetime64("2026-11-20T12:00:00")
    published = np.array(["2026-11-20T11:00:00", "2026-11-19T12:00:00"], dtype="datetime64[s]")
    ids, scores = cold_start_list(["a", "b"], published, [0, 100], now, k=5, popularity_weight=0.0)
    assert ids.tolist() == ["a", "b"]  # freshness only
    np.testing.assert_allclose(scores, [0.5 ** (1 / 6), 0.5**4], rtol=1e-6)
    ids, _ = cold_start_list(["a", "b"], published, [0, 100], now, k=1, popularity_weight=1.0)
    assert ids.tolist() == ["b"]  # popularity only
    with pytest.raises(ValueError):
        cold_start_list(["a"], published[:1], [-1], now, k=1)


def first(k, merged):
    """The first k merged items as arrays `(ids, scores, is_fresh)`."""
    items = list(islice(merged, k))
    return (
        np.asarray([i[0] for i in items], dtype=str),
        np.asarray([i[1] for i in items], dtype=np.float32),
        np.asarray([i[2] for i in items], dtype=bool),
    )


def test_merge_fresh_articles_by_hand():
    stored_ids = ["s1", "s2", "s3"]
    stored_scores = [0.9, 0.5, 0.1]
    user_vec = np.array([1.0, 0.0])
    fresh_ids = ["f1", "f2", "s3"]
    fresh_vecs = np.array([[0.7, 5.0], [0.05, 1.0], [0.6, 0.0]])  # scores 0.7, 0.05, 0.6

    ids, scores, is_fresh = first(
        4, merge_fresh_articles(stored_ids, stored_scores, user_vec, fresh_ids, fresh_vecs)
    )

    # s3 appears in both: once, with its higher (fresh) score 0.6.
    assert ids.tolist() == ["s1", "f1", "s3", "s2"]
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.6, 0.5], rtol=1e-6)
    assert is_fresh.tolist() == [False, True, True, False]


def test_merge_fresh_articles_edge_cases():
    ids, scores, is_fresh = first(
        1, merge_fresh_articles(["a", "b"], [2.0, 1.0], np.ones(2), [], np.empty((0, 2)))
    )
    assert ids.tolist() == ["a"] and scores.tolist() == [2.0] and is_fresh.tolist() == [False]

    # Equal scores keep the stored item first.
    ids, _, is_fresh = first(2, merge_fresh_articles(["a"], [1.0], np.ones(1), ["b"], np.ones((1, 1))))
    assert ids.tolist() == ["a", "b"] and is_fresh.tolist() == [False, True]

    # An empty stored list takes fresh articles alone.
    ids, _, _ = first(5, merge_fresh_articles([], [], np.ones(1), ["x", "y"], np.array([[1.0], [2.0]])))
    assert ids.tolist() == ["y", "x"]

    with pytest.raises(ValueError):
        merge_fresh_articles(["a"], [1.0, 2.0], np.ones(1), [], np.empty((0, 1)))


def merged_by_sorting(stored_ids, stored_scores, fresh_ids, fresh_scores):
    """Reference: concatenate, stable sort by score (stored first on ties), keep each id's best."""
    pool = [(-score, 0, i, a) for i, (a, score) in enumerate(zip(stored_ids, stored_scores, strict=True))]
    pool += [(-score, 1, i, a) for i, (a, score) in enumerate(zip(fresh_ids, fresh_scores, strict=True))]
    seen, out = set(), []
    for negative_score, source, _, article_id in sorted(pool):
        if article_id not in seen:
            seen.add(article_id)
            out.append((article_id, -negative_score, bool(source)))
    return out


scores_32 = st.floats(-4, 4, width=32)


@given(
    stored=st.lists(
        st.tuples(st.sampled_from("abcdefghij"), scores_32), max_size=10, unique_by=lambda p: p[0]
    ),
    fresh=st.lists(st.tuples(st.sampled_from("fghijklmno"), scores_32), max_size=10),
    take=st.integers(0, 25),
)
def test_merge_by_score_is_a_lazy_sort_of_both_lists(stored, fresh, take):
    stored.sort(key=lambda pair: -pair[1])  # stored lists are ranked
    stored_ids, stored_scores = [a for a, _ in stored], [s for _, s in stored]
    fresh_ids, fresh_scores = [a for a, _ in fresh], [s for _, s in fresh]
    merged = list(merge_by_score(stored_ids, stored_scores, fresh_ids, fresh_scores))
    assert merged == merged_by_sorting(stored_ids, stored_scores, fresh_ids, fresh_scores)
    ids, scores, is_fresh = first(
        take,
        merge_fresh_articles(
            stored_ids, stored_scores, np.ones(1), fresh_ids, np.array(fresh_scores).reshape(-1, 1)
        ),
    )
    assert list(zip(ids.tolist(), scores.tolist(), is_fresh.tolist(), strict=True)) == merged[:take]


def test_cap_per_group_moves_items_over_the_cap_behind_the_rest_in_order():
    groups = ["x", "x", "x", "y", "x", "z", "y", "y"]
    assert cap_per_group(groups, 2) == [0, 1, 3, 5, 6, 2, 4, 7]
    assert cap_per_group(groups, 1) == [0, 3, 5, 1, 2, 4, 6, 7]
    assert cap_per_group(groups, 0) == list(range(8))  # off


def test_intra_list_diversity_is_the_share_of_pairs_from_different_groups():
    assert intra_list_diversity(["x", "y", "z"]) == 1.0
    assert intra_list_diversity(["x", "x", "x"]) == 0.0
    assert intra_list_diversity(["x", "x", "y", "y"]) == pytest.approx(4 / 6)
    assert intra_list_diversity(["x"]) == 0.0


def test_assign_variant_is_stable_and_follows_the_weights():
    weights = {"control": 3.0, "treatment": 1.0, "paused": 0.0}
    users = [f"u{i:06d}" for i in range(4000)]
    assigned = [assign_variant(user, weights) for user in users]
    assert assigned == [assign_variant(user, dict(weights)) for user in users]  # stable
    share = assigned.count("treatment") / len(users)
    assert 0.22 < share < 0.28 and "paused" not in assigned
    reshuffled = [assign_variant(user, weights, salt="exp-2") for user in users]
    assert 0.3 < sum(a != b for a, b in zip(assigned, reshuffled, strict=True)) / len(users) < 0.45
    with pytest.raises(ValueError):
        assign_variant("u1", {"a": 0.0})
