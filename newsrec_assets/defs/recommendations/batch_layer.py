"""The batch layer's use cases: rank one user shard over the ports, and assemble a publish.

Imported inside the asset bodies only (it pulls in numpy, pyarrow and the model code), so the
definitions stay light.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from newsrec_assets.domain.batch_lists import (
    POPULARITY_VERSION,
    SeenPolicy,
    UserExclusions,
    fill_short_lists,
    popularity_lists,
    user_exclusions,
)
from newsrec_assets.domain.ranking import cold_start_list
from newsrec_assets.domain.recommend import NO_ARTICLE, ServingSnapshot
from newsrec_assets.domain.sharding import Shard
from newsrec_assets.resources.artifacts import ArtifactStore
from newsrec_assets.resources.online_store.base import UserRecommendations, to_us
from newsrec_assets.resources.warehouse import Warehouse

NAML_KIND = "naml"
SNAPSHOT_KIND = "serving_snapshot"
SNAPSHOT_PART_KIND = "serving_snapshot_part"


@dataclass(frozen=True)
class ListSettings:
    list_length: int = 100
    candidate_max_age_hours: float = 72.0
    cold_start_half_life_hours: float = 6.0
    seen: SeenPolicy = field(default_factory=SeenPolicy)


def batch_key(model_version: str, watermark: datetime) -> str:
    """Every shard of one cycle ranks with the same model over the same features, so they agree on
    this key without talking to each other (a shard that saw other data stages a batch of its own)."""
    return f"{model_version}@{to_us(watermark)}"


def snapshot_part_version(key: str, shard: int) -> str:
    return f"{key.replace('@', '-')}-shard{shard}"


def indices_in(values: pa.ChunkedArray | pa.Array, universe: np.ndarray) -> np.ndarray:
    """Position of each value in `universe` (-1 where absent), computed in Arrow, not per row in Python."""
    found = pc.index_in(values, value_set=pa.array(np.asarray(universe).tolist(), type=pa.string()))
    return np.asarray(pc.fill_null(found, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


@dataclass
class FallbackRanker:
    """The popularity/recency ranker over every live article, as of the batch's event time."""

    article_ids: np.ndarray  # live articles published by the watermark, best first
    scores: np.ndarray  # in [0, 1]

    @classmethod
    def of(cls, live: pa.Table, as_of: datetime, half_life_hours: float) -> FallbackRanker:
        popularity = np.nan_to_num(np.asarray(live["popularity"].to_pylist(), dtype=np.float64))
        ids, scores = cold_start_list(
            np.asarray(live["article_id"].to_pylist(), dtype=object),
            live["published_at"].to_numpy().astype("datetime64[us]"),
            np.maximum(popularity, 0.0),
            np.datetime64(as_of.replace(tzinfo=None), "us"),
            live.num_rows,
            freshness_half_life_hours=half_life_hours,
        )
        return cls(ids, scores)

    def lists(
        self, exposures: pa.Table, user_ids: np.ndarray, settings: ListSettings
    ) -> tuple[np.ndarray, np.ndarray]:
        """`(indices into article_ids, scores)` per user, exclusions applied, like `top_k_scores`."""
        exclusions = exposure_exclusions(exposures, user_ids, self.article_ids, settings.seen)
        return popularity_lists(
            self.scores, len(user_ids), settings.list_length, exclusions, settings.seen.demotion
        )


def exposure_exclusions(
    exposures: pa.Table, user_ids: np.ndarray, candidate_ids: np.ndarray, seen: SeenPolicy
) -> UserExclusions:
    return user_exclusions(
        user_codes=indices_in(exposures["user_id"], user_ids),
        candidates=indices_in(exposures["article_id"], candidate_ids),
        impressions=exposures["impressions"].to_numpy(),
        clicked=exposures["clicked"].to_numpy(zero_copy_only=False),
        n_users=len(user_ids),
        policy=seen,
    )


@dataclass
class ShardLists:
    """One shard's ranked lists, yielded as records for the online store."""

    shard: Shard
    model_version: str
    watermark: datetime
    computed_at: datetime
    user_ids: np.ndarray
    article_ids: np.ndarray  # the candidates the indices refer to
    top_index: np.ndarray
    top_scores: np.ndarray
    k: int
    user_vectors: np.ndarray | None = None
    # users whose model list is short of k: their row, then the fallback ranker's lists for them
    fill_rows: dict[int, int] = field(default_factory=dict)
    fallback: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # article ids, indices, scores
    snapshot: ServingSnapshot | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_key(self) -> str:
        return batch_key(self.model_version, self.watermark)

    def records(self) -> Iterator[UserRecommendations]:
        for user, user_id in enumerate(self.user_ids.tolist()):
            finite = np.isfinite(self.top_scores[user])
            ids = self.article_ids[self.top_index[user][finite]].tolist()
            scores = self.top_scores[user][finite]
            if user in self.fill_rows and self.fallback is not None:
                fb_ids, fb_index, fb_scores = self.fallback
                row = self.fill_rows[user]
                keep = np.isfinite(fb_scores[row])
                ids, scores = fill_short_lists(
                    ids, scores, fb_ids[fb_index[row][keep]].tolist(), fb_scores[row][keep], self.k
                )
            yield UserRecommendations(
                user_id=user_id,
                article_ids=tuple(ids),
                scores=scores,
                model_version=self.model_version,
                layer="batch",
                computed_at=self.computed_at,
                watermark=self.watermark,
                user_vector=None if self.user_vectors is None else self.user_vectors[user],
            )


