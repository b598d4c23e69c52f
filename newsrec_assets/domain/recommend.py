"""Turning user histories into ranked lists, shared by the batch and the speed layer (numpy only).

The batch layer writes a `ServingSnapshot` next to the lists it publishes: the news vectors of the
catalogue, the live candidates, every user's click history and the numpy user encoder. The speed
layer loads it (no torch, no warehouse) and recomputes one user's list from that history plus the
clicks that arrived since.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from newsrec_assets.domain.affinity import subcategory_one_hot
from newsrec_assets.domain.popularity import augment_news_vectors, augment_user_vectors, prior_scores
from newsrec_assets.domain.ranking import top_k_scores
from newsrec_assets.domain.user_encoding import encode_users_numpy, load_user_encoder_params

SNAPSHOT_ARRAYS = "snapshot.npz"
SNAPSHOT_META = "snapshot.json"
USER_ENCODER = "user_encoder.npz"
NO_ARTICLE = -1


@dataclass
class ServingSnapshot:
    """Everything the speed layer needs to recompute a list, as of the batch that wrote it."""

    model_version: str
    watermark: datetime  # newest behaviour event the batch accounted for
    article_ids: np.ndarray  # articles (str): every article a history may reference
    news_vectors: np.ndarray  # articles, dim (float32)
    published_at_us: np.ndarray  # articles (int64 microseconds)
    candidate_rows: np.ndarray  # live candidates: rows into article_ids
    candidate_priors: np.ndarray  # candidates (float32): the popularity/recency prior at batch time
    user_ids: np.ndarray  # users (str)
    history_rows: np.ndarray  # users, max_history (int32 rows, NO_ARTICLE padded, newest first)
    encoder_params: dict[str, np.ndarray]
    # the affinity term, for a model that has it: every user's affinity per subcategory id at batch
    # time, and every article's subcategory id (the model's vocabulary)
    user_affinity: np.ndarray | None = None  # users, n_subcategories (float32)
    article_subcategories: np.ndarray | None = None  # articles (int64)

    def __post_init__(self) -> None:
        self._article_row = {a: i for i, a in enumerate(self.article_ids.tolist())}
        self._user_row = {u: i for i, u in enumerate(self.user_ids.tolist())}

    @property
    def max_history(self) -> int:
        return self.history_rows.shape[1]

    def article_rows(self, article_ids: Sequence[str]) -> np.ndarray:
        return np.array([self._article_row.get(a, NO_ARTICLE) for a in article_ids], dtype=np.int64)

    def history_of(self, user_id: str) -> list[int]:
        """The user's clicked article rows as of the batch, newest first."""
        row = self._user_row.get(user_id)
        if row is None:
            return []
        rows = self.history_rows[row]
        return rows[rows != NO_ARTICLE].tolist()

    def affinity_of(self, user_ids: Sequence[str]) -> np.ndarray | None:
        """The users' affinity blocks as of the batch (zeros for users it did not know), or None."""
        if self.user_affinity is None:
            return None
        out = np.zeros((len(user_ids), self.user_affinity.shape[1]), dtype=np.float32)
        for i, user_id in enumerate(user_ids):
            row = self._user_row.get(user_id)
            if row is not None:
                out[i] = self.user_affinity[row]
        return out

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(
            folder / SNAPSHOT_ARRAYS,
            article_ids=self.article_ids.astype(str),
            news_vectors=self.news_vectors,
            published_at_us=self.published_at_us,
            candidate_rows=self.candidate_rows,
            candidate_priors=self.candidate_priors,
            user_ids=self.user_ids.astype(str),
            history_rows=self.history_rows,
            **(
                {}
                if self.user_affinity is None
                else {
                    "user_affinity": self.user_affinity,
                    "article_subcategories": self.article_subcategories,
                }
            ),
        )
        np.savez(folder / USER_ENCODER, **self.encoder_params)
        meta = {"model_version": self.model_version, "watermark": self.watermark.isoformat()}
        (folder / SNAPSHOT_META).write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path) -> ServingSnapshot:
        meta = json.loads((folder / SNAPSHOT_META).read_text())
        with np.load(folder / SNAPSHOT_ARRAYS) as arrays:
            return cls(
                model_version=meta["model_version"],
                watermark=datetime.fromisoformat(meta["watermark"]),
                article_ids=arrays["article_ids"].astype(object),
                news_vectors=arrays["news_vectors"],
                published_at_us=arrays["published_at_us"],
                candidate_rows=arrays["candidate_rows"],
                candidate_priors=arrays["candidate_priors"],
                user_ids=arrays["user_ids"].astype(object),
                history_rows=arrays["history_rows"],
                encoder_params=load_user_encoder_params(folder / USER_ENCODER),
                user_affinity=arrays.get("user_affinity"),
                article_subcategories=arrays.get("article_subcategories"),
            )


