"""Dagster resources: thin configurable wrappers that hand the ports' adapters to the assets.

`build_resources()` is the one place that picks them for the environment; the assets only see the
ports (LandingZone, Warehouse, ...), so swapping the embedded default for GCP is configuration.
Each port has one resource class the assets name (the embedded default here) and a production
subclass built on dagster-gcp (`gcp_resources`).
"""

from __future__ import annotations

from typing import Literal

import dagster as dg

from newsrec_assets.resources.artifacts import ArtifactStore, LocalArtifactStore
from newsrec_assets.resources.landing import DEFAULT_LATE_FILE_DAYS, LandingZone, LocalLandingZone
from newsrec_assets.resources.online_store.base import OnlineStore
from newsrec_assets.resources.recent_clicks import RecentClicks, SQLiteRecentClicks
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

    def get(self, read_only: bool = False) -> Warehouse:
        return DuckDBWarehouse(self.duckdb_path or local_paths().warehouse, read_only=read_only)


class ArtifactStoreResource(dg.ConfigurableResource):
    """Versioned model artifacts: a local folder (the embedded default)."""

    root: str = ""

    def get(self) -> ArtifactStore:
        return LocalArtifactStore(self.root or local_paths().artifacts)


class OnlineStoreResource(dg.ConfigurableResource):
    """Where the served lists live: SQLite in WAL mode (embedded) or Redis (networked)."""

    kind: Literal["sqlite", "redis"] = "sqlite"
    sqlite_path: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "newsrec"

    def get(self) -> OnlineStore:
        from newsrec_assets.resources.online_store import RedisOnlineStore, SQLiteOnlineStore

        if self.kind == "redis":
            return RedisOnlineStore(self.redis_url, prefix=self.redis_prefix)
        return SQLiteOnlineStore(self.sqlite_path or local_paths().online_store)


class SpeedStateResource(dg.ConfigurableResource):
    """The speed layer's own small state: clicks that arrived since the last batch publish."""

    sqlite_path: str = ""

    def get(self) -> RecentClicks:
        return SQLiteRecentClicks(self.sqlite_path or local_paths().home / "speed_state.sqlite")


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
        "speed_state": SpeedStateResource(sqlite_path=str(paths.home / "speed_state.sqlite")),
    }
