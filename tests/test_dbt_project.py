"""The dbt project: parses offline for BigQuery, and builds on DuckDB from a small simulated CDC log.

The session fixture simulates a news app (articles edited, unpublished and deleted; users shown
lists and viewing articles, sometimes several views coalesced into one write), delivers its change
records at least once and out of order into a landing zone, ingests them with the warehouse
adapter and runs `dbt build`. The marts are then held against the Python reference
(`reconstruct_view_events`) and against what the simulation knows happened.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import textwrap
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from newsrec_assets.defs.evaluation.assets import ab_variant_ctr
from newsrec_assets.defs.resources import WarehouseResource
from newsrec_assets.domain.cdc import SOURCE_TABLES, ChangeRecord
from newsrec_assets.domain.events import ViewEvent, reconstruct_view_events
from newsrec_assets.resources.landing import LocalLandingZone
from newsrec_assets.resources.warehouse import DuckDBWarehouse

DBT_PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"
START = datetime(2026, 11, 17, 6, 0, tzinfo=UTC)
HISTORY_SIZE = 50
VALIDATION_HOURS = 24
TEST_HOURS = 24
CATEGORIES = {"news": ["politics", "world"], "sport": ["football", "tennis"], "culture": ["film", "music"]}


def dbt_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for an in-process dbt run that phones nobody and writes nothing in the repo."""
    return {
        "DO_NOT_TRACK": "1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_TARGET_PATH": str(tmp / "target"),
        "DBT_LOG_PATH": str(tmp / "logs"),
        "DBT_PROFILES_DIR": str(DBT_PROJECT_DIR),
        **extra,
    }


def dbt_args(command: str, tmp: Path, target: str, *extra: str) -> list[str]:
    return [
        command,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target",
        target,
        "--target-path",
        str(tmp / "target"),
        "--log-path",
        str(tmp / "logs"),
        *extra,
    ]


def utc(moment: datetime | None) -> datetime | None:
    """DuckDB returns the marts' naive UTC timestamps; compare them as aware UTC datetimes."""
    return None if moment is None else moment.replace(tzinfo=UTC)


# --------------------------------------------------------------------------------------------------
# A tiny news app: its database, its binlog and the ground truth of what users did.


