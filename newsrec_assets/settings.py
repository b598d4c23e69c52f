"""The one place that decides the environment (local or production) and where things live.

Everything else asks this module; no `if prod:` elsewhere. Nothing here imports dagster, so the
CLI, the API and the domain tests can use it too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Environment = Literal["local", "prod"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
# The Dagster instance settings each environment starts from (copied into DAGSTER_HOME).
DAGSTER_INSTANCE_TEMPLATES = {
    "local": REPO_ROOT / "deploy" / "dagster.local.yaml",
    "prod": REPO_ROOT / "deploy" / "dagster.yaml",
}


def get_environment() -> Environment:
    """`NEWSREC_ENV`: `local` (embedded default: DuckDB, folders, SQLite) or `prod` (GCP)."""
    environment = os.getenv("NEWSREC_ENV", "local")
    if environment not in ("local", "prod"):
        raise ValueError(f"NEWSREC_ENV must be 'local' or 'prod', not {environment!r}")
    return environment  # type: ignore[return-value]


def batch_shards() -> int:
    """`NEWSREC_BATCH_SHARDS` (default 2): how many user shards the batch layer ranks separately.

    Read when the definitions load (it sizes the shards' partition set); see docs/scaling.md.
    """
    shards = int(os.getenv("NEWSREC_BATCH_SHARDS", "2"))
    if shards < 1:
        raise ValueError(f"NEWSREC_BATCH_SHARDS must be at least 1, not {shards}")
    return shards


def warehouse_kind() -> Literal["duckdb", "bigquery"]:
    """What the warehouse is in this environment (the kind its assets show in the UI)."""
    return "bigquery" if get_environment() == "prod" else "duckdb"


def online_store_kind() -> Literal["sqlite", "redis"]:
    """What the online store is in this environment (the kind its assets show in the UI)."""
    return "redis" if get_environment() == "prod" else "sqlite"


@dataclass(frozen=True)
class LocalPaths:
    """Where the embedded default keeps its state: one folder, `NEWSREC_HOME` (default `./var`)."""

    home: Path

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def artifacts(self) -> Path:
        return self.home / "artifacts"

    @property
    def online_store(self) -> Path:
        return self.home / "online_store.sqlite"

    @property
    def ground_truth(self) -> Path:
        return self.home / "ground_truth"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster_home"


def local_paths() -> LocalPaths:
    return LocalPaths(home=Path(os.getenv("NEWSREC_HOME", REPO_ROOT / "var")).resolve())


# ---- serving (the HTTP API): what the environment decides for it ------------------------------
# The API reads its own `NEWSREC_*` settings (serving/core/config.py); these are the defaults that
# depend on the environment, with the same stores and landing zone as the Dagster resources.


@dataclass(frozen=True)
class ServingProfile:
    store_backend: Literal["sqlite", "redis"]
    landing_kind: Literal["local", "gcs"]
    api_docs: bool  # /docs, /redoc and /openapi.json: on in the local demo, off in production


def serving_profile() -> ServingProfile:
    if get_environment() == "prod":
        return ServingProfile(store_backend="redis", landing_kind="gcs", api_docs=False)
    return ServingProfile(store_backend="sqlite", landing_kind="local", api_docs=True)


# ---- end of serving ---------------------------------------------------------------------------
# ---- Production (GCP) settings ------------------------------------------------------------------
# Read by the Dagster resources (as `dg.EnvVar`s naming these variables, resolved in each run's
# process, so no value appears in any config the UI shows) and by the API. Defaults serve the
# optional ones; the required ones have none.


@dataclass(frozen=True)
class ProdSetting:
    """One production setting: its environment variable and, if optional, its default."""

    env_var: str
    default: str | None = None


PROD_SETTINGS: dict[str, ProdSetting] = {
    "gcp_project": ProdSetting("NEWSREC_GCP_PROJECT"),
    "bq_location": ProdSetting("NEWSREC_BQ_LOCATION", "US"),
    "bq_dataset": ProdSetting("NEWSREC_BQ_DATASET", "newsrec"),  # dbt's marts
    "raw_dataset": ProdSetting("NEWSREC_RAW_SCHEMA", "raw"),  # ingestion's raw CDC log (dbt's source)
    "embeddings_dataset": ProdSetting("NEWSREC_EMBEDDINGS_DATASET", "embeddings"),
    "landing_bucket": ProdSetting("NEWSREC_LANDING_BUCKET"),
    "landing_prefix": ProdSetting("NEWSREC_LANDING_PREFIX", "datastream"),
    "artifact_bucket": ProdSetting("NEWSREC_ARTIFACT_BUCKET"),
    "artifact_prefix": ProdSetting("NEWSREC_ARTIFACT_PREFIX", "artifacts"),
    "redis_url": ProdSetting("NEWSREC_REDIS_URL"),  # may carry a password
    "redis_prefix": ProdSetting("NEWSREC_REDIS_PREFIX", "newsrec"),
}


def missing_prod_settings() -> list[str]:
    """The required production variables that are not set (what `NEWSREC_ENV=prod` needs first)."""
    return [s.env_var for s in PROD_SETTINGS.values() if s.default is None and not os.getenv(s.env_var)]
