"""End to end on a tiny simulated news app: landing files -> Dagster assets -> online store -> API.

Then the speed path: a view event posted to the API lands as a change record, the speed-layer
sensor turns it into a run request, the run rewrites that user's list, and the API serves it.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from newsrec_assets.defs.embeddings.assets import TextEncoderConfig
from newsrec_assets.defs.model.assets import NamlTrainingConfig
from newsrec_assets.defs.resources import (
    ArtifactStoreResource,
    LandingZoneResource,
    OnlineStoreResource,
    WarehouseResource,
)
from tests.conftest import assert_speed_list_after_view, post_view_of_top_article

pytestmark = pytest.mark.slow
API_KEY = "test-key"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Simulate a small app, then materialise the whole batch graph once."""
    from newsrec_assets.definitions import defs
    from newsrec_assets.defs.features.dbt import dbt_resource
    from newsrec_assets.domain.simulator import SimulationConfig, simulate_history, write_history

    home = tmp_path_factory.mktemp("newsrec_home")
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    history = simulate_history(SimulationConfig(end=end, seed=3, users=250, articles=300, days=3.0))
    write_history(history, home / "landing", home / "ground_truth", at_least_once=True)

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("NEWSREC_DUCKDB_PATH", str(home / "warehouse.duckdb"))
    monkeypatch.setenv("NEWSREC_HOME", str(home))
    resources = {
        "landing": LandingZoneResource(root=str(home / "landing")),
        "warehouse": WarehouseResource(duckdb_path=str(home / "warehouse.duckdb")),
        "artifacts": ArtifactStoreResource(root=str(home / "artifacts")),
        "online_store": OnlineStoreResource(sqlite_path=str(home / "online_store.sqlite")),
        "dbt": dbt_resource(),
    }
    instance = dg.DagsterInstance.ephemeral()
    batch = {"batch_shard_lists", "batch_recommendations"}
    everything = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]
    result = dg.materialize(
        [a for a in everything if not {k.to_user_string() for k in a.keys} & batch],
        resources=resources,
        instance=instance,
        run_config=dg.RunConfig(
            ops={
                "text_encoder": TextEncoderConfig(time_budget_seconds=5, max_steps=2, max_training_texts=200),
                "naml_model": NamlTrainingConfig(
                    time_budget_seconds=60,
                    max_epochs=6,
                    ground_truth_dir=str(home / "ground_truth"),
                    # 250 users over 3 days leave ~800 scorable impressions in the test window,
                    # under the default minimum of 1,000 that the gate asks of a real dataset
                    min_test_impressions=300,
                ),
            }
        ),
        raise_on_error=False,
    )
    # The batch layer as the automation runs it: each user shard, then the publish.
    from newsrec_assets.defs.recommendations.assets import SHARDS, batch_recommendations, batch_shard_lists

    for shard in SHARDS.get_partition_keys():
        dg.materialize([batch_shard_lists], resources=resources, instance=instance, partition_key=shard)
    dg.materialize([batch_recommendations], resources=resources, instance=instance)
    yield home, resources, instance, result
    monkeypatch.undo()


def test_the_whole_batch_graph_materialises(pipeline):
    _, _, instance, result = pipeline
    failed = [event.step_key for event in result.all_events if event.event_type_value == "STEP_FAILURE"]
    assert result.success, f"failed steps: {failed}"
    evaluations = result.get_asset_check_evaluations()
    by_name = {e.check_name: e for e in evaluations}
    gate = by_name["beats_popularity_on_test_window"]
    assert gate.passed, gate.description
    assert gate.metadata["status"].value == "pass"
    assert gate.metadata["auc_difference_low"].value > 0
    assert 300 <= gate.metadata["scored_impressions"].value <= gate.metadata["test_impressions"].value
    model = result.asset_materializations_for_node("naml_model")[0].metadata
    assert "| test |" in model["time_windows"].value and "| validation |" in model["time_windows"].value
    published = result.asset_materializations_for_node("published_model")[0].metadata
    assert published["version"].value == model["version"].value
    replayed = result.asset_materializations_for_node("freshness_replay")[0].metadata
    assert replayed["model_version"].value == published["version"].value
    policies = replayed["metrics"].value
    assert len(policies) == 4 and all(0 < p["ctr"] < 1 for p in policies.values())
    assert by_name["unique_view_events_event_id"].passed
    published = instance.get_latest_materialization_event(dg.AssetKey("batch_recommendations"))
    batch = published.asset_materialization.metadata
    assert batch["users"].value > 200 and batch["candidates"].value > 50 and batch["shards"].value == 2


def test_too_few_test_impressions_warn_and_publish_nothing_new(pipeline):
    """The gate's WARN (insufficient evidence) and published_model agree: no new model is served."""
    from newsrec_assets.defs.model.assets import naml_model, published_model

    home, resources, instance, _ = pipeline
    store = resources["artifacts"].get()
    served = store.latest("naml")
    result = dg.materialize(
        [naml_model, published_model],
        resources=resources,
        instance=instance,
        run_config=dg.RunConfig(
            ops={
                "naml_model": NamlTrainingConfig(
                    max_epochs=1, learning_rate=1e-2, seed=1, min_test_impressions=1_000_000
                )
            }
        ),
    )
    assert result.success
    (gate,) = result.get_asset_check_evaluations()
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.WARN
    assert gate.metadata["status"].value == "insufficient_evidence"
    assert "fewer than the 1000000 required" in gate.description
    trained = result.asset_materializations_for_node("naml_model")[0].metadata["version"].value
    assert trained != served
    assert result.asset_materializations_for_node("published_model") == []
    assert store.latest("naml") == served


