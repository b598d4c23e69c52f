"""The production definitions load without any production setting present: resources hold the
variables' names (resolved in each run), every warehouse-facing asset shows BigQuery, and the
steps run as Kubernetes jobs (dagster-k8s)."""

import json
import os
import subprocess
import sys

from newsrec_assets.settings import PROD_SETTINGS, REPO_ROOT

PROBE = """
import json
import dagster as dg
from newsrec_assets.definitions import defs
graph = defs.resolve_asset_graph()
kinds = {key.to_user_string(): sorted(graph.get(key).kinds) for key in graph.get_all_asset_keys()
         if not graph.get(key).is_external}
landing = defs.resources["landing"]
online = defs.resources["online_store"]
print(json.dumps({
    "kinds": kinds,
    "landing": type(landing).__name__,
    "bucket_is_env_var": isinstance(landing.bucket, dg.EnvVar),
    "redis_url": [type(online.redis_url).__name__, online.redis_url.env_var_name],
    "warehouse": type(defs.resources["warehouse"]).__name__,
    "executor": defs.executor.name,
}))
"""


def test_prod_definitions_load_unresolved_with_bigquery_kinds(tmp_path):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSREC_", "DBT_"))}
    environment |= {"NEWSREC_ENV": "prod", "NEWSREC_HOME": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    assert not any(setting.env_var in environment for setting in PROD_SETTINGS.values())
    completed = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO_ROOT, env=environment, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    loaded = json.loads(completed.stdout.strip().splitlines()[-1])

    assert loaded["landing"] == "GCSLandingZoneResource" and loaded["bucket_is_env_var"]
    assert loaded["warehouse"] == "BigQueryWarehouseResource"
    assert loaded["redis_url"] == ["EnvVar", "NEWSREC_REDIS_URL"]
    kinds = loaded["kinds"]
    assert "bigquery" in kinds["raw/cdc_user_article_views"] and "bigquery" in kinds["view_events"]
    assert "bigquery" in kinds["article_embeddings"]
    assert "redis" in kinds["batch_recommendations"] and "redis" in kinds["batch_shard_lists"]
    assert loaded["executor"] == "k8s"  # each shard a Kubernetes job, chosen by the prod settings alone
    assert not [key for key, kind in kinds.items() if "duckdb" in kind or "sqlite" in kind]
