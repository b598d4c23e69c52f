"""The exposure-aware user x subcategory affinity term: features, numpy twin, folding, training."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import torch

from newsrec_assets.domain.affinity import (
    context_features,
    load_affinity_params,
    subcategory_categories,
    subcategory_one_hot,
    user_affinity,
    user_counts,
)
from newsrec_assets.domain.naml import NamlConfig, NamlModel, affinity_numpy_params
from newsrec_assets.domain.recommend import ServingSnapshot, ranking_vectors
from newsrec_assets.domain.training import (
    ArticleFeatures,
    ImpressionLog,
    TrainConfig,
    padded_histories,
    save_model,
    score_impressions,
    train_naml,
)

SMALL = NamlConfig(
    text_dim=8,
    news_dim=16,
    text_hidden_dim=16,
    n_categories=4,
    n_subcategories=7,
    category_emb_dim=4,
    attention_dim=8,
    dropout=0.0,
    max_history=10,
    use_prior=False,
    affinity_hidden_dim=8,
)
# subcategory id -> category id (0 = unknown for both)
CATEGORIES = np.array([0, 1, 1, 2, 2, 3, 3])


def random_events(seed: int, n: int = 400):
    rng = np.random.default_rng(seed)
    users = rng.choice(["u1", "u2", "u3"], size=n)
    subcategories = rng.integers(0, 7, size=n)
    times = rng.integers(0, 60, size=n).astype(float)  # many ties
    clicked = rng.random(n) < 0.3
    click_times = times + rng.integers(0, 5, size=n)  # clicks land at or after the impression
    return users, subcategories, times, clicked, click_times


def features_of(rows: tuple[np.ndarray, np.ndarray, np.ndarray], events) -> np.ndarray:
    """`context_features` of (user, subcategory, time) rows after the impressions and clicks of `events`."""
    users, subs, times, clicked, click_times = events
    return context_features(
        *rows, users, subs, times, users[clicked], subs[clicked], click_times[clicked], CATEGORIES
    )


def test_context_features_count_strictly_earlier_events_per_user_topic_and_overall():
    events = random_events(0)
    users, subs, times, clicked, click_times = events
    got = features_of((users, subs, times), events)
    for i in range(len(users)):
        same_user = users == users[i]
        levels = (subs == subs[i], CATEGORIES[subs] == CATEGORIES[subs[i]], np.ones(len(subs), dtype=bool))
        expected = []
        for level in levels:
            expected.append(((same_user & level) & (times < times[i])).sum())
            expected.append(((same_user & level & clicked) & (click_times < times[i])).sum())
        assert got[i].tolist() == expected, i


def test_user_counts_equal_the_features_after_every_event():
    events = random_events(1)
    users, subs, _, clicked, _ = events
    codes = {"u1": 0, "u2": 1, "u3": 2}
    raw = user_counts(
        [codes[u] for u in users], subs, np.ones(len(users)), clicked.astype(float), 3, CATEGORIES
    )  # users, subcategories, 6
    grid_users = np.repeat(["u1", "u2", "u3"], 7)
    grid_subs = np.tile(np.arange(7), 3)
    expected = features_of((grid_users, grid_subs, np.full(len(grid_users), 1e9)), events)
    np.testing.assert_array_equal(raw.reshape(-1, 6), expected)


def test_subcategory_categories_take_the_articles_majority():
    assert subcategory_categories([1, 1, 2, 2, 2], [1, 1, 3, 3, 1], 5).tolist() == [0, 1, 0, 2, 0]


def trained_like_model(seed: int = 0) -> NamlModel:
    torch.manual_seed(seed)
    model = NamlModel(SMALL).eval()
    raw = np.abs(np.random.default_rng(seed).normal(size=(50, 6)) * 20).astype(np.float32)
    model.affinity.fit_statistics(torch.as_tensor(raw), ctr_mean=0.2)
    with torch.no_grad():
        for parameter in model.affinity.parameters():
            parameter.normal_()
    return model


def test_numpy_affinity_matches_torch_and_folds_into_the_dot_product(tmp_path):
    model = trained_like_model()
    params = affinity_numpy_params(model)
    rng = np.random.default_rng(1)
    raw = np.floor(np.abs(rng.normal(size=(3, 7, 6))) * 15).astype(np.float32)  # users, subcategories, 6
    block = user_affinity(params, raw, chunk=2)
    with torch.no_grad():
        expected = model.affinity(torch.as_tensor(raw)).numpy()
    np.testing.assert_allclose(block, expected, atol=1e-5)

    users = rng.normal(size=(3, 16)).astype(np.float32)
    news = rng.normal(size=(5, 16)).astype(np.float32)
    priors = rng.normal(size=5).astype(np.float32)
    news_subcategories = np.array([1, 6, 0, 3, 3])
    ranking_users, ranking_news = ranking_vectors(users, news, priors, block, news_subcategories)
    np.testing.assert_allclose(
        ranking_users @ ranking_news.T,
        users @ news.T + priors[None, :] + block[:, news_subcategories],
        atol=1e-5,
    )
    assert subcategory_one_hot([2, 9, -1], 4).tolist() == [[0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]

    save_model(model, tmp_path / "with")
    for name, value in load_affinity_params(tmp_path / "with").items():
        np.testing.assert_array_equal(value, params[name])
    save_model(NamlModel(NamlConfig(**{**SMALL.to_dict(), "use_affinity": False})), tmp_path / "without")
    assert load_affinity_params(tmp_path / "without") is None


def test_the_serving_snapshot_keeps_the_affinity_blocks(tmp_path):
    rng = np.random.default_rng(0)
    snapshot = ServingSnapshot(
        model_version="naml-x",
        watermark=datetime(2026, 11, 20, tzinfo=UTC),
        article_ids=np.array(["a1", "a2"], dtype=object),
        news_vectors=rng.normal(size=(2, 4)).astype(np.float32),
        published_at_us=np.array([1, 2]),
        candidate_rows=np.array([0, 1]),
        candidate_priors=np.zeros(2, dtype=np.float32),
        user_ids=np.array(["u1", "u2"], dtype=object),
        history_rows=np.array([[0, -1], [1, 0]], dtype=np.int32),
        encoder_params={"proj_weight": np.ones((2, 4)), "proj_bias": np.zeros(2), "query": np.ones(2)},
        user_affinity=np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]], dtype=np.float32),
        article_subcategories=np.array([2, 1]),
    )
    snapshot.save(tmp_path)
    loaded = ServingSnapshot.load(tmp_path)
    np.testing.assert_array_equal(loaded.article_subcategories, [2, 1])
    np.testing.assert_array_equal(loaded.affinity_of(["u2", "u9"]), [[1.0, 0.0, -0.5], [0.0, 0.0, 0.0]])


def exposure_problem(seed: int = 0, n_users: int = 120):
    """Clicks alone cannot tell a user's topics apart; what the user was shown and passed over can.

    Each user is shown many articles of one subcategory and clicks few of them, and few of another
    and clicks most: about as many clicks in both, so click histories look alike, while the CTRs
    differ tenfold. Article vectors are noise.
    """
    rng = np.random.default_rng(seed)
    n_articles, per_subcategory = 120, 20
    subcats = np.repeat(np.arange(1, 7), per_subcategory)
    articles = ArticleFeatures(
        title_vecs=rng.normal(size=(n_articles, 8)).astype(np.float32),
        body_vecs=rng.normal(size=(n_articles, 8)).astype(np.float32),
        cat_ids=CATEGORIES[subcats],
        subcat_ids=subcats,
    )
    columns: dict[str, list] = {
        k: [] for k in ("imp", "user", "time", "row", "clicked", "split", "click_time")
    }
    histories: dict[str, list[int]] = {}
    for u in range(n_users):
        flooded, liked = rng.choice(np.arange(1, 7), size=2, replace=False)
        history: list[int] = []
        for j in range(12):
            t = float(u * 1000 + j * 10)
            validation = j >= 10
            mix = [liked] * 4 + [flooded] * 4 if validation else [flooded] * 7 + [liked] * 1
            shown = [int(rng.choice(np.flatnonzero(subcats == s))) for s in mix]
            for row in shown:
                p = 0.6 if subcats[row] == liked else 0.06
                click = bool(rng.random() < p)
                for key, value in zip(
                    columns,
                    (f"u{u}-{j}", f"u{u}", t, row, click, "validation" if validation else "train", t + 1),
                    strict=True,
                ):
                    columns[key].append(value)
                if click:
                    history.append(row)
            histories[f"u{u}-{j}"] = list(history)
    log = ImpressionLog(
        impression_ids=np.array(columns["imp"]),
        user_ids=np.array(columns["user"]),
        shown_times=np.array(columns["time"]),
        article_rows=np.array(columns["row"]),
        clicked=np.array(columns["clicked"]),
        split=np.array(columns["split"]),
    )
    # histories hold the clicks before each impression only
    histories = {
        f"u{u}-{j}": histories[f"u{u}-{j - 1}"] if j else [] for u in range(n_users) for j in range(12)
    }
    rows_subcats = subcats[log.article_rows]
    clicked = log.clicked
    raw = context_features(
        log.user_ids,
        rows_subcats,
        log.shown_times,
        log.user_ids,
        rows_subcats,
        log.shown_times,
        log.user_ids[clicked],
        rows_subcats[clicked],
        np.array(columns["click_time"])[clicked],
        CATEGORIES,
    )
    return articles, log, histories, raw


FAST = TrainConfig(batch_size=32, lr=5e-3, max_epochs=6, patience=2, time_budget_s=30, num_threads=1)


def test_training_with_the_affinity_term_learns_from_what_users_pass_over():
    articles, log, histories, raw = exposure_problem()
    plain = NamlConfig(**{**SMALL.to_dict(), "use_affinity": False})
    without = train_naml(articles, log, histories, plain, FAST)
    with_affinity = train_naml(articles, log, histories, SMALL, FAST, affinity_features=raw)
    assert with_affinity.best_val_auc > without.best_val_auc + 0.1, (with_affinity.history, without.history)
    uniq, codes = np.unique(log.impression_ids, return_inverse=True)
    hist_rows, hist_mask = padded_histories(uniq, histories, SMALL.max_history)
    val = log.split == "validation"
    with pytest.raises(ValueError, match="affinity_features"):
        score_impressions(
            with_affinity.model, articles, codes[val], log.article_rows[val], hist_rows, hist_mask
        )
    with pytest.raises(ValueError, match="affinity_features"):
        train_naml(articles, log, histories, SMALL, FAST)