@dataclass
class SimulatedApp:
    rng: random.Random
    records: list[ChangeRecord] = field(default_factory=list)
    articles: dict[str, dict[str, Any]] = field(default_factory=dict)  # current CMS rows
    deleted_articles: set[str] = field(default_factory=set)
    view_rows: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    views: list[ViewEvent] = field(default_factory=list)  # every view, as the users made them
    shown: list[dict[str, Any]] = field(default_factory=list)  # every article shown in a list
    clicked: set[tuple[str, str]] = field(default_factory=set)  # (impression_id, article_id)
    log_file_number: int = 1
    log_position: int = 4
    impressions_served: int = 0

    def emit(self, table: str, change_type: str, payload: dict[str, Any], at: datetime) -> None:
        # An update's row-after (UPDATE-INSERT) shares the log position of its row-before.
        if change_type != "UPDATE-INSERT" or self.records[-1].change_type != "UPDATE-DELETE":
            self.log_position += 1
        if self.log_position > 4000:  # binlog rotation: a new file, positions start again
            self.log_file_number += 1
            self.log_position = 4
        self.records.append(
            ChangeRecord(
                table=table,
                change_type=change_type,
                payload=dict(payload),
                source_timestamp=at,
                read_timestamp=at + timedelta(seconds=self.rng.uniform(0.5, 30)),
                log_file=f"mysql-bin.{self.log_file_number:06d}",
                log_position=self.log_position,
            )
        )

    # ---- CMS
    def publish(self, article_id: str, at: datetime) -> None:
        category = self.rng.choice(sorted(CATEGORIES))
        row = {
            "article_id": article_id,
            "title": f"Headline {article_id}",
            "body": f"Body of {article_id}: "
            + " ".join(self.rng.choice(["storm", "vote", "goal"]) for _ in range(8)),
            "category": category,
            "subcategory": self.rng.choice(CATEGORIES[category]),
            "status": "published",
            "published_at": at,
            "updated_at": at,
        }
        self.articles[article_id] = row
        self.emit("articles", "INSERT", row, at)

    def update_article(self, article_id: str, at: datetime, **changes: Any) -> None:
        before = self.articles[article_id]
        after = before | changes | {"updated_at": at}
        self.emit("articles", "UPDATE-DELETE", before, at)
        self.emit("articles", "UPDATE-INSERT", after, at)
        self.articles[article_id] = after

    def delete_article(self, article_id: str, at: datetime) -> None:
        self.emit("articles", "DELETE", self.articles.pop(article_id), at)
        self.deleted_articles.add(article_id)

    def live_articles(self, at: datetime) -> list[str]:
        """Articles readers can see at `at` (all of them are inserted up front, some for later)."""
        return sorted(
            a
            for a, row in self.articles.items()
            if row["status"] == "published" and row["published_at"] <= at
        )

    # ---- exposure log
    def serve(self, user_id: str, at: datetime, size: int = 5) -> tuple[str, list[str]]:
        self.impressions_served += 1
        impression_id = f"imp{self.impressions_served:05d}"
        live = self.live_articles(at)
        shown = self.rng.sample(live, min(size, len(live)))
        variant = ("a", "b", None)[self.impressions_served % 3]
        # The API logs a list as one `served_lists` row, sometimes a page further down the list.
        first_position = self.rng.choice((0, 0, 10)) if variant is not None else 0
        for position, article_id in enumerate(shown, first_position):
            row = {
                "impression_id": impression_id,
                "user_id": user_id,
                "article_id": article_id,
                "position": position,
                "shown_at": at,
                "variant": variant,  # None: not from the API
            }
            self.shown.append(row)
            if variant is None:
                self.emit("impressions", "INSERT", row, at)
        if variant is not None and shown:
            served = {"impression_id": impression_id, "user_id": user_id, "article_ids": " ".join(shown),
                      "first_position": first_position, "shown_at": at, "variant": variant}  # fmt: skip
            self.emit("served_lists", "INSERT", served, at)
        return impression_id, shown

    # ---- behaviour table, updated in place
    def view(
        self, user_id: str, article_id: str, at: datetime, impression_id: str | None, times: int = 1
    ) -> None:
        """`times` > 1: the app coalesced several views into one write (a jump in view_count)."""
        key = (user_id, article_id)
        before = self.view_rows.get(key)
        count = (before["view_count"] if before else 0) + times
        after = {
            "user_id": user_id,
            "article_id": article_id,
            "view_count": count,
            "first_viewed_at": before["first_viewed_at"] if before else at,
            "last_viewed_at": at,
            "last_impression_id": impression_id,
        }
        if before is None:
            self.emit("user_article_views", "INSERT", after, at)
        else:
            if self.rng.random() < 0.3:
                self.emit("user_article_views", "UPDATE-DELETE", before, at)
            self.emit("user_article_views", "UPDATE-INSERT", after, at)
        self.view_rows[key] = after
        for number in range(count - times + 1, count + 1):
            self.views.append(ViewEvent(user_id, article_id, number, at, impression_id))
        if impression_id is not None:
            self.clicked.add((impression_id, article_id))

    def forget_views(self, user_id: str, article_id: str, at: datetime) -> None:
        self.emit("user_article_views", "DELETE", self.view_rows.pop((user_id, article_id)), at)


