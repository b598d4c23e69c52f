"""The landing sensor moves past landed files only once their ingestion run has succeeded."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest
from dagster._core.storage.tags import (
    PARENT_RUN_ID_TAG,
    ROOT_RUN_ID_TAG,
    RUN_KEY_TAG,
    SENSOR_NAME_TAG,
    WILL_RETRY_TAG,
)

from newsrec_assets.defs.ingestion.sensors import LANDING_SENSOR, LandingCursor, landing_files_sensor
from newsrec_assets.defs.resources import LandingZoneResource
from newsrec_assets.resources.landing import LocalLandingZone

# Files land in the partition of their first change; the sensor lists recent partitions only.
TODAY = f"{datetime.now(UTC):%Y-%m-%d}"


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def record_run(instance, run_key: str, status: dg.DagsterRunStatus, **tags: str) -> dg.DagsterRun:
    run = dg.DagsterRun(
        job_name="__ASSET_JOB",
        status=status,
        tags={RUN_KEY_TAG: run_key, SENSOR_NAME_TAG: LANDING_SENSOR, **tags},
    )
    return instance.add_run(run)


def tick(instance, landing, cursor):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"landing": LandingZoneResource(root=str(landing))}
    )
    result = landing_files_sensor(context)
    if isinstance(result, dg.SensorResult):
        return result, result.cursor or cursor
    return result, context.cursor


def test_the_cursor_moves_past_files_only_after_their_run_succeeded(tmp_path, instance):
    zone = LocalLandingZone(tmp_path)
    zone.write_file(f"articles/{TODAY}/0800-0.jsonl", b"{}\n")

    first, cursor = tick(instance, tmp_path, None)
    [request] = first.run_requests
    assert LandingCursor.parse(cursor).run_key == request.run_key

    # No run came of the request (e.g. the daemon stopped before launching it): asked again, same key.
    again, cursor = tick(instance, tmp_path, cursor)
    assert [r.run_key for r in again.run_requests] == [request.run_key]

    running = record_run(instance, request.run_key, dg.DagsterRunStatus.STARTED)
    zone.write_file(f"articles/{TODAY}/0810-0.jsonl", b"{}\n")
    waiting, cursor = tick(instance, tmp_path, cursor)
    assert isinstance(waiting, dg.SkipReason) and running.run_id in waiting.skip_message

    instance.report_run_failed(running)
    retried, cursor = tick(instance, tmp_path, cursor)
    [retry] = retried.run_requests
    assert retry.run_key == f"landing-retry-of-{running.run_id}"
    assert LandingCursor.parse(cursor).landed.endswith("0810-0.jsonl")  # the retry covers it too

    # Re-evaluating the same tick asks for the same retry (the daemon dedups the run key).
    landed = LandingCursor.parse(cursor).landed
    repeated, _ = tick(instance, tmp_path, LandingCursor(landed, request.run_key).serialize())
    assert [r.run_key for r in repeated.run_requests] == [retry.run_key]

    record_run(instance, retry.run_key, dg.DagsterRunStatus.SUCCESS)
    done, cursor = tick(instance, tmp_path, cursor)
    assert isinstance(done, dg.SkipReason) and "No new files" in done.skip_message
    assert LandingCursor.parse(cursor).run_key is None


def test_a_failed_run_that_dagster_will_retry_is_waited_for(tmp_path, instance):
    zone = LocalLandingZone(tmp_path)
    zone.write_file(f"articles/{TODAY}/0800-0.jsonl", b"{}\n")
    first, cursor = tick(instance, tmp_path, None)
    key = first.run_requests[0].run_key
    failed = record_run(instance, key, dg.DagsterRunStatus.FAILURE, **{WILL_RETRY_TAG: "true"})

    waiting, cursor = tick(instance, tmp_path, cursor)
    assert isinstance(waiting, dg.SkipReason) and "Waiting" in waiting.skip_message

    instance.add_run(
        dg.DagsterRun(
            job_name="__ASSET_JOB",
            status=dg.DagsterRunStatus.SUCCESS,
            parent_run_id=failed.run_id,
            root_run_id=failed.run_id,
            tags={PARENT_RUN_ID_TAG: failed.run_id, ROOT_RUN_ID_TAG: failed.run_id},
        )
    )
    done, cursor = tick(instance, tmp_path, cursor)
    assert isinstance(done, dg.SkipReason) and "No new files" in done.skip_message


def test_a_cursor_from_before_run_tracking_is_read_as_the_landed_position(tmp_path, instance):
    zone = LocalLandingZone(tmp_path)
    zone.write_file(f"articles/{TODAY}/0800-0.jsonl", b"{}\n")
    [old] = zone.new_files(after=None)
    result, _ = tick(instance, tmp_path, old.cursor)
    assert isinstance(result, dg.SkipReason) and "No new files" in result.skip_message
