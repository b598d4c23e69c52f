"""Recommendations, speed layer: a view event recomputes that user's list within seconds.

`speed_layer_sensor` reads new view change records (the app's `user_article_views` rows and the
views posted to the API, `api_view_events`) straight from the landing zone
(never the warehouse: DuckDB's single writer may be a long batch run), recomputes the lists of the
users in them **inside the sensor tick** and, once a minute, reports the ticks' work as a runless
materialisation of the `speed_recommendations` asset (an asset declared here with its lineage,
whose only writer is the sensor). The tick opens the batch layer's serving snapshot
memory-mapped (numpy only, no torch; cached per snapshot version in the long-lived code server),
adds the clicks that arrived since that batch, re-encodes only those users and writes their lists
with the watermark rule.

Why runless, not a run per tick (measured on this project's 2-core machine, `docs/scaling.md`):
launching a run cost ~2 s of the ~7 s event → served median and ~17,000 runs a day (the instance
grew 3.6 GB a day); the work itself is 0.1-0.4 s. A tick that does the work serves in the daemon's
loop time plus the work (measured: p50 2.7 s, p95 5.0 s over 900 events) and leaves one tick row
behind (and one materialisation event a minute). A long-lived
run consuming ticks would also avoid the launch, but would hold a run open forever, outside the
sensor's cursor and the instance's retry and monitoring rules.

The cursor moves only with the tick's result, i.e. after the lists are written: a tick that fails
(store down, snapshot unreadable) raises, Dagster keeps the old cursor, and the next tick redoes the
same events. Redoing is idempotent: recent clicks are keyed by (user, article, time) and a list
write never replaces one with a newer watermark.

A second sensor gets new articles' vectors into the online store between batches (a run: it needs
torch), so lists computed before an article was published can still surface it at read time.

This module is loaded by the light `newsrec_speed` code location: it must not import dbt, torch
or transformers at module level.
"""

import json
import os
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import dagster as dg

from newsrec_assets.defs.resources import ArtifactStoreResource, LandingZoneResource, OnlineStoreResource
from newsrec_assets.resources.landing import START_OF_TIME_CURSOR, parse_cursor
from newsrec_assets.settings import online_store_kind

GROUP = "recommendations"
SNAPSHOT_KIND = "serving_snapshot"
# The app's behaviour table and the API's view log: both hold clicks the speed layer serves.
VIEWS_PREFIXES = ("user_article_views/", "api_view_events/")
ARTICLES_PREFIX = "articles/"
MAX_FILES_PER_TICK = 500
LIST_LENGTH = 100
SPEED_RECOMMENDATIONS = dg.AssetKey("speed_recommendations")
# How often new and edited articles are vectorised, each time in one run. Every run is a file of
# ~140 KB in a local instance; per article (the demo publishes one every two minutes) that was a
# quarter of its growth. Within 5 minutes a new article is scored into every list that is read,
# against the batch's 12.
FRESH_ARTICLES_INTERVAL_SECONDS = int(os.getenv("NEWSREC_FRESH_ARTICLES_INTERVAL_SECONDS", "300"))

speed_recommendations = dg.AssetSpec(
    SPEED_RECOMMENDATIONS,
    group_name=GROUP,
    deps=[dg.AssetKey("batch_recommendations")],
    kinds={"numpy", online_store_kind()},
    description=(
        "Lists of the users who just viewed something, from their published history plus new "
        "clicks. Written by `speed_layer_sensor` within its tick; reported once a minute as a runless "
        "materialisation (metadata: ticks, events, lists written, lag). Each list's watermark is "
        "the user's newest click, so a later batch publish computed from older events never "
        "replaces it."
    ),
)


@dataclass(frozen=True)
class ViewEvent:
    user_id: str
    article_id: str
    viewed_at_us: int


@dataclass(frozen=True)
class SpeedUpdate:
    """What one speed update did, for the materialisation's metadata."""

    events: int
    users: int
    lists_written: int
    lists_refused_stale: int


# The code server evaluating the sensor lives as long as `dagster dev`: keep the newest snapshot
# open (memory-mapped) and the online store's connections open between ticks instead of reopening
# them every few seconds. A tick that fails drops the connections, so the next one reconnects.
_open_snapshots: dict[str, object] = {}
_open_stores: dict[str, tuple] = {}


def _open_snapshot(folder) -> object:
    from newsrec_assets.domain.recommend import ServingSnapshot

    key = str(folder)
    if key not in _open_snapshots:
        _open_snapshots.clear()
        _open_snapshots[key] = ServingSnapshot.load(folder)
    return _open_snapshots[key]


