"""Shared fixtures: builders of change records and landing zones, and real-service probes."""

from __future__ import annotations

import itertools
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


POSTGRES = {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USERNAME": "postgres"}


@contextmanager
def fresh_postgres_database(prefix: str) -> Iterator[dict[str, str]]:
    """A new PostgreSQL database on the machine's server, dropped afterwards; the prod Dagster
    instance's `DAGSTER_PG_*` variables that point at it. Skips when no server is reachable."""
    if not service_reachable(POSTGRES["DAGSTER_PG_HOST"], int(POSTGRES["DAGSTER_PG_PORT"])):
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'create database "{name}"')
        yield {**POSTGRES, "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": name}
        with admin.cursor() as cursor:
            cursor.execute(f'drop database if exists "{name}" with (force)')
    finally:
        admin.close()


def first_view_record(user_id: str, article_id: str, viewed_at: datetime, log_position: int) -> ChangeRecord:
    """A user's first view of an article, as the app's CDC stream lands it (`user_article_views` INSERT)."""
    return ChangeRecord(
        table="user_article_views",
        change_type="INSERT",
        payload={
            "user_id": user_id,
            "article_id": article_id,
            "view_count": 1,
            "first_viewed_at": viewed_at,
            "last_viewed_at": viewed_at,
            "last_impression_id": None,
        },
        source_timestamp=viewed_at,
        read_timestamp=viewed_at,
        log_file="mysql-bin.000001",
        log_position=log_position,
    )


def post_view_of_top_article(client, user_id: str, api_key: str) -> tuple[str, datetime]:
    """POST /v1/events: `user_id` viewed the top article of their served list a second from now.
    Returns the article and the view's time."""
    before = client.get(f"/v1/users/{user_id}/recommendations", params={"k": 50}).json()
    clicked = before["items"][0]["article_id"]
    viewed_at = datetime.now(UTC) + timedelta(seconds=1)
    posted = client.post(
        "/v1/events",
        headers={"X-API-Key": api_key},
        json={"user_id": user_id, "article_id": clicked, "viewed_at": viewed_at.isoformat()},
    )
    assert posted.status_code == 202, posted.text
    return clicked, viewed_at


def assert_speed_list_after_view(served: dict, clicked: str, viewed_at: datetime) -> None:
    """The served list is the speed layer's, reflects the view, and leaves the read article out."""
    assert served["provenance"]["layer"] == "speed"
    assert datetime.fromisoformat(served["provenance"]["watermark"]) >= viewed_at - timedelta(milliseconds=1)
    assert clicked not in [item["article_id"] for item in served["items"]]  # already read: left out


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


def running_emulator_endpoint(launcher: str, key: str, tmp_path_factory) -> Iterator[str]:
    from tests.emulators import EmulatorUnavailable, running_emulator

    try:
        with running_emulator(launcher, tmp_path_factory.mktemp(launcher.removesuffix(".py"))) as emulator:
            yield emulator.endpoint[key]
    except EmulatorUnavailable as error:
        pytest.skip(f"the emulator {launcher} cannot start: {error}")


@pytest.fixture(scope="session")
def storage_emulator(tmp_path_factory) -> Iterator[str]:
    """A Cloud Storage emulator for this session; its `STORAGE_EMULATOR_HOST` value."""
    yield from running_emulator_endpoint("storage.py", "host", tmp_path_factory)


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory) -> Iterator[str]:
    """A BigQuery emulator for this session; its REST endpoint (`BIGQUERY_EMULATOR_HOST`)."""
    yield from running_emulator_endpoint("bigquery.py", "rest", tmp_path_factory)
