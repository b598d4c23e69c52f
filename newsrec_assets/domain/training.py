"""NAML training with negative sampling, early stopping on validation AUC, and model save/load.

Input is plain numpy/python so that the use-case layer can feed it from any warehouse:

- ``ArticleFeatures``: per article row, the title and body vectors from the text encoder and the
  category/subcategory ids (0 = unknown).
- ``ImpressionLog``: one row per article shown in an impression (impression id, user id, time,
  article row, clicked, split ``train``/``validation``/``test``; test rows take no part here).
- ``histories``: per impression id, the article rows the user clicked before that impression,
  newest last (``build_click_histories`` derives them from a click log).
- ``prior_features`` (when the model has the popularity/recency prior): per impression row, the
  raw ``[age_hours, clicks, impressions]`` of its article at the impression's time
  (``popularity.context_features``); the prior's score is added to each candidate's logit.
- ``affinity_features`` (when the model has the affinity term): per impression row, the raw
  counts of the user's impressions and clicks in the article's subcategory, its category and
  overall before the row's time (``affinity.context_features``); its score is added too.

Each click in a train impression becomes one sample: the clicked article plus K negatives drawn
from the same impression's non-clicked articles (real exposures), topped up with random catalogue
articles when the impression has fewer than K. Loss: softmax cross-entropy over the 1 + K
candidates, as in the NAML paper. With the prior or the affinity term, the random top-up articles
have no features at the impression's time, so they are masked out of the softmax: a click is
compared with what was actually shown next to it.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from newsrec_assets.domain.affinity import save_affinity_params
from newsrec_assets.domain.metrics import evaluate_impressions, to_seconds
from newsrec_assets.domain.naml import (
    AFFINITY_CONFIG_KEYS,
    PRIOR_CONFIG_KEYS,
    NamlConfig,
    NamlModel,
    affinity_numpy_params,
    encode_news_numpy,
    prior_numpy_params,
    user_encoder_numpy_params,
)
from newsrec_assets.domain.popularity import save_prior_params
from newsrec_assets.domain.torch_utils import seed_everything, torch_threads
from newsrec_assets.domain.user_encoding import MODEL_CONFIG_FILE, save_user_encoder_params

WEIGHTS_FILE = "weights.pt"

__all__ = [
    "ArticleFeatures",
    "ImpressionLog",
    "TrainConfig",
    "TrainResult",
    "build_click_histories",
    "load_model",
    "model_version",
    "padded_histories",
    "sample_negatives",
    "save_model",
    "score_impressions",
    "train_naml",
]


@dataclass(frozen=True)
class ArticleFeatures:
    """Model inputs per article row (row i of every array describes article i)."""

    title_vecs: np.ndarray  # n_articles, text_dim
    body_vecs: np.ndarray  # n_articles, text_dim
    cat_ids: np.ndarray  # n_articles
    subcat_ids: np.ndarray  # n_articles

    def __post_init__(self) -> None:
        n = len(self.cat_ids)
        if not (len(self.title_vecs) == len(self.body_vecs) == len(self.subcat_ids) == n):
            raise ValueError("all ArticleFeatures arrays must have one row per article")

    def __len__(self) -> int:
        return len(self.cat_ids)

    @property
    def text_dim(self) -> int:
        """Size of the title/body vectors."""
        return int(np.asarray(self.title_vecs).shape[1])

    def as_tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The four arrays as torch tensors (float32, float32, int64, int64)."""
        return (
            torch.as_tensor(np.asarray(self.title_vecs, dtype=np.float32)),
            torch.as_tensor(np.asarray(self.body_vecs, dtype=np.float32)),
            torch.as_tensor(np.asarray(self.cat_ids, dtype=np.int64)),
            torch.as_tensor(np.asarray(self.subcat_ids, dtype=np.int64)),
        )


