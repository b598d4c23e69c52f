"""The production profile end to end, against local emulators, and compared with the local profile.

The small simulated app of `test_pipeline_e2e` is materialised twice in this session: once on the
embedded default (DuckDB, folders, SQLite), once with `NEWSREC_ENV=prod` in a process of its own
(its files uploaded to a GCS emulator, ingested into a BigQuery emulator, dbt through
dbt-bigquery, artifacts in GCS, lists in Redis, the Dagster instance in a fresh PostgreSQL
database configured by `deploy/dagster.yaml`). Both must count the same and publish the same
list for a fixed user; then a view posted to the production API reaches that user's list through
the speed-layer sensor, and the production run's config read through Dagster's GraphQL holds no
secret value.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from bench.common import free_port
from newsrec_assets.settings import DAGSTER_INSTANCE_TEMPLATES, REPO_ROOT
from tests.conftest import (
    assert_speed_list_after_view,
    fresh_postgres_database,
    post_view_of_top_article,
    service_reachable,
)
from tests.prod_pipeline import SIMULATION, materialize_everything, outcome

pytestmark = [pytest.mark.prod, pytest.mark.slow]

API_KEY = "prod-test-key"
FIXED_USER = "u000001"
PROJECT = "newsrec-test"
LANDING_BUCKET, ARTIFACT_BUCKET, LOG_BUCKET = "newsrec-landing", "newsrec-artifacts", "newsrec-dagster-logs"
REDIS_URL = "redis://127.0.0.1:6379/0"
SECRET = f"s3cret-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def postgres_database():
    """A fresh PostgreSQL database for this module's Dagster instance."""
    with fresh_postgres_database("newsrec_prod") as variables:
        yield variables


@pytest.fixture(scope="module")
def simulated_app(tmp_path_factory):
    from newsrec_assets.domain.simulator import SimulationConfig, simulate_history, write_history

    home = tmp_path_factory.mktemp("simulated_app")
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    history = simulate_history(SimulationConfig(end=end, **SIMULATION))
    write_history(history, home / "landing", home / "ground_truth", at_least_once=True)
    return home


@pytest.fixture(scope="module")
def local_run(simulated_app, tmp_path_factory):
    """The whole graph on the embedded default, and the fixed user's list served from SQLite."""
    home = tmp_path_factory.mktemp("local_profile")
    with pytest.MonkeyPatch.context() as patch:
        # The prod tests' environment may be active; definitions load per environment.
        patch.setenv("NEWSREC_ENV", "local")
        patch.setenv("NEWSREC_DUCKDB_PATH", str(home / "warehouse.duckdb"))
        patch.setenv("NEWSREC_HOME", str(home))
        from newsrec_assets.definitions import defs
        from newsrec_assets.defs.features.dbt import dbt_resource
        from newsrec_assets.defs.resources import LandingZoneResource, build_resources
        from serving.core.config import Settings
        from serving.main import create_app

        # The local profile's own resources under NEWSREC_HOME, reading the simulated app's files.
        resources = {
            **build_resources("local"),
            "landing": LandingZoneResource(root=str(simulated_app / "landing")),
            "dbt": dbt_resource(),
        }
        result = materialize_everything(
            defs, resources, dg.DagsterInstance.ephemeral(), simulated_app / "ground_truth"
        )
        report = outcome(result, resources["warehouse"])
        settings = Settings(
            store_backend="sqlite",
            sqlite_path=home / "online_store.sqlite",
            landing_dir=home / "landing",
            api_keys=[API_KEY],
        )
        with TestClient(create_app(settings)) as client:
            report["served"] = client.get(f"/v1/users/{FIXED_USER}/recommendations", params={"k": 50}).json()
    print(f"local pipeline: {report['summary']}")
    return report


