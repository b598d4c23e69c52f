"""dbt feature transforms as Dagster assets; dbt tests appear as asset checks."""

import os
import subprocess
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from dagster_dbt.dbt_project import using_dagster_dev

from newsrec_assets.defs.automation import batch_automation_condition
from newsrec_assets.defs.ingestion.assets import TRANSIENT_FAILURE_RETRIES, WAREHOUSE_WRITER_POOL
from newsrec_assets.resources.warehouse import RAW_SCHEMA
from newsrec_assets.settings import DBT_PROJECT_DIR, get_environment, local_paths

GROUP = "features"


# The dbt next to this interpreter: a venv's bin/ is not always on PATH (e.g. under a daemon).
DBT_EXECUTABLE = str(Path(sys.executable).parent / "dbt")
# dbt's exit code when it ran and some model or test failed (2: it could not run at all).
DBT_EXIT_NODE_FAILURE = 1


@cache
def dbt_project() -> DbtProject:
    """The dbt project for this environment; parsed under `dagster dev` or when never parsed."""
    project = DbtProject(project_dir=DBT_PROJECT_DIR, target=get_environment())
    if using_dagster_dev() or not project.manifest_path.exists():
        subprocess.run(
            [DBT_EXECUTABLE, "parse", "--quiet", "--target", project.target or "local"],
            cwd=project.project_dir,
            check=True,
            env={**os.environ, "DBT_PROFILES_DIR": str(project.profiles_dir)},
        )
    return project


def dbt_resource() -> DbtCliResource:
    """The dbt CLI; the `local` profile reads the DuckDB file from NEWSREC_DUCKDB_PATH."""
    if get_environment() == "local":
        # dbt runs as a subprocess that inherits the environment; this is how its profile learns the path.
        os.environ.setdefault("NEWSREC_DUCKDB_PATH", str(local_paths().warehouse))
    return DbtCliResource(project_dir=dbt_project(), dbt_executable=DBT_EXECUTABLE)


class NewsrecDbtTranslator(DagsterDbtTranslator):
    """Sources map onto the ingestion assets' keys; models join the `features` group and the batch."""

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None):
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] == "source":
            return spec.replace_attributes(key=dg.AssetKey([RAW_SCHEMA, props["name"]]))
        return spec.replace_attributes(group_name=GROUP, automation_condition=batch_automation_condition())


@dbt_assets(
    manifest=dbt_project().manifest_path,
    project=dbt_project(),
    dagster_dbt_translator=NewsrecDbtTranslator(),
    pool=WAREHOUSE_WRITER_POOL,
    retry_policy=TRANSIENT_FAILURE_RETRIES,
)
def newsrec_dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    """Staging, intermediate and mart models built by `dbt build` (models, then their tests).

    The build is idempotent, so a failure dbt could not handle (exit code 2: the warehouse's file
    lock held, a lost connection) is retried; a model or test that failed (exit code 1) fails the
    step for good, since the same data would fail the same way.
    """
    invocation = dbt.cli(["build"], context=context, raise_on_error=False)
    yield from invocation.stream()
    if not invocation.is_successful():
        raise dg.Failure(
            description=str(invocation.get_error()),
            allow_retries=invocation.process.returncode != DBT_EXIT_NODE_FAILURE,
        )
