"""NAML model, numpy user encoder, negative sampling, training and model files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from newsrec_assets.domain.metrics import evaluate_impressions
from newsrec_assets.domain.naml import (
    AFFINITY_CONFIG_KEYS,
    NamlConfig,
    NamlModel,
    encode_news_numpy,
    user_encoder_numpy_params,
)
from newsrec_assets.domain.training import (
    ArticleFeatures,
    ImpressionLog,
    TrainConfig,
    build_click_histories,
    load_model,
    model_version,
    padded_histories,
    sample_negatives,
    save_model,
    score_impressions,
    train_naml,
)
from newsrec_assets.domain.user_encoding import (
    encode_users_numpy,
    load_model_metadata,
    load_user_encoder_params,
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
    use_prior=False,  # the popularity prior has its own tests (test_popularity.py)
    use_affinity=False,  # so has the affinity term (test_affinity.py)
)


def _news_inputs(n: int, config: NamlConfig = SMALL, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, config.text_dim, generator=g),  # n, text_dim
        torch.randn(n, config.text_dim, generator=g),  # n, text_dim
        torch.randint(0, config.n_categories, (n,), generator=g),  # n
        torch.randint(0, config.n_subcategories, (n,), generator=g),  # n
    )


@pytest.fixture
def model() -> NamlModel:
    torch.manual_seed(0)
    return NamlModel(SMALL).eval()


# --- model -------------------------------------------------------------------------------------


def test_shapes(model):
    news = model.encode_news(*_news_inputs(10))
    assert news.shape == (10, SMALL.news_dim)
    history = news[torch.arange(12).remainder(10)].view(3, 4, -1)  # batch, H, dim
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    users = model.encode_user(history, mask)
    assert users.shape == (3, SMALL.news_dim)
    assert model.score(users, news).shape == (3, 10)  # shared candidates
    assert model.score(users, news[:6].view(3, 2, -1)).shape == (3, 2)  # per-user candidates
    logits = model(
        *_news_inputs(7), torch.zeros(3, 5, dtype=torch.long), torch.ones(3, 4, dtype=torch.long), mask
    )
    assert logits.shape == (3, 5)  # batch, 1 + K


def test_padding_does_not_change_the_user_vector(model):
    news = model.encode_news(*_news_inputs(3))
    short = news.unsqueeze(0)  # 1, 3, dim
    padded = torch.cat([news, 100 * torch.randn(7, SMALL.news_dim)]).unsqueeze(0)  # 1, 10, dim; garbage pad
    mask = torch.tensor([[True] * 3 + [False] * 7])
    torch.testing.assert_close(model.encode_user(short), model.encode_user(padded, mask))
    # padding anywhere, not only at the end
    scattered = torch.cat([padded[:, 3:5], short, padded[:, 5:]], dim=1)
    scattered_mask = torch.tensor([[False, False, True, True, True] + [False] * 5])
    torch.testing.assert_close(model.encode_user(short), model.encode_user(scattered, scattered_mask))


def test_user_without_clicks_gets_zero_vector(model):
    history = torch.randn(2, 5, SMALL.news_dim)
    mask = torch.tensor([[False] * 5, [True] + [False] * 4])
    users = model.encode_user(history, mask)
    assert torch.count_nonzero(users[0]) == 0
    torch.testing.assert_close(users[1], history[1, 0])


def test_unknown_and_out_of_range_ids_map_to_unknown(model):
    title, body, _, _ = _news_inputs(2)
    known_zero = model.encode_news(title, body, torch.tensor([0, 0]), torch.tensor([0, 0]))
    out_of_range = model.encode_news(title, body, torch.tensor([99, -1]), torch.tensor([500, -3]))
    torch.testing.assert_close(known_zero, out_of_range)


def test_numpy_user_encoder_matches_torch(model):
    rng = np.random.default_rng(0)
    history = rng.normal(size=(6, 20, SMALL.news_dim)).astype(np.float32)
    mask = rng.random((6, 20)) < 0.6
    mask[0] = False  # a user with no clicks
    mask[1] = True
    with torch.no_grad():
        expected = model.encode_user(torch.from_numpy(history), torch.from_numpy(mask)).numpy()
    got = encode_users_numpy(user_encoder_numpy_params(model), history, mask)
    assert got.dtype == np.float32 and got.shape == (6, SMALL.news_dim)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_user_encoding_module_does_not_import_torch():
    code = (
        "import sys; import newsrec_assets.domain.user_encoding; sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_config_round_trip():
    assert NamlConfig.from_dict({**SMALL.to_dict(), "unknown_key": 1}) == SMALL


# --- negative sampling and histories -----------------------------------------------------------


def test_negatives_come_from_the_impression_when_it_has_enough():
    rng = np.random.default_rng(0)
    group_negatives = np.array([10, 11, 12, 13, 14, 20, 21])  # impression 0: 5 negatives, impression 1: 2
    group_ptr = np.array([0, 5, 7])
    pos_rows = np.array([1, 2] * 200)
    pos_groups = np.array([0, 1] * 200)
    negs = sample_negatives(pos_rows, pos_groups, group_ptr, group_negatives, n_articles=100, k=4, rng=rng)
    assert negs.shape == (400, 4)
    first = negs[pos_groups == 0]
    assert np.isin(first, group_negatives[:5]).all()
    assert all(len(set(row)) == 4 for row in first)  # without replacement
    assert len(np.unique(first)) == 5  # every exposure gets picked eventually
    second = negs[pos_groups == 1]
    assert (np.sort(second[:, :2], axis=1) == [20, 21]).all()  # both real exposures first
    assert (second[:, 2:] != 2).all()  # random fill never returns the positive
    assert ((second[:, 2:] >= 0) & (second[:, 2:] < 100)).all()


def test_build_click_histories_is_strictly_before_and_newest_last():
    hist = build_click_histories(
        impression_ids=np.array(["i1", "i1", "i2", "i3"]),
        impression_user_ids=np.array(["u1", "u1", "u1", "u2"]),
        impression_times=np.array([100.0, 100.0, 300.0, 50.0]),
        click_user_ids=np.array(["u1", "u1", "u1", "u1", "u2"]),
        click_times=np.array([10.0, 20.0, 100.0, 200.0, 60.0]),
        click_article_rows=np.array([5, 6, 7, 5, 9]),
        max_history=50,
    )
    assert hist == {"i1": [5, 6], "i2": [6, 7, 5], "i3": []}


# --- training ----------------------------------------------------------------------------------


def synthetic_problem(seed: int = 0, n_articles: int = 300, n_users: int = 150, text_dim: int = 16):
    """Users click articles of their (latent) favourite category.

    The text vectors carry the category only weakly (prototype + heavy noise), so an untrained
    model, whose random projections merely preserve text similarity, ranks poorly; the category
    ids carry it exactly, which training has to discover.
    """
    rng = np.random.default_rng(seed)
    n_cat = 5
    cats = rng.integers(1, n_cat + 1, size=n_articles)
    subcats = 2 * (cats - 1) + rng.integers(1, 3, size=n_articles)
    protos = rng.normal(size=(n_cat + 1, text_dim))
    articles = ArticleFeatures(
        title_vecs=(protos[cats] + 3.0 * rng.normal(size=(n_articles, text_dim))).astype(np.float32),
        body_vecs=(protos[cats] + 3.0 * rng.normal(size=(n_articles, text_dim))).astype(np.float32),
        cat_ids=cats,
        subcat_ids=subcats,
    )
    by_cat = {c: np.flatnonzero(cats == c) for c in range(1, n_cat + 1)}
    imp_ids, users, times, rows, clicked, split, histories = [], [], [], [], [], [], {}
    for u in range(n_users):
        fav = int(rng.integers(1, n_cat + 1))
        history = list(rng.choice(by_cat[fav], size=8, replace=False))
        for j in range(4):
            imp = f"u{u}-{j}"
            shown = np.concatenate([rng.choice(by_cat[fav], size=2), rng.choice(n_articles, size=6)])
            p_click = np.where(cats[shown] == fav, 0.8, 0.05)
            clicks = rng.random(len(shown)) < p_click
            histories[imp] = [int(x) for x in history]
            for row, c in zip(shown, clicks, strict=True):
                imp_ids.append(imp)
                users.append(f"u{u}")
                times.append(float(u * 10 + j))
                rows.append(int(row))
                clicked.append(bool(c))
                split.append("validation" if j == 3 else "train")
            history = history + [int(x) for x in shown[clicks]]
    log = ImpressionLog(
        impression_ids=np.array(imp_ids),
        user_ids=np.array(users),
        shown_times=np.array(times),
        article_rows=np.array(rows),
        clicked=np.array(clicked),
        split=np.array(split),
    )
    return articles, log, histories


FAST = TrainConfig(batch_size=32, lr=3e-3, max_epochs=6, patience=2, time_budget_s=30, num_threads=1)


def test_training_learns_latent_category_preferences():
    articles, log, histories = synthetic_problem()
    result = train_naml(articles, log, histories, SMALL, FAST)
    aucs = [h["val_auc"] for h in result.history]
    assert result.best_val_auc == max(aucs)
    assert result.best_val_auc > 0.75, result.history
    untrained = train_naml(articles, log, histories, SMALL, TrainConfig(max_epochs=1, lr=0.0, num_threads=1))
    assert untrained.best_val_auc < 0.7
    assert result.best_val_auc > untrained.best_val_auc + 0.15
    assert result.seconds < FAST.time_budget_s  # a few seconds on an idle 2-core machine
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert {"epoch", "train_loss", "val_auc", "seconds"} <= set(result.history[0])
    assert not result.model.training
    # the returned weights are the best epoch's, not the last
    uniq, codes = np.unique(log.impression_ids, return_inverse=True)
    hist_rows, hist_mask = padded_histories(uniq, histories, SMALL.max_history)
    val = log.split == "validation"
    scores = score_impressions(
        result.model, articles, codes[val], log.article_rows[val], hist_rows, hist_mask
    )
    auc = evaluate_impressions(codes[val], log.clicked[val].astype(int), scores)["auc"]
    assert auc == pytest.approx(result.best_val_auc, abs=1e-6)


def test_training_is_deterministic_and_respects_the_budget():
    articles, log, histories = synthetic_problem(n_users=40)
    one_epoch = TrainConfig(batch_size=16, max_epochs=1, num_threads=1)
    a = train_naml(articles, log, histories, SMALL, one_epoch)
    b = train_naml(articles, log, histories, SMALL, one_epoch)
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    assert model_version(a.model) == model_version(b.model)
    out_of_time = train_naml(articles, log, histories, SMALL, TrainConfig(time_budget_s=0.0))
    assert out_of_time.stopped_by == "time_budget"
    assert out_of_time.history == []


def test_save_and_load_round_trip(tmp_path, model):
    version = save_model(model, tmp_path / "naml", extra={"history": [{"epoch": 1, "val_auc": 0.7}]})
    assert version.startswith("naml-") and version == model_version(model)
    loaded = load_model(tmp_path / "naml")
    inputs = _news_inputs(5)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_news(*inputs), loaded.encode_news(*inputs))
    assert model_version(loaded) == version
    meta = load_model_metadata(tmp_path / "naml")
    assert meta["version"] == version and meta["extra"]["history"][0]["val_auc"] == 0.7
    params = load_user_encoder_params(tmp_path / "naml")
    for name, value in user_encoder_numpy_params(model).items():
        np.testing.assert_array_equal(params[name], value)


def test_models_saved_before_the_prior_still_load(tmp_path, model):
    """Older artifacts have no use_prior or use_affinity key in config.json, nor their weights."""
    import json

    version = save_model(model, tmp_path / "naml")
    meta_file = tmp_path / "naml" / "config.json"
    meta = json.loads(meta_file.read_text())
    for key in ("use_prior", "prior_hidden_dim", "prior_ctr_strength", *AFFINITY_CONFIG_KEYS):
        del meta["naml_config"][key]
    meta_file.write_text(json.dumps(meta))
    loaded = load_model(tmp_path / "naml")
    assert loaded.prior is None and loaded.affinity is None and model_version(loaded) == version


def test_encode_news_numpy_matches_module(model):
    title, body, cat, subcat = _news_inputs(9)
    with torch.no_grad():
        expected = model.encode_news(title, body, cat, subcat).numpy()
    got = encode_news_numpy(model, title.numpy(), body.numpy(), cat.numpy(), subcat.numpy(), batch_size=4)
    np.testing.assert_allclose(got, expected, atol=1e-6)
