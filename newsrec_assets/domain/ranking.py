"""Ranking rules: top-k by dot product, the cold-start list, and the read-time fresh-article merge.

Pure numpy, so the batch layer, the speed layer and the HTTP API share one implementation.

- `top_k_scores` scores every user against every article with one BLAS matmul per chunk of users
  (into one reused buffer) and selects the top k exactly, without a per-user Python loop: the
  k-th largest of 4k group maxima bounds the k-th best score from below, so only the ~k groups
  reaching that bound are looked at and only their scores above it (~1.15 k per user) are sorted
  (`_top_keys_grouped`; 1M users x 10k articles: ~4x faster than an `argpartition` of every
  score row, see BENCHMARKS.md). Small problems use the plain partition. Already-clicked articles
  are excluded by setting their scores to -inf with one fancy-indexing assignment per chunk.
- `cold_start_list` ranks articles for users without a history: a mixture of popularity and
  freshness (exponential decay with a half-life), so new articles surface.
- `merge_fresh_articles` solves "a list precomputed at 10:00 does not contain an article published
  at 10:05": at read time, articles published after the list was computed are scored against the
  stored user vector and merged into the stored ranking.
- `cap_per_group` (a per-subcategory cap, serving's diversity re-rank), `intra_list_diversity`
  (what it buys) and `assign_variant` (serving's A/B assignment by a stable hash of the user id).

Within a returned list, equal scores are ordered by the lower article index (`top_k_scores`) or
the earlier input position (`merge_fresh_articles`); which of several articles tied exactly at
the k-th score makes the cut is unspecified.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

__all__ = [
    "ExcludeLike",
    "assign_variant",
    "cap_per_group",
    "cold_start_list",
    "exclusion_csr",
    "intra_list_diversity",
    "merge_by_score",
    "merge_fresh_articles",
    "top_k_scores",
]

# (indptr [U+1], indices [nnz]) in CSR layout, any object with `.indptr`/`.indices` (e.g. a scipy
# CSR matrix), or one sequence of article indices per user.
ExcludeLike = tuple[np.ndarray, np.ndarray] | Any | Sequence[Sequence[int] | np.ndarray]


def exclusion_csr(exclude: ExcludeLike, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalise an exclusion argument to CSR arrays `(indptr [n_users+1], indices [nnz])`."""
    if hasattr(exclude, "indptr") and hasattr(exclude, "indices"):
        indptr, indices = np.asarray(exclude.indptr), np.asarray(exclude.indices)
    elif (
        isinstance(exclude, tuple)
        and len(exclude) == 2
        and isinstance(exclude[0], np.ndarray)
        and isinstance(exclude[1], np.ndarray)
        and exclude[0].ndim == 1
        and len(exclude[0]) == n_users + 1
    ):
        indptr, indices = exclude
    else:
        rows = [np.asarray(row, dtype=np.int64).ravel() for row in exclude]
        lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
        indptr = np.concatenate(([0], np.cumsum(lengths)))
        indices = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
    indptr = indptr.astype(np.int64, copy=False)
    indices = indices.astype(np.int64, copy=False)
    if len(indptr) != n_users + 1:
        raise ValueError(f"exclusion has {len(indptr) - 1} rows, expected {n_users}")
    return indptr, indices