def rank_shard(db: Warehouse, artifacts: ArtifactStore, shard: Shard, settings: ListSettings) -> ShardLists:
    """Rank the users of `shard` (their reads filtered in the warehouse) with the published model,
    or with the popularity/recency ranker while no model has passed the gate."""
    from newsrec_assets.defs.model.assets import factorize

    clock = time.perf_counter()
    as_of = db.features_as_of() or datetime.now(UTC)
    live = db.live_articles()
    histories = db.user_click_histories(shard)
    exposures = db.user_live_exposures(shard)
    read_s = time.perf_counter() - clock
    fallback = FallbackRanker.of(live, as_of, settings.cold_start_half_life_hours)
    _, user_ids = factorize(np.asarray(histories["user_id"].to_pylist(), dtype=object))
    model_version = artifacts.latest(NAML_KIND)
    computed_at = datetime.now(UTC)
    if model_version is None:  # serving never waits for a model
        index, scores = fallback.lists(exposures, user_ids, settings)
        lists = ShardLists(
            shard,
            POPULARITY_VERSION,
            as_of,
            computed_at,
            user_ids,
            fallback.article_ids,
            index,
            scores,
            settings.list_length,
        )
        lists.metadata = {"candidates": len(fallback.article_ids), "ranker": POPULARITY_VERSION}
    else:
        lists = _rank_with_model(db, artifacts, model_version, shard, settings, live, histories, exposures)
        lists.watermark, lists.computed_at, lists.user_ids = as_of, computed_at, user_ids
        lists = _fill_short(lists, fallback, exposures, settings)
    lists.metadata |= {"users": len(user_ids), "seconds_read": round(read_s, 3)}
    return lists


def _rank_with_model(
    db: Warehouse,
    artifacts: ArtifactStore,
    model_version: str,
    shard: Shard,
    settings: ListSettings,
    live: pa.Table,
    histories: pa.Table,
    exposures: pa.Table,
) -> ShardLists:
    from newsrec_assets.defs.model.assets import factorize
    from newsrec_assets.defs.model.data import load_catalogue, user_affinity_counts
    from newsrec_assets.domain.affinity import load_affinity_params, user_affinity
    from newsrec_assets.domain.naml import encode_news_numpy, user_encoder_numpy_params
    from newsrec_assets.domain.popularity import load_prior_params
    from newsrec_assets.domain.ranking import top_k_scores
    from newsrec_assets.domain.recommend import (
        candidate_priors,
        encode_user_histories,
        ranking_vectors,
        to_microseconds,
    )
    from newsrec_assets.domain.training import load_model
    from newsrec_assets.domain.user_encoding import load_model_metadata

    timings: dict[str, float] = {}
    clock = time.perf_counter()
    model_folder = artifacts.fetch(NAML_KIND, model_version)
    model = load_model(model_folder)
    extra = load_model_metadata(model_folder)["extra"]
    catalogue = load_catalogue(
        db, category_vocabulary=extra["categories"], subcategory_vocabulary=extra["subcategories"]
    )
    as_of = db.features_as_of() or datetime.now(UTC)
    features = catalogue.features
    news_vectors = encode_news_numpy(
        model, features.title_vecs, features.body_vecs, features.cat_ids, features.subcat_ids
    )
    params = user_encoder_numpy_params(model)
    timings["encode_news"] = time.perf_counter() - clock

    # Candidates: live, embedded, published within the window, all in the data's event time.
    live_rows = catalogue.rows(live["article_id"].to_pylist())
    published = live["published_at"].to_numpy().astype("datetime64[us]")
    window = np.timedelta64(int(settings.candidate_max_age_hours * 3600), "s")
    is_candidate = (live_rows >= 0) & (published >= np.datetime64(as_of.replace(tzinfo=None)) - window)
    candidate_rows = live_rows[is_candidate]
    priors = candidate_priors(
        load_prior_params(model_folder),
        *(
            np.asarray(live[column].to_pylist(), dtype=np.float32)[is_candidate]
            for column in ("age_hours", "clicks", "impressions")
        ),
    )

    # Histories: one padded row per user, newest first.
    user_codes, user_ids = factorize(np.asarray(histories["user_id"].to_pylist(), dtype=object))
    ranks = np.asarray(histories["click_rank"].to_pylist(), dtype=np.int64) - 1
    article_rows = catalogue.rows(histories["article_id"].to_pylist())
    history_rows = np.full((len(user_ids), model.config.max_history), NO_ARTICLE, dtype=np.int32)
    keep = (ranks < model.config.max_history) & (article_rows >= 0)
    history_rows[user_codes[keep], ranks[keep]] = article_rows[keep]

    clock = time.perf_counter()
    user_vectors = encode_user_histories(params, news_vectors, history_rows)
    affinity_params = load_affinity_params(model_folder)
    affinity = None
    if affinity_params is not None:
        affinity = user_affinity(affinity_params, user_affinity_counts(db, catalogue, user_ids, shard))
    timings["encode_users"] = time.perf_counter() - clock
    clock = time.perf_counter()
    ranking_users, ranking_candidates = ranking_vectors(
        user_vectors, news_vectors[candidate_rows], priors, affinity, features.subcat_ids[candidate_rows]
    )
    candidate_ids = catalogue.article_ids[candidate_rows]
    # Every click excluded (the exposures hold all of them, the histories the latest 50 only),
    # and what was served often without a click dropped or demoted.
    exclusions = exposure_exclusions(exposures, user_ids, candidate_ids, settings.seen)
    top_index, top_scores = top_k_scores(
        ranking_users,
        ranking_candidates,
        settings.list_length,
        exclude=exclusions.exclude,
        demote=exclusions.demote,
        demotion=settings.seen.demotion,
    )
    timings["score_top_k"] = time.perf_counter() - clock

    snapshot = ServingSnapshot(
        model_version=model_version,
        watermark=as_of,
        article_ids=catalogue.article_ids,
        news_vectors=news_vectors,
        published_at_us=to_microseconds(catalogue.published_at),
        candidate_rows=candidate_rows,
        candidate_priors=priors,
        user_ids=user_ids,
        history_rows=history_rows,
        encoder_params=params,
        user_affinity=affinity,
        article_subcategories=None if affinity is None else features.subcat_ids,
    )
    return ShardLists(
        shard=shard,
        model_version=model_version,
        watermark=as_of,
        computed_at=datetime.now(UTC),
        user_ids=user_ids,
        article_ids=candidate_ids,
        top_index=top_index,
        top_scores=top_scores,
        k=settings.list_length,
        user_vectors=ranking_users,
        snapshot=snapshot,
        metadata={
            "candidates": len(candidate_rows),
            "ranker": model_version,
            "seen_excluded_or_demoted": int(len(exclusions.demote[1]) + len(exclusions.exclude[1])),
            **{f"seconds_{name}": round(seconds, 3) for name, seconds in timings.items()},
        },
    )


