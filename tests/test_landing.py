"""The landing zone: sensors get every file that landed after their cursor, listing only the day
partitions such a file can be in (a local folder here; GCS against its emulator, marker `prod`)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from newsrec_assets.domain.landing_format import RECORD_NAME_GLOB
from newsrec_assets.resources.landing import GCSLandingZone, LocalLandingZone, first_partition_after

NOW = datetime.now(UTC)
TODAY, YESTERDAY, LAST_WEEK = (f"{NOW - timedelta(days=d):%Y-%m-%d}" for d in (0, 1, 7))


def land_at(zone: LocalLandingZone, path: str, landed: datetime) -> None:
    zone.write_file(path, b"{}\n")
    os.utime(zone.root / path, ns=(int(landed.timestamp() * 1e9),) * 2)


def test_first_partition_allows_for_late_files():
    landed = datetime(2026, 11, 20, 0, 30, tzinfo=UTC)
    assert first_partition_after(int(landed.timestamp() * 1e9), late_file_days=1) == "2026-11-19"
    assert first_partition_after(int(landed.timestamp() * 1e9), late_file_days=0) == "2026-11-20"


def test_new_files_walks_only_recent_partitions_and_misses_no_recent_file(tmp_path, monkeypatch):
    zone = LocalLandingZone(tmp_path / "landing", late_file_days=1)
    earlier = NOW - timedelta(minutes=10)
    land_at(zone, f"user_article_views/{LAST_WEEK}/old.jsonl", NOW - timedelta(days=7))
    land_at(zone, f"user_article_views/{TODAY}/seen.jsonl", earlier)
    cursor = max(zone.list_files()).cursor
    land_at(zone, f"user_article_views/{TODAY}/new.jsonl", NOW)
    land_at(zone, f"user_article_views/{YESTERDAY}/late.jsonl", NOW)  # yesterday's events, landed now
    land_at(zone, f"articles/{TODAY}/edit.jsonl", NOW)
    walked = []
    original_walk = zone._walk
    monkeypatch.setattr(zone, "_walk", lambda top: walked.append(top) or original_walk(top))

    landed_at, path = cursor.split(":", 1)
    new = zone.new_files(after=(int(landed_at), path))

    assert sorted(f.path for f in new) == [
        f"articles/{TODAY}/edit.jsonl",
        f"user_article_views/{YESTERDAY}/late.jsonl",
        f"user_article_views/{TODAY}/new.jsonl",
    ]
    assert new == sorted(new)  # oldest first
    # Only day partitions from the cursor's day minus a day are walked, never a table or the root.
    assert sorted(top.relative_to(zone.root).as_posix() for top in walked) == [
        f"articles/{TODAY}",
        f"user_article_views/{YESTERDAY}",
        f"user_article_views/{TODAY}",
    ]
    assert zone.new_files(after=(int(landed_at), path), prefix="articles/") == [
        f for f in new if f.table == "articles"
    ]
    assert zone.new_files(after=None, prefix="user_article_views/")[0].path.endswith("old.jsonl")


class RecordingClient:
    """A storage client that records how it is asked to list."""

    def __init__(self, client):
        self.client = client
        self.listings: list[dict] = []

    def bucket(self, name):
        return self.client.bucket(name)

    def list_blobs(self, bucket, **arguments):
        self.listings.append(arguments)
        return self.client.list_blobs(bucket, **arguments)


@pytest.mark.prod
def test_gcs_new_files_lists_from_the_cursors_partition_with_a_glob(storage_emulator, monkeypatch):
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", storage_emulator)
    client = storage.Client(project="newsrec-test")
    bucket = f"landing-{time.time_ns()}"
    client.create_bucket(bucket)
    recording = RecordingClient(client)
    zone = GCSLandingZone(bucket, "datastream", client=recording, late_file_days=1)
    zone.write_file(f"user_article_views/{LAST_WEEK}/old.jsonl", b"{}\n")
    zone.write_file(f"user_article_views/{TODAY}/seen.jsonl", b"{}\n")
    client.bucket(bucket).blob(f"datastream/user_article_views/{TODAY}/partial.jsonl.tmp").upload_from_string(
        b""
    )
    cursor = max(zone.list_files()).cursor
    time.sleep(0.002)  # GCS creation times have millisecond resolution
    zone.write_file(f"user_article_views/{TODAY}/new.jsonl", b"{}\n")
    zone.write_file(f"articles/{TODAY}/edit.jsonl", b"{}\n")
    recording.listings.clear()

    landed_at, path = cursor.split(":", 1)
    new = zone.new_files(after=(int(landed_at), path))

    assert sorted(f.path for f in new) == sorted(
        [f"user_article_views/{TODAY}/new.jsonl", f"articles/{TODAY}/edit.jsonl"]
    )
    first = first_partition_after(int(landed_at), 1)
    object_listings = [call for call in recording.listings if call.get("delimiter") is None]
    assert {call["start_offset"] for call in object_listings} == {
        f"datastream/articles/{first}",
        f"datastream/user_article_views/{first}",
    }
    assert all(call["match_glob"] == RECORD_NAME_GLOB for call in object_listings)
    assert [call for call in recording.listings if call.get("delimiter")] == [
        {"prefix": "datastream/", "delimiter": "/"}
    ]