@pytest.fixture(scope="module")
def prod_env(storage_emulator, bigquery_emulator, postgres_database, simulated_app, tmp_path_factory):
    """The production profile's environment, pointed at the emulators and this session's stores."""
    if not service_reachable("127.0.0.1", 6379):
        pytest.skip("no Redis at 127.0.0.1:6379")
    home = tmp_path_factory.mktemp("prod_profile")
    dagster_home = home / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(DAGSTER_INSTANCE_TEMPLATES["prod"], dagster_home / "dagster.yaml")
    env = {
        "NEWSREC_ENV": "prod",
        "NEWSREC_HOME": str(home),
        "NEWSREC_GROUND_TRUTH": str(simulated_app / "ground_truth"),
        "NEWSREC_GCP_PROJECT": PROJECT,
        "NEWSREC_BQ_LOCATION": "US",
        "NEWSREC_LANDING_BUCKET": LANDING_BUCKET,
        "NEWSREC_ARTIFACT_BUCKET": ARTIFACT_BUCKET,
        "NEWSREC_REDIS_URL": REDIS_URL,
        "NEWSREC_REDIS_PREFIX": f"prodtest-{uuid.uuid4().hex[:8]}",
        "NEWSREC_DAGSTER_LOG_BUCKET": LOG_BUCKET,
        "DAGSTER_HOME": str(dagster_home),
        **postgres_database,
        "STORAGE_EMULATOR_HOST": storage_emulator,
        "BIGQUERY_EMULATOR_HOST": bigquery_emulator,
        # dbt-bigquery: a token instead of Google's default credentials (the emulator takes any)
        "NEWSREC_BQ_METHOD": "oauth-secrets",
        "NEWSREC_BQ_TOKEN": "emulator",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        from google.cloud import storage

        client = storage.Client(project=PROJECT)
        for bucket in (LANDING_BUCKET, ARTIFACT_BUCKET, LOG_BUCKET):
            client.create_bucket(bucket)
        yield env
    from newsrec_assets.resources.online_store.redis import RedisListStore

    RedisListStore(REDIS_URL, prefix=env["NEWSREC_REDIS_PREFIX"]).clear()


def run_prod_pipeline(out: Path, selection: str | None = None) -> dict:
    """`tests.prod_pipeline` in a process of its own, with this (production) environment."""
    # The production process finds its own dbt target path (this process may have set the local one).
    environment = {k: v for k, v in os.environ.items() if k != "DBT_TARGET_PATH"}
    environment["PYTHONPATH"] = str(REPO_ROOT)
    started = time.perf_counter()
    with open(out / "pipeline.log", "wb") as log:
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.prod_pipeline",
                str(out / "report.json"),
                *([selection] if selection else []),
            ],
            cwd=REPO_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=1800,
        )
    if completed.returncode != 0:
        tail = (out / "pipeline.log").read_text(errors="replace")[-6000:]
        pytest.fail(f"the prod pipeline exited with {completed.returncode}:\n{tail}")
    report = json.loads((out / "report.json").read_text())
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(f"prod pipeline ({selection or 'everything'}): {report['wall_seconds']} s, {report['summary']}")
    return report


@pytest.fixture(scope="module")
def prod_run(prod_env, simulated_app, tmp_path_factory):
    """Simulator files uploaded to the GCS landing bucket, then the whole graph with NEWSREC_ENV=prod."""
    from tests.emulators import upload_folder

    uploaded = upload_folder(simulated_app / "landing", LANDING_BUCKET, "datastream", PROJECT)
    report = run_prod_pipeline(tmp_path_factory.mktemp("prod_run"))
    report["uploaded_files"] = uploaded
    return report


def prod_settings():
    """The API's settings from the production environment alone (NEWSREC_ENV=prod and the
    variables the Dagster resources read)."""
    from serving.core.config import Settings

    settings = Settings(api_keys=[API_KEY])
    assert (settings.store_backend, settings.landing_kind) == ("redis", "gcs")
    return settings


def test_the_whole_graph_materialises_in_prod_with_bigquery_kinds(prod_run):
    assert prod_run["success"], f"failed steps: {prod_run['failed_steps']}"
    assert prod_run["checks"]["beats_popularity_on_test_window"]
    assert prod_run["checks"]["unique_view_events_event_id"]
    assert all(passed for passed in prod_run["checks"].values()), prod_run["checks"]
    assert prod_run["kinds"] == {
        "raw/cdc_user_article_views": ["bigquery"],
        "view_events": ["bigquery", "dbt"],
    }


def test_prod_counts_equal_the_local_profiles(prod_run, local_run):
    assert local_run["success"], local_run["failed_steps"]
    assert prod_run["summary"]["view_events_reconstructed"] > 0
    assert prod_run["summary"] == local_run["summary"]
    assert prod_run["summary"]["landing_files"] == prod_run["uploaded_files"]


