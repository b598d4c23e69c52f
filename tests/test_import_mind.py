"""`newsrec import-mind`: MIND tsv files become landing records; bad rows are counted, not fatal.

The first test reads a hand-written handful of rows; the last one writes a MIND-format file set of
a few hundred rows (unknown news ids included) and follows it through ingestion and `dbt build`
into the marts the model and the batch layer read.
"""

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsrec_assets.cli import main
from newsrec_assets.domain.cdc import parse_change_line
from newsrec_assets.domain.events import reconstruct_view_events
from newsrec_assets.domain.mind import MIND_TIME_FORMAT
from newsrec_assets.resources.landing import LocalLandingZone
from newsrec_assets.resources.warehouse import DuckDBWarehouse

NEWS = "\n".join(
    [
        "N1\tsports\tsoccer\tCup final goes to extra time\tA tense evening.\thttp://x/n1\t[]\t[]",
        "N2\tnews\tpolitics\tVote delayed again\tLawmakers argue.\thttp://x/n2\t[]\t[]",
        "N3\tfinance\tmarkets\tStocks rally\t\t\t[]\t[]",
        "broken line without tabs",
    ]
)
BEHAVIORS = "\n".join(
    [
        "1\tU1\t11/11/2019 9:05:58 AM\tN3 N2\tN1-1 N3-0",
        "2\tU1\t11/11/2019 10:15:00 AM\tN3 N2\tN1-1 N9-0 N3-1",  # N9 is unknown: dropped, counted
        "3\tU2\t11/11/2019 11:00:00 AM\t\tN2-0 N3-1",
        "4\tU3\tnot a time\t\tN1-1",  # malformed time
        "5\tU4\t11/11/2019 11:30:00 AM\t\tN1-2",  # malformed label
        "6\tU5\t11/11/2019 11:40:00 AM",  # too few columns
        "7\tU6\t11/11/2019 11:45:00 AM\tN1\tN8-1 N9-0",  # only unknown news shown: skipped, counted
    ]
)


def import_mind(tmp_path: Path, news: str, behaviors: str) -> tuple[dict, Path]:
    (tmp_path / "news.tsv").write_text(news)
    (tmp_path / "behaviors.tsv").write_text(behaviors)
    landing = tmp_path / "landing"
    result = CliRunner().invoke(
        main,
        [
            "import-mind",
            "--news",
            str(tmp_path / "news.tsv"),
            "--behaviors",
            str(tmp_path / "behaviors.tsv"),
            "--landing",
            str(landing),
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output), landing


def test_import_mind_writes_landing_records_and_reports_bad_rows(tmp_path):
    report, landing = import_mind(tmp_path, NEWS, BEHAVIORS)
    assert report["news_malformed"] == 1
    assert report["behavior_rows"] == 7 and report["behavior_malformed"] == 3
    assert report["impressions_with_unknown_news"] == 2 and report["unknown_news_references"] == 3
    assert report["unknown_news_ids"] == 2 and report["impressions_skipped_no_known_news"] == 1
    assert report["articles_written"] == 3
    assert report["impressions_written"] == 3  # rows 1, 2 and 3: served lists, not articles shown
    assert report["impression_rows_written"] == 2 + 2 + 2  # N9 left out of impression 2
    assert report["views_written"] == 4 and report["history_views_written"] == 2

    records = [
        parse_change_line(line)
        for file in LocalLandingZone(landing).list_files()
        for line in (landing / file.path).read_text().splitlines()
    ]
    by_table = Counter(record.table for record in records)
    assert by_table == {"articles": 3, "impressions": 6, "user_article_views": 6}
    urls = {r.payload["article_id"]: r.payload["url"] for r in records if r.table == "articles"}
    assert urls == {"N1": "http://x/n1", "N2": "http://x/n2", "N3": None}
    events = reconstruct_view_events(records)
    # U1's history (N3 then N2) comes first, in MIND's order at increasing times before the first
    # impression; then N1 clicked twice (impressions 1 and 2): one in-place row, two view events
    u1 = sorted((e for e in events if e.user_id == "U1"), key=lambda e: (e.viewed_at, e.article_id))
    assert [(e.article_id, e.view_number, e.impression_id) for e in u1] == [
        ("N3", 1, None),
        ("N2", 1, None),
        ("N1", 1, "1"),
        ("N1", 2, "2"),
        ("N3", 2, "2"),
    ]
    first_impression = datetime(2019, 11, 11, 9, 5, 58, tzinfo=UTC)
    assert u1[0].viewed_at < u1[1].viewed_at < first_impression
    report = DuckDBWarehouse(tmp_path / "warehouse.duckdb").ingest(LocalLandingZone(landing))
    assert (report.stored, report.quarantined) == (15, 0)


# --------------------------------------------------------------------------------------------------
# A MIND-format file set of a few hundred rows, through ingestion and dbt.

CATEGORIES = {"sports": ["soccer", "tennis"], "news": ["politics", "world"], "finance": ["markets"]}
START = datetime(2019, 11, 11, 6, 0, tzinfo=UTC)


@dataclass
class MindFixture:
    """A MIND sample written by the test, and what an import of it must produce."""

    news: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # id -> category, subcat, url
    rows: list[str] = field(default_factory=list)
    impressions: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)  # written lists
    histories: dict[str, list[str]] = field(default_factory=dict)  # user -> known history, oldest first
    clicks: list[tuple[datetime, str, str]] = field(default_factory=list)  # time, user, article
    unknown_references: int = 0
    skipped: int = 0

    def expected_click_history(self, user: str, size: int = 50) -> list[str]:
        """The user's distinct clicked articles as `user_click_histories` ranks them: latest click
        first, ties by article id; the history clicks come before every list click, in order."""
        last: dict[str, tuple[int, float]] = {
            a: (0, rank) for rank, a in enumerate(self.histories.get(user, []))
        }
        for moment, clicker, article in self.clicks:
            if clicker == user:
                last[article] = max(last.get(article, (0, 0.0)), (1, moment.timestamp()))
        return sorted(last, key=lambda a: (-last[a][0], -last[a][1], a))[:size]