def top_k_scores(
    user_vecs: np.ndarray,
    article_vecs: np.ndarray,
    k: int,
    exclude: ExcludeLike | None = None,
    chunk_size: int = 4096,
    demote: ExcludeLike | None = None,
    demotion: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k articles per user by dot product.

    Args:
        user_vecs: users, dim.
        article_vecs: articles, dim.
        k: list length; clamped to the number of articles.
        exclude: article indices to leave out per user (already clicked), see `ExcludeLike`.
        chunk_size: users scored per matmul; bounds the score matrix to chunk_size x articles.
        demote, demotion: article indices per user whose score is lowered by `demotion` (seen
            without a click); an index also excluded stays excluded.

    Returns:
        `(indices, scores)`, both users x k, best first. Scores are float32. Where a user has fewer
        than k eligible articles, the tail holds excluded articles with score -inf; callers drop
        those (`np.isfinite(scores)`).
    """
    users = np.asarray(user_vecs, dtype=np.float32)
    articles = np.asarray(article_vecs, dtype=np.float32)
    if users.ndim != 2 or articles.ndim != 2 or users.shape[1] != articles.shape[1]:
        raise ValueError(f"expected [U,d] and [A,d] with the same d, got {users.shape} and {articles.shape}")
    if k < 1:
        raise ValueError("k must be at least 1")
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    n_users, n_articles = users.shape[0], articles.shape[0]
    k = min(k, n_articles)
    out_indices = np.empty((n_users, k), dtype=np.int64)
    out_scores = np.empty((n_users, k), dtype=np.float32)
    if n_users == 0 or k == 0:
        return out_indices, out_scores
    lowered = [(exclusion_csr(exclude, n_users), -np.inf)] if exclude is not None else []
    if demote is not None and demotion:
        lowered.insert(0, (exclusion_csr(demote, n_users), -float(demotion)))
    for (_, indices), _ in lowered:
        if len(indices) and (indices.min() < 0 or indices.max() >= n_articles):
            raise ValueError("an excluded article index is out of range")

    layout = _GroupedLayout.plan(n_articles, k) if n_users >= _GROUPED_MIN_USERS else None
    if layout is None:
        # Few users or few articles per wanted item: select on the plain score matrix.
        position_to_article = np.arange(n_articles)
        article_to_position = position_to_article
        articles_t = np.ascontiguousarray(articles.T)  # dim, articles
    else:
        position_to_article, article_to_position = layout.position_to_article, layout.article_to_position
        padded = np.zeros((layout.width, articles.shape[1]), dtype=np.float32)
        padded[:n_articles] = articles[position_to_article]
        articles_t = np.ascontiguousarray(padded.T)  # dim, width (articles in layout order, then padding)

    # One score buffer, reused by every chunk: no page faults from a fresh allocation per chunk.
    buffer = np.empty((min(chunk_size, n_users), articles_t.shape[1]), dtype=np.float32)
    for start in range(0, n_users, chunk_size):
        stop = min(start + chunk_size, n_users)
        scores = buffer[: stop - start]
        np.matmul(users[start:stop], articles_t, out=scores)  # chunk, width
        for (indptr, indices), change in lowered:  # demotions first: an exclusion wins
            counts = np.diff(indptr[start : stop + 1])
            rows = np.repeat(np.arange(stop - start), counts)
            cols = article_to_position[indices[indptr[start] : indptr[stop]]]
            if change == -np.inf:
                scores[rows, cols] = -np.inf
            else:
                scores[rows, cols] += np.float32(change)
        if layout is None:
            keys = _top_keys_exact(scores, k, position_to_article)
        else:
            scores[:, n_articles:] = -np.inf  # padding columns are never selected
            keys = _top_keys_grouped(scores, k, layout)
        out_indices[start:stop], out_scores[start:stop] = _decode_keys(keys)
    return out_indices, out_scores


# Selection works on uint64 keys that sort ascending by (score descending, article index
# ascending): the high 32 bits are the float32 score mapped to an order-reversing integer, the
# low 32 bits the article index. One integer sort then gives the documented order, and the score
# is recovered exactly from the key (-0.0 becomes 0.0).
_INDEX_MASK = np.uint64(0xFFFFFFFF)
_SIGN = np.uint32(0x80000000)
_NO_KEY = np.iinfo(np.uint64).max
_GROUPED_MIN_USERS = 64  # below this the layout set-up costs more than it saves


def _sort_keys(scores: np.ndarray, article_index: np.ndarray) -> np.ndarray:
    """uint64 keys ordering by score descending, then article index ascending (same shapes)."""
    bits = (np.asarray(scores, dtype=np.float32) + np.float32(0.0)).view(np.uint32)  # -0.0 -> 0.0
    ascending = np.where(bits & _SIGN, ~bits, bits | _SIGN)  # unsigned order == float order
    return ((~ascending).astype(np.uint64) << np.uint64(32)) | article_index.astype(np.uint64)


def _decode_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `_sort_keys`: (article indices int64, scores float32)."""
    indices = (keys & _INDEX_MASK).astype(np.int64)
    ascending = ~(keys >> np.uint64(32)).astype(np.uint32)
    bits = np.where(ascending & _SIGN, ascending ^ _SIGN, ~ascending)
    return indices, bits.view(np.float32)


def _top_keys_exact(scores: np.ndarray, k: int, position_to_article: np.ndarray) -> np.ndarray:
    """Sorted keys of the k best columns of every row: partition over all columns (O(columns))."""
    n_columns = len(position_to_article)
    keys = _sort_keys(scores[:, :n_columns], np.broadcast_to(position_to_article, (len(scores), n_columns)))
    if k < n_columns:
        keys = np.partition(keys, k - 1, axis=1)[:, :k]
    keys.sort(axis=1)
    return keys


@dataclass(frozen=True)
class _GroupedLayout:
    """Where each article's score sits in the score matrix, for the grouped top-k selection.

    The articles, in a fixed pseudo-random order, fill `width = groups * group_size` columns
    (the last ones padding, scored -inf). Group g holds columns g, g + groups, g + 2 groups, ...,
    so a row reshaped to [group_size, groups] has one group per column and the group maxima are
    one vectorised `max` over contiguous slabs. The random order keeps groups of equal size
    statistically alike whatever the catalogue's order (e.g. by publish time).
    """

    groups: int
    group_size: int
    n_articles: int
    position_to_article: np.ndarray
    article_to_position: np.ndarray

    @property
    def width(self) -> int:
        return self.groups * self.group_size

    @classmethod
    def plan(cls, n_articles: int, k: int) -> _GroupedLayout | None:
        groups = 4 * k  # the k-th largest of 4k group maxima lies near the k-th largest score
        group_size = -(-n_articles // groups)
        if k >= n_articles or group_size < 8:
            return None
        order = np.random.default_rng(0x5EED).permutation(n_articles)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(n_articles)
        return cls(groups, group_size, n_articles, order, inverse)


def _top_keys_grouped(scores: np.ndarray, k: int, layout: _GroupedLayout) -> np.ndarray:
    """Sorted keys of the k best columns of every row, touching most scores only once.

    Let t be the k-th largest group maximum of a row. At least k scores are >= t (the k group
    maxima), so every score of the top k is >= t and lies in a group whose maximum is >= t:
    gathering the (usually exactly k) groups whose maximum reaches t, and keeping their scores
    >= t, yields a small exact candidate set (about 1.15 k for random scores) that is then sorted.
    Rows where that does not hold cheaply (t = -inf because nearly everything is excluded, or
    many ties, e.g. a zero user vector) take the plain partition instead.
    """
    n_rows = len(scores)
    groups, group_size = layout.groups, layout.group_size
    slabs = scores.reshape(n_rows, group_size, groups)  # rows, slot, group
    group_max = slabs.max(axis=1)  # rows, groups
    threshold = np.partition(group_max, groups - k, axis=1)[:, groups - k]  # rows
    fallback = ~np.isfinite(threshold)
    threshold = np.where(fallback, np.inf, threshold)  # fallback rows select no group below

    rows, group = np.nonzero(group_max >= threshold[:, None])  # >= k per row, sorted by row
    groups_per_row = np.bincount(rows, minlength=n_rows)
    fallback |= groups_per_row > 2 * k  # ties between group maxima
    if fallback.any():
        keep = ~fallback[rows]
        rows, group = rows[keep], group[keep]
    members = slabs[rows, :, group]  # selected groups, slot
    pick, slot = np.nonzero(members >= threshold[rows][:, None])
    cand_rows = rows[pick]
    cand_positions = slot * groups + group[pick]
    cand_keys = _sort_keys(members[pick, slot], layout.position_to_article[cand_positions])

    counts = np.bincount(cand_rows, minlength=n_rows)
    width = max(int(counts.max(initial=0)), k)
    keys = np.full((n_rows, width), _NO_KEY, dtype=np.uint64)
    first = np.cumsum(counts) - counts
    keys[cand_rows, np.arange(len(cand_rows)) - first[cand_rows]] = cand_keys
    if width > k:
        keys = np.partition(keys, k - 1, axis=1)[:, :k]
    keys.sort(axis=1)

    for start in range(0, int(fallback.sum()), 256):  # bounded memory: 256 rows x articles keys
        rows_fb = np.flatnonzero(fallback)[start : start + 256]
        keys[rows_fb] = _top_keys_exact(scores[rows_fb], k, layout.position_to_article)
    return keys


def _epoch_seconds(moments: Any) -> np.ndarray:
    """POSIX seconds (float64) from datetimes, numpy datetime64 values or numbers (already seconds).

    Naive datetimes are taken as UTC, as everywhere in newsrec.
    """
    if isinstance(moments, datetime):
        moment = moments if moments.tzinfo else moments.replace(tzinfo=UTC)
        return np.asarray(moment.timestamp(), dtype=np.float64)
    array = np.asarray(moments)
    if np.issubdtype(array.dtype, np.datetime64):
        return array.astype("datetime64[us]").astype(np.int64) / 1e6
    if array.dtype == object:
        return np.asarray([float(_epoch_seconds(item)) for item in array.ravel()]).reshape(array.shape)
    return array.astype(np.float64)


def cold_start_list(
    article_ids: Sequence[str] | np.ndarray,
    published_at: Any,
    popularity: Sequence[float] | np.ndarray,
    now: Any,
    k: int,
    freshness_half_life_hours: float = 6.0,
    popularity_weight: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """The list for users without a history: popular and fresh articles.

    score = popularity_weight * log1p(popularity) / max(log1p(popularity))
          + (1 - popularity_weight) * 0.5 ** (age_hours / freshness_half_life_hours)

    Both terms lie in [0, 1]. Articles published after `now` are left out (not yet live); an
    article's age is never negative.

    Args:
        article_ids: article ids, aligned with `published_at` and `popularity`.
        published_at: datetimes, numpy datetime64 values or POSIX seconds.
        popularity: non-negative counts or rates (e.g. views in the last 24 h).
        now: the reference time, same kinds as `published_at`.
        k: list length.

    Returns:
        `(article_ids, scores)`, best first, at most k long.
    """
    if freshness_half_life_hours <= 0:
        raise ValueError("freshness_half_life_hours must be positive")
    if not 0.0 <= popularity_weight <= 1.0:
        raise ValueError("popularity_weight must lie in [0, 1]")
    ids = np.asarray(article_ids)
    published = _epoch_seconds(published_at).reshape(-1)
    pop = np.asarray(popularity, dtype=np.float64).reshape(-1)
    if not len(ids) == len(published) == len(pop):
        raise ValueError("article_ids, published_at and popularity must have the same length")
    if np.any(pop < 0):
        raise ValueError("popularity must be non-negative")
    now_s = float(_epoch_seconds(now))

    live = published <= now_s
    ids, published, pop = ids[live], published[live], pop[live]
    log_pop = np.log1p(pop)
    top = log_pop.max(initial=0.0)
    popularity_term = log_pop / top if top > 0 else np.zeros_like(log_pop)
    age_hours = (now_s - published) / 3600.0
    freshness_term = np.exp2(-age_hours / freshness_half_life_hours)
    scores = popularity_weight * popularity_term + (1.0 - popularity_weight) * freshness_term

    k = min(k, len(ids))
    if k <= 0:
        return ids[:0], scores[:0].astype(np.float32)
    order = np.lexsort((np.arange(len(ids)), -scores))[:k]
    return ids[order], scores[order].astype(np.float32)


def merge_fresh_articles(
    stored_ids: Sequence[str] | np.ndarray,
    stored_scores: Sequence[float] | np.ndarray,
    user_vec: np.ndarray,
    fresh_article_ids: Sequence[str] | np.ndarray,
    fresh_vecs: np.ndarray,
) -> Iterator[tuple[str, float, bool]]:
    """Merge articles published after a list was computed into that stored list.

    The fresh articles are scored against the stored user vector (dot product, the same scale as
    the stored scores when both come from one model version) and merged by score
    (`merge_by_score`). An article in both inputs appears once, with the higher of its scores.
    Equal scores keep stored items first.

    Args:
        stored_ids, stored_scores: the precomputed list, best first.
        user_vec: dim, the user vector the list was computed with.
        fresh_article_ids: articles published after the list's computed_at.
        fresh_vecs: fresh articles, dim.

    Returns:
        `(article_id, score, is_fresh)` best first, lazily (take as many as needed);
        `is_fresh` marks items that came from the fresh articles. Invalid inputs raise here,
        not on iteration.
    """
    vecs = np.asarray(fresh_vecs, dtype=np.float32)
    if vecs.ndim != 2 or vecs.shape[0] != len(fresh_article_ids):
        raise ValueError(f"fresh_vecs must be [{len(fresh_article_ids)}, d], got {vecs.shape}")
    f_scores = vecs @ np.asarray(user_vec, dtype=np.float32).reshape(-1)
    return merge_by_score(stored_ids, stored_scores, fresh_article_ids, f_scores)


def merge_by_score(
    stored_ids: Sequence[str] | np.ndarray,
    stored_scores: Sequence[float] | np.ndarray,
    fresh_ids: Sequence[str] | np.ndarray,
    fresh_scores: Sequence[float] | np.ndarray,
) -> Iterator[tuple[str, float, bool]]:
    """`(article_id, score, is_fresh)` of a ranked stored list and scored fresh articles, best first.

    Lazy, so a caller that needs ten items pays for about ten: serving calls this on every
    request. The stored list keeps its order; each fresh article goes before the first stored
    item with a lower score (ties keep stored items first). An article that appears twice is
    yielded once, at its best score. Invalid inputs raise here, not on iteration.
    """
    s_ids = stored_ids.tolist() if isinstance(stored_ids, np.ndarray) else stored_ids
    s_scores = np.asarray(stored_scores, dtype=np.float32).reshape(-1).tolist()
    if len(s_ids) != len(s_scores):
        raise ValueError("stored_ids and stored_scores must have the same length")
    f_scores = np.asarray(fresh_scores, dtype=np.float32).reshape(-1).tolist()
    if len(f_scores) != len(fresh_ids):
        raise ValueError("fresh_ids and fresh_scores must have the same length")
    # Best first; Python's sort is stable with reverse=True too, and on the few fresh articles
    # a request sees it costs less than numpy's call overhead.
    order = sorted(range(len(f_scores)), key=f_scores.__getitem__, reverse=True)
    f_ids = fresh_ids.tolist() if isinstance(fresh_ids, np.ndarray) else fresh_ids
    return _merged(s_ids, s_scores, [f_ids[o] for o in order], [f_scores[o] for o in order])


def _merged(
    s_ids: Sequence[str], s_scores: list[float], f_ids: list[str], f_scores: list[float]
) -> Iterator[tuple[str, float, bool]]:
    """The two-pointer merge of `merge_by_score` over best-first lists, each id once."""
    seen: set[str] = set()
    i, n_stored = 0, len(s_ids)
    for fresh_id, fresh_score in zip(f_ids, f_scores, strict=True):
        # Stored items first while they score at least as high (ties keep stored items first).
        while i < n_stored and s_scores[i] >= fresh_score:
            article_id = s_ids[i]
            if article_id not in seen:
                seen.add(article_id)
                yield article_id, s_scores[i], False
            i += 1
        if fresh_id not in seen:
            seen.add(fresh_id)
            yield fresh_id, fresh_score, True
    for article_id, score in zip(s_ids[i:], s_scores[i:], strict=True):
        if article_id not in seen:
            seen.add(article_id)
            yield article_id, score, False


def cap_per_group(groups: Sequence[str], cap: int) -> list[int]:
    """Positions of a ranked list reordered so that each group (subcategory) has at most `cap`
    items ahead of the rest: an item over its group's cap moves behind every item within its
    cap, keeping the ranked order on both sides. A diversity re-rank that needs no vectors, so it
    covers stored items as well as fresh ones; `cap < 1` leaves the order as it is."""
    if cap < 1:
        return list(range(len(groups)))
    seen: Counter[str] = Counter()
    within, over = [], []
    for position, group in enumerate(groups):
        seen[group] += 1
        (within if seen[group] <= cap else over).append(position)
    return within + over


def intra_list_diversity(groups: Sequence[str]) -> float:
    """Share of the list's item pairs whose groups differ (1: all distinct, 0: one group)."""
    n = len(groups)
    if n < 2:
        return 0.0
    same = sum(count * (count - 1) for count in Counter(groups).values())
    return 1.0 - same / (n * (n - 1))


def assign_variant(user_id: str, weights: Mapping[str, float], salt: str = "") -> str:
    """The A/B variant of a user: a stable hash of the user id (and `salt`, a new one reshuffles
    everyone) mapped onto the variants' cumulative weights, so a user keeps their variant across
    requests, workers and restarts, and each variant gets its weight's share of users."""
    if not weights or any(weight < 0 for weight in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError("variant weights must be non-negative with a positive sum")
    digest = hashlib.blake2b(f"{salt}:{user_id}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") / 2**64 * sum(weights.values())
    for name, weight in weights.items():
        point -= weight
        if point < 0:
            return name
    return name  # rounding at the very top of the range