def test_api_serves_batch_lists_with_provenance_and_cold_start(pipeline):
    from serving.core.config import Settings
    from serving.main import create_app

    home, _, _, _ = pipeline
    settings = Settings(
        sqlite_path=home / "online_store.sqlite", landing_dir=home / "landing", api_keys=[API_KEY]
    )
    with TestClient(create_app(settings)) as client:
        known = client.get("/v1/users/u000001/recommendations", params={"k": 10})
        unknown = client.get("/v1/users/u999999/recommendations")
    assert known.status_code == 200, known.text
    body = known.json()
    assert len(body["items"]) == 10
    assert body["provenance"]["layer"] == "batch"
    assert body["provenance"]["model_version"].startswith("naml-")
    assert {"title", "category", "score"} <= set(body["items"][0])
    assert unknown.status_code == 200 and unknown.json()["provenance"]["layer"] == "cold_start"


def test_a_posted_view_reaches_the_served_list_through_the_speed_sensor(pipeline):
    from newsrec_assets.defs.recommendations.speed import SPEED_RECOMMENDATIONS, speed_layer_sensor
    from serving.core.config import Settings
    from serving.main import create_app

    home, resources, instance, _ = pipeline
    settings = Settings(
        sqlite_path=home / "online_store.sqlite", landing_dir=home / "landing", api_keys=[API_KEY]
    )
    user = "u000002"

    # The sensor's first tick starts from the newest landed file.
    first = speed_layer_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert not first.asset_events and "First tick" in first.skip_reason.skip_message
    context = dg.build_sensor_context(instance=instance, resources=resources, cursor=_newest_cursor(home))

    with TestClient(create_app(settings)) as client:
        clicked, viewed_at = post_view_of_top_article(client, user, API_KEY)
        # The tick writes the list itself and reports it as a runless materialisation.
        result = speed_layer_sensor(context)
        assert isinstance(result, dg.SensorResult), result
        assert [event.asset_key for event in result.asset_events] == [SPEED_RECOMMENDATIONS]
        after = client.get(f"/v1/users/{user}/recommendations", params={"k": 50}).json()

    assert_speed_list_after_view(after, clicked, viewed_at)


def _newest_cursor(home) -> str:
    from newsrec_assets.resources.landing import LocalLandingZone

    return max(LocalLandingZone(home / "landing").list_files("user_article_views/")).cursor


def test_served_lists_land_as_records_that_ingestion_stores(pipeline):
    from newsrec_assets.resources.landing import LocalLandingZone
    from newsrec_assets.resources.warehouse import DuckDBWarehouse
    from serving.core.config import Settings
    from serving.main import create_app

    home, _, _, _ = pipeline
    settings = Settings(
        sqlite_path=home / "online_store.sqlite", landing_dir=home / "landing", api_keys=[API_KEY]
    )
    with TestClient(create_app(settings)) as client:
        served = client.get("/v1/users/u000003/recommendations", params={"k": 5}).json()
    # The app landed what it served on shutdown at the latest.
    DuckDBWarehouse(home / "warehouse.duckdb").ingest(LocalLandingZone(home / "landing"))
    shown = DuckDBWarehouse(home / "warehouse.duckdb", read_only=True).query(
        "select user_id, article_ids, first_position from raw.cdc_served_lists "
        f"where impression_id = '{served['request_id']}'"
    )
    assert shown.to_pylist() == [
        {
            "user_id": "u000003",
            "article_ids": " ".join(item["article_id"] for item in served["items"]),
            "first_position": 0,
        }
    ]


def test_an_article_published_after_the_batch_gets_a_vector_for_read_time_merging(pipeline):
    from newsrec_assets.defs.recommendations.speed import FreshArticlesConfig, fresh_article_vectors
    from newsrec_assets.domain.cdc import ChangeRecord
    from newsrec_assets.resources.landing import LocalLandingZone
    from newsrec_assets.resources.online_store.sqlite import SQLiteArticleCache, SQLiteListStore

    home, resources, instance, _ = pipeline
    lists, articles = (
        SQLiteListStore(home / "online_store.sqlite"),
        SQLiteArticleCache(home / "online_store.sqlite"),
    )
    model_version = lists.get_model_version()
    published = datetime.now(UTC)
    article = {
        "article_id": "a999999",
        "title": "Late goal sends the league leaders top of the table",
        "body": "The striker scored in added time as the league leaders won the derby at home.",
        "category": "sports",
        "subcategory": "football",
        "status": "published",
        "published_at": published,
        "updated_at": published,
    }
    record = ChangeRecord("articles", "INSERT", article, published, published, log_file="cms", log_position=1)
    path = f"articles/{published:%Y-%m-%d}/late-article.jsonl"
    LocalLandingZone(home / "landing").write_file(path, (record.to_json_line() + "\n").encode())

    result = dg.materialize(
        [fresh_article_vectors],
        resources=resources,
        instance=instance,
        run_config=dg.RunConfig(ops={"fresh_article_vectors": FreshArticlesConfig(landing_files=[path])}),
    )
    assert result.success
    fresh = articles.get_fresh_articles(published - timedelta(seconds=1), model_version)
    assert "a999999" in fresh.article_ids.tolist()
    stored_user = lists.get_recommendations("u000001")
    assert fresh.vectors.shape[1] == len(stored_user.user_vector)  # ranking form: [news vector, prior]
    assert articles.get_articles(["a999999"])["a999999"].title == article["title"]