def mind_fixture(seed: int = 3, users: int = 40, rows: int = 320, days: int = 4) -> MindFixture:
    rng = random.Random(seed)
    fixture = MindFixture()
    for n in range(1, 61):
        category = rng.choice(sorted(CATEGORIES))
        fixture.news[f"N{n}"] = (category, rng.choice(CATEGORIES[category]), f"https://mind.example/N{n}")
    known = sorted(fixture.news)
    unknown = [f"N{n}" for n in range(900, 915)]  # referenced, never in news.tsv
    histories = {
        f"U{u}": rng.sample(known, rng.randint(0, 12)) + ([rng.choice(unknown)] if rng.random() < 0.3 else [])
        for u in range(1, users + 1)
    }
    for history in histories.values():  # the unknown id anywhere in the history
        rng.shuffle(history)
    moments = sorted(START + timedelta(seconds=rng.uniform(0, days * 86400)) for _ in range(rows))
    for number, moment in enumerate(moments, start=1):
        user = f"U{rng.randint(1, users)}"
        if rng.random() < 0.03:  # a list of unknown news only
            shown = [(rng.choice(unknown), rng.random() < 0.2) for _ in range(3)]
        else:
            shown = [(a, rng.random() < 0.15) for a in rng.sample(known, rng.randint(5, 15))]
            shown += [(rng.choice(unknown), False)] if rng.random() < 0.2 else []
        items = " ".join(f"{a}-{int(c)}" for a, c in shown)
        history = histories[user]
        fixture.rows.append(f"{number}\t{user}\t{moment:{MIND_TIME_FORMAT}}\t{' '.join(history)}\t{items}")
        fixture.unknown_references += sum(a not in fixture.news for a, _ in shown)
        fixture.unknown_references += sum(a not in fixture.news for a in history)
        kept = [(a, c) for a, c in shown if a in fixture.news]
        if not kept:
            fixture.skipped += 1
            continue
        fixture.impressions[str(number)] = kept
        fixture.histories.setdefault(user, [a for a in history if a in fixture.news])
        # MIND's times have one-second resolution: the click lands at the impression's second
        moment = moment.replace(microsecond=0)
        fixture.clicks += [(moment, user, a) for a, c in kept if c]
    return fixture


