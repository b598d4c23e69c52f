"""The fault suite's speed-layer code location: the real speed sensor, with a place to be killed.

Loaded by the crash suite's Dagster daemon (tests/faults/harness.py). Resources are the local
profile's, under NEWSREC_HOME, except that the online store stops once, inside a sensor tick,
right after the tick's first list is written, until the test kills the daemon and the code server
evaluating the tick (the marker file lives in NEWSREC_FAULTS_DIR).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg

from newsrec_assets.defs.recommendations.speed import speed_layer_sensor, speed_recommendations
from newsrec_assets.defs.resources import ArtifactStoreResource, LandingZoneResource, OnlineStoreResource
from newsrec_assets.settings import local_paths

SPEED_PAUSED_MARKER = "speed-paused"  # written (with the code server's pid) when the tick stops
PAUSE_LIMIT_SECONDS = 300  # a test that never kills does not leave a tick behind forever


class StoppingOnlineStoreResource(OnlineStoreResource):
    """The SQLite online store; once, the tick stops after its first list write."""

    faults_dir: str

    def lists(self):
        store = super().lists()
        write = store.put_recommendations
        marker = Path(self.faults_dir) / SPEED_PAUSED_MARKER

        def write_then_stop(record):
            result = write(record)
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                deadline = time.monotonic() + PAUSE_LIMIT_SECONDS
                while time.monotonic() < deadline:
                    time.sleep(0.2)
            return result

        store.put_recommendations = write_then_stop
        return store


paths = local_paths()
defs = dg.Definitions(
    assets=[speed_recommendations],
    sensors=[speed_layer_sensor],
    resources={
        "landing": LandingZoneResource(root=str(paths.landing)),
        "artifacts": ArtifactStoreResource(root=str(paths.artifacts)),
        "online_store": StoppingOnlineStoreResource(
            sqlite_path=str(paths.online_store),
            faults_dir=os.environ.get("NEWSREC_FAULTS_DIR", str(paths.home)),
        ),
    },
)
