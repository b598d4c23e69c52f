"""Recommendations, speed layer: a view event recomputes that user's list within seconds.

A sensor reads new `user_article_views` change records straight from the landing zone (never the
warehouse: DuckDB's single writer may be a long batch run) and batches one tick's events into one
run. The run loads the batch layer's serving snapshot (numpy only, no torch), adds the clicks that
arrived since that batch, re-encodes only those users and writes their lists with the watermark
rule. A second sensor gets new articles' vectors into the online store between batches, so lists
computed before an article was published can still surface it at read time.

This module is loaded by the light `newsrec_speed` code location: it must not import dbt, torch
or transformers at module level.
"""

import hashlib
import time
from datetime import UTC, datetime

import dagster as dg

from newsrec_assets.defs.resources import ArtifactStoreResource, LandingZoneResource, OnlineStoreResource
from newsrec_assets.resources.landing import START_OF_TIME_CURSOR, parse_cursor
from newsrec_assets.settings import online_store_kind

GROUP = "recommendations"
SNAPSHOT_KIND = "serving_snapshot"
VIEWS_PREFIX = "user_article_views/"
ARTICLES_PREFIX = "articles/"
MAX_FILES_PER_TICK = 500


class ViewEventConfig(dg.Config):
    user_id: str
    article_id: str
    viewed_at_us: int


class SpeedRecommendationsConfig(dg.Config):
    events: list[ViewEventConfig]
    first_landed_at_ns: int = 0
    list_length: int = 100


@dg.asset(
    group_name=GROUP,
    deps=[dg.AssetKey("batch_recommendations")],
    kinds={"numpy", online_store_kind()},
)
def speed_recommendations(
    context: dg.AssetExecutionContext,
    config: SpeedRecommendationsConfig,
    artifacts: ArtifactStoreResource,
    online_store: OnlineStoreResource,
) -> dg.MaterializeResult:
    """Lists of the users who just viewed something, from their published history plus new clicks.

    Triggered by `speed_layer_sensor`, one run per sensor tick. Each list's watermark is the
    user's newest click, so a later batch publish computed from older events never replaces it.
    """
    import numpy as np

    from newsrec_assets.domain.recommend import (
        NO_ARTICLE,
        ServingSnapshot,
        encode_user_histories,
        from_microseconds,
        merge_history,
        rank_for_users,
        ranking_vectors,
    )
    from newsrec_assets.resources.online_store.base import UserRecommendations

    started = time.perf_counter()
    store = artifacts.get()
    snapshot_version = store.latest(SNAPSHOT_KIND)
    if snapshot_version is None:
        raise dg.Failure("No serving snapshot yet: the batch layer has not published.")
    snapshot = ServingSnapshot.load(store.fetch(SNAPSHOT_KIND, snapshot_version))
    watermark_us = int(snapshot.watermark.timestamp() * 1_000_000)

    lists = online_store.lists()
    lists.add_recent_clicks(
        (e.user_id, e.article_id, e.viewed_at_us) for e in config.events if e.viewed_at_us > watermark_us
    )
    user_ids = sorted({e.user_id for e in config.events})
    clicks = lists.recent_clicks(user_ids, watermark_us)

    # Articles published after the batch have vectors in the online store (see fresh_article_vectors),
    # already in ranking form [news vector, prior]; their plain news vectors serve in histories.
    fresh = online_store.articles().get_fresh_articles(snapshot.watermark, snapshot.model_version)
    is_new = snapshot.article_rows(fresh.article_ids.tolist()) == NO_ARTICLE
    fresh_ids, fresh_ranking = fresh.article_ids[is_new].astype(object), fresh.vectors[is_new]
    dim = snapshot.news_vectors.shape[1]
    article_ids = np.concatenate([snapshot.article_ids, fresh_ids])
    news_vectors = (
        np.vstack([snapshot.news_vectors, fresh_ranking[:, :dim]])
        if len(fresh_ids)
        else snapshot.news_vectors
    )
    row_of = {a: i for i, a in enumerate(article_ids.tolist())}
    candidate_rows = np.concatenate(
        [snapshot.candidate_rows, np.arange(len(snapshot.article_ids), len(article_ids))]
    ).astype(np.int64)

    changed = [u for u in user_ids if clicks[u]]
    history_rows = (
        np.stack(
            [
                merge_history(
                    snapshot.history_of(user_id),
                    [row_of.get(article_id, NO_ARTICLE) for article_id, _ in clicks[user_id]],
                    snapshot.max_history,
                )
                for user_id in changed
            ]
        )
        if changed
        else np.zeros((0, snapshot.max_history), dtype=np.int32)
    )
    user_vectors = encode_user_histories(snapshot.encoder_params, news_vectors, history_rows)
    # the affinity blocks stay as of the batch: the speed layer sees clicks, not impressions
    ranking_users, batch_candidates = ranking_vectors(
        user_vectors,
        snapshot.news_vectors[snapshot.candidate_rows],
        snapshot.candidate_priors,
        snapshot.affinity_of(changed),
        None
        if snapshot.article_subcategories is None
        else snapshot.article_subcategories[snapshot.candidate_rows],
    )
    ranking_candidates = np.vstack([batch_candidates, fresh_ranking]) if len(fresh_ids) else batch_candidates
    top_index, top_scores = rank_for_users(
        ranking_users, ranking_candidates, history_rows, candidate_rows, config.list_length
    )

    computed_at = datetime.now(UTC)
    written = refused = 0
    for i, user_id in enumerate(changed):
        finite = np.isfinite(top_scores[i])
        result = lists.put_recommendations(
            UserRecommendations(
                user_id=user_id,
                article_ids=tuple(article_ids[candidate_rows[top_index[i][finite]]]),
                scores=top_scores[i][finite],
                model_version=snapshot.model_version,
                layer="speed",
                computed_at=computed_at,
                watermark=from_microseconds(max(viewed for _, viewed in clicks[user_id])),
                user_vector=ranking_users[i],
            )
        )
        written += result.accepted
        refused += not result.accepted
    landed_lag = time.time() - config.first_landed_at_ns / 1e9 if config.first_landed_at_ns else None
    context.log.info(f"{written} speed-layer lists written, {refused} refused (older than what is stored)")
    return dg.MaterializeResult(
        metadata={
            "events": len(config.events),
            "users": len(user_ids),
            "lists_written": written,
            "lists_refused_stale": refused,
            "fresh_articles_considered": len(fresh_ids),
            "snapshot_version": snapshot_version,
            "compute_seconds": round(time.perf_counter() - started, 3),
            "seconds_since_first_file_landed": round(landed_lag, 3) if landed_lag is not None else None,
        }
    )