def simulate(seed: int = 7) -> SimulatedApp:
    rng = random.Random(seed)
    app = SimulatedApp(rng=rng)
    articles = [f"a{n:06d}" for n in range(1, 71)]
    users = [f"u{n:06d}" for n in range(1, 8)]

    # 60 articles published over the first two days, 10 more on the last day.
    for index, article_id in enumerate(articles):
        hours = index * 0.75 if index < 60 else 48 + (index - 60) * 2
        app.publish(article_id, START + timedelta(hours=hours))

    # Several changes within one millisecond, across binlog positions 999 -> 1000: the row's
    # versions must be ordered by position (numerically) to get view numbers and lists right.
    app.log_position = 995
    burst_at = START + timedelta(hours=1, milliseconds=1)
    for step in range(6):
        app.view("u000007", "a000001", burst_at, impression_id=f"burst{step}")
    assert app.log_position >= 1000

    moment = START + timedelta(hours=2)
    end = START + timedelta(hours=70)
    while moment < end:
        user_id = rng.choice(users)
        impression_id, shown = app.serve(user_id, moment)
        at = moment
        for article_id in shown:
            if rng.random() < 0.35:
                at += timedelta(seconds=rng.randint(5, 90))
                app.view(user_id, article_id, at, impression_id, times=3 if rng.random() < 0.1 else 1)
        if rng.random() < 0.3:  # a view that did not come from a list (search, share link)
            at += timedelta(seconds=rng.randint(5, 90))
            app.view(user_id, rng.choice(app.live_articles(at)), at, None)
        moment += timedelta(minutes=rng.randint(3, 25))

        # CMS activity along the way
        if rng.random() < 0.08 and app.live_articles(moment):
            app.update_article(rng.choice(app.live_articles(moment)), moment, title=f"Updated {moment:%H%M}")
        if rng.random() < 0.01 and app.live_articles(moment):
            app.update_article(rng.choice(app.live_articles(moment)), moment, status="unpublished")

    # A heavy reader: more than HISTORY_SIZE distinct articles.
    at = end
    for article_id in app.live_articles(at)[:58]:
        at += timedelta(seconds=40)
        app.view("u000001", article_id, at, None)
    # One row with many updates, including coalesced writes.
    for step in range(40):
        at += timedelta(seconds=30)
        app.view("u000002", "a000065", at, f"manual{step % 3}", times=2 if step % 7 == 3 else 1)
    # Removals: an article (and the views of it stay events), a behaviour row.
    for article_id in ("a000003", "a000010"):
        at += timedelta(minutes=1)
        app.delete_article(article_id, at)
    at += timedelta(minutes=1)
    app.update_article("a000020", at, status="unpublished")
    at += timedelta(minutes=1)
    app.update_article("a000021", at, title="A corrected headline", body="A corrected body.")
    at += timedelta(minutes=1)
    app.forget_views("u000002", "a000065", at)
    return app


def deliver(app: SimulatedApp, landing: LocalLandingZone, rng: random.Random) -> list[ChangeRecord]:
    """At-least-once, unordered delivery: re-sent records, re-reads under new uuids, shuffled files."""
    delivered: list[ChangeRecord] = []
    for record in app.records:
        delivered.append(record)
        if rng.random() < 0.15:  # the same file content sent again
            delivered.append(record)
        if rng.random() < 0.10:  # re-read: new uuid and read time, same sort keys
            delivered.append(
                replace(
                    record,
                    uuid=f"reread-{rng.getrandbits(64):016x}",
                    read_timestamp=record.read_timestamp + timedelta(minutes=5),
                )
            )
    rng.shuffle(delivered)
    files: dict[str, list[str]] = defaultdict(list)
    for index, record in enumerate(delivered):
        day = record.source_timestamp.strftime("%Y-%m-%d")
        files[f"{record.table}/{day}/{index % 9:04d}-{index % 4}.jsonl"].append(record.to_json_line())
    for path, lines in files.items():
        landing.write_file(path, ("\n".join(lines) + "\n").encode())
    return delivered


# --------------------------------------------------------------------------------------------------