def update_speed_lists(
    events: list[ViewEvent],
    artifacts: ArtifactStoreResource,
    online_store: OnlineStoreResource,
    list_length: int = LIST_LENGTH,
) -> SpeedUpdate | None:
    """Recompute and write the lists of the users in `events`; None when no batch has published yet.

    Touches only those users: their rows of the memory-mapped snapshot and their keys in the store.
    Raises if anything cannot be read or written, so that the caller does not move past the events.
    """
    store = artifacts.get()
    snapshot_version = store.latest(SNAPSHOT_KIND)
    if snapshot_version is None:
        return None
    snapshot = _open_snapshot(store.fetch(SNAPSHOT_KIND, snapshot_version))

    key = f"{type(online_store).__qualname__}:{online_store.model_dump_json()}"
    if key not in _open_stores:
        _close_stores()
        _open_stores[key] = (online_store.lists(), online_store.articles())
    lists, articles = _open_stores[key]
    try:
        return _write_speed_lists(events, snapshot, lists, articles, list_length)
    except Exception:
        _close_stores()
        raise


def _close_stores() -> None:
    for stores in _open_stores.values():
        for store in stores:
            store.close()
    _open_stores.clear()


def _write_speed_lists(events, snapshot, lists, articles, list_length) -> SpeedUpdate:
    import numpy as np

    from newsrec_assets.domain.recommend import NO_ARTICLE, from_microseconds, speed_lists
    from newsrec_assets.resources.online_store.base import UserRecommendations

    watermark_us = int(snapshot.watermark.timestamp() * 1_000_000)
    lists.add_recent_clicks(
        (e.user_id, e.article_id, e.viewed_at_us) for e in events if e.viewed_at_us > watermark_us
    )
    user_ids = sorted({e.user_id for e in events})
    clicks = lists.recent_clicks(user_ids, watermark_us)

    # Articles published after the batch have vectors in the online store (see fresh_article_vectors),
    # already in ranking form [news vector, prior]; their plain news vectors serve in histories.
    fresh = articles.get_fresh_articles(snapshot.watermark, snapshot.model_version)
    is_new = snapshot.article_rows(fresh.article_ids.tolist()) == NO_ARTICLE
    computed = speed_lists(
        snapshot, clicks, fresh.article_ids[is_new].astype(object), fresh.vectors[is_new], list_length
    )

    computed_at = datetime.now(UTC)
    written = refused = 0
    for i, user_id in enumerate(computed.user_ids):
        result = lists.put_recommendations(
            UserRecommendations(
                user_id=user_id,
                article_ids=computed.article_ids[i],
                scores=np.asarray(computed.scores[i]),
                model_version=snapshot.model_version,
                layer="speed",
                computed_at=computed_at,
                watermark=from_microseconds(computed.watermarks_us[i]),
                user_vector=computed.user_vectors[i],
            )
        )
        written += result.accepted
        refused += not result.accepted
    return SpeedUpdate(
        events=len(events),
        users=len(user_ids),
        lists_written=written,
        lists_refused_stale=refused,
    )


def _landed_after(landed: str | None, zone, *prefixes: str) -> list:
    """The files under `prefixes` that landed after the position `landed`, in the order positions
    compare ((landed_at, path) across every prefix), so one position covers them all."""
    after = parse_cursor(landed)
    return sorted(file for prefix in prefixes for file in zone.new_files(after=after, prefix=prefix))


def _files_since(landed: str, zone, *prefixes: str) -> list:
    """Up to MAX_FILES_PER_TICK files under `prefixes` that landed after the position `landed`."""
    return _landed_after(landed, zone, *prefixes)[:MAX_FILES_PER_TICK]


def _first_position(zone, *prefixes: str) -> str:
    """Where a sensor's first tick starts: the newest landed file (history is the batch's job)."""
    files = _landed_after(None, zone, *prefixes)
    return files[-1].cursor if files else START_OF_TIME_CURSOR


FIRST_TICK = "First tick: starting from the newest landed file; history is the batch's job."


def _view_events(zone, files) -> list[ViewEvent]:
    from newsrec_assets.domain.landing_format import parse_landing_file

    events = []
    for file in files:
        # Malformed lines are skipped here; ingestion quarantines them with the reason.
        for _, record, _ in parse_landing_file(zone.read_bytes(file.path), file.path).records:
            if record.table == "user_article_views" and record.change_type in ("INSERT", "UPDATE-INSERT"):
                viewed_at: datetime = record.payload["last_viewed_at"]
            elif record.table == "api_view_events" and record.change_type == "INSERT":
                viewed_at = record.payload["viewed_at"]
            else:
                continue
            events.append(
                ViewEvent(
                    user_id=record.payload["user_id"],
                    article_id=record.payload["article_id"],
                    viewed_at_us=int(viewed_at.timestamp() * 1_000_000),
                )
            )
    return events


# The lists are written every tick; their materialisation is reported at most once a minute, adding
# up the ticks since the last one. Each report is stored twice in a local instance (the event and
# its index row), and one per 5 s tick was ~17,000 a day.
REPORT_INTERVAL_SECONDS = 60
_NOTHING_UNREPORTED = {
    "ticks": 0,
    "events": 0,
    "lists_written": 0,
    "lists_refused_stale": 0,
    "max_seconds_since_first_file_landed": 0.0,
}


