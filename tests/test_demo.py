"""`newsrec demo`: the popularity list before anything is built, the status, the key, a small supervisor."""

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from newsrec_assets.demo.seed import seed_popular
from newsrec_assets.demo.supervisor import (
    BATCH_LAYER,
    DemoOptions,
    DemoState,
    DemoSupervisor,
    StatusWriter,
    api_key_for_demo,
    render_status,
)
from newsrec_assets.domain.cdc import ChangeRecord
from newsrec_assets.domain.landing_popularity import popular_now
from newsrec_assets.resources.online_store.sqlite import SQLiteArticleCache, SQLiteListStore

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def _article(article_id, published_at, status="published", change_type="INSERT", position=1):
    return ChangeRecord(
        table="articles",
        change_type=change_type,
        payload={
            "article_id": article_id,
            "title": f"title {article_id}",
            "body": "body",
            "category": "news",
            "subcategory": "world",
            "status": status,
            "published_at": published_at,
            "updated_at": published_at,
            "url": None,
        },
        source_timestamp=published_at,
        read_timestamp=published_at,
        log_file="binlog.1",
        log_position=position,
    )


def _view(article_id, at, user="u1", position=100):
    return ChangeRecord(
        table="user_article_views",
        change_type="UPDATE-INSERT",
        payload={"user_id": user, "article_id": article_id, "view_count": 1, "last_viewed_at": at},
        source_timestamp=at,
        read_timestamp=at,
        log_file="binlog.1",
        log_position=position,
    )


def test_popularity_list_ranks_live_articles_by_views_in_the_last_day():
    old = NOW - timedelta(hours=30)
    records = [
        _article("a", NOW - timedelta(hours=3)),
        _article("b", NOW - timedelta(hours=3), position=2),
        _article("gone", NOW - timedelta(hours=3), position=3),
        _article(
            "gone", NOW - timedelta(hours=2), status="unpublished", change_type="UPDATE-INSERT", position=4
        ),
        *[_view("b", NOW - timedelta(minutes=m), user=f"u{m}", position=10 + m) for m in range(5)],
        _view("a", NOW - timedelta(minutes=1), position=50),
        *[_view("a", old, user=f"old{m}", position=60 + m) for m in range(9)],  # outside the day
    ]
    records.append(records[4])  # a re-delivered record counts once
    popular = popular_now(records, k=10)
    assert popular is not None
    assert set(popular.articles) == {"a", "b"}  # the unpublished article is not served
    assert list(popular.article_ids) == ["b", "a"]
    assert popular.as_of == NOW


def test_seed_serves_a_list_from_the_landing_files_once(tmp_path):
    from newsrec_assets.domain.simulator import SimulationConfig, simulate_history, write_history

    end = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    history = simulate_history(SimulationConfig(end=end, seed=3, users=40, articles=60, days=0.5))
    write_history(history, tmp_path / "landing", tmp_path / "truth", at_least_once=True)
    store = tmp_path / "online.sqlite"

    first = seed_popular(tmp_path / "landing", store, k=20)
    assert first["seeded"] and first["k"] == 20
    lists, articles = SQLiteListStore(store, read_only=True), SQLiteArticleCache(store, read_only=True)
    cold = lists.get_cold_start()
    assert cold is not None and len(cold.article_ids) == 20
    assert set(articles.get_articles(list(cold.article_ids))) == set(cold.article_ids)
    lists.close(), articles.close()
    # a second demo (or a published batch) keeps what the store holds
    assert seed_popular(tmp_path / "landing", store, k=5)["seeded"] is False


def test_status_shows_urls_key_a_curl_per_route_and_the_logs(tmp_path):
    state = DemoState(
        "http://127.0.0.1:3000", "http://127.0.0.1:8000", "demo-k", tmp_path / "api_key", tmp_path / "logs"
    )
    state.steps = [("raw_cdc_log", "SUCCESS", 12.0), ("text_encoder", "IN_PROGRESS", None)]
    text = "\n".join(render_status(state))
    assert "http://127.0.0.1:3000" in text and "http://127.0.0.1:8000/docs" in text
    assert "http://127.0.0.1:8000/demo?key=" in text  # the feed page, with the key filled in
    assert "demo-k" in text and str(tmp_path / "api_key") in text
    assert "curl -s -X POST http://127.0.0.1:8000/v1/events -H 'X-API-Key: demo-k'" in text
    assert "done         raw_cdc_log 12 s" in text and "running      text_encoder" in text
    assert str(tmp_path / "logs") in text


def test_the_api_key_is_kept_in_a_file_for_the_next_demo(tmp_path, monkeypatch):
    monkeypatch.delenv("NEWSREC_API_KEYS", raising=False)
    key, key_file = api_key_for_demo(tmp_path)
    assert key_file.read_text().strip() == key and key.startswith("demo-")
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert api_key_for_demo(tmp_path)[0] == key