@dataclass(frozen=True)
class ImpressionLog:
    """One row per article shown in an impression."""

    impression_ids: np.ndarray
    user_ids: np.ndarray
    shown_times: np.ndarray
    article_rows: np.ndarray  # int, row in ArticleFeatures
    clicked: np.ndarray  # bool/0-1
    split: np.ndarray  # "train" / "validation" / "test" (test rows are never read in training)

    def __post_init__(self) -> None:
        n = len(self.impression_ids)
        for f in fields(self):
            if len(getattr(self, f.name)) != n:
                raise ValueError(
                    f"ImpressionLog.{f.name} has {len(getattr(self, f.name))} rows, expected {n}"
                )


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (the model's sizes live in ``NamlConfig``)."""

    negatives: int = 4  # K
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_epochs: int = 10
    patience: int = 2  # epochs without validation-AUC gain before stopping
    min_delta: float = 1e-4
    time_budget_s: float = 240.0  # wall clock for the whole call, checked before every batch
    seed: int = 0
    num_threads: int | None = None  # None: one per core
    eval_batch_size: int = 2048
    progress: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (e.g. the ``extra`` of ``save_model``)."""
        return asdict(self)


@dataclass
class TrainResult:
    """What ``train_naml`` returns: the model with the best validation AUC, and a history to plot."""

    model: NamlModel
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per epoch
    best_epoch: int | None = None
    best_val_auc: float = float("nan")
    stopped_by: str = "max_epochs"  # "max_epochs" | "early_stopping" | "time_budget"
    seconds: float = 0.0
    n_train_samples: int = 0


def padded_histories(
    keys: Sequence[Hashable] | np.ndarray,
    histories: Mapping[Any, Sequence[int]],
    max_history: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Histories as a padded matrix: ``rows`` [n, H] int64 (0 at padding) and ``mask`` [n, H] bool.

    The newest ``max_history`` clicks are kept (histories are newest last); real clicks fill the
    first positions. A key missing from ``histories`` means no clicks.
    """
    n = len(keys)
    rows = np.zeros((n, max_history), dtype=np.int64)
    mask = np.zeros((n, max_history), dtype=bool)
    for i, key in enumerate(keys):
        clicks = histories.get(key.item() if isinstance(key, np.generic) else key, ())
        clicks = list(clicks)[-max_history:] if max_history > 0 else []
        rows[i, : len(clicks)] = clicks
        mask[i, : len(clicks)] = True
    return rows, mask


def build_click_histories(
    impression_ids: np.ndarray,
    impression_user_ids: np.ndarray,
    impression_times: np.ndarray,
    click_user_ids: np.ndarray,
    click_times: np.ndarray,
    click_article_rows: np.ndarray,
    max_history: int = 50,
) -> dict[Any, list[int]]:
    """Per impression, the distinct articles its user clicked strictly before it, newest last.

    Rows of one impression may repeat (one per article shown); the first row's user and time are
    used. A re-click moves the article to its latest position. Times: datetime64 or seconds.
    """
    imp_ids = np.asarray(impression_ids)
    uniq, first = np.unique(imp_ids, return_index=True)
    imp_users = np.asarray(impression_user_ids)[first]
    imp_times = to_seconds(np.asarray(impression_times)[first])
    c_users = np.asarray(click_user_ids)
    c_times = to_seconds(click_times)
    c_rows = np.asarray(click_article_rows, dtype=np.int64)
    _, codes = np.unique(np.concatenate([imp_users, c_users]), return_inverse=True)
    codes = codes.reshape(-1)
    imp_codes, click_codes = codes[: len(imp_users)], codes[len(imp_users) :]
    order = np.lexsort((c_times, click_codes))
    click_codes, c_times, c_rows = click_codes[order], c_times[order], c_rows[order]
    user_start = np.searchsorted(click_codes, imp_codes, side="left")
    # composite search within each user's block: clicks of this user with time < impression time
    user_end = np.searchsorted(click_codes, imp_codes, side="right")
    out: dict[Any, list[int]] = {}
    for i, key in enumerate(uniq):
        lo, hi = user_start[i], user_end[i]
        end = lo + int(np.searchsorted(c_times[lo:hi], imp_times[i], side="left"))
        seen: set[int] = set()
        newest_first: list[int] = []
        for row in c_rows[lo:end][::-1]:
            if row not in seen:
                seen.add(row)
                newest_first.append(int(row))
                if len(newest_first) == max_history:
                    break
        out[key.item() if isinstance(key, np.generic) else key] = newest_first[::-1]
    return out


def sample_negatives(
    positive_rows: np.ndarray,
    positive_groups: np.ndarray,
    group_ptr: np.ndarray,
    group_negatives: np.ndarray,
    n_articles: int,
    k: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """K negatives per positive: distinct non-clicked items of its impression, then random fill.

    Args:
        positive_rows: [m] clicked article rows.
        positive_groups: [m] impression index of each positive.
        group_ptr, group_negatives: CSR layout of the non-clicked article rows of each impression
            (impression g owns ``group_negatives[group_ptr[g]:group_ptr[g + 1]]``).
        n_articles: catalogue size for the random fill (never the positive itself).
        k: negatives per positive.

    Returns:
        int64 [m, k]. Sampling without replacement inside an impression, uniform over subsets.
    """
    m = len(positive_rows)
    out = np.empty((m, k), dtype=np.int64)
    if m == 0:
        return out
    start = group_ptr[positive_groups]
    available = group_ptr[positive_groups + 1] - start
    chosen: list[np.ndarray] = []
    for t in range(k):
        has = available > t
        # uniform offset among the positions not chosen yet: draw in [0, n - t) and step over the
        # earlier picks in ascending order
        offset = np.floor(rng.random(m) * np.maximum(available - t, 1)).astype(np.int64)
        for previous in np.sort(np.stack(chosen, axis=1), axis=1).T if chosen else ():
            offset += offset >= previous
        chosen.append(offset)
        if len(group_negatives):
            exposed = group_negatives[np.minimum(start + offset, len(group_negatives) - 1)]
        else:
            exposed = np.zeros(m, dtype=np.int64)
        fill = rng.integers(0, max(n_articles - 1, 1), size=m)
        fill += fill >= positive_rows  # skip the positive itself
        out[:, t] = np.where(has, exposed, np.minimum(fill, n_articles - 1))
    return out


def _split_is(split: np.ndarray, name: str) -> np.ndarray:
    return np.asarray(split).astype(str) == name


def score_impressions(
    model: NamlModel,
    articles: ArticleFeatures,
    impression_codes: np.ndarray,
    article_rows: np.ndarray,
    history_rows: np.ndarray,
    history_mask: np.ndarray,
    batch_size: int = 2048,
    news_vecs: np.ndarray | None = None,
    prior_features: np.ndarray | None = None,
    affinity_features: np.ndarray | None = None,
) -> np.ndarray:
    """Model scores for impression rows (eval mode, no gradients).

    ``impression_codes`` index into ``history_rows``/``history_mask`` ([G, H]); ``article_rows``
    index into ``articles``. A model with a prior needs ``prior_features`` [n_rows, 3] (each row's
    article at the row's time, ``popularity.context_features``), one with the affinity term
    ``affinity_features`` [n_rows, 6] (``affinity.context_features``); their scores are added to
    the dot product. Returns float32 [n_rows].
    """
    if model.prior is not None and prior_features is None:
        raise ValueError("this model has a prior: pass prior_features for the rows to score")
    if model.affinity is not None and affinity_features is None:
        raise ValueError("this model has the affinity term: pass affinity_features for the rows to score")
    if news_vecs is None:
        news_vecs = encode_news_numpy(
            model, articles.title_vecs, articles.body_vecs, articles.cat_ids, articles.subcat_ids
        )
    was_training = model.training
    model.eval()
    users = np.zeros((len(history_rows), model.config.news_dim), dtype=np.float32)
    needed = np.unique(impression_codes)
    news_t = torch.as_tensor(news_vecs)
    context = np.zeros(len(article_rows), dtype=np.float32)
    try:
        with torch.inference_mode():
            for s in range(0, len(needed), batch_size):
                idx = needed[s : s + batch_size]
                hist = news_t[torch.as_tensor(history_rows[idx])]  # batch, H, dim
                users[idx] = model.encode_user(hist, torch.as_tensor(history_mask[idx])).numpy()
            terms = model.context_score(prior_features, affinity_features)  # n_rows, or None
            if terms is not None:
                context = terms.numpy()
    finally:
        model.train(was_training)
    dots = np.einsum("nd,nd->n", users[impression_codes], news_vecs[article_rows])
    return (dots + context).astype(np.float32)


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_naml(
    articles: ArticleFeatures,
    impressions: ImpressionLog,
    histories: Mapping[Any, Sequence[int]],
    model_config: NamlConfig | None = None,
    config: TrainConfig | None = None,
    prior_features: np.ndarray | None = None,
    affinity_features: np.ndarray | None = None,
) -> TrainResult:
    """Train NAML on train impressions, early-stopping on mean per-impression validation AUC.

    The weights with the best validation AUC are restored at the end. Without validation
    impressions it trains for ``max_epochs`` (or until the time budget). ``model_config.text_dim``
    is taken from the article vectors. Deterministic for a fixed seed and thread count.

    With ``model_config.use_prior`` (the default), ``prior_features`` [n_rows, 3] must give each
    impression row's raw prior features (``popularity.context_features`` at the row's time);
    the prior's smoothing target and standardisation are fitted on the train rows. With
    ``model_config.use_affinity`` (the default) ``affinity_features`` [n_rows, 6] likewise
    (``affinity.context_features``).
    """
    config = config or TrainConfig()
    model_config = model_config or NamlConfig()
    if model_config.text_dim != articles.text_dim:
        model_config = NamlConfig.from_dict({**model_config.to_dict(), "text_dim": articles.text_dim})
    started = time.perf_counter()
    n_articles = len(articles)
    rows = np.asarray(impressions.article_rows, dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= n_articles):
        raise ValueError("impression article_rows must index into articles")
    clicked = np.asarray(impressions.clicked).astype(bool)
    uniq_imps, imp_codes = np.unique(np.asarray(impressions.impression_ids), return_inverse=True)
    imp_codes = imp_codes.reshape(-1)
    n_groups = len(uniq_imps)
    hist_rows, hist_mask = padded_histories(uniq_imps, histories, model_config.max_history)
    if hist_mask.any() and (hist_rows[hist_mask].min() < 0 or hist_rows[hist_mask].max() >= n_articles):
        raise ValueError("history article rows must index into articles")
    if model_config.use_prior:
        if prior_features is None:
            raise ValueError("use_prior is on: pass prior_features (or set NamlConfig.use_prior=False)")
        prior_features = np.asarray(prior_features, dtype=np.float32)
        if prior_features.shape != (len(rows), 3):
            raise ValueError(f"prior_features must be [{len(rows)}, 3], got {prior_features.shape}")
    if model_config.use_affinity:
        if affinity_features is None:
            raise ValueError(
                "use_affinity is on: pass affinity_features (or set NamlConfig.use_affinity=False)"
            )
        affinity_features = np.asarray(affinity_features, dtype=np.float32)
        if affinity_features.shape != (len(rows), 6):
            raise ValueError(f"affinity_features must be [{len(rows)}, 6], got {affinity_features.shape}")

    is_train = _split_is(impressions.split, "train")
    is_val = _split_is(impressions.split, "validation")
    pos_idx = np.flatnonzero(is_train & clicked)
    pos_rows, pos_groups = rows[pos_idx], imp_codes[pos_idx]
    neg_idx = np.flatnonzero(is_train & ~clicked)
    neg_order = neg_idx[np.argsort(imp_codes[neg_idx], kind="stable")]  # log rows, by impression
    group_ptr = np.concatenate(([0], np.cumsum(np.bincount(imp_codes[neg_idx], minlength=n_groups))))

    if len(pos_idx) == 0:
        raise ValueError("no clicked rows in the train split: nothing to train on")

    with torch_threads(config.num_threads):
        rng = seed_everything(config.seed)
        model = NamlModel(model_config)
        train_ctr = float(clicked[is_train].mean())
        if model.prior is not None:
            model.prior.fit_statistics(torch.as_tensor(prior_features[is_train]), ctr_mean=train_ctr)
        if model.affinity is not None:
            model.affinity.fit_statistics(torch.as_tensor(affinity_features[is_train]), ctr_mean=train_ctr)
        shown_only = model.prior is not None or model.affinity is not None
        result = TrainResult(model=model, n_train_samples=len(pos_idx))
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        loss_fn = nn.CrossEntropyLoss()
        title_t, body_t, cat_t, subcat_t = articles.as_tensors()
        best_state: dict[str, torch.Tensor] | None = None
        bad_epochs = 0
        last_eval_s = 0.0
        out_of_time = False

        for epoch in range(1, config.max_epochs + 1):
            epoch_start = time.perf_counter()
            model.train()
            perm = rng.permutation(len(pos_idx))
            sampled = sample_negatives(
                pos_rows[perm],
                pos_groups[perm],
                group_ptr,
                neg_order,
                n_articles,
                config.negatives,
                rng,
            )  # samples, K: log rows of real exposures, article rows of the random top-up
            available = group_ptr[pos_groups[perm] + 1] - group_ptr[pos_groups[perm]]
            exposed = np.arange(config.negatives)[None, :] < available[:, None]  # samples, K
            neg_log_rows = np.where(exposed, sampled, 0)  # samples, K
            negatives = np.where(exposed, rows[neg_log_rows], sampled)  # samples, K: article rows
            losses: list[float] = []
            batches = range(0, len(perm), config.batch_size)
            # with progress on, `disable` is left to tqdm, so that TQDM_DISABLE=1 still silences it
            bar = {} if config.progress else {"disable": True}
            for s in tqdm(batches, desc=f"NAML epoch {epoch}", leave=False, **bar):
                if time.perf_counter() - started + last_eval_s >= config.time_budget_s:
                    out_of_time = True
                    break
                sel = perm[s : s + config.batch_size]
                cand = np.concatenate([pos_rows[sel, None], negatives[s : s + config.batch_size]], axis=1)
                hist = hist_rows[pos_groups[sel]]  # batch, H
                mask = hist_mask[pos_groups[sel]]  # batch, H
                uniq_rows, inverse = np.unique(
                    np.concatenate([cand.ravel(), hist.ravel()]), return_inverse=True
                )
                uniq_t = torch.as_tensor(uniq_rows)
                inverse = torch.as_tensor(inverse.reshape(-1))
                cand_log_rows = np.concatenate(
                    [pos_idx[sel, None], neg_log_rows[s : s + config.batch_size]], axis=1
                )  # batch, 1 + K
                cand_prior = cand_affinity = None
                if model.prior is not None:
                    cand_prior = torch.as_tensor(prior_features[cand_log_rows])  # batch, 1 + K, 3
                if model.affinity is not None:
                    cand_affinity = torch.as_tensor(affinity_features[cand_log_rows])  # batch, 1 + K, 6
                logits = model(
                    title_t[uniq_t],
                    body_t[uniq_t],
                    cat_t[uniq_t],
                    subcat_t[uniq_t],
                    inverse[: cand.size].view(cand.shape),  # batch, 1 + K
                    inverse[cand.size :].view(hist.shape),  # batch, H
                    torch.as_tensor(mask),
                    cand_prior,
                    cand_affinity,
                )  # batch, 1 + K
                if shown_only:  # random top-ups have no features: out of the softmax
                    shown = torch.as_tensor(exposed[s : s + config.batch_size])  # batch, K
                    logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(~shown, -1e9)], dim=1)
                loss = loss_fn(logits, torch.zeros(len(sel), dtype=torch.long))  # clicked item first
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            if not losses:  # the budget ran out before this epoch's first batch
                result.stopped_by = "time_budget"
                break

            eval_start = time.perf_counter()
            metrics = {"auc": float("nan"), "mrr": float("nan"), "ndcg@10": float("nan")}
            if is_val.any():
                scores = score_impressions(
                    model,
                    articles,
                    imp_codes[is_val],
                    rows[is_val],
                    hist_rows,
                    hist_mask,
                    batch_size=config.eval_batch_size,
                    prior_features=None if prior_features is None else prior_features[is_val],
                    affinity_features=None if affinity_features is None else affinity_features[is_val],
                )
                metrics = evaluate_impressions(imp_codes[is_val], clicked[is_val].astype(np.int8), scores)
            last_eval_s = time.perf_counter() - eval_start
            val_auc = float(metrics["auc"])
            result.history.append(
                {
                    "epoch": epoch,
                    "train_loss": float(np.mean(losses)) if losses else float("nan"),
                    "val_auc": val_auc,
                    "val_mrr": float(metrics["mrr"]),
                    "val_ndcg@10": float(metrics["ndcg@10"]),
                    "batches": len(losses),
                    "partial": out_of_time,
                    "epoch_seconds": time.perf_counter() - epoch_start,
                    "seconds": time.perf_counter() - started,
                }
            )
            if not math.isnan(val_auc):
                if math.isnan(result.best_val_auc) or val_auc > result.best_val_auc + config.min_delta:
                    result.best_val_auc, result.best_epoch = val_auc, epoch
                    best_state = _state_copy(model)
                    bad_epochs = 0
                else:
                    bad_epochs += 1
            if out_of_time:
                result.stopped_by = "time_budget"
                break
            if bad_epochs >= config.patience:
                result.stopped_by = "early_stopping"
                break

        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
    result.seconds = time.perf_counter() - started
    return result