def encode_user_histories(
    encoder_params: dict[str, np.ndarray],
    news_vectors: np.ndarray,
    history_rows: np.ndarray,
    chunk: int = 8192,
) -> np.ndarray:
    """User vectors from padded histories of article rows (NO_ARTICLE = padding), chunk by chunk."""
    users, dim = len(history_rows), news_vectors.shape[1]
    user_vectors = np.zeros((users, dim), dtype=np.float32)
    for start in range(0, users, chunk):
        rows = history_rows[start : start + chunk]
        mask = rows != NO_ARTICLE
        history = news_vectors[np.where(mask, rows, 0)]  # chunk, max_history, dim
        user_vectors[start : start + chunk] = encode_users_numpy(encoder_params, history, mask)
    return user_vectors


def clicked_candidates(history_rows: np.ndarray, candidate_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per user, the candidate indices already clicked, as CSR (indptr, indices) for `top_k_scores`."""
    position = np.full(max(int(candidate_rows.max(initial=-1)), int(history_rows.max(initial=-1))) + 2, -1)
    position[candidate_rows] = np.arange(len(candidate_rows))
    as_candidate = np.where(history_rows != NO_ARTICLE, position[history_rows], -1)
    keep = as_candidate >= 0
    indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int64)
    return indptr, as_candidate[keep].astype(np.int64)


def rank_for_users(
    user_vectors: np.ndarray,
    candidate_vectors: np.ndarray,
    history_rows: np.ndarray,
    candidate_rows: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k candidates per user by dot product, leaving out what the user already clicked."""
    indptr, indices = clicked_candidates(history_rows, candidate_rows)
    return top_k_scores(user_vectors, candidate_vectors, k, exclude=(indptr, indices))


def candidate_priors(
    prior_params: dict[str, np.ndarray] | None,
    age_hours: np.ndarray,
    clicks: np.ndarray,
    impressions: np.ndarray,
) -> np.ndarray:
    """The model's additive popularity/recency prior per candidate (zeros for a model without one)."""
    if prior_params is None:
        return np.zeros(len(age_hours), dtype=np.float32)
    raw = np.stack([age_hours, clicks, impressions], axis=1).astype(np.float32)
    return prior_scores(prior_params, raw).astype(np.float32)


def ranking_vectors(
    user_vectors: np.ndarray,
    news_vectors: np.ndarray,
    priors: np.ndarray,
    user_affinity: np.ndarray | None = None,
    news_subcategories: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Vectors whose dot product is the model's score, prior and affinity included.

    ``([u, 1, a_u], [n, prior, e_s])``: with ``user_affinity`` [users, S] (``affinity.user_affinity``)
    and the candidates' subcategory ids, ``u . n + prior + a_u[s]``; without, ``u . n + prior``.
    Stored user vectors and article vectors in the online store are in this form, so the API can
    score an article published after a list was computed with one dot product.
    """
    n_subcategories = 0 if user_affinity is None else user_affinity.shape[1]
    return (
        ranking_user_vectors(user_vectors, user_affinity),
        ranking_news_vectors(news_vectors, priors, news_subcategories, n_subcategories),
    )


def ranking_user_vectors(user_vectors: np.ndarray, user_affinity: np.ndarray | None = None) -> np.ndarray:
    """The user side of ``ranking_vectors``: ``[u, 1]`` or ``[u, 1, a_u]``."""
    users = augment_user_vectors(user_vectors)
    if user_affinity is None or user_affinity.shape[1] == 0:
        return users
    return np.concatenate([users, np.asarray(user_affinity, dtype=np.float32)], axis=1)


def ranking_news_vectors(
    news_vectors: np.ndarray,
    priors: np.ndarray,
    subcategory_ids: np.ndarray | None = None,
    n_subcategories: int = 0,
) -> np.ndarray:
    """The article side of ``ranking_vectors``: ``[n, prior]``, or ``[n, prior, e_s]`` for a model
    with the affinity term (``n_subcategories`` > 0, the model's ``NamlConfig.n_subcategories``)."""
    news = augment_news_vectors(news_vectors, priors)
    if n_subcategories == 0:
        return news
    if subcategory_ids is None:
        raise ValueError("a model with the affinity term needs the articles' subcategory ids")
    return np.concatenate([news, subcategory_one_hot(subcategory_ids, n_subcategories)], axis=1)


def merge_history(batch_history: list[int], recent_rows: list[int], max_history: int) -> np.ndarray:
    """Recent clicks (newest first) ahead of the batch history, each article once, padded."""
    merged: list[int] = []
    seen: set[int] = set()
    for row in [*recent_rows, *batch_history]:
        if row != NO_ARTICLE and row not in seen:
            seen.add(row)
            merged.append(row)
    padded = np.full(max_history, NO_ARTICLE, dtype=np.int32)
    padded[: min(len(merged), max_history)] = merged[:max_history]
    return padded


def to_microseconds(moments: np.ndarray) -> np.ndarray:
    return np.asarray(moments, dtype="datetime64[us]").astype(np.int64)


def from_microseconds(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1e6, tz=UTC)
