"""Turning user histories into ranked lists, shared by the batch and the speed layer (numpy only).

The batch layer writes a `ServingSnapshot` next to the lists it publishes: the news vectors of the
catalogue, the live candidates, every user's click history and the numpy user encoder. The speed
layer loads it (no torch, no warehouse) and recomputes one user's list from that history plus the
clicks that arrived since.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import numpy as np

from newsrec_assets.domain.affinity import subcategory_one_hot
from newsrec_assets.domain.popularity import augment_news_vectors, augment_user_vectors, prior_scores
from newsrec_assets.domain.ranking import top_k_scores
from newsrec_assets.domain.user_encoding import encode_users_numpy, load_user_encoder_params

SNAPSHOT_META = "snapshot.json"
USER_ENCODER = "user_encoder.npz"
LEGACY_SNAPSHOT_ARRAYS = "snapshot.npz"  # format 1: one compressed-less archive, read whole
SNAPSHOT_FORMAT = 2  # one .npy per array, users sorted by id, opened memory-mapped
NO_ARTICLE = -1

# Per-user arrays (rows follow the sorted `user_ids`): memory-mapped on load, so a speed update
# pages in only its users' rows. The article-side arrays are small and read whole.
_USER_ARRAYS = ("user_ids", "history_rows", "user_affinity")
_ARTICLE_ARRAYS = (
    "article_ids",
    "news_vectors",
    "published_at_us",
    "candidate_rows",
    "candidate_priors",
    "article_subcategories",
)


@dataclass
class ServingSnapshot:
    """Everything the speed layer needs to recompute a list, as of the batch that wrote it.

    Saved as one `.npy` file per array with the users sorted by id. `load` memory-maps the per-user
    arrays and finds a user with a binary search (`np.searchsorted`) over the sorted ids, so a
    speed update reads its users' rows and nothing proportional to the number of users.
    """

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
    # True when `user_ids` is already sorted (a loaded snapshot): the constructor then leaves the
    # per-user arrays as they are (memory-mapped) instead of sorting them in memory.
    users_sorted: bool = False

    def __post_init__(self) -> None:
        if not self.users_sorted:
            ids = np.asarray(self.user_ids, dtype=str)
            order = np.argsort(ids, kind="stable")
            self.user_ids = ids[order]
            self.history_rows = np.asarray(self.history_rows)[order]
            if self.user_affinity is not None:
                self.user_affinity = np.asarray(self.user_affinity)[order]
            self.users_sorted = True

    @property
    def max_history(self) -> int:
        return self.history_rows.shape[1]

    @cached_property
    def _article_row(self) -> dict[str, int]:
        # O(articles), built once per loaded snapshot: the catalogue, not the user base
        return {a: i for i, a in enumerate(self.article_ids.tolist())}

    @cached_property
    def ranking_candidates(self) -> np.ndarray:
        """The live candidates in ranking form (``ranking_news_vectors``), as of the batch.

        The same for every speed update of this snapshot: computed once per loaded snapshot.
        """
        n_subcategories = 0 if self.user_affinity is None else self.user_affinity.shape[1]
        subcategories = (
            None if self.article_subcategories is None else self.article_subcategories[self.candidate_rows]
        )
        return np.ascontiguousarray(
            ranking_news_vectors(
                self.news_vectors[self.candidate_rows], self.candidate_priors, subcategories, n_subcategories
            )
        )

    def article_rows(self, article_ids: Sequence[str]) -> np.ndarray:
        return np.array([self._article_row.get(a, NO_ARTICLE) for a in article_ids], dtype=np.int64)

    def user_rows(self, user_ids: Sequence[str]) -> np.ndarray:
        """Each user's row in the per-user arrays (NO_ARTICLE = -1 for a user the batch did not know).

        A binary search per user over the sorted ids: O(k log users), touching ~log2(users) ids.
        """
        wanted = np.asarray(list(user_ids), dtype=str)
        rows = np.full(len(wanted), -1, dtype=np.int64)
        if len(wanted) == 0 or len(self.user_ids) == 0:
            return rows
        position = np.searchsorted(self.user_ids, wanted)
        inside = position < len(self.user_ids)
        found = np.zeros(len(wanted), dtype=bool)
        found[inside] = self.user_ids[position[inside]] == wanted[inside]
        rows[found] = position[found]
        return rows

    def history_of(self, user_id: str) -> list[int]:
        """The user's clicked article rows as of the batch, newest first."""
        return self.histories_of([user_id])[0]

    def histories_of(self, user_ids: Sequence[str]) -> list[list[int]]:
        """`history_of` for several users, reading only their rows."""
        histories: list[list[int]] = []
        for row in self.user_rows(user_ids).tolist():
            if row < 0:
                histories.append([])
                continue
            rows = np.asarray(self.history_rows[row])
            histories.append(rows[rows != NO_ARTICLE].tolist())
        return histories

    def affinity_of(self, user_ids: Sequence[str]) -> np.ndarray | None:
        """The users' affinity blocks as of the batch (zeros for users it did not know), or None."""
        if self.user_affinity is None:
            return None
        rows = self.user_rows(user_ids)
        out = np.zeros((len(rows), self.user_affinity.shape[1]), dtype=np.float32)
        known = rows >= 0
        if known.any():
            out[known] = self.user_affinity[rows[known]]
        return out

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {
            "article_ids": np.asarray(self.article_ids, dtype=str),
            "news_vectors": self.news_vectors,
            "published_at_us": self.published_at_us,
            "candidate_rows": self.candidate_rows,
            "candidate_priors": self.candidate_priors,
            "user_ids": self.user_ids,
            "history_rows": self.history_rows,
            "user_affinity": self.user_affinity,
            "article_subcategories": self.article_subcategories,
        }
        for name, values in arrays.items():
            if values is not None:
                np.save(folder / f"{name}.npy", np.ascontiguousarray(values), allow_pickle=False)
        np.savez(folder / USER_ENCODER, **self.encoder_params)
        meta = {
            "model_version": self.model_version,
            "watermark": self.watermark.isoformat(),
            "format": SNAPSHOT_FORMAT,
            "users": len(self.user_ids),
        }
        (folder / SNAPSHOT_META).write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path, mmap: bool = True) -> ServingSnapshot:
        """Open a saved snapshot; with `mmap` (the default) the per-user arrays stay on disk."""
        meta = json.loads((folder / SNAPSHOT_META).read_text())
        encoder_params = load_user_encoder_params(folder / USER_ENCODER)
        if meta.get("format", 1) < SNAPSHOT_FORMAT:  # written before the per-array format
            with np.load(folder / LEGACY_SNAPSHOT_ARRAYS) as archive:
                arrays = {name: archive.get(name) for name in (*_USER_ARRAYS, *_ARTICLE_ARRAYS)}
            sorted_users = False
        else:

            def read(name: str, per_user: bool) -> np.ndarray | None:
                path = folder / f"{name}.npy"
                if not path.exists():
                    return None
                return np.load(path, mmap_mode="r" if mmap and per_user else None, allow_pickle=False)

            arrays = {name: read(name, True) for name in _USER_ARRAYS}
            arrays |= {name: read(name, False) for name in _ARTICLE_ARRAYS}
            sorted_users = True
        return cls(
            model_version=meta["model_version"],
            watermark=datetime.fromisoformat(meta["watermark"]),
            article_ids=arrays["article_ids"].astype(object),
            news_vectors=arrays["news_vectors"],
            published_at_us=arrays["published_at_us"],
            candidate_rows=arrays["candidate_rows"],
            candidate_priors=arrays["candidate_priors"],
            user_ids=arrays["user_ids"] if sorted_users else arrays["user_ids"].astype(str),
            history_rows=arrays["history_rows"],
            encoder_params=encoder_params,
            user_affinity=arrays["user_affinity"],
            article_subcategories=arrays["article_subcategories"],
            users_sorted=sorted_users,
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


@dataclass
class SpeedLists:
    """The speed layer's recomputed lists, one entry per user with new clicks."""

    user_ids: list[str]
    article_ids: list[tuple[str, ...]]  # per user, best first
    scores: list[np.ndarray]  # per user (float32)
    user_vectors: np.ndarray  # users, ranking dim: stored for read-time merging
    watermarks_us: list[int]  # per user: the newest click the list reflects


def speed_lists(
    snapshot: ServingSnapshot,
    clicks: Mapping[str, Sequence[tuple[str, int]]],
    fresh_ids: np.ndarray,
    fresh_ranking: np.ndarray,
    k: int,
) -> SpeedLists:
    """Lists of the users in `clicks` from their batch history plus their clicks since the batch.

    `clicks` maps a user to its (article id, viewed-at µs) since the snapshot, newest first; users
    without any are left out. `fresh_ids`/`fresh_ranking` are articles published after the batch
    (not in the snapshot) in ranking form. Reads only these users' rows of the snapshot: the time
    grows with the users in the batch and the catalogue, not with the snapshot's user count.
    """
    changed = [user_id for user_id, user_clicks in clicks.items() if user_clicks]
    n_known = len(snapshot.article_ids)
    fresh_row = {a: n_known + i for i, a in enumerate(np.asarray(fresh_ids).tolist())}
    dim = snapshot.news_vectors.shape[1]
    news_vectors = (
        np.vstack([snapshot.news_vectors, fresh_ranking[:, :dim]])
        if len(fresh_ids)
        else snapshot.news_vectors
    )
    candidate_rows = np.concatenate(
        [snapshot.candidate_rows, np.arange(n_known, n_known + len(fresh_ids))]
    ).astype(np.int64)

    history_rows = np.zeros((len(changed), snapshot.max_history), dtype=np.int32)
    for i, (user_id, batch_history) in enumerate(zip(changed, snapshot.histories_of(changed), strict=True)):
        articles = [article_id for article_id, _ in clicks[user_id]]
        known = snapshot.article_rows(articles).tolist()
        recent = [
            fresh_row.get(article, NO_ARTICLE) if row == NO_ARTICLE else row
            for article, row in zip(articles, known, strict=True)
        ]
        history_rows[i] = merge_history(batch_history, recent, snapshot.max_history)
    user_vectors = encode_user_histories(snapshot.encoder_params, news_vectors, history_rows)
    # the affinity blocks stay as of the batch: the speed layer sees clicks, not impressions
    ranking_users = ranking_user_vectors(user_vectors, snapshot.affinity_of(changed))
    batch_candidates = snapshot.ranking_candidates
    ranking_candidates = np.vstack([batch_candidates, fresh_ranking]) if len(fresh_ids) else batch_candidates
    top_index, top_scores = rank_for_users(ranking_users, ranking_candidates, history_rows, candidate_rows, k)

    all_ids = np.concatenate(
        [np.asarray(snapshot.article_ids, dtype=object), np.asarray(fresh_ids, dtype=object)]
    )
    article_ids, scores = [], []
    for i in range(len(changed)):
        finite = np.isfinite(top_scores[i])
        article_ids.append(tuple(all_ids[candidate_rows[top_index[i][finite]]]))
        scores.append(top_scores[i][finite])
    return SpeedLists(
        user_ids=changed,
        article_ids=article_ids,
        scores=scores,
        user_vectors=ranking_users,
        watermarks_us=[max(viewed for _, viewed in clicks[user_id]) for user_id in changed],
    )
