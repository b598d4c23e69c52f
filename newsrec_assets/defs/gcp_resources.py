"""Production resources on dagster-gcp: GCS landing zone and artifacts, BigQuery warehouse.

Subclasses of the resources the assets name (`defs.resources`), so the asset code is the same on
both profiles. Settings are passed as `dg.EnvVar`s, never as values: Dagster resolves them in
each run's process, and the UI and every run's config show only the variable's name.
"""

from __future__ import annotations

import os

import dagster as dg
from dagster_gcp import BigQueryResource, GCSResource

from newsrec_assets.defs.resources import (
    ArtifactStoreResource,
    LandingZoneResource,
    OnlineStoreResource,
    WarehouseResource,
)
from newsrec_assets.domain.cdc import RecordLimits
from newsrec_assets.resources.artifacts import ArtifactStore, GCSArtifactStore
from newsrec_assets.resources.landing import GCSLandingZone, LandingZone
from newsrec_assets.resources.warehouse import Warehouse
from newsrec_assets.settings import PROD_SETTINGS


class GCSLandingZoneResource(LandingZoneResource):
    """The production landing zone: the GCS prefix that Datastream writes to."""

    gcs: GCSResource
    bucket: str
    prefix: str = "datastream"

    def get(self) -> LandingZone:
        return GCSLandingZone(
            self.bucket, self.prefix, client=self.gcs.get_client(), late_file_days=self.late_file_days
        )


class BigQueryWarehouseResource(WarehouseResource):
    """The production warehouse: BigQuery datasets (raw CDC log, dbt marts, article vectors)."""

    bigquery: BigQueryResource
    marts_dataset: str = "newsrec"
    raw_dataset: str = "raw"
    embeddings_dataset: str = "embeddings"

    def get(self, read_only: bool = False) -> Warehouse:
        from newsrec_assets.resources.bigquery_warehouse import BigQueryWarehouse

        # The client outlives the context: it holds its credentials once built.
        with self.bigquery.get_client() as client:
            return BigQueryWarehouse(
                client,
                marts_dataset=self.marts_dataset,
                raw_dataset=self.raw_dataset,
                embeddings_dataset=self.embeddings_dataset,
                location=self.bigquery.location,
                limits=RecordLimits(max_view_count=self.max_view_count),
            )


class GCSArtifactStoreResource(ArtifactStoreResource):
    """Versioned model artifacts under a GCS bucket prefix."""

    gcs: GCSResource
    bucket: str
    prefix: str = "artifacts"

    def get(self) -> ArtifactStore:
        return GCSArtifactStore(self.bucket, self.prefix, client=self.gcs.get_client())


def prod_setting(name: str) -> str | dg.EnvVar:
    """A production setting as Dagster config: the variable's name, or the default where the
    variable is unset and the setting optional (only its presence is looked at, never its value)."""
    setting = PROD_SETTINGS[name]
    if setting.default is not None and os.getenv(setting.env_var) is None:
        return setting.default
    return dg.EnvVar(setting.env_var)


def build_gcp_resources(bigquery: BigQueryResource | None = None) -> dict[str, dg.ConfigurableResource]:
    """The production profile's resources (`NEWSREC_ENV=prod`); `bigquery` replaces the BigQuery
    client's resource (the tests point it at an emulator)."""
    gcs = GCSResource(project=prod_setting("gcp_project"))
    return {
        "landing": GCSLandingZoneResource(
            gcs=gcs, bucket=prod_setting("landing_bucket"), prefix=prod_setting("landing_prefix")
        ),
        "warehouse": BigQueryWarehouseResource(
            bigquery=bigquery
            or BigQueryResource(project=prod_setting("gcp_project"), location=prod_setting("bq_location")),
            marts_dataset=prod_setting("bq_dataset"),
            raw_dataset=prod_setting("raw_dataset"),
            embeddings_dataset=prod_setting("embeddings_dataset"),
        ),
        "online_store": OnlineStoreResource(
            kind="redis", redis_url=prod_setting("redis_url"), redis_prefix=prod_setting("redis_prefix")
        ),
        "artifacts": GCSArtifactStoreResource(
            gcs=gcs, bucket=prod_setting("artifact_bucket"), prefix=prod_setting("artifact_prefix")
        ),
    }