def test_prod_api_serves_the_local_profiles_list_from_redis(prod_run, local_run, prod_env):
    from serving.main import create_app

    with TestClient(create_app(prod_settings())) as client:
        served = client.get(f"/v1/users/{FIXED_USER}/recommendations", params={"k": 50}).json()
    local = local_run["served"]
    assert served["provenance"]["layer"] == "batch"
    assert served["provenance"]["model_version"] == local["provenance"]["model_version"]
    assert [i["article_id"] for i in served["items"]] == [i["article_id"] for i in local["items"]]
    assert len(served["items"]) == 50


def test_raw_tables_are_partitioned_by_day_and_clustered_by_change_key(prod_run, prod_env):
    from tests.emulators import EmulatorBigQueryResource

    resource = EmulatorBigQueryResource(
        project=PROJECT, location="US", api_endpoint=prod_env["BIGQUERY_EMULATOR_HOST"]
    )
    with resource.get_client() as client:
        for table in ("cdc_articles", "cdc_user_article_views", "cdc_impressions"):
            stored = client.get_table(f"{PROJECT}.raw.{table}")
            assert stored.time_partitioning.type_ == "DAY"
            assert stored.time_partitioning.field == "source_timestamp"
            assert stored.clustering_fields == ["change_key"]


@pytest.fixture(scope="module")
def posted_view(prod_run, prod_env):
    """A view of the top article of a user's list, posted to the production API."""
    from newsrec_assets.defs.gcp_resources import build_gcp_resources
    from serving.main import create_app

    user = "u000002"
    with dg.build_resources({"landing": build_gcp_resources()["landing"]}) as built:
        cursor = max(built.landing.get().list_files("user_article_views/")).cursor
    with TestClient(create_app(prod_settings())) as client:
        clicked, viewed_at = post_view_of_top_article(client, user, API_KEY)
    return {"user": user, "article_id": clicked, "viewed_at": viewed_at, "cursor_before": cursor}


def test_a_posted_view_reaches_the_speed_list_in_prod(posted_view):
    from newsrec_assets.defs.gcp_resources import build_gcp_resources
    from newsrec_assets.defs.recommendations.speed import SPEED_RECOMMENDATIONS, speed_layer_sensor
    from serving.main import create_app

    resources = build_gcp_resources()
    with dg.DagsterInstance.get() as instance:
        with dg.build_sensor_context(instance=instance, resources=resources) as first_tick:
            first = speed_layer_sensor(first_tick)  # starts from the present
            assert not first.asset_events and "First tick" in first.skip_reason.skip_message
        cursor = posted_view["cursor_before"]
        with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as tick:
            result = speed_layer_sensor(tick)  # writes the list within the tick, in Redis
        assert isinstance(result, dg.SensorResult), result
        assert [event.asset_key for event in result.asset_events] == [SPEED_RECOMMENDATIONS]
    with TestClient(create_app(prod_settings())) as client:
        after = client.get(f"/v1/users/{posted_view['user']}/recommendations", params={"k": 50}).json()

    assert_speed_list_after_view(after, posted_view["article_id"], posted_view["viewed_at"])


def test_an_api_view_of_an_app_row_reaches_view_events_beside_its_views(prod_run, prod_env, tmp_path):
    """A view posted to the API of a (user, article) row that the app's stream also writes: after
    an incremental dbt build on BigQuery it is in view_events once, and the row's views are all
    still there."""
    from serving.main import create_app
    from tests.emulators import EmulatorBigQueryResource

    endpoint = prod_env["BIGQUERY_EMULATOR_HOST"]
    resource = EmulatorBigQueryResource(project=PROJECT, location="US", api_endpoint=endpoint)
    events = f"`{PROJECT}.newsrec.view_events`"
    with resource.get_client() as client:
        (row,) = client.query(
            f"select user_id, article_id, count(*) as views from {events} "
            "where event_id not like 'api|%' group by 1, 2 order by views desc, 1, 2 limit 1"
        ).result()
    with TestClient(create_app(prod_settings())) as client:
        posted = client.post(
            "/v1/events",
            headers={"X-API-Key": API_KEY},
            json={"user_id": row["user_id"], "article_id": row["article_id"]},
        )
    assert posted.status_code == 202, posted.text
    # view_events with what lies between it and the raw log, so the run orders dbt after ingestion
    after = run_prod_pipeline(tmp_path, "(group:ingestion and not key:api_exposures) or +key:view_events")

    assert after["success"], after["failed_steps"]
    with resource.get_client() as client:
        found = list(
            client.query(
                f"select event_id, view_number from {events} "
                f"where user_id = '{row['user_id']}' and article_id = '{row['article_id']}'"
            ).result()
        )
    api = [r for r in found if r["event_id"] == f"api|{posted.json()['event_id']}"]
    assert len(api) == 1 and api[0]["view_number"] is None
    assert len([r for r in found if not r["event_id"].startswith("api|")]) == row["views"]


