"""The ranking glue shared by the batch and speed layers, and the speed layer's recent-clicks state."""

from datetime import UTC, datetime

import numpy as np

from newsrec_assets.domain.recommend import (
    NO_ARTICLE,
    ServingSnapshot,
    candidate_priors,
    clicked_candidates,
    encode_user_histories,
    merge_history,
    rank_for_users,
    ranking_vectors,
)


def encoder_params(dim: int) -> dict[str, np.ndarray]:
    import torch

    from newsrec_assets.domain.naml import NamlConfig, NamlModel, user_encoder_numpy_params

    torch.manual_seed(0)
    return user_encoder_numpy_params(NamlModel(NamlConfig(news_dim=dim)))


def test_clicked_candidates_maps_history_rows_to_candidate_positions():
    history = np.array([[5, 2, NO_ARTICLE], [7, NO_ARTICLE, NO_ARTICLE], [NO_ARTICLE] * 3], dtype=np.int32)
    candidates = np.array([2, 3, 5, 9])
    indptr, indices = clicked_candidates(history, candidates)
    per_user = [indices[indptr[u] : indptr[u + 1]].tolist() for u in range(3)]
    assert per_user == [
        [2, 0],
        [],
        [],
    ]  # article 5 is candidate 2, article 2 is candidate 0; 7 is no candidate


def test_rank_for_users_leaves_out_clicked_articles_and_ranks_by_dot_product():
    news = np.eye(4, dtype=np.float32)
    users = np.array([[4, 3, 2, 1], [1, 2, 3, 4]], dtype=np.float32)
    history = np.array([[0, NO_ARTICLE], [NO_ARTICLE, NO_ARTICLE]], dtype=np.int32)
    candidates = np.arange(4)
    index, scores = rank_for_users(users, news[candidates], history, candidates, k=3)
    assert index[0].tolist() == [1, 2, 3]  # article 0 was clicked
    assert index[1].tolist() == [3, 2, 1]
    assert scores[1].tolist() == [4, 3, 2]


def test_merge_history_puts_new_clicks_first_once_and_pads():
    merged = merge_history([4, 7, 9], [7, 2, NO_ARTICLE], max_history=4)
    assert merged.tolist() == [7, 2, 4, 9]
    assert merge_history([], [], 3).tolist() == [NO_ARTICLE] * 3
    assert merge_history(list(range(10)), [42], 3).tolist() == [42, 0, 1]


def test_snapshot_round_trips_and_encodes_like_the_model(tmp_path):
    rng = np.random.default_rng(0)
    params = encoder_params(8)
    snapshot = ServingSnapshot(
        model_version="naml-test",
        watermark=datetime(2026, 11, 20, 10, tzinfo=UTC),
        article_ids=np.array(["a1", "a2", "a3"], dtype=object),
        news_vectors=rng.normal(size=(3, 8)).astype(np.float32),
        published_at_us=np.array([1, 2, 3], dtype=np.int64),
        candidate_rows=np.array([1, 2]),
        candidate_priors=np.array([0.5, -0.25], dtype=np.float32),
        user_ids=np.array(["u1", "u2"], dtype=object),
        history_rows=np.array([[0, 2], [NO_ARTICLE, NO_ARTICLE]], dtype=np.int32),
        encoder_params=params,
    )
    snapshot.save(tmp_path)
    loaded = ServingSnapshot.load(tmp_path)
    assert loaded.model_version == "naml-test" and loaded.watermark == snapshot.watermark
    assert loaded.candidate_priors.tolist() == [0.5, -0.25]
    assert (
        loaded.history_of("u1") == [0, 2] and loaded.history_of("u2") == [] and loaded.history_of("zz") == []
    )
    assert loaded.article_rows(["a3", "nope"]).tolist() == [2, NO_ARTICLE]
    vectors = encode_user_histories(loaded.encoder_params, loaded.news_vectors, loaded.history_rows, chunk=1)
    from newsrec_assets.domain.user_encoding import encode_users_numpy

    expected = encode_users_numpy(params, snapshot.news_vectors[[[0, 2]]], np.array([[True, True]]))
    np.testing.assert_allclose(vectors[0], expected[0], rtol=1e-5, atol=1e-6)
    assert np.allclose(vectors[1], 0)  # no history, no user vector


def test_ranking_vectors_fold_the_prior_into_the_dot_product():
    users = np.array([[1.0, 2.0]], dtype=np.float32)
    news = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    priors = np.array([3.0, -1.0], dtype=np.float32)
    ranking_users, ranking_news = ranking_vectors(users, news, priors)
    np.testing.assert_allclose(ranking_users @ ranking_news.T, users @ news.T + priors)
    assert candidate_priors(None, np.ones(2), np.zeros(2), np.zeros(2)).tolist() == [0.0, 0.0]