def model_version(model: NamlModel) -> str:
    """Content hash of the config and weights: ``naml-<16 hex>``, stable across save/load."""
    digest = hashlib.sha256()
    config = model.config.to_dict()
    # a model without a term hashes as before that term existed
    if not model.config.use_prior:
        config = {k: v for k, v in config.items() if k not in PRIOR_CONFIG_KEYS}
    if not model.config.use_affinity:
        config = {k: v for k, v in config.items() if k not in AFFINITY_CONFIG_KEYS}
    digest.update(json.dumps(config, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}|{array.dtype}|{array.shape}".encode())
        digest.update(array.tobytes())
    return "naml-" + digest.hexdigest()[:16]


def save_model(model: NamlModel, path: str | Path, extra: Mapping[str, Any] | None = None) -> str:
    """Write ``weights.pt``, ``config.json``, the numpy ``user_encoder.npz``, ``prior.npz``, ``affinity.npz``.

    ``prior.npz`` (``popularity.load_prior_params``) is written only for a model with a prior,
    ``affinity.npz`` (``affinity.load_affinity_params``) only for one with the affinity term.

    ``extra`` (e.g. the training history, the text-encoder version) is stored in ``config.json``
    under ``"extra"``; it must be JSON-serialisable. Returns the version id.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    version = model_version(model)
    torch.save(model.state_dict(), folder / WEIGHTS_FILE)
    save_user_encoder_params(user_encoder_numpy_params(model), folder)
    if model.prior is not None:
        save_prior_params(prior_numpy_params(model), folder)
    if model.affinity is not None:
        save_affinity_params(affinity_numpy_params(model), folder)
    meta = {
        "model": "naml",
        "version": version,
        "naml_config": model.config.to_dict(),
        "extra": dict(extra or {}),
    }
    (folder / MODEL_CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=_json_default))
    return version


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def load_model(path: str | Path) -> NamlModel:
    """Load a model written by ``save_model`` (eval mode). Raises if the weights' hash mismatches."""
    folder = Path(path)
    meta = json.loads((folder / MODEL_CONFIG_FILE).read_text())
    # models saved before a term existed have no use_<term> key and no weights for it
    model = NamlModel(
        NamlConfig.from_dict({"use_prior": False, "use_affinity": False, **meta["naml_config"]})
    )
    state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    if meta.get("version") and model_version(model) != meta["version"]:
        raise ValueError(f"{folder}: weights do not match the recorded version {meta['version']}")
    return model
