"""Recommendations, batch layer: every user's list, every 30 minutes, published atomically."""

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np

from newsrec_assets.defs.automation import BATCH_FRESHNESS_POLICY, batch_automation_condition
from newsrec_assets.defs.embeddings.assets import article_embeddings
from newsrec_assets.defs.model.assets import NAML_KIND, factorize, published_model
from newsrec_assets.defs.resources import ArtifactStoreResource, OnlineStoreResource, WarehouseResource
from newsrec_assets.settings import online_store_kind

GROUP = "recommendations"
SNAPSHOT_KIND = "serving_snapshot"


class BatchRecommendationsConfig(dg.Config):
    list_length: int = 100
    candidate_max_age_hours: float = 72.0
    cold_start_half_life_hours: float = 6.0
    chunk_size: int = 4096


@dg.asset(
    group_name=GROUP,
    deps=[
        published_model,
        article_embeddings,
        dg.AssetKey("user_click_histories"),
        dg.AssetKey("article_features"),
        dg.AssetKey("current_articles"),
    ],
    kinds={"numpy", online_store_kind()},
    freshness_policy=BATCH_FRESHNESS_POLICY,
    automation_condition=batch_automation_condition(slower_deps=["published_model"]),
)
def batch_recommendations(
    context: dg.AssetExecutionContext,
    config: BatchRecommendationsConfig,
    warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource,
    online_store: OnlineStoreResource,
) -> dg.MaterializeResult:
    """Every user's ranked list from the published NAML model, published to the online store at once.

    User vectors come from each user's latest 50 clicks (attentive user encoder), plus, for a model
    with the affinity term, the user's affinity to every subcategory from their impressions and
    clicks so far (folded into the dot product with the prior); candidates are
    live articles published within `candidate_max_age_hours`; already-clicked articles are left
    out; scoring is a chunked matmul + top-k. Users without history get the cold-start list
    (fresh + popular). The lists carry the batch's event-time watermark, so the publish never
    replaces a fresher speed-layer list. A serving snapshot for the speed layer is written too.
    """
    from newsrec_assets.defs.model.data import load_catalogue, user_affinity_counts
    from newsrec_assets.domain.affinity import load_affinity_params, user_affinity
    from newsrec_assets.domain.naml import encode_news_numpy, user_encoder_numpy_params
    from newsrec_assets.domain.popularity import load_prior_params
    from newsrec_assets.domain.ranking import cold_start_list
    from newsrec_assets.domain.recommend import (
        NO_ARTICLE,
        ServingSnapshot,
        candidate_priors,
        encode_user_histories,
        rank_for_users,
        ranking_vectors,
        to_microseconds,
    )
    from newsrec_assets.domain.training import load_model
    from newsrec_assets.domain.user_encoding import load_model_metadata
    from newsrec_assets.resources.online_store.base import ArticleMeta, ColdStartList, UserRecommendations

    timings: dict[str, float] = {}
    clock = time.perf_counter()
    store = artifacts.get()
    model_version = store.latest(NAML_KIND)
    if model_version is None:
        raise dg.Failure("No published model: materialise `published_model` first.")
    model_folder = store.fetch(NAML_KIND, model_version)
    model = load_model(model_folder)
    extra = load_model_metadata(model_folder)["extra"]
    db = warehouse.get(read_only=True)
    catalogue = load_catalogue(
        db, category_vocabulary=extra["categories"], subcategory_vocabulary=extra["subcategories"]
    )
    as_of = db.features_as_of() or datetime.now(UTC)
    live = db.live_articles()
    histories = db.user_click_histories()
    timings["read"] = time.perf_counter() - clock

    clock = time.perf_counter()
    features = catalogue.features
    news_vectors = encode_news_numpy(
        model, features.title_vecs, features.body_vecs, features.cat_ids, features.subcat_ids
    )
    params = user_encoder_numpy_params(model)
    timings["encode_news"] = time.perf_counter() - clock

    # Candidates: live, recent, and embedded (rows of the catalogue).
    live_ids = live["article_id"].to_pylist()
    live_rows = catalogue.rows(live_ids)
    published = live["published_at"].to_numpy().astype("datetime64[us]")
    recent = published >= np.datetime64(as_of.replace(tzinfo=None)) - np.timedelta64(
        int(config.candidate_max_age_hours * 3600), "s"
    )
    is_candidate = (live_rows >= 0) & recent
    candidate_rows = live_rows[is_candidate]
    # The model's popularity/recency prior for each candidate, as of the batch's watermark.
    priors = candidate_priors(
        load_prior_params(model_folder),
        *(
            np.asarray(live[column].to_pylist(), dtype=np.float32)[is_candidate]
            for column in ("age_hours", "clicks", "impressions")
        ),
    )

    # Histories: one padded row per user, newest first.
    max_history = model.config.max_history
    user_codes, user_ids = factorize(np.asarray(histories["user_id"].to_pylist(), dtype=object))
    ranks = np.asarray(histories["click_rank"].to_pylist(), dtype=np.int64) - 1
    article_rows = catalogue.rows(histories["article_id"].to_pylist())
    history_rows = np.full((len(user_ids), max_history), NO_ARTICLE, dtype=np.int32)
    keep = (ranks < max_history) & (article_rows >= 0)
    history_rows[user_codes[keep], ranks[keep]] = article_rows[keep]

    clock = time.perf_counter()
    user_vectors = encode_user_histories(params, news_vectors, history_rows)
    affinity_params = load_affinity_params(model_folder)
    affinity = None
    if affinity_params is not None:
        affinity = user_affinity(affinity_params, user_affinity_counts(db, catalogue, user_ids))
    timings["encode_users"] = time.perf_counter() - clock
    clock = time.perf_counter()
    ranking_users, ranking_candidates = ranking_vectors(
        user_vectors, news_vectors[candidate_rows], priors, affinity, features.subcat_ids[candidate_rows]
    )
    top_index, top_scores = rank_for_users(
        ranking_users, ranking_candidates, history_rows, candidate_rows, config.list_length
    )
    timings["score_top_k"] = time.perf_counter() - clock

    computed_at = datetime.now(UTC)
    candidate_ids = catalogue.article_ids[candidate_rows]

    def records():
        for user, user_id in enumerate(user_ids.tolist()):
            finite = np.isfinite(top_scores[user])
            yield UserRecommendations(
                user_id=user_id,
                article_ids=tuple(candidate_ids[top_index[user][finite]]),
                scores=top_scores[user][finite],
                model_version=model_version,
                layer="batch",
                computed_at=computed_at,
                watermark=as_of,
                user_vector=ranking_users[user],
            )

    clock = time.perf_counter()
    lists, articles = online_store.lists(), online_store.articles()
    popularity = np.nan_to_num(np.asarray(live["popularity"].to_pylist(), dtype=np.float64))
    cold_ids, cold_scores = cold_start_list(
        live_ids,
        published,
        popularity,
        np.datetime64(as_of.replace(tzinfo=None)),
        config.list_length,
        freshness_half_life_hours=config.cold_start_half_life_hours,
    )
    articles.upsert_articles(
        ArticleMeta(article_id=a, title=t, category=c, subcategory=s, published_at=p.replace(tzinfo=UTC))
        for a, t, c, s, p in zip(
            live_ids,
            live["title"].to_pylist(),
            live["category"].to_pylist(),
            live["subcategory"].to_pylist(),
            live["published_at"].to_pylist(),
            strict=True,
        )
    )
    articles.put_article_vectors(list(candidate_ids), ranking_candidates, model_version)
    lists.put_cold_start(ColdStartList(tuple(cold_ids), cold_scores, computed_at, model_version))
    result = lists.publish_batch(records(), model_version=model_version)
    if not result.published:
        raise dg.Failure(f"the online store refused the batch publish: {result.reason}")
    timings["publish"] = time.perf_counter() - clock

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
    snapshot_version = f"{model_version}-{as_of:%Y%m%dT%H%M%S%f}"
    with tempfile.TemporaryDirectory() as folder:
        snapshot.save(Path(folder))
        store.put(SNAPSHOT_KIND, snapshot_version, Path(folder))
    store.set_latest(SNAPSHOT_KIND, snapshot_version)
    forgotten = lists.forget_recent_clicks(int(as_of.timestamp() * 1_000_000))

    context.log.info(
        f"published {result.users_written} lists (generation {result.generation}, watermark {as_of}); "
        f"{result.speed_lists_kept} fresher speed-layer lists kept"
    )
    return dg.MaterializeResult(
        metadata={
            "users": len(user_ids),
            "candidates": len(candidate_rows),
            "model_version": model_version,
            "generation": result.generation,
            "watermark": as_of.isoformat(),
            "speed_lists_kept": result.speed_lists_kept,
            "recent_clicks_forgotten": forgotten,
            "cold_start_top5": ", ".join(cold_ids[:5]),
            "snapshot_version": snapshot_version,
            **{f"seconds_{name}": round(seconds, 3) for name, seconds in timings.items()},
        }
    )
