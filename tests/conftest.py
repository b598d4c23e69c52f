"""Shared fixtures: builders of change records and landing zones, and real-service probes."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from newsrec_assets.domain.cdc import ChangeRecord

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def service_reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def make_record() -> Callable[..., ChangeRecord]:
    """Builds change records with a shared, monotonically increasing binlog position."""
    positions = itertools.count(1000)

    def build(table: str, change_type: str, payload: dict, at: datetime, **overrides) -> ChangeRecord:
        return ChangeRecord(
            table=table,
            change_type=change_type,
            payload=payload,
            source_timestamp=at,
            read_timestamp=at + timedelta(seconds=2),
            log_file="mysql-bin.000001",
            log_position=next(positions),
            **overrides,
        )

    return build


@pytest.fixture(scope="session")
def storage_emulator(tmp_path_factory) -> Iterator[str]:
    """A Cloud Storage emulator for this session; its `STORAGE_EMULATOR_HOST` value."""
    from tests.emulators import EmulatorUnavailable, running_emulator

    try:
        with running_emulator("storage.py", tmp_path_factory.mktemp("gcs_emulator")) as emulator:
            yield emulator.endpoint["host"]
    except EmulatorUnavailable as error:
        pytest.skip(f"the GCS emulator cannot start: {error}")


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory) -> Iterator[str]:
    """A BigQuery emulator for this session; its REST endpoint (`BIGQUERY_EMULATOR_HOST`)."""
    from tests.emulators import EmulatorUnavailable, running_emulator

    try:
        with running_emulator("bigquery.py", tmp_path_factory.mktemp("bq_emulator")) as emulator:
            yield emulator.endpoint["rest"]
    except EmulatorUnavailable as error:
        pytest.skip(f"the BigQuery emulator cannot start: {error}")