def test_the_supervisor_imports_neither_dagster_nor_torch():
    code = (
        "import sys, newsrec_assets.cli, newsrec_assets.demo.supervisor;"
        "heavy = {'dagster', 'torch', 'transformers', 'duckdb'} & set(sys.modules);"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


SHARDED_DEFS = '''
import dagster as dg

shards = dg.StaticPartitionsDefinition(["0", "1"])


@dg.asset(partitions_def=shards)
def batch_shard_lists():
    """A shard."""


@dg.asset(deps=[batch_shard_lists])
def batch_recommendations():
    """The publish."""


@dg.multi_asset(specs=[dg.AssetSpec("raw_a"), dg.AssetSpec("raw_b")])
def raw_log():
    """Not subsettable, like the raw CDC log."""


everything = dg.define_asset_job("everything", selection=["raw_a", "raw_b"])
defs = dg.Definitions(assets=[batch_shard_lists, batch_recommendations, raw_log], jobs=[everything])
'''


def test_the_batch_layer_backfill_covers_every_shard_then_the_publish(tmp_path):
    # The supervisor's GraphQL, run against Dagster's own schema on a graph shaped like the batch
    # layer (a partitioned asset and an unpartitioned one downstream).
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    from newsrec_assets.demo.dagster_client import (
        JOB_ASSETS,
        LAUNCH_BACKFILL,
        UNMATERIALIZED,
        backfill_params,
        missing_with_op_siblings,
    )
    from newsrec_assets.demo.supervisor import BATCH_LAYER, DEMO_TAG

    definitions = tmp_path / "sharded.py"
    definitions.write_text(SHARDED_DEFS)
    with (
        dg.instance_for_test() as instance,
        define_out_of_process_context(str(definitions), None, instance) as ctx,
    ):
        # an upgrade added raw_b to the raw log: the build takes the whole op, raw_a too
        instance.report_runless_asset_event(dg.AssetMaterialization("raw_a"))
        selector = {"repositoryLocationName": ctx.code_location_names[0], "repositoryName": "__repository__"}
        job_assets = execute_dagster_graphql(
            ctx, JOB_ASSETS, {"selector": {**selector, "pipelineName": "everything"}}
        )
        materialized = {
            n["assetKey"]["path"][0]: bool(n["assetMaterializations"]) for n in job_assets.data["assetNodes"]
        }
        assert materialized == {"raw_a": True, "raw_b": False}
        assert sorted(missing_with_op_siblings(job_assets.data["assetNodes"])) == [["raw_a"], ["raw_b"]]
        instance.report_runless_asset_event(dg.AssetMaterialization("raw_b"))
        job_assets = execute_dagster_graphql(
            ctx, JOB_ASSETS, {"selector": {**selector, "pipelineName": "everything"}}
        )
        assert missing_with_op_siblings(job_assets.data["assetNodes"]) == []
        keys = {"keys": [{"path": path} for path in BATCH_LAYER]}
        missing = execute_dagster_graphql(ctx, UNMATERIALIZED, keys).data["assetNodes"]
        assert sorted(n["assetKey"]["path"] for n in missing if not n["assetMaterializations"]) == sorted(
            BATCH_LAYER
        )
        result = execute_dagster_graphql(
            ctx, LAUNCH_BACKFILL, {"params": backfill_params(BATCH_LAYER, dict([DEMO_TAG]))}
        )
        assert result.data["launchPartitionBackfill"]["__typename"] == "LaunchBackfillSuccess", result.data
        (backfill,) = instance.get_backfills()
        assert backfill.tags[DEMO_TAG[0]] == DEMO_TAG[1]
        targeted = backfill.asset_backfill_data.target_subset
        assert {(key.path[0], partition) for key, partition in targeted.iterate_asset_partitions()} == {
            ("batch_shard_lists", "0"),
            ("batch_shard_lists", "1"),
            ("batch_recommendations", None),
        }


class _BatchLayerState:
    """The supervisor's Dagster client, as far as the batch layer's backfill asks it."""

    def __init__(self, unmaterialized: list[list[str]]) -> None:
        self._unmaterialized, self.backfills = unmaterialized, []

    def unmaterialized(self, asset_keys):
        return [key for key in asset_keys if key in self._unmaterialized]

    def launch_backfill(self, asset_keys, tags):
        self.backfills.append(asset_keys)


@pytest.mark.parametrize(
    ("unmaterialized", "backfilled"),
    [
        (BATCH_LAYER, [BATCH_LAYER]),  # nothing built yet: the demo does not wait for the automation
        ([["batch_recommendations"]], []),  # the automation ranked the shards: it publishes them too
        ([], []),  # published before
    ],
)
def test_the_demo_backfills_the_batch_layer_only_if_the_automation_built_none_of_it(
    tmp_path, monkeypatch, unmaterialized, backfilled
):
    monkeypatch.setenv("NEWSREC_HOME", str(tmp_path))
    supervisor = DemoSupervisor(DemoOptions(), writer=StatusWriter())
    supervisor.dagster = _BatchLayerState(unmaterialized)
    supervisor._request_batch_layer()
    assert supervisor.dagster.backfills == backfilled and supervisor.batch_requested
