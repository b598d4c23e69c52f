"""Popularity and recency prior: a per-(article, time) click score added to NAML's dot product.

NAML ranks by interest (user vector . news vector). Whether a user clicks also depends on the
article itself at the moment it is shown: news goes stale within hours, and some headlines draw
more clicks from everyone. PP-Rec (Qi et al., 2021, arXiv 2106.01300) adds a popularity score built
from an article's recency and click-through rate; we do the same with a small MLP:

    score(user, article, t) = user . news(article) + prior(article, t)

The prior sees three raw, leakage-free context facts per (article, time) pair
(``context_features``):

- ``age_hours``: hours since the article was published, at time ``t``;
- ``clicks``: clicks on the article's impressions strictly before ``t``;
- ``impressions``: impressions of the article strictly before ``t``.

The model turns them into ``[log1p(age), logit(smoothed CTR), log1p(impressions)]`` with the CTR
smoothed towards the training data's mean CTR, ``(clicks + s * mean) / (impressions + s)``,
standardises them with training statistics and applies ``Linear -> ReLU -> Linear``.
``naml.PopularityPrior`` is the torch module; ``prior_scores`` here is its numpy twin for the
batch layer, which must not need torch.

Serving folds the prior into the dot product by augmenting both sides with one dimension
(``augment_user_vectors`` / ``augment_news_vectors``): ``[u, 1] . [n, prior] = u . n + prior``,
so any top-k code that ranks by dot product ranks by NAML + prior unchanged. The prior of an
article changes with time, so augmented news vectors are valid for the moment their features
were computed (the batch layer recomputes them every run).

This module imports numpy only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from newsrec_assets.domain.metrics import to_seconds

PRIOR_FILE = "prior.npz"
RAW_FEATURES = ("age_hours", "clicks", "impressions")
MODEL_FEATURES = ("log1p_age_hours", "logit_smoothed_ctr", "log1p_impressions")
# a context head's weights (``naml.ContextHead``, ``head_scores``), f = its number of features
HEAD_PARAM_NAMES = (
    "feature_mean",  # [f] standardisation of the model features
    "feature_std",  # [f]
    "hidden_weight",  # [hidden, f]
    "hidden_bias",  # [hidden]
    "out_weight",  # [hidden]
    "out_bias",  # scalar
)
PARAM_NAMES = (
    "ctr_mean",  # scalar: mean CTR of the training impressions (smoothing target)
    "ctr_strength",  # scalar: pseudo-impressions of the smoothing prior
    *HEAD_PARAM_NAMES,
)
_CTR_EPS = 1e-6

__all__ = [
    "MODEL_FEATURES",
    "PARAM_NAMES",
    "PRIOR_FILE",
    "RAW_FEATURES",
    "augment_news_vectors",
    "augment_user_vectors",
    "context_features",
    "events_before",
    "head_scores",
    "load_params",
    "load_prior_params",
    "model_features",
    "prior_scores",
    "save_params",
    "save_prior_params",
]


def events_before(
    event_keys: np.ndarray,
    event_times: np.ndarray,
    query_keys: np.ndarray,
    query_times: np.ndarray,
) -> np.ndarray:
    """For every query, the number of events with the same key strictly before the query's time.

    Vectorised: keys and times are replaced by dense codes (one joint ``np.unique`` each), every
    (key, time) pair becomes one int64 ``key_code * n_times + time_code``, the events' composite
    values are sorted once, and two ``searchsorted`` calls count the events of the query's key
    that come before it. Keys may be of any sortable dtype; times are ``datetime64`` or seconds.

    Returns:
        int64 [n_queries].
    """
    query_keys = np.asarray(query_keys)
    event_keys = np.asarray(event_keys)
    nq = len(query_keys)
    if len(event_keys) == 0 or nq == 0:
        return np.zeros(nq, dtype=np.int64)
    _, key_codes = np.unique(np.concatenate([query_keys, event_keys]), return_inverse=True)
    times = np.concatenate([to_seconds(query_times), to_seconds(event_times)])
    _, time_codes = np.unique(times, return_inverse=True)
    n_times = int(time_codes.max()) + 1
    composite = key_codes.reshape(-1).astype(np.int64) * n_times + time_codes.reshape(-1)
    events = np.sort(composite[nq:])
    queries = composite[:nq]
    key_start = queries - time_codes.reshape(-1)[:nq]  # composite value of (key, earliest time)
    return np.searchsorted(events, queries, side="left") - np.searchsorted(events, key_start, side="left")


def context_features(
    article_keys: np.ndarray,
    times: np.ndarray,
    published_at: np.ndarray,
    impression_keys: np.ndarray,
    impression_times: np.ndarray,
    click_keys: np.ndarray,
    click_times: np.ndarray,
) -> np.ndarray:
    """Raw prior features ``[age_hours, clicks, impressions]`` for (article, time) rows.

    Args:
        article_keys, times, published_at: one row per (article, time) to describe: the article
            (any sortable id, e.g. a catalogue row), the moment (an impression's ``shown_at``, or
            the batch run's time) and the article's publication time.
        impression_keys, impression_times: every exposure of an article (the impression log).
        click_keys, click_times: every click on an exposure, at the time of the click.

    Leakage-free: only impressions and clicks strictly before each row's time count, so an
    impression never sees itself, the other articles of its list, its own click or anything later.
    Age is clipped at 0. Times are ``datetime64`` or seconds.

    Returns:
        float32 [n, 3] in ``RAW_FEATURES`` order.
    """
    t = to_seconds(times)
    age_hours = np.maximum(t - to_seconds(published_at), 0.0) / 3600.0
    impressions = events_before(impression_keys, impression_times, article_keys, t)
    clicks = events_before(click_keys, click_times, article_keys, t)
    return np.stack([age_hours, clicks, impressions], axis=1).astype(np.float32)  # n, 3


def model_features(raw: np.ndarray, ctr_mean: float, ctr_strength: float) -> np.ndarray:
    """``[log1p(age_hours), logit(smoothed CTR), log1p(impressions)]`` from raw features [n, 3].

    The CTR is smoothed towards ``ctr_mean`` with ``ctr_strength`` pseudo-impressions:
    ``(clicks + strength * mean) / (impressions + strength)``; an article never shown yet gets the
    mean. Mirrors ``naml.PopularityPrior.model_features``.
    """
    raw = np.asarray(raw, dtype=np.float32)
    age = np.maximum(raw[..., 0], 0.0)
    clicks = np.maximum(raw[..., 1], 0.0)
    impressions = np.maximum(raw[..., 2], 0.0)
    ctr = (clicks + np.float32(ctr_strength * ctr_mean)) / (impressions + np.float32(ctr_strength))
    ctr = np.clip(ctr, _CTR_EPS, 1.0 - _CTR_EPS)
    return np.stack([np.log1p(age), np.log(ctr) - np.log1p(-ctr), np.log1p(impressions)], axis=-1)


def head_scores(params: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """A context head's score in numpy (``naml.ContextHead``): standardise, ``Linear -> ReLU -> Linear``.

    ``features`` [..., f] are model features; returns float32 [...].
    """
    z = (features - params["feature_mean"]) / params["feature_std"]  # ..., f
    hidden = np.maximum(z @ params["hidden_weight"].T + params["hidden_bias"], 0.0)  # ..., hidden
    return (hidden @ params["out_weight"] + params["out_bias"]).astype(np.float32)  # ...


def prior_scores(params: dict[str, np.ndarray], raw_features: np.ndarray) -> np.ndarray:
    """The prior's additive click score per row, equal to ``naml.PopularityPrior`` in eval mode.

    Args:
        params: from ``naml.prior_numpy_params`` or ``load_prior_params``.
        raw_features: [..., 3] as returned by ``context_features``.

    Returns:
        float32 [...].
    """
    x = model_features(raw_features, float(params["ctr_mean"]), float(params["ctr_strength"]))
    return head_scores(params, x)


def augment_user_vectors(user_vecs: np.ndarray) -> np.ndarray:
    """``[u, 1]``: user vectors [batch, dim] -> [batch, dim + 1] for ranking with the prior.

    Pair with ``augment_news_vectors``: ``[u, 1] . [n, prior] = u . n + prior``.
    """
    user_vecs = np.asarray(user_vecs, dtype=np.float32)
    ones = np.ones((*user_vecs.shape[:-1], 1), dtype=np.float32)
    return np.concatenate([user_vecs, ones], axis=-1)


def augment_news_vectors(news_vecs: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """``[n, prior]``: news vectors [n, dim] and priors [n] -> [n, dim + 1].

    ``prior`` is ``prior_scores`` of each article's ``context_features`` at ranking time; the
    augmented vectors are valid for that moment only (ages and CTRs move on).
    """
    news_vecs = np.asarray(news_vecs, dtype=np.float32)
    prior = np.asarray(prior, dtype=np.float32).reshape(*news_vecs.shape[:-1], 1)
    return np.concatenate([news_vecs, prior], axis=-1)


def save_prior_params(params: dict[str, np.ndarray], folder: str | Path) -> Path:
    """Write the prior's arrays to ``<folder>/prior.npz``; returns the file path."""
    return save_params(params, Path(folder) / PRIOR_FILE, PARAM_NAMES)


def load_prior_params(folder_or_file: str | Path) -> dict[str, np.ndarray] | None:
    """The arrays written by ``save_prior_params`` (a model folder or the .npz itself).

    ``None`` when a model folder has no prior (a model trained without it): rank by the dot
    product alone.
    """
    return load_params(folder_or_file, PRIOR_FILE, PARAM_NAMES)


def save_params(params: dict[str, np.ndarray], path: Path, names: tuple[str, ...]) -> Path:
    """Write the named arrays (float32) to an .npz file; returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{name: np.asarray(params[name], dtype=np.float32) for name in names})
    return path


def load_params(
    folder_or_file: str | Path, file_name: str, names: tuple[str, ...]
) -> dict[str, np.ndarray] | None:
    """The named arrays of ``<folder>/<file_name>`` (or of the .npz given); None if a folder lacks it."""
    path = Path(folder_or_file)
    if path.is_dir():
        path = path / file_name
        if not path.exists():
            return None
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name].astype(np.float32) for name in names}
