"""The batch layer's list rules: seen filtering, the fallback ranker, filling short lists, shards."""

import hashlib

import numpy as np
import pytest

from newsrec_assets.domain.batch_lists import SeenPolicy, fill_short_lists, popularity_lists, user_exclusions
from newsrec_assets.domain.ranking import top_k_scores
from newsrec_assets.domain.sharding import Shard, shard_of

# Two users, five candidates. User 0 was served candidate 1 four times without clicking, candidate 2
# once without clicking, and clicked candidate 3 long ago (outside any 50-click history).
EXPOSURES = dict(
    user_codes=np.array([0, 0, 0, 1, -1]),
    candidates=np.array([1, 2, 3, 1, 0]),
    impressions=np.array([4, 1, 0, 4, 9]),
    clicked=np.array([False, False, True, True, False]),
)
USERS = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
ARTICLES = np.array([[5.0, 0], [4.0, 0], [3.0, 0], [2.0, 0], [1.0, 0]], dtype=np.float32)


def test_served_often_without_a_click_is_dropped_and_every_click_stays_excluded():
    exclusions = user_exclusions(**EXPOSURES, n_users=2, policy=SeenPolicy(min_impressions=3))
    indices, scores = top_k_scores(USERS, ARTICLES, 5, exclude=exclusions.exclude, demote=exclusions.demote)
    assert indices[0][np.isfinite(scores[0])].tolist() == [0, 2, 4]  # 1 seen 4x, 3 clicked
    assert indices[1][np.isfinite(scores[1])].tolist() == [0, 2, 3, 4]  # 1 clicked


def test_demoting_keeps_the_article_below_the_others():
    policy = SeenPolicy(min_impressions=3, action="demote", demotion=10.0)
    exclusions = user_exclusions(**EXPOSURES, n_users=2, policy=policy)
    indices, scores = top_k_scores(
        USERS, ARTICLES, 5, exclude=exclusions.exclude, demote=exclusions.demote, demotion=policy.demotion
    )
    assert indices[0][np.isfinite(scores[0])].tolist() == [0, 2, 4, 1]
    assert scores[0][3] == pytest.approx(4.0 - 10.0)


def test_fallback_lists_are_personal_through_the_exclusions():
    exclusions = user_exclusions(**EXPOSURES, n_users=2, policy=SeenPolicy(min_impressions=3))
    indices, scores = popularity_lists(np.array([0.1, 0.9, 0.5, 0.7, 0.3]), 2, 3, exclusions)
    assert indices.tolist() == [[2, 4, 0], [3, 2, 4]]
    assert scores[0].tolist() == pytest.approx([0.5, 0.3, 0.1])


def test_a_short_list_is_filled_from_the_fallback_below_the_model_items():
    ids, scores = fill_short_lists(
        ["a", "b"], np.array([2.0, 1.5]), ["b", "c", "d", "e"], np.array([1, 0.8, 0.5, 0.1]), 4
    )
    assert ids == ["a", "b", "c", "d"]
    assert np.all(np.diff(scores) < 0) and scores[2] < 1.5
    assert fill_short_lists([], np.zeros(0), ["c"], np.array([0.5]), 3)[0] == ["c"]


def test_shards_split_users_by_a_stable_md5_hash():
    users = [f"U{i}" for i in range(1000)]
    shards = [shard_of(u, 4) for u in users]
    assert shards == [int(hashlib.md5(u.encode()).hexdigest()[:8], 16) % 4 for u in users]
    assert min(np.bincount(shards)) > 200  # balanced
    assert [Shard(s, 4).holds(u) for u, s in zip(users, shards, strict=True)] == [True] * 1000
    with pytest.raises(ValueError):
        Shard(4, 4)
