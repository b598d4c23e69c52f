"""Recommendations, batch layer: every user's list, every 30 minutes, ranked by user shard and
published atomically.

`batch_shard_lists` is partitioned into N hash shards of the users (`NEWSREC_BATCH_SHARDS`):
each partition reads only its users from the warehouse and stages their lists, invisible, under
the cycle's batch. `batch_recommendations` depends on every shard and flips the batch once all
of them are staged, so readers see the whole new generation or the whole old one.
"""

from datetime import UTC
from typing import Literal

import dagster as dg

from newsrec_assets.defs.automation import (
    BATCH_FRESHNESS_POLICY,
    after_every_shard_condition,
    batch_automation_condition,
    when_missing_and_ready,
)
from newsrec_assets.defs.embeddings.assets import article_embeddings
from newsrec_assets.defs.model.assets import published_model
from newsrec_assets.defs.resources import ArtifactStoreResource, OnlineStoreResource, WarehouseResource
from newsrec_assets.domain.sharding import shard_keys
from newsrec_assets.settings import batch_shards, online_store_kind

GROUP = "recommendations"
SHARDS = dg.StaticPartitionsDefinition(shard_keys(batch_shards()))


class BatchRecommendationsConfig(dg.Config):
    list_length: int = 100
    candidate_max_age_hours: float = 72.0  # in the data's event time (the features' as_of)
    cold_start_half_life_hours: float = 6.0
    seen_min_impressions: int = 3  # served this often without a click: seen
    seen_action: Literal["drop", "demote"] = "drop"
    seen_demotion: float = 1.0  # subtracted from a seen article's score when demoting

    def settings(self):  # noqa: ANN201 - the domain's type, imported lazily
        from newsrec_assets.defs.recommendations.batch_layer import ListSettings
        from newsrec_assets.domain.batch_lists import SeenPolicy

        seen = SeenPolicy(self.seen_min_impressions, self.seen_action, self.seen_demotion)
        return ListSettings(
            self.list_length, self.candidate_max_age_hours, self.cold_start_half_life_hours, seen
        )


@dg.asset(
    group_name=GROUP,
    partitions_def=SHARDS,
    deps=[
        published_model,
        article_embeddings,
        dg.AssetKey("user_click_histories"),
        dg.AssetKey("article_features"),
        dg.AssetKey("current_articles"),
        dg.AssetKey("training_impressions"),
    ],
    kinds={"numpy", online_store_kind()},
    # A shard never built (a new deployment, a new shard count) is built as soon as its inputs
    # exist, not at the next cadence tick: the first personalised lists come minutes after the model.
    automation_condition=batch_automation_condition(slower_deps=["published_model"])
    | when_missing_and_ready(),
)
def batch_shard_lists(
    context: dg.AssetExecutionContext,
    config: BatchRecommendationsConfig,
    warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource,
    online_store: OnlineStoreResource,
) -> dg.MaterializeResult:
    """One user shard's ranked lists, staged in the online store, invisible until the publish.

    With the published NAML model: user vectors from each user's latest 50 clicks (plus the
    affinity term, for a model that has it), candidates the live articles published within
    `candidate_max_age_hours` of the data's newest event, scored by a chunked matmul + top-k.
    Every article the user clicked is left out; one served `seen_min_impressions` times without a
    click is dropped or demoted. A list short of k is filled from the popularity/recency ranker.
    Before any model has passed the gate, that ranker makes the whole list (labelled so in its
    model version). The shard's part of the speed layer's snapshot is saved beside.
    """
    from newsrec_assets.defs.recommendations.batch_layer import rank_shard, save_snapshot_part
    from newsrec_assets.domain.sharding import Shard

    shard = Shard.from_key(context.partition_key, len(SHARDS.get_partition_keys()))
    store = artifacts.get()
    lists = rank_shard(warehouse.get(read_only=True), store, shard, config.settings())
    staged = online_store.lists().stage_shard(
        lists.batch_key, shard.index, lists.records(), model_version=lists.model_version
    )
    part = save_snapshot_part(store, lists)
    context.log.info(
        f"shard {shard.index}/{shard.count}: staged {staged.users} lists of batch {lists.batch_key}"
    )
    return dg.MaterializeResult(
        metadata={
            **lists.metadata,
            "shard": f"{shard.index} of {shard.count}",
            "batch": lists.batch_key,
            "generation": staged.generation,
            "model_version": lists.model_version,
            "watermark": lists.watermark.isoformat(),
            "snapshot_part": part or "none (no model)",
        }
    )


