"""Both code locations load, show the whole lineage, and stay light to import."""

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from newsrec_assets.defs.automation import BATCH_CADENCE, BATCH_WINDOW, cron_for_window
from newsrec_assets.defs.recommendations.assets import SHARDS


@pytest.fixture(scope="module")
def main_defs():
    from newsrec_assets.definitions import defs

    return defs


@pytest.fixture(scope="module")
def speed_defs():
    from newsrec_assets.speed_definitions import defs

    return defs


def test_main_location_has_the_whole_batch_lineage(main_defs):
    graph = main_defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    for expected in [
        "raw/cdc_articles",
        "raw/cdc_user_article_views",
        "raw/cdc_impressions",
        "raw/cdc_api_view_events",
        "raw/cdc_quarantine",
        "stg_newsapp__user_article_views",
        "stg_newsapp__api_view_events",
        "int_view_events",
        "current_articles",
        "article_features",
        "user_click_histories",
        "training_impressions",
        "view_events",
        "text_encoder",
        "article_embeddings",
        "naml_model",
        "published_model",
        "batch_shard_lists",
        "batch_recommendations",
    ]:
        assert expected in keys
    # dbt sources resolve onto the ingestion assets: staging depends on the raw CDC log
    staging = graph.get(dg.AssetKey("stg_newsapp__user_article_views"))
    assert dg.AssetKey(["raw", "cdc_user_article_views"]) in staging.parent_keys
    api_staging = graph.get(dg.AssetKey("stg_newsapp__api_view_events"))
    assert dg.AssetKey(["raw", "cdc_api_view_events"]) in api_staging.parent_keys
    groups = {
        graph.get(dg.AssetKey(k)).group_name for k in ["current_articles", "naml_model", "text_encoder"]
    }
    assert groups == {"features", "model", "embeddings"}


def test_dbt_tests_are_asset_checks_and_model_evaluation_blocks(main_defs):
    graph = main_defs.resolve_asset_graph()
    checks = {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys}
    assert ("view_events", "unique_view_events_event_id") in checks
    assert ("naml_model", "beats_popularity_on_test_window") in checks
    spec = next(
        spec
        for spec in graph.get(dg.AssetKey("naml_model")).assets_def.check_specs
        if spec.name == "beats_popularity_on_test_window"
    )
    assert spec.blocking


def test_the_batch_cadence_is_a_visible_freshness_policy_with_a_derived_condition(main_defs):
    node = main_defs.resolve_asset_graph().get(dg.AssetKey("batch_recommendations"))
    policy = node.freshness_policy
    assert policy is not None and policy.fail_window.to_timedelta() == BATCH_WINDOW
    # derived from the window, the batch's duration and the automation sensor's interval
    cron = cron_for_window(BATCH_CADENCE)
    assert cron == "*/12 * * * *"
    sensor = next(s for s in main_defs.sensors if s.name == "batch_automation_sensor")
    assert sensor.minimum_interval_seconds == 300
    shards = main_defs.resolve_asset_graph().get(dg.AssetKey("batch_shard_lists"))
    assert cron in str(shards.automation_condition)  # the shards rank on the cadence,
    assert "every shard's latest run landed" in str(node.automation_condition)  # the publish follows
    assert cron_for_window(timedelta(minutes=30)) == "*/30 * * * *"
    assert cron_for_window(timedelta(hours=2)) == "0 */2 * * *"
    with pytest.raises(ValueError):
        cron_for_window(timedelta(minutes=7))


def test_the_batch_features_schedule_ingests_and_builds_every_batch_input_on_the_cadence(main_defs):
    schedule = main_defs.resolve_schedule_def("batch_features_schedule")
    assert schedule.cron_schedule == cron_for_window(BATCH_CADENCE)
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    job = main_defs.resolve_job_def(schedule.job_name)
    built = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    assert {"raw/cdc_user_article_views", "raw/cdc_quarantine", "view_events", "article_embeddings"} <= built
    # everything the shards read is built by it, except the slower model (daily) and encoder
    graph = main_defs.resolve_asset_graph()
    shard_inputs = {key.to_user_string() for key in graph.get(dg.AssetKey("batch_shard_lists")).parent_keys}
    assert shard_inputs - built <= {"published_model"}
    # and the features carry no automation condition: the automation sensor does not evaluate them
    assert all(graph.get(dg.AssetKey.from_user_string(key)).automation_condition is None for key in built)