@dataclass(frozen=True)
class SpeedCursor:
    """The newest landing file whose events are written, and the ticks not reported yet."""

    landed: str | None = None  # a LandingFile.cursor
    reported_at: float | None = None  # when the last materialisation was reported (epoch seconds)
    unreported: dict = field(default_factory=lambda: dict(_NOTHING_UNREPORTED))

    @classmethod
    def parse(cls, text: str | None) -> "SpeedCursor":
        if not text:
            return cls()
        if not text.startswith("{"):  # a cursor from before reports were batched: the position
            return cls(landed=text)
        state = json.loads(text)
        return cls(state["landed"], state["reported_at"], state["unreported"])

    def serialize(self) -> str:
        return json.dumps(
            {"landed": self.landed, "reported_at": self.reported_at, "unreported": self.unreported}
        )

    def with_update(self, update: SpeedUpdate, lag_s: float) -> "SpeedCursor":
        old = self.unreported
        unreported = {
            "ticks": old["ticks"] + 1,
            "events": old["events"] + update.events,
            "lists_written": old["lists_written"] + update.lists_written,
            "lists_refused_stale": old["lists_refused_stale"] + update.lists_refused_stale,
            "max_seconds_since_first_file_landed": max(
                old["max_seconds_since_first_file_landed"], round(lag_s, 3)
            ),
        }
        return replace(self, unreported=unreported)


def _speed_result(cursor: SpeedCursor, why: str, now: float) -> dg.SensorResult:
    """The tick's result: the materialisation of the unreported ticks once one is due."""
    pending = cursor.unreported["ticks"] > 0
    due = pending and (cursor.reported_at is None or now - cursor.reported_at >= REPORT_INTERVAL_SECONDS)
    if not due:
        later = " (reported with the next materialisation)" if pending else ""
        return dg.SensorResult(skip_reason=why + later, cursor=cursor.serialize())
    reported = replace(cursor, reported_at=now, unreported=dict(_NOTHING_UNREPORTED))
    return dg.SensorResult(
        asset_events=[dg.AssetMaterialization(SPEED_RECOMMENDATIONS, metadata=cursor.unreported)],
        # No run is requested, so Dagster lists the tick as skipped: say what it did instead.
        skip_reason=f"{why}; see speed_recommendations.",
        cursor=reported.serialize(),
    )


@dg.sensor(
    name="speed_layer_sensor",
    description=(
        "Turns new behaviour change records in the landing zone into speed-layer lists within the "
        "tick; what the ticks of the last minute did is reported as one runless materialisation "
        "of `speed_recommendations`. The cursor holds the newest landing file whose events are "
        "written (on its first tick, the present) and the counts not reported yet."
    ),
    # The sensor daemon evaluates sensors every 5 s at most (its loop): 1 s here means every loop.
    minimum_interval_seconds=1,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def speed_layer_sensor(
    context: dg.SensorEvaluationContext,
    landing: LandingZoneResource,
    artifacts: ArtifactStoreResource,
    online_store: OnlineStoreResource,
):
    # No context.log here: a tick that logs leaves a captured-log file in the instance's storage,
    # ~17,000 a day; the materialisation's metadata and the skip reason carry the facts.
    cursor = SpeedCursor.parse(context.cursor)
    zone = landing.get()
    if cursor.landed is None:
        started = replace(cursor, landed=_first_position(zone, *VIEWS_PREFIXES))
        return dg.SensorResult(skip_reason=FIRST_TICK, cursor=started.serialize())
    files = _files_since(cursor.landed, zone, *VIEWS_PREFIXES)
    now = time.time()
    if not files:
        return _speed_result(cursor, f"No new change records under {', '.join(VIEWS_PREFIXES)}.", now)
    events = _view_events(zone, files)
    cursor = replace(cursor, landed=files[-1].cursor)
    if not events:
        return _speed_result(cursor, f"{len(files)} new files, no view events in them.", now)
    update = update_speed_lists(events, artifacts, online_store)
    if update is None:  # the first batch's watermark will cover these events
        why = "No serving snapshot yet: the first batch publish will cover these events."
        return _speed_result(cursor, why, now)
    cursor = cursor.with_update(update, now - files[0].landed_at_ns / 1e9)
    why = (
        f"No run needed: {update.lists_written} lists written within the tick for {update.events} "
        f"events ({update.lists_refused_stale} refused as stale)"
    )
    return _speed_result(cursor, why, now)


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
    minimum_interval_seconds=FRESH_ARTICLES_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def new_articles_sensor(context: dg.SensorEvaluationContext, landing: LandingZoneResource):
    zone = landing.get()
    if context.cursor is None:
        context.update_cursor(_first_position(zone, ARTICLES_PREFIX))
        return dg.SkipReason(FIRST_TICK)
    files = _files_since(context.cursor, zone, ARTICLES_PREFIX)
    if not files:
        return dg.SkipReason(f"No new change records under {ARTICLES_PREFIX}.")
    newest = files[-1]
    context.update_cursor(newest.cursor)
    return dg.RunRequest(
        run_key=f"articles-{files[0].landed_at_ns}-{newest.landed_at_ns}",
        run_config=dg.RunConfig(
            ops={"fresh_article_vectors": FreshArticlesConfig(landing_files=[f.path for f in files])}
        ),
    )
