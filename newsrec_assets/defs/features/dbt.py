"""dbt feature transforms as Dagster assets; dbt tests appear as asset checks.

One `DbtProject` per target, each with its own `target_path` (`target/local`, `target/prod`), so
each environment loads the manifest parsed for its own adapter and never another's: the assets'
kinds (duckdb, bigquery) come from it. Deployments prepare both with
`dagster-dbt project prepare-and-package --file newsrec_assets/defs/features/dbt.py`; elsewhere a
manifest that is missing or older than the project's files (a checkout that changed a model) is
parsed on load. Not `prepare_if_dev`: under `dagster dev` it parses in every process that loads the
definitions, every run worker included, and concurrent run starts then timed out on the
manifest's lock and failed.
"""

import os
import sys
from collections.abc import Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from newsrec_assets.defs.ingestion.assets import TRANSIENT_FAILURE_RETRIES, WAREHOUSE_WRITER_POOL
from newsrec_assets.resources.warehouse import RAW_SCHEMA
from newsrec_assets.settings import DBT_PROJECT_DIR, Environment, get_environment, local_paths

GROUP = "features"


# The dbt next to this interpreter: a venv's bin/ is not always on PATH (e.g. under a daemon).
DBT_EXECUTABLE = str(Path(sys.executable).parent / "dbt")
# dbt's exit code when it ran and some model or test failed (2: it could not run at all).
DBT_EXIT_NODE_FAILURE = 1


@contextmanager
def venv_dbt_on_path():
    """dagster-dbt's preparer runs `dbt` from PATH: put this interpreter's bin/ first meanwhile."""
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{Path(DBT_EXECUTABLE).parent}{os.pathsep}{path}"
    try:
        yield
    finally:
        os.environ["PATH"] = path


def target_project(target: Environment) -> DbtProject:
    return DbtProject(
        project_dir=DBT_PROJECT_DIR,
        target=target,
        target_path=Path("target") / target,
    )


# Module-level, so that `dagster-dbt project prepare-and-package --file <this file>` finds both.
local_dbt_project = target_project("local")
prod_dbt_project = target_project("prod")


def manifest_is_stale(project: DbtProject) -> bool:
    """The manifest is missing, or a model, macro, test or project file changed after it was parsed."""
    if not project.manifest_path.exists():
        return True
    parsed_at = project.manifest_path.stat().st_mtime
    project_dir = Path(project.project_dir)
    sources = [project_dir / "dbt_project.yml", project_dir / "profiles.yml"]
    for folder in ("models", "macros", "tests"):
        sources += (project_dir / folder).rglob("*")
    return any(path.is_file() and path.stat().st_mtime > parsed_at for path in sources)


@cache
def dbt_project() -> DbtProject:
    """The dbt project of this environment, its manifest parsed if missing or stale."""
    project = prod_dbt_project if get_environment() == "prod" else local_dbt_project
    if manifest_is_stale(project):
        with venv_dbt_on_path():
            project.preparer.prepare(project)
    return project


def dbt_resource() -> DbtCliResource:
    """The dbt CLI; the `local` profile reads the DuckDB file from NEWSREC_DUCKDB_PATH."""
    project = dbt_project()
    if get_environment() == "local":
        # dbt runs as a subprocess that inherits the environment; this is how its profile learns the path.
        os.environ.setdefault("NEWSREC_DUCKDB_PATH", str(local_paths().warehouse))
    # dagster-dbt puts each run's folder under DBT_TARGET_PATH and starts it from the partial parse
    # found there: this target's, never another's.
    os.environ["DBT_TARGET_PATH"] = str(project.project_dir / project.target_path)
    return DbtCliResource(project_dir=project, dbt_executable=DBT_EXECUTABLE)


class NewsrecDbtTranslator(DagsterDbtTranslator):
    """Sources map onto the ingestion assets' keys; models join the `features` group."""

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None):
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] == "source":
            return spec.replace_attributes(key=dg.AssetKey([RAW_SCHEMA, props["name"]]))
        return spec.replace_attributes(group_name=GROUP)


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
