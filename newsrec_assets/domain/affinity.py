"""Exposure-aware user x subcategory affinity: what a user clicked of what they were shown, per topic.

NAML's user encoder attends over the articles a user clicked, so it learns which topics a user
reads, but not which topics a user is shown and passes over: a subcategory clicked 3 times out of
5 impressions and one clicked 3 times out of 60 look alike to it. The affinity term adds what the
impressions say:

    score(user, article, t) = user . news(article) + prior(article, t) + affinity(user, s, t)

with ``s`` the article's subcategory. ``affinity`` is a small MLP over per-(user, subcategory)
counts of the impressions and clicks before ``t`` (``context_features``): the click-through rate
in the subcategory and in its category, each shrunk towards the user's own CTR (itself shrunk
towards the training mean) and taken relative to it, how many impressions those rates rest on, and
the user's CTR. Shrinking is what keeps three impressions from counting as much as sixty.

Serving folds the term into the dot product like the prior, as one more block of the augmented
vectors (``recommend.ranking_vectors``): the user side gets ``affinity(user, s)`` for every
subcategory ``s`` (``user_affinity``), the news side a one-hot of its subcategory
(``subcategory_one_hot``), so ``[u, 1, a_u] . [n, prior, e_s] = u . n + prior + a_u[s]``. The
block is valid for the moment its counts were taken (the batch layer recomputes it every run).

Subcategory ids are the model's (``Catalogue``: 0 = unknown, which counts as a subcategory of its
own here). This module imports numpy only; ``naml.SubcategoryAffinity`` is the torch side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from newsrec_assets.domain.popularity import (
    HEAD_PARAM_NAMES,
    events_before,
    head_scores,
    load_params,
    save_params,
)

AFFINITY_FILE = "affinity.npz"
RAW_FEATURES = (
    "subcategory_impressions",
    "subcategory_clicks",
    "category_impressions",
    "category_clicks",
    "impressions",
    "clicks",
)
MODEL_FEATURES = (
    "subcategory_ctr_vs_user",
    "log1p_subcategory_impressions",
    "category_ctr_vs_user",
    "log1p_category_impressions",
    "user_ctr_logit",
)
PARAM_NAMES = (
    "ctr_mean",  # scalar: mean CTR of the training impressions
    "strength",  # scalar: pseudo-impressions of each shrinkage
    *HEAD_PARAM_NAMES,
)
_CTR_EPS = 1e-6

__all__ = [
    "AFFINITY_FILE",
    "MODEL_FEATURES",
    "PARAM_NAMES",
    "RAW_FEATURES",
    "affinity_scores",
    "context_features",
    "counts_by_subcategory",
    "load_affinity_params",
    "model_features",
    "save_affinity_params",
    "subcategory_categories",
    "subcategory_one_hot",
    "user_affinity",
    "user_counts",
]


def subcategory_categories(
    category_ids: np.ndarray, subcategory_ids: np.ndarray, n_subcategories: int
) -> np.ndarray:
    """The category id of every subcategory id (the most frequent among the articles; 0 if none).

    Args:
        category_ids, subcategory_ids: one pair per article (``ArticleFeatures.cat_ids``/``subcat_ids``).
        n_subcategories: size of the subcategory vocabulary, unknown (0) included.
    """
    category_ids = np.asarray(category_ids, dtype=np.int64)
    subcategory_ids = np.asarray(subcategory_ids, dtype=np.int64)
    n_categories = int(category_ids.max(initial=0)) + 1
    counts = np.zeros((n_subcategories, n_categories), dtype=np.int64)
    inside = (subcategory_ids >= 0) & (subcategory_ids < n_subcategories)
    np.add.at(counts, (subcategory_ids[inside], category_ids[inside]), 1)
    return counts.argmax(axis=1)


def context_features(
    user_keys: np.ndarray,
    subcategory_ids: np.ndarray,
    times: np.ndarray,
    impression_user_keys: np.ndarray,
    impression_subcategory_ids: np.ndarray,
    impression_times: np.ndarray,
    click_user_keys: np.ndarray,
    click_subcategory_ids: np.ndarray,
    click_times: np.ndarray,
    categories: np.ndarray,
) -> np.ndarray:
    """Raw affinity features (``RAW_FEATURES``) of (user, subcategory, time) rows, leakage-free.

    Args:
        user_keys, subcategory_ids, times: the rows to describe (e.g. every impression row: its
            user, its article's subcategory, its time).
        impression_user_keys, impression_subcategory_ids, impression_times: every exposure.
        click_user_keys, click_subcategory_ids, click_times: every click on an exposure, at the
            time of the click.
        categories: ``subcategory_categories``: the category of each subcategory id.

    Only events strictly before each row's time count, so an impression never sees itself, the
    rest of its list or its own click. Times are ``datetime64`` or seconds.

    Returns:
        float32 [n, 6].
    """
    users = np.concatenate([np.asarray(k) for k in (user_keys, impression_user_keys, click_user_keys)])
    _, codes = np.unique(users, return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64)
    n_rows, n_impressions = len(user_keys), len(impression_user_keys)
    parts = (slice(0, n_rows), slice(n_rows, n_rows + n_impressions), slice(n_rows + n_impressions, None))
    subcategories = [
        np.asarray(s, dtype=np.int64)
        for s in (subcategory_ids, impression_subcategory_ids, click_subcategory_ids)
    ]
    categories = np.asarray(categories, dtype=np.int64)
    n_sub, n_cat = len(categories), int(categories.max(initial=0)) + 1
    keys = {
        "subcategory": [codes[p] * n_sub + s for p, s in zip(parts, subcategories, strict=True)],
        "category": [codes[p] * n_cat + categories[s] for p, s in zip(parts, subcategories, strict=True)],
        "user": [codes[p] for p in parts],
    }
    columns = []
    for level in ("subcategory", "category", "user"):
        rows, exposures, clicks = keys[level]
        columns.append(events_before(exposures, impression_times, rows, times))
        columns.append(events_before(clicks, click_times, rows, times))
    return np.stack(columns, axis=1).astype(np.float32)  # n, 6


def user_counts(
    user_codes: np.ndarray,
    subcategory_ids: np.ndarray,
    impressions: np.ndarray,
    clicks: np.ndarray,
    n_users: int,
    categories: np.ndarray,
) -> np.ndarray:
    """Raw affinity features of every (user, subcategory) pair now, from aggregated counts.

    Args:
        user_codes, subcategory_ids, impressions, clicks: one row per (user, subcategory) with
            impressions and clicks so far (pairs may repeat; they add up). ``user_codes`` index the
            users ``0..n_users-1``.
        categories: ``subcategory_categories`` (its length is the number of subcategory ids).

    Returns:
        float32 [n_users, n_subcategories, 6] in ``RAW_FEATURES`` order, ready for
        ``user_affinity``.
    """
    shape = (n_users, len(categories))
    user_codes = np.asarray(user_codes, dtype=np.int64)
    subcategory_ids = np.asarray(subcategory_ids, dtype=np.int64)
    shown, clicked = np.zeros(shape), np.zeros(shape)
    np.add.at(shown, (user_codes, subcategory_ids), np.asarray(impressions, dtype=np.float64))
    np.add.at(clicked, (user_codes, subcategory_ids), np.asarray(clicks, dtype=np.float64))
    return counts_by_subcategory(shown, clicked, categories)


def counts_by_subcategory(impressions: np.ndarray, clicks: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """Raw affinity features from per-(user, subcategory) impression and click matrices [users, S].

    Returns float32 [users, S, 6] in ``RAW_FEATURES`` order (category and user totals summed here).
    """
    categories = np.asarray(categories, dtype=np.int64)
    n_cat = int(categories.max(initial=0)) + 1
    by_subcategory = np.stack([impressions, clicks]).astype(np.float64)  # 2, users, S
    by_category = np.zeros((2, by_subcategory.shape[1], n_cat))
    for subcategory, category in enumerate(categories.tolist()):
        by_category[:, :, category] += by_subcategory[:, :, subcategory]
    totals = by_subcategory.sum(axis=2)  # 2, users
    raw = np.empty((*by_subcategory.shape[1:], 6), dtype=np.float32)
    raw[:, :, 0], raw[:, :, 1] = by_subcategory[0], by_subcategory[1]
    raw[:, :, 2], raw[:, :, 3] = by_category[0][:, categories], by_category[1][:, categories]
    raw[:, :, 4], raw[:, :, 5] = totals[0][:, None], totals[1][:, None]
    return raw


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _CTR_EPS, 1.0 - _CTR_EPS)
    return np.log(p) - np.log1p(-p)


def model_features(raw: np.ndarray, ctr_mean: float, strength: float) -> np.ndarray:
    """``MODEL_FEATURES`` from raw features [..., 6]: shrunk CTR logits and evidence sizes, float32.

    The user's CTR is shrunk towards ``ctr_mean``, and the subcategory's and category's CTRs
    towards the user's, each with ``strength`` pseudo-impressions; the topic logits are taken
    relative to the user's logit, so 0 means "clicks this topic as often as anything else".
    """
    raw = np.maximum(np.asarray(raw, dtype=np.float64), 0.0)
    sub_imps, sub_clicks, cat_imps, cat_clicks, imps, clicks = np.moveaxis(raw, -1, 0)
    user_ctr = (clicks + strength * ctr_mean) / (imps + strength)
    user_logit = _logit(user_ctr)
    sub_logit = _logit((sub_clicks + strength * user_ctr) / (sub_imps + strength))
    cat_logit = _logit((cat_clicks + strength * user_ctr) / (cat_imps + strength))
    features = [
        sub_logit - user_logit,
        np.log1p(sub_imps),
        cat_logit - user_logit,
        np.log1p(cat_imps),
        user_logit,
    ]
    return np.stack(features, axis=-1).astype(np.float32)


def affinity_scores(params: dict[str, np.ndarray], raw: np.ndarray) -> np.ndarray:
    """The affinity term per row, as ``naml.SubcategoryAffinity`` in eval mode: raw [..., 6] -> [...]."""
    return head_scores(params, model_features(raw, float(params["ctr_mean"]), float(params["strength"])))


def user_affinity(params: dict[str, np.ndarray] | None, raw: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Every user's affinity to every subcategory, the user side of the folded block.

    Args:
        params: from ``naml.affinity_numpy_params`` or ``load_affinity_params``; ``None`` (a
            model without the term) gives an empty block.
        raw: [users, n_subcategories, 6] from ``user_counts``.

    Returns:
        float32 [users, n_subcategories] (or [users, 0] without params).
    """
    raw = np.asarray(raw, dtype=np.float32)
    if params is None:
        return np.zeros((raw.shape[0], 0), dtype=np.float32)
    out = np.empty(raw.shape[:2], dtype=np.float32)
    for start in range(0, raw.shape[0], chunk):
        out[start : start + chunk] = affinity_scores(params, raw[start : start + chunk])
    return out


def subcategory_one_hot(subcategory_ids: np.ndarray, n_subcategories: int) -> np.ndarray:
    """The news side of the folded block: float32 [n, n_subcategories]; ids outside the range get zeros."""
    ids = np.asarray(subcategory_ids, dtype=np.int64).reshape(-1)
    out = np.zeros((len(ids), n_subcategories), dtype=np.float32)
    inside = np.flatnonzero((ids >= 0) & (ids < n_subcategories))
    out[inside, ids[inside]] = 1.0
    return out


def save_affinity_params(params: dict[str, np.ndarray], folder: str | Path) -> Path:
    """Write the affinity term's arrays to ``<folder>/affinity.npz``; returns the file path."""
    return save_params(params, Path(folder) / AFFINITY_FILE, PARAM_NAMES)


def load_affinity_params(folder_or_file: str | Path) -> dict[str, np.ndarray] | None:
    """The arrays written by ``save_affinity_params``; ``None`` for a model folder without the term."""
    return load_params(folder_or_file, AFFINITY_FILE, PARAM_NAMES)