def _fill_short(
    lists: ShardLists, fallback: FallbackRanker, exposures: pa.Table, settings: ListSettings
) -> ShardLists:
    """The fallback ranker's lists for the users whose model list is short of k (few candidates)."""
    short = np.flatnonzero(np.isfinite(lists.top_scores).sum(axis=1) < settings.list_length)
    lists.metadata["lists_filled_from_fallback"] = len(short)
    if len(short) == 0 or len(fallback.article_ids) == 0:
        return lists
    index, scores = fallback.lists(exposures, lists.user_ids[short], settings)
    return replace(
        lists,
        fill_rows={int(user): row for row, user in enumerate(short)},
        fallback=(fallback.article_ids, index, scores),
    )


def save_snapshot_part(artifacts: ArtifactStore, lists: ShardLists) -> str | None:
    """The shard's part of the speed layer's snapshot (none for the fallback ranker's lists)."""
    if lists.snapshot is None:
        return None
    version = snapshot_part_version(lists.batch_key, lists.shard.index)
    with tempfile.TemporaryDirectory() as folder:
        lists.snapshot.save(Path(folder))
        artifacts.put(SNAPSHOT_PART_KIND, version, Path(folder))
    return version


def merge_snapshot_parts(artifacts: ArtifactStore, key: str, shards: int) -> ServingSnapshot | None:
    """One snapshot from the shards' parts of batch `key` (the article side is the same in every
    part; the users are concatenated), or None when the batch had no model."""
    parts = []
    for shard in range(shards):
        version = snapshot_part_version(key, shard)
        if not artifacts.exists(SNAPSHOT_PART_KIND, version):
            return None
        parts.append(ServingSnapshot.load(artifacts.fetch(SNAPSHOT_PART_KIND, version)))
    affinity = [p.user_affinity for p in parts]
    return replace(
        parts[0],
        user_ids=np.concatenate([p.user_ids for p in parts]),
        history_rows=np.concatenate([p.history_rows for p in parts]),
        user_affinity=None if any(a is None for a in affinity) else np.concatenate(affinity),
    )


def save_snapshot(artifacts: ArtifactStore, snapshot: ServingSnapshot) -> str:
    version = f"{snapshot.model_version}-{snapshot.watermark:%Y%m%dT%H%M%S%f}"
    with tempfile.TemporaryDirectory() as folder:
        snapshot.save(Path(folder))
        artifacts.put(SNAPSHOT_KIND, version, Path(folder))
    artifacts.set_latest(SNAPSHOT_KIND, version)
    return version