def write_mind_fixture(fixture: MindFixture, folder: Path) -> tuple[str, str]:
    news = "\n".join(
        f"{nid}\t{cat}\t{sub}\tTitle of {nid}\tAbstract of {nid}.\t{url}\t[]\t[]"
        for nid, (cat, sub, url) in fixture.news.items()
    )
    return news, "\n".join(fixture.rows)


@pytest.mark.slow
def test_a_mind_file_set_with_unknown_news_reaches_the_marts(tmp_path, monkeypatch):
    import dagster as dg

    from newsrec_assets.defs.features.dbt import dbt_resource, newsrec_dbt_models
    from newsrec_assets.defs.ingestion.assets import raw_cdc_log
    from newsrec_assets.defs.resources import LandingZoneResource, WarehouseResource

    fixture = mind_fixture()
    report, landing = import_mind(tmp_path, *write_mind_fixture(fixture, tmp_path))
    assert report["behavior_rows"] == len(fixture.rows) and report["behavior_malformed"] == 0
    assert report["impressions_written"] == len(fixture.impressions)
    assert report["impressions_skipped_no_known_news"] == fixture.skipped > 0
    assert report["unknown_news_references"] == fixture.unknown_references > 0
    assert report["impression_rows_written"] == sum(len(shown) for shown in fixture.impressions.values())
    assert report["views_written"] == len(fixture.clicks)
    assert report["history_views_written"] == sum(len(h) for h in fixture.histories.values())

    warehouse = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("NEWSREC_DUCKDB_PATH", str(warehouse))
    result = dg.materialize(
        [raw_cdc_log, newsrec_dbt_models],
        resources={
            "landing": LandingZoneResource(root=str(landing)),
            "warehouse": WarehouseResource(duckdb_path=str(warehouse)),
            "dbt": dbt_resource(),
        },
    )
    assert result.success
    db = DuckDBWarehouse(warehouse, read_only=True)

    articles = db.query("select article_id, category, subcategory, url, is_live from main.current_articles")
    referenced = {a for shown in fixture.impressions.values() for a, _ in shown}
    referenced |= {a for history in fixture.histories.values() for a in history}
    assert sorted(articles["article_id"].to_pylist()) == sorted(referenced)
    assert all(articles["is_live"].to_pylist())
    for article_id, category, subcategory, url in zip(
        *(articles[c].to_pylist() for c in ("article_id", "category", "subcategory", "url")), strict=True
    ):
        assert (category, subcategory, url) == fixture.news[article_id]

    shown = db.query("select impression_id, article_id, clicked, split from main.training_impressions")
    written = Counter(shown["impression_id"].to_pylist())
    assert written == {number: len(items) for number, items in fixture.impressions.items()}
    labels = set(
        zip(*(shown[c].to_pylist() for c in ("impression_id", "article_id", "clicked")), strict=True)
    )
    assert labels == {(number, a, c) for number, items in fixture.impressions.items() for a, c in items}
    assert set(shown["split"].to_pylist()) == {"train", "validation", "test"}

    views = db.scalar("select count(*) from main.view_events")
    assert views == report["views_written"] + report["history_views_written"]
    histories = db.query(
        "select user_id, article_id from main.user_click_histories order by user_id, click_rank"
    )
    by_user: dict[str, list[str]] = {}
    for user, article in zip(
        histories["user_id"].to_pylist(), histories["article_id"].to_pylist(), strict=True
    ):
        by_user.setdefault(user, []).append(article)
    assert by_user == {
        user: fixture.expected_click_history(user)
        for user in {u for _, u, _ in fixture.clicks} | {u for u, h in fixture.histories.items() if h}
    }