def test_the_prod_instance_is_postgres_with_run_monitoring_retries_and_gcs_compute_logs(prod_run, prod_env):
    from dagster_gcp.gcs.compute_log_manager import GCSComputeLogManager
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
    from google.cloud import storage

    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert instance.run_monitoring_enabled
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert isinstance(instance.compute_log_manager, GCSComputeLogManager)
        # The single-host launcher with a worker health check (run monitoring needs one); its
        # module comes with the reliability work, and nothing here launches a run through it.
        launcher = instance.get_ref().run_launcher_data
        assert (launcher.module_name, launcher.class_name) == (
            "newsrec_assets.run_launcher",
            "MonitoredRunLauncher",
        )
        assert instance.get_run_by_id(prod_run["run_id"]).is_success
    logs = [blob.name for blob in storage.Client(project=PROJECT).list_blobs(LOG_BUCKET)]
    assert any(prod_run["run_id"] in name for name in logs), logs[:5]


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    import httpx

    response = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


@pytest.fixture(scope="module")
def prod_webserver(prod_run, prod_env, tmp_path_factory):
    """dagster-webserver on the prod definitions and instance, with a Redis URL that has a password."""
    import httpx

    port = free_port()
    log = tmp_path_factory.mktemp("webserver") / "webserver.log"
    env = {**os.environ, "NEWSREC_REDIS_URL": f"redis://:{SECRET}@127.0.0.1:6379/0"}
    command = [str(Path(sys.executable).parent / "dagster-webserver"), "-m", "newsrec_assets.definitions"]
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [*command, "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=output,
            stderr=output,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dagster-webserver did not start:\n{log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_graphql_shows_prod_run_and_resource_config_without_secret_values(prod_webserver):
    workspace = graphql(
        prod_webserver,
        """{ workspaceOrError { ... on Workspace { locationEntries { name
             locationOrLoadError { __typename ... on RepositoryLocation { repositories { name } }
                                   ... on PythonError { message } } } } } }""",
    )
    (entry,) = workspace["workspaceOrError"]["locationEntries"]
    assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry
    selector = {
        "repositoryLocationName": entry["name"],
        "repositoryName": entry["locationOrLoadError"]["repositories"][0]["name"],
    }
    runs = graphql(
        prod_webserver,
        "{ runsOrError { ... on Runs { results { runId status runConfigYaml tags { key value } } } } }",
    )
    resources = graphql(
        prod_webserver,
        """query Resources($selector: RepositorySelector!) {
             allTopLevelResourceDetailsOrError(repositorySelector: $selector) {
               __typename ... on ResourceDetailsList { results { name configuredValues { key value type } } }
               ... on PythonError { message } } }""",
        {"selector": selector},
    )
    env_vars = graphql(
        prod_webserver,
        """query EnvVars($selector: RepositorySelector!) {
             utilizedEnvVarsOrError(repositorySelector: $selector) {
               ... on EnvVarWithConsumersList { results { envVarName } } } }""",
        {"selector": selector},
    )

    results = runs["runsOrError"]["results"]
    assert any("naml_model" in run["runConfigYaml"] for run in results)  # the prod pipeline's run
    details = {r["name"]: r for r in resources["allTopLevelResourceDetailsOrError"]["results"]}
    redis_url = next(v for v in details["online_store"]["configuredValues"] if v["key"] == "redis_url")
    assert redis_url == {"key": "redis_url", "value": "NEWSREC_REDIS_URL", "type": "ENV_VAR"}
    bucket = next(v for v in details["landing"]["configuredValues"] if v["key"] == "bucket")
    assert bucket["type"] == "ENV_VAR"
    assert "NEWSREC_REDIS_URL" in {v["envVarName"] for v in env_vars["utilizedEnvVarsOrError"]["results"]}
    for answer in (workspace, runs, resources, env_vars):
        assert SECRET not in json.dumps(answer)