def small_snapshot(user_ids: list[str], history_rows: np.ndarray, **extra) -> ServingSnapshot:
    rng = np.random.default_rng(1)
    return ServingSnapshot(
        model_version="naml-test",
        watermark=datetime(2026, 11, 20, 10, tzinfo=UTC),
        article_ids=np.array(["a0", "a1", "a2", "a3"], dtype=object),
        news_vectors=rng.normal(size=(4, 8)).astype(np.float32),
        published_at_us=np.arange(4, dtype=np.int64),
        candidate_rows=np.arange(4),
        candidate_priors=np.zeros(4, dtype=np.float32),
        user_ids=np.array(user_ids, dtype=object),
        history_rows=history_rows,
        encoder_params=encoder_params(8),
        **extra,
    )


def test_a_loaded_snapshot_maps_its_per_user_arrays_and_finds_users_by_binary_search(tmp_path):
    users = ["u10", "u1", "u2", "u100"]  # unsorted, and ids that are prefixes of others
    history = np.array([[3, NO_ARTICLE], [0, NO_ARTICLE], [1, 2], [2, NO_ARTICLE]], dtype=np.int32)
    affinity = np.arange(8, dtype=np.float32).reshape(4, 2)
    small_snapshot(users, history, user_affinity=affinity, article_subcategories=np.array([0, 1, 0, 1])).save(
        tmp_path
    )
    loaded = ServingSnapshot.load(tmp_path)
    # The per-user arrays stay on disk: a speed update pages in only the rows it reads.
    assert all(isinstance(a, np.memmap) for a in (loaded.user_ids, loaded.history_rows, loaded.user_affinity))
    assert loaded.user_ids.tolist() == sorted(users)
    assert [loaded.history_of(u) for u in users] == [[3], [0], [1, 2], [2]]
    assert loaded.histories_of(["u", "u1000", "u3"]) == [[], [], []]
    np.testing.assert_array_equal(loaded.affinity_of(["u100", "nobody"]), [[6, 7], [0, 0]])


def test_a_snapshot_in_the_former_single_archive_format_still_loads(tmp_path):
    import json

    snapshot = small_snapshot(["u2", "u1"], np.array([[1, 0], [2, NO_ARTICLE]], dtype=np.int32))
    np.savez(
        tmp_path / "snapshot.npz",
        article_ids=snapshot.article_ids.astype(str),
        news_vectors=snapshot.news_vectors,
        published_at_us=snapshot.published_at_us,
        candidate_rows=snapshot.candidate_rows,
        candidate_priors=snapshot.candidate_priors,
        user_ids=np.array(["u2", "u1"]),
        history_rows=np.array([[1, 0], [2, NO_ARTICLE]], dtype=np.int32),
    )
    np.savez(tmp_path / "user_encoder.npz", **snapshot.encoder_params)
    meta = {"model_version": "naml-test", "watermark": snapshot.watermark.isoformat()}
    (tmp_path / "snapshot.json").write_text(json.dumps(meta))
    loaded = ServingSnapshot.load(tmp_path)
    assert loaded.history_of("u2") == [1, 0] and loaded.history_of("u1") == [2]


def test_speed_lists_rank_the_merged_history_like_the_batch_would():
    from newsrec_assets.domain.recommend import speed_lists

    snapshot = small_snapshot(
        ["u1", "u2"], np.array([[0, NO_ARTICLE, NO_ARTICLE], [1, 2, 3]], dtype=np.int32)
    )
    fresh_ids = np.array(["new"], dtype=object)
    fresh_ranking = np.array([[0.5] * 8 + [0.0]], dtype=np.float32)  # [news vector, prior]
    clicks = {"u1": [("new", 20), ("a2", 10)], "u2": []}
    computed = speed_lists(snapshot, clicks, fresh_ids, fresh_ranking, k=10)

    assert computed.user_ids == ["u1"] and computed.watermarks_us == [20]  # u2 has no new click
    news = np.vstack([snapshot.news_vectors, fresh_ranking[:, :8]])
    history = np.array([[4, 2, 0]], dtype=np.int32)  # new clicks first, then the batch history
    expected_user = ranking_vectors(
        encode_user_histories(snapshot.encoder_params, news, history), news[:1], np.zeros(1)
    )[0]
    np.testing.assert_allclose(computed.user_vectors, expected_user, rtol=1e-5, atol=1e-6)
    candidates = np.vstack([ranking_vectors(expected_user[:, :8], news[:4], np.zeros(4))[1], fresh_ranking])
    index, scores = rank_for_users(expected_user, candidates, history, np.arange(5), k=10)
    finite = np.isfinite(scores[0])
    ids = np.array(["a0", "a1", "a2", "a3", "new"], dtype=object)
    assert computed.article_ids[0] == tuple(ids[index[0][finite]])
    assert set(computed.article_ids[0]) == {"a1", "a3"}  # clicked ones (a0, a2, new) left out
