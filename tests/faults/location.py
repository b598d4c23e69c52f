"""The fault suite's code location: the real ingestion and dbt assets, with a place to be killed.

Loaded by the fault suite's Dagster daemon and run workers (tests/faults/harness.py). Resources
are the local profile's, under NEWSREC_HOME, with two changes that make a kill land mid-step:
ingestion commits file by file (so a kill falls between committed and uncommitted files), and
the landing zone can stop once, inside the step, before reading a chosen file, until the test
kills the run (the marker files live in NEWSREC_FAULTS_DIR).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from newsrec_assets.defs.features.dbt import dbt_resource, newsrec_dbt_models
from newsrec_assets.defs.ingestion.assets import raw_cdc_log
from newsrec_assets.defs.resources import LandingZoneResource, WarehouseResource
from newsrec_assets.resources.landing import LandingFile, LandingZone
from newsrec_assets.resources.warehouse import DuckDBWarehouse, Warehouse
from newsrec_assets.settings import local_paths

PAUSED_MARKER = "paused"  # written (with the worker's pid) when the step stops
PAUSE_LIMIT_SECONDS = 300  # a test that never kills does not leave a worker behind forever


class StoppingLandingZone(LandingZone):
    """A landing zone that stops once, mid-ingestion, before reading its `stop_before`-th file."""

    def __init__(self, zone: LandingZone, faults_dir: Path, stop_before: int):
        self.zone, self.faults_dir, self.stop_before, self.reads = zone, faults_dir, stop_before, 0

    def list_files(self, prefix: str = "") -> Iterator[LandingFile]:
        return self.zone.list_files(prefix)

    def write_file(self, path: str, content: bytes) -> None:
        self.zone.write_file(path, content)

    def tables(self, prefix: str = "") -> list[str]:
        return self.zone.tables(prefix)

    def list_partitions_from(self, table_prefix: str, first_partition: str) -> Iterator[LandingFile]:
        return self.zone.list_partitions_from(table_prefix, first_partition)

    def read_bytes(self, path: str) -> bytes:
        self.reads += 1
        marker = self.faults_dir / PAUSED_MARKER
        if self.reads == self.stop_before and not marker.exists():
            marker.write_text(str(os.getpid()))
            deadline = time.monotonic() + PAUSE_LIMIT_SECONDS
            while time.monotonic() < deadline:
                time.sleep(0.2)
        return self.zone.read_bytes(path)


class StoppingLandingZoneResource(LandingZoneResource):
    faults_dir: str
    stop_before_read: int = 3

    def get(self) -> LandingZone:
        return StoppingLandingZone(super().get(), Path(self.faults_dir), self.stop_before_read)


class FileByFileWarehouse(DuckDBWarehouse):
    def ingest(self, landing, files=None, **options):
        return super().ingest(landing, files, **(options | {"records_per_transaction": 1}))


class FileByFileWarehouseResource(WarehouseResource):
    def get(self, read_only: bool = False) -> Warehouse:
        return FileByFileWarehouse(self.duckdb_path or local_paths().warehouse, read_only)


paths = local_paths()
defs = dg.Definitions(
    assets=[raw_cdc_log, newsrec_dbt_models],
    jobs=[
        dg.define_asset_job("ingest", selection=dg.AssetSelection.assets(raw_cdc_log)),
        dg.define_asset_job("features", selection=dg.AssetSelection.assets(newsrec_dbt_models)),
    ],
    resources={
        "landing": StoppingLandingZoneResource(
            root=str(paths.landing), faults_dir=os.environ.get("NEWSREC_FAULTS_DIR", str(paths.home))
        ),
        "warehouse": FileByFileWarehouseResource(duckdb_path=str(paths.warehouse)),
        "dbt": dbt_resource(),
    },
    executor=dg.in_process_executor,
)
