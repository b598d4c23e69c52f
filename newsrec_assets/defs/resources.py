"""Dagster resources: thin configurable wrappers that hand the ports' adapters to the assets.

`build_resources()` is the one place that picks them for the environment; the assets only see the
ports (LandingZone, Warehouse, ...), so swapping the embedded default for GCP is configuration.
Each port has one resource class the assets name (the embedded default here) and a production
subclass built on dagster-gcp (`gcp_resources`).
"""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field

from newsrec_assets.domain.cdc import DEFAULT_LIMITS, RecordLimits
from newsrec_assets.resources.artifacts import ArtifactStore, LocalArtifactStore
from newsrec_assets.resources.landing import DEFAULT_LATE_FILE_DAYS, LandingZone, LocalLandingZone
from newsrec_assets.resources.online_store.base import ArticleCache, ListStore
from newsrec_assets.resources.warehouse import DuckDBWarehouse, Warehouse
from newsrec_assets.settings import Environment, local_paths


class LandingZoneResource(dg.ConfigurableResource):
    """Where CDC change-record files land: a local folder (the embedded default)."""

    root: str = ""
    late_file_days: int = DEFAULT_LATE_FILE_DAYS

    def get(self) -> LandingZone:
        return LocalLandingZone(self.root or local_paths().landing, late_file_days=self.late_file_days)


class WarehouseResource(dg.ConfigurableResource):
    """The analytical warehouse: the embedded DuckDB file (one writing process at a time)."""

    duckdb_path: str = ""
    max_view_count: int = Field(
        default=DEFAULT_LIMITS.max_view_count,
        description="Ingestion quarantines a view_count above this as implausible (a corrupt counter).",
    )

    def get(self, read_only: bool = False) -> Warehouse:
        limits = RecordLimits(max_view_count=self.max_view_count)
        return DuckDBWarehouse(self.duckdb_path or local_paths().warehouse, read_only, limits)


class ArtifactStoreResource(dg.ConfigurableResource):
    """Versioned model artifacts: a local folder (the embedded default)."""

    root: str = ""

    def get(self) -> ArtifactStore:
        return LocalArtifactStore(self.root or local_paths().artifacts)


class OnlineStoreResource(dg.ConfigurableResource):
    """Where the served lists and the article cache live: SQLite in WAL mode (embedded) or Redis.

    `lists()` also holds the speed layer's recent clicks, so production keeps none of its state
    on a local disk.
    """

    kind: Literal["sqlite", "redis"] = "sqlite"
    sqlite_path: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "newsrec"

    def lists(self) -> ListStore:
        """The list store, cleared of what a publish that died before its flip had staged."""
        if self.kind == "redis":
            from newsrec_assets.resources.online_store.redis import RedisListStore

            store: ListStore = RedisListStore(self.redis_url, prefix=self.redis_prefix)
        else:
            from newsrec_assets.resources.online_store.sqlite import SQLiteListStore

            store = SQLiteListStore(self.sqlite_path or local_paths().online_store)
        store.clean_abandoned()
        return store

    def articles(self) -> ArticleCache:
        if self.kind == "redis":
            from newsrec_assets.resources.online_store.redis import RedisArticleCache

            return RedisArticleCache(self.redis_url, prefix=self.redis_prefix)
        from newsrec_assets.resources.online_store.sqlite import SQLiteArticleCache

        return SQLiteArticleCache(self.sqlite_path or local_paths().online_store)


def build_resources(environment: Environment) -> dict[str, dg.ConfigurableResource]:
    """The resources for one environment; the only place that knows the difference.

    dbt's resource is added by the main code location only (see `features.dbt.dbt_resource`), so
    the light speed-layer location never imports dbt.
    """
    if environment == "prod":
        # dagster-gcp imports google-cloud-bigquery and pandas (seconds): only production pays.
        from newsrec_assets.defs.gcp_resources import build_gcp_resources

        return build_gcp_resources()
    paths = local_paths()
    return {
        "landing": LandingZoneResource(root=str(paths.landing)),
        "warehouse": WarehouseResource(duckdb_path=str(paths.warehouse)),
        "artifacts": ArtifactStoreResource(root=str(paths.artifacts)),
        "online_store": OnlineStoreResource(kind="sqlite", sqlite_path=str(paths.online_store)),
    }


def build_executor(environment: Environment) -> dg.ExecutorDefinition:
    """How a run's steps execute, by environment (the prod settings alone choose Kubernetes).

    Locally: the multiprocess executor, two processes on the demo's two cores. In production every
    step is its own Kubernetes job (dagster-k8s), so each batch shard gets a pod sized for one
    shard (docs/scaling.md) and the shards of a cycle run side by side on spot nodes.
    """
    if environment == "prod":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    return dg.multiprocess_executor.configured({"max_concurrent": 2}, name="local_multiprocess")