def test_the_dbt_tests_run_with_the_first_batch_build_of_each_hour(main_defs):
    schedule = main_defs.resolve_schedule_def("batch_features_schedule")

    def request_at(minute: int) -> dg.RunRequest:
        at = datetime(2026, 12, 6, 3, minute, tzinfo=UTC)
        with (
            dg.instance_for_test() as instance,
            dg.build_schedule_context(instance=instance, scheduled_execution_time=at) as context,
        ):
            (request,) = schedule.evaluate_tick(context).run_requests
        return request

    hourly = request_at(0)
    assert hourly.asset_selection is None and hourly.asset_check_keys is None  # the whole job
    between = request_at(int(BATCH_CADENCE.total_seconds() // 60))
    job = main_defs.resolve_job_def("batch_features")
    assert set(between.asset_selection) == set(job.asset_layer.selected_asset_keys)
    assert {key.name for key in between.asset_check_keys} == {
        "no_new_quarantined_lines",
        "no_unsupported_landing_files",
    }


def test_the_batch_features_schedule_waits_while_the_initial_build_builds_its_inputs(main_defs):
    schedule = main_defs.resolve_schedule_def("batch_features_schedule")
    at = datetime(2026, 12, 6, 3, int(BATCH_CADENCE.total_seconds() // 60), tzinfo=UTC)
    with dg.instance_for_test() as instance:
        first_build = instance.create_run_for_job(main_defs.resolve_job_def("initial_build"))

        def tick():
            # as a context manager: it closes the instance it opens, which later loads would find
            with dg.build_schedule_context(instance=instance, scheduled_execution_time=at) as context:
                return schedule.evaluate_tick(context)

        assert not tick().run_requests and "initial_build" in tick().skip_message
        instance.report_run_failed(first_build)  # finished, whichever way: the schedule takes over
        assert len(tick().run_requests) == 1


def test_sensors_are_present_and_running_by_default(main_defs, speed_defs):
    main_sensors = {s.name for s in main_defs.sensors}
    speed_sensors = {s.name: s for s in speed_defs.sensors}
    assert main_sensors == {"batch_automation_sensor"}  # ingestion runs with the features (a schedule)
    assert {"speed_layer_sensor", "new_articles_sensor"} <= set(speed_sensors)
    assert speed_sensors["speed_layer_sensor"].default_status == dg.DefaultSensorStatus.RUNNING


def test_code_locations_import_without_torch_transformers_or_dbt_in_the_speed_path():
    probe = (
        "import sys, newsrec_assets.speed_definitions;"
        "heavy = [m for m in ('torch', 'transformers', 'dbt', 'dagster_dbt') if m in sys.modules];"
        "import newsrec_assets.definitions;"
        "heavy_main = [m for m in ('torch', 'transformers') if m in sys.modules];"
        "print(heavy, heavy_main)"
    )
    output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[] []"


def test_the_30_minute_batch_runs_without_waiting_for_the_daily_model(main_defs):
    """After a cron tick, fresh features alone request the batch lists; the model is daily."""
    from datetime import UTC, datetime

    from dagster._core.test_utils import freeze_time

    instance = dg.DagsterInstance.ephemeral()
    every_key = list(main_defs.resolve_asset_graph().get_all_asset_keys())
    slower = {dg.AssetKey("published_model"), dg.AssetKey("naml_model"), dg.AssetKey("text_encoder")}

    def materialized(keys):
        for key in keys:
            instance.report_runless_asset_event(dg.AssetMaterialization(key))

    with freeze_time(datetime(2026, 11, 20, 10, 5, tzinfo=UTC)):
        materialized(every_key)
        cursor = dg.evaluate_automation_conditions(main_defs, instance).cursor
    batch = {dg.AssetKey("batch_shard_lists"), dg.AssetKey("batch_recommendations")}
    with freeze_time(datetime(2026, 11, 20, 10, 37, tzinfo=UTC)):  # after the 10:36 tick (*/12)
        materialized([key for key in every_key if key not in slower | batch])
        result = dg.evaluate_automation_conditions(main_defs, instance, cursor=cursor)
    assert result.get_num_requested(dg.AssetKey("batch_shard_lists")) == len(SHARDS.get_partition_keys())
    assert result.get_num_requested(dg.AssetKey("naml_model")) == 0
    assert result.get_num_requested(dg.AssetKey("text_encoder")) == 0
    *first, last = SHARDS.get_partition_keys()

    def staged(shards, minute):
        with freeze_time(datetime(2026, 11, 20, 10, minute, tzinfo=UTC)):
            for shard in shards:
                instance.report_runless_asset_event(
                    dg.AssetMaterialization(dg.AssetKey("batch_shard_lists"), partition=shard)
                )
            return dg.evaluate_automation_conditions(main_defs, instance, cursor=result.cursor)

    result = staged(first, 40)  # a shard still missing: no publish yet
    assert result.get_num_requested(dg.AssetKey("batch_recommendations")) == 0
    result = staged([last], 42)  # every shard staged: the publish
    assert result.get_num_requested(dg.AssetKey("batch_recommendations")) == 1
    assert result.get_num_requested(dg.AssetKey("batch_shard_lists")) == 0


def test_a_first_build_without_the_batch_layer_is_followed_by_every_shard_then_the_publish(main_defs):
    """`make demo`'s `initial_build` leaves the batch layer out; the automation builds it at once."""
    from datetime import UTC, datetime

    from dagster._core.test_utils import freeze_time

    instance = dg.DagsterInstance.ephemeral()
    job = main_defs.resolve_job_def("initial_build")
    assert job.partitions_def is None  # one run, no shards in it
    built = set(job.asset_layer.executable_asset_keys)
    assert not built & {dg.AssetKey("batch_shard_lists"), dg.AssetKey("batch_recommendations")}
    with freeze_time(datetime(2026, 11, 20, 10, 5, tzinfo=UTC)):  # between two cadence ticks
        for key in built:
            instance.report_runless_asset_event(dg.AssetMaterialization(key))
        result = dg.evaluate_automation_conditions(main_defs, instance)
    assert result.get_num_requested(dg.AssetKey("batch_shard_lists")) == len(SHARDS.get_partition_keys())
    assert result.get_num_requested(dg.AssetKey("batch_recommendations")) == 0
    with freeze_time(datetime(2026, 11, 20, 10, 7, tzinfo=UTC)):
        for shard in SHARDS.get_partition_keys():
            instance.report_runless_asset_event(
                dg.AssetMaterialization(dg.AssetKey("batch_shard_lists"), partition=shard)
            )
        result = dg.evaluate_automation_conditions(main_defs, instance, cursor=result.cursor)
    assert result.get_num_requested(dg.AssetKey("batch_recommendations")) == 1


def test_local_runs_use_the_multiprocess_executor(main_defs):
    assert main_defs.executor.name == "local_multiprocess"


def test_a_manifest_older_than_a_changed_model_is_stale(tmp_path):
    from types import SimpleNamespace

    from newsrec_assets.defs.features.dbt import manifest_is_stale

    (tmp_path / "models").mkdir()
    model = tmp_path / "models" / "m.sql"
    model.write_text("select 1")
    project = SimpleNamespace(project_dir=tmp_path, manifest_path=tmp_path / "target" / "manifest.json")
    assert manifest_is_stale(project)  # never parsed

    project.manifest_path.parent.mkdir()
    project.manifest_path.write_text("{}")
    os.utime(model, (1_000_000_000, 1_000_000_000))
    assert not manifest_is_stale(project)

    model.write_text("select 2")  # a checkout changed the model after the parse
    os.utime(model, (project.manifest_path.stat().st_mtime + 1,) * 2)
    assert manifest_is_stale(project)


def test_a_run_worker_under_dagster_dev_loads_a_current_manifest_without_parsing(main_defs, monkeypatch):
    from newsrec_assets.defs.features import dbt as features_dbt

    def parse(self, project):
        raise AssertionError("parsed a current manifest")

    monkeypatch.setenv("DAGSTER_IS_DEV_CLI", "1")  # as `dagster dev` sets it for its run workers
    monkeypatch.setattr(type(features_dbt.local_dbt_project.preparer), "prepare", parse)
    assert features_dbt.dbt_project.__wrapped__() is features_dbt.local_dbt_project


def test_a_selection_with_shards_runs_upstream_then_each_shard_then_the_publish():
    """`newsrec materialize` / `make demo`: one run cannot mix partitioned and unpartitioned assets."""
    from newsrec_assets.orchestration import materialize_in_phases

    order = []

    @dg.asset
    def features():
        order.append("features")

    @dg.asset(partitions_def=dg.StaticPartitionsDefinition(["0", "1"]), deps=[features])
    def shard_lists(context: dg.AssetExecutionContext):
        order.append(f"shard {context.partition_key}")

    @dg.asset(deps=[shard_lists])
    def publish():
        order.append("publish")

    defs = dg.Definitions(assets=[features, shard_lists, publish])
    result = materialize_in_phases(defs, dg.AssetSelection.all(), {}, dg.DagsterInstance.ephemeral())
    assert result.success and len(result.results) == 4
    assert order == ["features", "shard 0", "shard 1", "publish"]
    assert len(result.asset_materializations_for_node("publish")) == 1