@pytest.mark.slow
def test_a_mind_set_whose_articles_are_all_older_than_the_window_is_served_popularity_lists(
    tmp_path, monkeypatch
):
    """Every article first appears > 72 h before the last event and no model has passed: each
    known user still gets a popularity/recency list (so labelled), read shard by shard, without
    their clicks and without what they were shown three times and never clicked."""
    import dagster as dg

    from newsrec_assets.defs.features.dbt import dbt_resource, newsrec_dbt_models
    from newsrec_assets.defs.ingestion.assets import raw_cdc_log
    from newsrec_assets.defs.recommendations.assets import SHARDS, batch_recommendations, batch_shard_lists
    from newsrec_assets.defs.resources import (
        ArtifactStoreResource,
        LandingZoneResource,
        OnlineStoreResource,
        WarehouseResource,
    )
    from newsrec_assets.domain.batch_lists import POPULARITY_VERSION
    from newsrec_assets.domain.sharding import Shard, shard_of

    news_ids = [f"N{i}" for i in range(20)]
    news = "\n".join(f"{n}\tnews\tworld\tTitle {n}\tBody {n}.\thttps://x/{n}\t[]\t[]" for n in news_ids)
    rows = [f"1\tU0\t{START:{MIND_TIME_FORMAT}}\t\t" + " ".join(f"{n}-0" for n in news_ids)]
    for i in range(1, 31):  # 80 to 90 hours later, only the articles first seen at START
        at = START + timedelta(hours=80, minutes=20 * i)
        user = f"U{i % 10 + 1}"
        clicked = news_ids[i % 7]
        unknown = " N404-0" if i == 1 else ""  # news missing from news.tsv: counted, left out
        rows.append(f"{i + 1}\t{user}\t{at:{MIND_TIME_FORMAT}}\t\t{clicked}-1 N19-0{unknown}")
    report, landing = import_mind(tmp_path, news, "\n".join(rows))
    assert report["unknown_news_references"] == 1

    warehouse, home = tmp_path / "warehouse.duckdb", tmp_path / "home"
    monkeypatch.setenv("NEWSREC_DUCKDB_PATH", str(warehouse))
    resources = {
        "landing": LandingZoneResource(root=str(landing)),
        "warehouse": WarehouseResource(duckdb_path=str(warehouse)),
        "artifacts": ArtifactStoreResource(root=str(home / "artifacts")),
        "online_store": OnlineStoreResource(sqlite_path=str(home / "online.sqlite")),
        "dbt": dbt_resource(),
    }
    assert dg.materialize([raw_cdc_log, newsrec_dbt_models], resources=resources).success
    db = DuckDBWarehouse(warehouse, read_only=True)
    users = sorted(set(db.user_click_histories()["user_id"].to_pylist()))
    assert len(users) == 10
    shards = len(SHARDS.get_partition_keys())
    for key in SHARDS.get_partition_keys():
        shard = Shard.from_key(key, shards)
        read = set(db.user_click_histories(shard)["user_id"].to_pylist())
        assert read == {u for u in users if shard_of(u, shards) == shard.index}  # SQL agrees with Python
        assert set(db.user_live_exposures(shard)["user_id"].to_pylist()) <= {"U0", *users}
        result = dg.materialize([batch_shard_lists], resources=resources, partition_key=key)
        assert result.asset_materializations_for_node("batch_shard_lists")[0].metadata["users"].value == len(
            read
        )
    published = dg.materialize([batch_recommendations], resources=resources)
    assert published.asset_materializations_for_node("batch_recommendations")[0].metadata["users"].value == 10

    lists = resources["online_store"].lists()
    assert lists.get_model_version() == POPULARITY_VERSION
    for user in users:
        record = lists.get_recommendations(user)
        assert record.model_version == POPULARITY_VERSION and len(record.article_ids) > 10
        clicked = {news_ids[i % 7] for i in range(1, 31) if f"U{i % 10 + 1}" == user}
        assert not clicked & set(record.article_ids)
        assert "N19" not in record.article_ids  # shown three times, never clicked

    # ... and the API serves them, labelled as the popularity/recency ranker's.
    from fastapi.testclient import TestClient

    from serving.core.config import Settings
    from serving.main import create_app

    settings = Settings(store_backend="sqlite", sqlite_path=home / "online.sqlite", landing_dir=landing)
    with TestClient(create_app(settings)) as client:
        served = client.get(f"/v1/users/{users[0]}/recommendations", params={"k": 5}).json()
    assert served["provenance"]["model_version"] == POPULARITY_VERSION
    assert served["provenance"]["layer"] == "batch" and len(served["items"]) == 5