def _files_since_cursor(context: dg.SensorEvaluationContext, zone, prefix: str):
    """Up to MAX_FILES_PER_TICK files under `prefix` that landed after the cursor, or why none.

    The first tick only moves the cursor to the newest landed file: history is the batch's job.
    """
    files = zone.new_files(after=parse_cursor(context.cursor), prefix=prefix)
    if context.cursor is None:
        context.update_cursor(files[-1].cursor if files else START_OF_TIME_CURSOR)
        return dg.SkipReason("First tick: starting from the newest landed file; history is the batch's job.")
    if not files:
        return dg.SkipReason(f"No new change records under {prefix}.")
    return files[:MAX_FILES_PER_TICK]


# A named job, so that the sensor's runs show what they target in the UI's run list.
speed_layer_job = dg.define_asset_job(
    "speed_layer",
    selection=[speed_recommendations],
    description="Recompute the lists of the users whose view events landed since the last run.",
)


@dg.sensor(
    name="speed_layer_sensor",
    description=(
        "Turns new behaviour change records in the landing zone into one speed-layer run per tick. "
        "The cursor is the newest landing file read; on its first tick it starts from the present."
    ),
    target=speed_layer_job,
    minimum_interval_seconds=1,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def speed_layer_sensor(context: dg.SensorEvaluationContext, landing: LandingZoneResource):
    from newsrec_assets.domain.landing_format import parse_landing_file

    zone = landing.get()
    files = _files_since_cursor(context, zone, VIEWS_PREFIX)
    if isinstance(files, dg.SkipReason):
        return files
    events = []
    for file in files:
        # Malformed lines are skipped here; ingestion quarantines them with the reason.
        for _, record, _ in parse_landing_file(zone.read_bytes(file.path), file.path).records:
            if record.table == "user_article_views" and record.change_type in ("INSERT", "UPDATE-INSERT"):
                viewed_at: datetime = record.payload["last_viewed_at"]
                events.append(
                    ViewEventConfig(
                        user_id=record.payload["user_id"],
                        article_id=record.payload["article_id"],
                        viewed_at_us=int(viewed_at.timestamp() * 1_000_000),
                    )
                )
    newest = files[-1]
    context.update_cursor(newest.cursor)
    if not events:
        return dg.SkipReason(f"{len(files)} new files, no view events in them.")
    digest = hashlib.sha1("\n".join(f.path for f in files).encode()).hexdigest()[:12]
    return dg.RunRequest(
        run_key=f"speed-{files[0].landed_at_ns}-{newest.landed_at_ns}-{digest}",
        run_config=dg.RunConfig(
            ops={
                "speed_recommendations": SpeedRecommendationsConfig(
                    events=events, first_landed_at_ns=files[0].landed_at_ns
                )
            }
        ),
        tags={"newsrec/events": str(len(events)), "newsrec/first_landed_at_ns": str(files[0].landed_at_ns)},
    )


class FreshArticlesConfig(dg.Config):
    landing_files: list[str]


@dg.asset(
    group_name=GROUP,
    deps=[dg.AssetKey("published_model"), dg.AssetKey("text_encoder")],
    kinds={"pytorch", online_store_kind()},
)
def fresh_article_vectors(
    context: dg.AssetExecutionContext,
    config: FreshArticlesConfig,
    landing: LandingZoneResource,
    artifacts: ArtifactStoreResource,
    online_store: OnlineStoreResource,
) -> dg.MaterializeResult:
    """News vectors of articles published or edited since the last batch, for read-time scoring.

    The API merges articles published after a list's computed-at time by scoring their vectors
    against the stored user vector; this asset puts those vectors (published text encoder, then the
    published NAML news encoder) and the articles' metadata into the online store within seconds of
    the CMS change. Unpublished and deleted articles are removed from the store.
    """

    import numpy as np

    from newsrec_assets.domain.catalogue import encode
    from newsrec_assets.domain.cdc import source_order
    from newsrec_assets.domain.landing_format import parse_landing_file
    from newsrec_assets.domain.naml import encode_news_numpy
    from newsrec_assets.domain.popularity import load_prior_params
    from newsrec_assets.domain.recommend import candidate_priors, ranking_news_vectors
    from newsrec_assets.domain.text_encoder import embed_texts, load_encoder
    from newsrec_assets.domain.training import load_model
    from newsrec_assets.domain.user_encoding import load_model_metadata
    from newsrec_assets.resources.online_store.base import ArticleMeta

    zone = landing.get()
    latest: dict[str, object] = {}
    records = []
    for path in config.landing_files:
        records.extend(parsed.record for parsed in parse_landing_file(zone.read_bytes(path), path).records)
    for record in sorted(records, key=source_order):
        if record.table == "articles" and record.change_type != "UPDATE-DELETE":
            latest[record.payload["article_id"]] = record
    live = [r for r in latest.values() if not r.is_deleted and r.payload["status"] == "published"]
    gone = [a for a, r in latest.items() if r.is_deleted or r.payload["status"] != "published"]

    online = online_store.articles()
    removed = online.delete_articles(gone) if gone else 0
    if live:
        store = artifacts.get()
        model_version = store.latest("naml")
        encoder_version = store.latest("text_encoder")
        if model_version is None or encoder_version is None:
            raise dg.Failure("No published model or text encoder yet.")
        model_folder = store.fetch("naml", model_version)
        model = load_model(model_folder)
        extra = load_model_metadata(model_folder)["extra"]
        encoder, tokenizer = load_encoder(store.fetch("text_encoder", encoder_version))
        titles = embed_texts(encoder, tokenizer, [r.payload["title"] for r in live], max_length=32)
        bodies = embed_texts(encoder, tokenizer, [r.payload["body"] for r in live], max_length=128)
        subcategory_ids = encode([r.payload["subcategory"] for r in live], extra["subcategories"])
        news = encode_news_numpy(
            model,
            titles,
            bodies,
            encode([r.payload["category"] for r in live], extra["categories"]),
            subcategory_ids,
        )
        # Ranking form [news vector, prior(, subcategory one-hot)]: a new article has no
        # impressions or clicks yet.
        now = datetime.now(UTC)
        age_hours = np.array([(now - r.payload["published_at"]).total_seconds() / 3600 for r in live])
        zeros = np.zeros(len(live))
        priors = candidate_priors(load_prior_params(model_folder), age_hours, zeros, zeros)
        n_subcategories = model.config.n_subcategories if model.affinity is not None else 0
        vectors = ranking_news_vectors(news, priors, subcategory_ids, n_subcategories)
        online.upsert_articles(
            ArticleMeta(
                article_id=r.payload["article_id"],
                title=r.payload["title"],
                category=r.payload["category"],
                subcategory=r.payload["subcategory"],
                published_at=r.payload["published_at"],
            )
            for r in live
        )
        online.put_article_vectors([r.payload["article_id"] for r in live], vectors, model_version)
    context.log.info(f"{len(live)} articles vectorised, {removed} removed")
    return dg.MaterializeResult(metadata={"vectorised": len(live), "removed": removed})


new_article_vectors_job = dg.define_asset_job(
    "new_article_vectors",
    selection=[fresh_article_vectors],
    description="Vectorise new and edited articles for read-time merging.",
)


@dg.sensor(
    name="new_articles_sensor",
    description="New `articles` change records: vectorise new and edited articles for read-time merging.",
    target=new_article_vectors_job,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def new_articles_sensor(context: dg.SensorEvaluationContext, landing: LandingZoneResource):
    files = _files_since_cursor(context, landing.get(), ARTICLES_PREFIX)
    if isinstance(files, dg.SkipReason):
        return files
    newest = files[-1]
    context.update_cursor(newest.cursor)
    return dg.RunRequest(
        run_key=f"articles-{files[0].landed_at_ns}-{newest.landed_at_ns}",
        run_config=dg.RunConfig(
            ops={"fresh_article_vectors": FreshArticlesConfig(landing_files=[f.path for f in files])}
        ),
    )
