"""Popularity/recency prior: leakage-free context features, numpy twin, files, and training with it."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from newsrec_assets.domain.metrics import evaluate_impressions
from newsrec_assets.domain.naml import NamlConfig, NamlModel, prior_numpy_params
from newsrec_assets.domain.popularity import (
    PRIOR_FILE,
    augment_news_vectors,
    augment_user_vectors,
    context_features,
    events_before,
    load_prior_params,
    prior_scores,
    save_prior_params,
)
from newsrec_assets.domain.training import (
    ArticleFeatures,
    ImpressionLog,
    TrainConfig,
    load_model,
    padded_histories,
    save_model,
    score_impressions,
    train_naml,
)

SMALL = NamlConfig(
    text_dim=16,
    news_dim=24,
    text_hidden_dim=32,
    n_categories=8,
    n_subcategories=16,
    category_emb_dim=8,
    attention_dim=16,
    dropout=0.1,
    max_history=20,
    prior_hidden_dim=8,
    use_affinity=False,  # the affinity term has its own tests (test_affinity.py)
)
HOUR = 3600.0

# --- features ----------------------------------------------------------------------------------


def test_events_before_matches_brute_force_with_ties():
    rng = np.random.default_rng(0)
    event_keys = rng.choice(np.array(["a", "b", "c", "d"]), size=300)
    event_times = rng.integers(0, 50, size=300).astype(np.float64)  # many exact ties
    query_keys = rng.choice(np.array(["a", "b", "c", "e"]), size=200)  # "e" never has events
    query_times = rng.integers(0, 55, size=200).astype(np.float64)
    got = events_before(event_keys, event_times, query_keys, query_times)
    expected = [
        int(((event_keys == k) & (event_times < t)).sum())
        for k, t in zip(query_keys, query_times, strict=True)
    ]
    assert got.tolist() == expected
    assert events_before(event_keys[:0], event_times[:0], query_keys, query_times).tolist() == [0] * 200


def test_context_features_are_leakage_free():
    t0 = np.datetime64("2026-01-01T00:00:00", "us")
    minute = np.timedelta64(60, "s")
    # article 7: impression list 1 at t0 (clicked 30 s later), list 2 at t0 + 2 min (not clicked),
    # list 3 at t0 + 5 min; article 8 shown at t0 together with article 7
    imp_keys = np.array([7, 8, 7, 7])
    imp_times = np.array([t0, t0, t0 + 2 * minute, t0 + 5 * minute])
    click_keys = np.array([7])
    click_times = np.array([t0 + np.timedelta64(30, "s")])
    published = np.array([t0 - 60 * minute] * 4)
    raw = context_features(imp_keys, imp_times, published, imp_keys, imp_times, click_keys, click_times)
    assert raw.dtype == np.float32 and raw.shape == (4, 3)
    # an impression sees neither itself, nor its list's other rows, nor its own click
    np.testing.assert_allclose(raw[0], [1.0, 0, 0])
    np.testing.assert_allclose(raw[1], [1.0, 0, 0])
    np.testing.assert_allclose(raw[2], [62 / 60, 1, 1], rtol=1e-6)  # the earlier click counts
    np.testing.assert_allclose(raw[3], [65 / 60, 1, 2], rtol=1e-6)
    # publication after the impression (clock skew) is age 0, not negative
    skewed = context_features(
        imp_keys[:1], imp_times[:1], imp_times[:1] + minute, imp_keys, imp_times, [], []
    )
    assert skewed[0, 0] == 0.0


def test_context_features_match_brute_force():
    rng = np.random.default_rng(1)
    n_articles, n_imps = 20, 400
    published = rng.uniform(0, 24 * HOUR, size=n_articles)
    imp_keys = rng.integers(0, n_articles, size=n_imps)
    imp_times = published[imp_keys] + rng.uniform(0, 48 * HOUR, size=n_imps)
    clicked = rng.random(n_imps) < 0.3
    click_keys = imp_keys[clicked]
    click_times = imp_times[clicked] + rng.exponential(60.0, size=clicked.sum())
    raw = context_features(
        imp_keys, imp_times, published[imp_keys], imp_keys, imp_times, click_keys, click_times
    )
    for i in range(n_imps):
        k, t = imp_keys[i], imp_times[i]
        expected = [
            (t - published[k]) / HOUR,
            ((click_keys == k) & (click_times < t)).sum(),
            ((imp_keys == k) & (imp_times < t)).sum(),
        ]
        np.testing.assert_allclose(raw[i], expected, rtol=1e-5)


def test_context_features_are_fast_at_demo_size():
    rng = np.random.default_rng(2)
    n = 550_000
    keys = rng.integers(0, 3000, size=n)
    times = np.sort(rng.uniform(0, 7 * 24 * HOUR, size=n))
    published = rng.uniform(-24 * HOUR, 0, size=3000)
    clicked = rng.random(n) < 0.19
    started = time.perf_counter()
    raw = context_features(keys, times, published[keys], keys, times, keys[clicked], times[clicked] + 20.0)
    assert raw.shape == (n, 3)
    assert time.perf_counter() - started < 5.0  # about 0.5 s on an idle 2-core machine


# --- the prior, torch and numpy -----------------------------------------------------------------


def _prior_model(seed: int = 0) -> NamlModel:
    torch.manual_seed(seed)
    model = NamlModel(SMALL)
    age = torch.rand(500) * 100
    clicks = torch.randint(0, 50, (500,)).float()
    raw = torch.stack([age, clicks, clicks + torch.randint(50, 500, (500,)).float()], dim=-1)  # 500, 3
    model.prior.fit_statistics(raw, ctr_mean=0.15)
    with torch.no_grad():
        model.prior.out.weight.normal_()  # zero at init; make the output depend on the input
        model.prior.out.bias.fill_(0.3)
    return model.eval()


def _raw_features(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    impressions = rng.integers(0, 2000, size=n)
    clicks = rng.binomial(impressions, 0.2)
    return np.stack([rng.uniform(0, 150, size=n), clicks, impressions], axis=1).astype(np.float32)


def test_numpy_prior_matches_torch():
    model = _prior_model()
    raw = _raw_features(1000)
    raw[0] = [0, 0, 0]  # never shown: smoothed CTR = mean
    with torch.no_grad():
        expected = model.prior_score(torch.from_numpy(raw)).numpy()
    got = prior_scores(prior_numpy_params(model), raw)
    assert got.dtype == np.float32 and got.shape == (1000,)
    assert np.std(expected) > 0.1  # a non-trivial function of the features
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    # batched shapes work the same way
    np.testing.assert_allclose(prior_scores(prior_numpy_params(model), raw.reshape(10, 100, 3)).ravel(), got)


def test_prior_params_round_trip_and_model_files(tmp_path):
    model = _prior_model()
    params = prior_numpy_params(model)
    save_prior_params(params, tmp_path)
    loaded = load_prior_params(tmp_path)
    assert loaded is not None and set(loaded) == set(params)
    for name in params:
        np.testing.assert_array_equal(loaded[name], params[name])
    # save_model writes the prior next to the weights; load_model restores it
    save_model(model, tmp_path / "naml")
    assert (tmp_path / "naml" / PRIOR_FILE).exists()
    reloaded = load_model(tmp_path / "naml")
    raw = _raw_features(50, seed=3)
    np.testing.assert_allclose(
        prior_scores(load_prior_params(tmp_path / "naml"), raw),
        reloaded.prior_score(torch.from_numpy(raw)).detach().numpy(),
        atol=1e-5,
    )
    # a model without the prior has no prior file
    save_model(NamlModel(NamlConfig(**{**SMALL.to_dict(), "use_prior": False})), tmp_path / "plain")
    assert load_prior_params(tmp_path / "plain") is None


def test_augmented_vectors_fold_the_prior_into_the_dot_product():
    rng = np.random.default_rng(0)
    users = rng.normal(size=(4, 6)).astype(np.float32)
    news = rng.normal(size=(9, 6)).astype(np.float32)
    prior = rng.normal(size=9).astype(np.float32)
    augmented = augment_user_vectors(users) @ augment_news_vectors(news, prior).T  # 4, 9
    np.testing.assert_allclose(augmented, users @ news.T + prior[None, :], atol=1e-5)


# --- training with the prior --------------------------------------------------------------------


def freshness_problem(seed: int = 0, n_articles: int = 300, n_users: int = 150, text_dim: int = 16):
    """Users click articles of their favourite category, and fresh articles much more than stale ones.

    Article vectors carry the category only; whether an article is fresh depends on when it is
    shown, which only the prior's features (age at impression time) can tell.
    """
    rng = np.random.default_rng(seed)
    n_cat = 5
    cats = rng.integers(1, n_cat + 1, size=n_articles)
    protos = rng.normal(size=(n_cat + 1, text_dim))
    articles = ArticleFeatures(
        title_vecs=(protos[cats] + 0.5 * rng.normal(size=(n_articles, text_dim))).astype(np.float32),
        body_vecs=(protos[cats] + 0.5 * rng.normal(size=(n_articles, text_dim))).astype(np.float32),
        cat_ids=cats,
        subcat_ids=2 * (cats - 1) + rng.integers(1, 3, size=n_articles),
    )
    published = rng.uniform(0, 96 * HOUR, size=n_articles)
    by_cat = {c: np.flatnonzero(cats == c) for c in range(1, n_cat + 1)}
    imp_ids, users, times, rows, clicked, split, histories = [], [], [], [], [], [], {}
    for u in range(n_users):
        fav = int(rng.integers(1, n_cat + 1))
        history = [int(x) for x in rng.choice(by_cat[fav], size=6, replace=False)]
        for j in range(4):
            t = rng.uniform(48 * HOUR, 96 * HOUR)
            live = np.flatnonzero((published < t) & (published > t - 48 * HOUR))
            shown = rng.choice(live, size=8, replace=False)
            age_h = (t - published[shown]) / HOUR
            logit = -2.5 + 2.0 * (cats[shown] == fav) + 3.0 * 0.5 ** (age_h / 4.0)
            clicks = rng.random(len(shown)) < 1 / (1 + np.exp(-logit))
            histories[f"u{u}-{j}"] = list(history)
            for row, c in zip(shown, clicks, strict=True):
                imp_ids.append(f"u{u}-{j}")
                users.append(f"u{u}")
                times.append(t)
                rows.append(int(row))
                clicked.append(bool(c))
                split.append("validation" if t > 84 * HOUR else "train")
            history = history + [int(x) for x in shown[clicks]]
    log = ImpressionLog(
        impression_ids=np.array(imp_ids),
        user_ids=np.array(users),
        shown_times=np.array(times),
        article_rows=np.array(rows),
        clicked=np.array(clicked),
        split=np.array(split),
    )
    rows_a, times_a, clicked_a = log.article_rows, log.shown_times, log.clicked
    raw = context_features(
        rows_a, times_a, published[rows_a], rows_a, times_a, rows_a[clicked_a], times_a[clicked_a] + 30.0
    )
    return articles, log, histories, raw


FAST = TrainConfig(batch_size=32, lr=3e-3, max_epochs=5, patience=2, time_budget_s=30, num_threads=1)


def test_training_with_the_prior_learns_freshness():
    articles, log, histories, raw = freshness_problem()
    plain = NamlConfig(**{**SMALL.to_dict(), "use_prior": False})
    without = train_naml(articles, log, histories, plain, FAST)
    with_prior = train_naml(articles, log, histories, SMALL, FAST, prior_features=raw)
    assert with_prior.best_val_auc > without.best_val_auc + 0.05, (with_prior.history, without.history)
    # the model's validation scores include the prior: recompute them through score_impressions
    uniq, codes = np.unique(log.impression_ids, return_inverse=True)
    hist_rows, hist_mask = padded_histories(uniq, histories, SMALL.max_history)
    val = log.split == "validation"
    scores = score_impressions(
        with_prior.model, articles, codes[val], log.article_rows[val], hist_rows, hist_mask,
        prior_features=raw[val],
    )  # fmt: skip
    auc = evaluate_impressions(codes[val], log.clicked[val].astype(int), scores)["auc"]
    assert auc == pytest.approx(with_prior.best_val_auc, abs=1e-6)
    # fresher articles get a higher prior, all else equal
    probe = np.array([[1.0, 5, 50], [24.0, 5, 50]], dtype=np.float32)
    fresh, stale = prior_scores(prior_numpy_params(with_prior.model), probe)
    assert fresh > stale
    with pytest.raises(ValueError, match="prior_features"):
        score_impressions(with_prior.model, articles, codes[val], log.article_rows[val], hist_rows, hist_mask)


def test_prior_needs_its_features():
    articles, log, histories, _ = freshness_problem(n_users=10)
    with pytest.raises(ValueError, match="prior_features"):
        train_naml(articles, log, histories, SMALL, FAST)