@dg.asset(
    group_name=GROUP,
    deps=[batch_shard_lists],
    kinds={"numpy", online_store_kind()},
    freshness_policy=BATCH_FRESHNESS_POLICY,
    automation_condition=after_every_shard_condition() | when_missing_and_ready(),
)
def batch_recommendations(
    context: dg.AssetExecutionContext,
    config: BatchRecommendationsConfig,
    warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource,
    online_store: OnlineStoreResource,
) -> dg.MaterializeResult:
    """Publishes the newest batch whose shards are all staged: one atomic flip for readers.

    Refuses (fails, nothing changes for readers) when a shard is missing. Then refreshes what is
    not per user: the article metadata, the cold-start list (popular and fresh, in the data's
    event time), the article vectors for read-time scoring and the speed layer's snapshot (the
    shards' parts joined). The lists' watermark is the batch's event time, so the flip never
    replaces a fresher speed-layer list.
    """
    from newsrec_assets.defs.recommendations.batch_layer import (
        FallbackRanker,
        merge_snapshot_parts,
        save_snapshot,
    )
    from newsrec_assets.domain.recommend import ranking_news_vectors
    from newsrec_assets.resources.online_store.base import ArticleMeta, ColdStartList, to_us

    shards = len(SHARDS.get_partition_keys())
    lists, articles = online_store.lists(), online_store.articles()
    result = lists.publish_shards(shards)
    if not result.published:
        raise dg.Failure(f"the online store refused the batch publish: {result.reason}")
    model_version = lists.get_model_version() or ""
    key = f"{model_version}@{to_us(result.watermark)}"

    db = warehouse.get(read_only=True)
    live = db.live_articles()
    settings = config.settings()
    cold = FallbackRanker.of(live, result.watermark, settings.cold_start_half_life_hours)
    lists.put_cold_start(
        ColdStartList(
            tuple(cold.article_ids[: settings.list_length]),
            cold.scores[: settings.list_length],
            result.watermark,
            model_version,
        )
    )
    articles.upsert_articles(
        ArticleMeta(article_id=a, title=t, category=c, subcategory=s, published_at=p.replace(tzinfo=UTC))
        for a, t, c, s, p in zip(
            *(live[column].to_pylist() for column in ("article_id", "title", "category", "subcategory")),
            live["published_at"].to_pylist(),
            strict=True,
        )
    )
    snapshot = merge_snapshot_parts(artifacts.get(), key, shards)
    snapshot_version = None
    if snapshot is not None:
        rows = snapshot.candidate_rows
        n_subcategories = 0 if snapshot.user_affinity is None else snapshot.user_affinity.shape[1]
        vectors = ranking_news_vectors(
            snapshot.news_vectors[rows],
            snapshot.candidate_priors,
            None if snapshot.article_subcategories is None else snapshot.article_subcategories[rows],
            n_subcategories,
        )
        articles.put_article_vectors(list(snapshot.article_ids[rows]), vectors, model_version)
        snapshot_version = save_snapshot(artifacts.get(), snapshot)
    forgotten = lists.forget_recent_clicks(to_us(result.watermark))
    context.log.info(
        f"published {result.users_written} lists of {shards} shards (generation {result.generation}, "
        f"watermark {result.watermark}); {result.speed_lists_kept} fresher speed-layer lists kept"
    )
    return dg.MaterializeResult(
        metadata={
            "users": result.users_written,
            "shards": shards,
            "candidates": 0 if snapshot is None else len(snapshot.candidate_rows),
            "model_version": model_version,
            "generation": result.generation,
            "watermark": result.watermark.isoformat(),
            "speed_lists_kept": result.speed_lists_kept,
            "recent_clicks_forgotten": forgotten,
            "cold_start_top5": ", ".join(cold.article_ids[:5].tolist()),
            "snapshot_version": snapshot_version or "none (no model)",
        }
    )