def release_duckdb() -> None:
    """dbt-duckdb keeps its database open in-process after a run; close it so tests can read the file."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    environment = DuckDBConnectionManager._ENV
    if environment is not None:
        environment.close()
    DuckDBConnectionManager.close_all_connections()


@dataclass
class BuiltWarehouse:
    app: SimulatedApp
    delivered: list[ChangeRecord]
    database: Path
    seconds: float
    statuses: dict[str, str]

    def query(self, sql: str) -> list[tuple]:
        import duckdb

        with duckdb.connect(str(self.database), read_only=True) as connection:
            return connection.execute(sql).fetchall()

    def records(self, sql: str) -> list[dict[str, Any]]:
        import duckdb

        with duckdb.connect(str(self.database), read_only=True) as connection:
            cursor = connection.execute(sql)
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltWarehouse:
    from dbt.cli.main import dbtRunner

    tmp = tmp_path_factory.mktemp("dbt_build")
    app = simulate()
    landing = LocalLandingZone(tmp / "landing")
    delivered = deliver(app, landing, random.Random(11))
    database = tmp / "warehouse.duckdb"
    report = DuckDBWarehouse(database).ingest(landing)
    assert report.stored == len(app.records), "ingestion stores every distinct change once"

    with pytest.MonkeyPatch.context() as patch:
        for name, value in dbt_env(tmp, NEWSREC_DUCKDB_PATH=str(database)).items():
            patch.setenv(name, value)
        started = time.perf_counter()
        result = dbtRunner().invoke(dbt_args("build", tmp, "local"))
        seconds = time.perf_counter() - started
    release_duckdb()
    statuses = {
        node.node.unique_id: str(node.status) for node in (result.result.results if result.result else [])
    }
    failures = {key: status for key, status in statuses.items() if status not in ("success", "pass")}
    assert result.success, f"dbt build failed: {result.exception or failures}"
    return BuiltWarehouse(app, delivered, database, seconds, statuses)


@pytest.mark.slow
def test_build_runs_every_model_unit_test_and_data_test(built: BuiltWarehouse) -> None:
    kinds = Counter(key.split(".")[0] for key in built.statuses)
    models = len(list((DBT_PROJECT_DIR / "models").rglob("*.sql")))
    assert kinds["model"] == models and kinds["unit_test"] >= 8 and kinds["test"] >= 50, kinds
    assert all(status in ("success", "pass") for status in built.statuses.values()), built.statuses
    print(f"dbt build on the fixture: {built.seconds:.1f} s, {dict(kinds)}")


@pytest.mark.slow
def test_view_events_equal_the_python_reference(built: BuiltWarehouse) -> None:
    rows = built.query(
        "select event_id, user_id, article_id, view_number, viewed_at, impression_id from view_events"
    )
    actual = Counter(
        ViewEvent(user, article, number, utc(at), impression)
        for _, user, article, number, at, impression in rows
    )
    expected = Counter(reconstruct_view_events(built.delivered))
    assert actual == expected
    # ... which is what the users did: no UPDATE lost, jumps expanded, duplicates and disorder undone.
    assert actual == Counter(built.app.views)
    assert any(number > 1 for _, _, _, number, _, _ in rows)
    assert all(event_id == f"{user}|{article}|{number}" for event_id, user, article, number, _, _ in rows)
    burst = sorted(
        (number, impression)
        for _, user, article, number, _, impression in rows
        if (user, article) == ("u000007", "a000001") and number <= 6
    )
    assert burst == [(step + 1, f"burst{step}") for step in range(6)]


@pytest.mark.slow
def test_current_articles_apply_edits_unpublishes_and_deletes(built: BuiltWarehouse) -> None:
    rows = built.query(
        "select article_id, title, body, category, subcategory, status, is_live, content_hash "
        "from current_articles"
    )
    actual = {row[0]: row[1:] for row in rows}
    expected = {}
    for article_id, article in built.app.articles.items():
        text = "|".join(article[name] for name in ("title", "body", "category", "subcategory"))
        expected[article_id] = (
            article["title"],
            article["body"],
            article["category"],
            article["subcategory"],
            article["status"],
            article["status"] == "published",
            hashlib.md5(text.encode()).hexdigest(),
        )
    assert actual == expected
    assert not built.app.deleted_articles & set(actual)
    assert actual["a000021"][0] == "A corrected headline"
    assert actual["a000020"][4:6] == ("unpublished", False)


def expected_as_of(app: SimulatedApp) -> datetime:
    times = [view.viewed_at for view in app.views] + [row["shown_at"] for row in app.shown]
    times += [record.source_timestamp for record in app.records if record.table == "articles"]
    return max(times)


@pytest.mark.slow
def test_training_impressions_label_clicks_and_split_into_three_windows(built: BuiltWarehouse) -> None:
    rows = built.query(
        "select impression_id, position, user_id, article_id, shown_at, clicked, split, as_of "
        "from training_impressions"
    )
    as_of = expected_as_of(built.app)
    test_start = as_of - timedelta(hours=TEST_HOURS)
    validation_start = test_start - timedelta(hours=VALIDATION_HOURS)
    assert {utc(row[7]) for row in rows} == {as_of}

    def window(shown_at: datetime) -> str:
        if shown_at >= test_start:
            return "test"
        return "validation" if shown_at >= validation_start else "train"

    actual = {(row[0], row[1]): (row[2], row[3], utc(row[4]), row[5], row[6]) for row in rows}
    expected = {
        (shown["impression_id"], shown["position"]): (
            shown["user_id"],
            shown["article_id"],
            shown["shown_at"],
            (shown["impression_id"], shown["article_id"]) in built.app.clicked,
            window(shown["shown_at"]),
        )
        for shown in built.app.shown
    }
    assert actual == expected
    labels = Counter((clicked, split) for *_, clicked, split in actual.values())
    assert all(
        labels[(clicked, split)] > 0 for clicked in (True, False) for split in ("train", "validation", "test")
    ), labels


@pytest.mark.slow
def test_variant_ctr_counts_lists_impressions_and_clicks_per_variant(built: BuiltWarehouse) -> None:
    expected: dict[str, list] = {}
    for shown in built.app.shown:
        if shown["variant"] is not None:
            counts = expected.setdefault(shown["variant"], [set(), 0, 0])
            counts[0].add(shown["impression_id"])
            counts[1] += 1
            counts[2] += (shown["impression_id"], shown["article_id"]) in built.app.clicked
    table = DuckDBWarehouse(built.database, read_only=True).variant_ctr().to_pylist()
    assert {row["variant"]: [row["lists"], row["impressions"], row["clicks"]] for row in table} == {
        variant: [len(lists), shown, clicks] for variant, (lists, shown, clicks) in expected.items()
    }
    assert set(expected) == {"a", "b"} and all(clicks > 0 for *_, clicks in expected.values())

    result = dg.materialize(
        [ab_variant_ctr], resources={"warehouse": WarehouseResource(duckdb_path=str(built.database))}
    )
    metadata = result.asset_materializations_for_node("ab_variant_ctr")[0].metadata
    assert metadata["variants"].value == 2 and "image/png" in metadata["plot"].value
    reported = metadata["by_variant"].value["a"]
    assert reported["ctr"] == pytest.approx(expected["a"][2] / expected["a"][1])
    assert reported["ctr_95_low"] < reported["ctr"] < reported["ctr_95_high"]


@pytest.mark.slow
def test_user_click_histories_hold_the_latest_distinct_articles(built: BuiltWarehouse) -> None:
    rows = built.query(
        "select user_id, click_rank, article_id, last_viewed_at, views from user_click_histories"
    )
    by_user: dict[str, list[tuple]] = defaultdict(list)
    for user_id, rank, article_id, last_viewed_at, views in rows:
        by_user[user_id].append((rank, article_id, utc(last_viewed_at), views))

    latest: dict[str, dict[str, datetime]] = defaultdict(dict)
    counts: Counter[tuple[str, str]] = Counter()
    for view in built.app.views:
        if view.article_id in built.app.articles:  # deleted articles cannot be encoded
            seen = latest[view.user_id].get(view.article_id)
            latest[view.user_id][view.article_id] = max(seen or view.viewed_at, view.viewed_at)
            counts[(view.user_id, view.article_id)] += 1
    assert set(by_user) == set(latest)
    for user_id, history in by_user.items():
        history.sort()
        assert len(history) <= HISTORY_SIZE
        assert [rank for rank, *_ in history] == list(range(1, len(history) + 1))
        newest_first = sorted(latest[user_id].items(), key=lambda item: (-item[1].timestamp(), item[0]))
        expected = [
            (rank, article, at, counts[(user_id, article)])
            for rank, (article, at) in enumerate(newest_first[:HISTORY_SIZE], start=1)
        ]
        assert history == expected
    assert len(by_user["u000001"]) == HISTORY_SIZE


@pytest.mark.slow
def test_article_features_count_windows_back_from_as_of(built: BuiltWarehouse) -> None:
    features = {row["article_id"]: row for row in built.records("select * from article_features")}
    as_of = expected_as_of(built.app)
    assert set(features) == set(built.app.articles)
    for article_id, row in features.items():
        article = built.app.articles[article_id]
        views = [view.viewed_at for view in built.app.views if view.article_id == article_id]
        day_start = as_of - timedelta(hours=24)
        shown = [s for s in built.app.shown if s["article_id"] == article_id and s["shown_at"] >= day_start]
        clicks = sum((s["impression_id"], article_id) in built.app.clicked for s in shown)
        assert utc(row["as_of"]) == as_of
        assert row["views_1h"] == sum(at >= as_of - timedelta(hours=1) for at in views)
        assert row["views_24h"] == sum(at >= day_start for at in views)
        assert row["views_total"] == len(views)
        assert (row["impressions_24h"], row["clicks_24h"]) == (len(shown), clicks)
        assert row["ctr_24h"] == pytest.approx((clicks + 0.05 * 20) / (len(shown) + 20))
        age = max((as_of - article["published_at"]).total_seconds() / 3600, 0)
        assert row["age_hours"] == pytest.approx(age, abs=1 / 3600)
        assert row["popularity"] >= 0
        assert (row["popularity"] > 0) == (article["status"] == "published")
    assert any(row["views_1h"] > 0 for row in features.values())
    assert any(row["impressions_24h"] > 0 for row in features.values())


def test_dbt_parse_for_bigquery_works_offline_without_credentials(tmp_path: Path) -> None:
    from dbt.cli.main import dbtRunner

    with pytest.MonkeyPatch.context() as patch:
        for name, value in dbt_env(tmp_path).items():
            patch.setenv(name, value)
        for name in ("GOOGLE_APPLICATION_CREDENTIALS", "NEWSREC_GCP_PROJECT", "NEWSREC_BQ_DATASET"):
            patch.delenv(name, raising=False)
        result = dbtRunner().invoke(dbt_args("parse", tmp_path, "prod"))
    assert result.success, result.exception
    manifest = result.result
    models = {node.name: node for node in manifest.nodes.values() if node.resource_type == "model"}
    assert {
        "current_articles",
        "view_events",
        "article_features",
        "user_click_histories",
        "training_impressions",
        "int_view_events",
        "int_article_versions",
    } <= set(models)
    assert models["current_articles"].config.materialized == "table"
    assert models["view_events"].config.materialized == "incremental"
    assert models["stg_newsapp__articles"].config.materialized == "view"
    sources = {source.name: source for source in manifest.sources.values()}
    assert set(sources) == {f"cdc_{table}" for table in SOURCE_TABLES}
    assert {(source.database, source.schema) for source in sources.values()} == {("newsrec-dev", "raw")}


_COMPILE_FOR_BIGQUERY = textwrap.dedent(
    """
    import sys
    import google.auth
    from google.auth.credentials import AnonymousCredentials

    # No account: anonymous credentials; nothing below may reach BigQuery.
    google.auth.default = lambda *args, **kwargs: (AnonymousCredentials(), "newsrec-dev")
    from dbt.adapters.bigquery import BigQueryAdapter, BigQueryRelation
    from dbt.cli.main import dbtRunner

    # is_incremental() asks BigQuery whether the model's table exists: say it does, so the
    # incremental models render their incremental SQL (the full build's is the rest of it).
    BigQueryAdapter.get_relation = lambda self, database, schema, identifier: BigQueryRelation.create(
        database=database, schema=schema, identifier=identifier, type="table"
    )

    result = dbtRunner().invoke(sys.argv[1:])
    sys.exit(0 if result.success else 1)
    """
)


@pytest.mark.slow
def test_models_compile_to_bigquery_sql(tmp_path: Path) -> None:
    """Every model renders for BigQuery and parses as BigQuery SQL (no DuckDB-only syntax slipped in)."""
    sqlglot = pytest.importorskip("sqlglot")
    args = dbt_args(
        "compile",
        tmp_path,
        "prod",
        "--no-introspect",
        "--no-populate-cache",
        "--select",
        "resource_type:model",
    )
    env = os.environ | dbt_env(tmp_path)
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    completed = subprocess.run(
        [sys.executable, "-c", _COMPILE_FOR_BIGQUERY, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    compiled = sorted((tmp_path / "target" / "compiled" / "newsrec" / "models").glob("*/*.sql"))
    assert len(compiled) == len(list((DBT_PROJECT_DIR / "models").rglob("*.sql")))
    for path in compiled:
        sql = path.read_text()
        assert "::" not in sql, f"{path.name} uses a DuckDB/PostgreSQL cast"
        sqlglot.parse_one(sql, read="bigquery")


@pytest.mark.slow
def test_a_build_without_the_dbt_checks_runs_every_model_and_no_test(
    built: BuiltWarehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's builds between the hourly tests: dagster-dbt runs the models alone."""
    import shutil

    from newsrec_assets.defs.features.dbt import dbt_resource, newsrec_dbt_models

    database = tmp_path / "warehouse.duckdb"
    shutil.copy(built.database, database)
    monkeypatch.setenv("NEWSREC_DUCKDB_PATH", str(database))
    result = dg.materialize(
        [newsrec_dbt_models],
        selection=dg.AssetSelection.assets(newsrec_dbt_models).without_checks(),
        resources={"dbt": dbt_resource()},
    )
    assert result.success
    built_models = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
    assert built_models == {key.to_user_string() for key in newsrec_dbt_models.keys}
    assert result.get_asset_check_evaluations() == []
    assert not [event for event in result.all_events if event.event_type_value.startswith("ASSET_CHECK")]
