"""Sensor: new files in the landing zone trigger ingestion into the raw CDC log."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import Enum

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG, WILL_RETRY_TAG

from newsrec_assets.defs.ingestion.assets import raw_cdc_log
from newsrec_assets.defs.resources import LandingZoneResource
from newsrec_assets.resources.landing import parse_cursor

LANDING_SENSOR = "landing_files_sensor"


@dataclass(frozen=True)
class LandingCursor:
    """The newest landed file requested so far, and the run key of the last request."""

    landed: str | None = None  # a LandingFile.cursor
    run_key: str | None = None  # the last ingestion requested, until it has succeeded

    @classmethod
    def parse(cls, text: str | None) -> LandingCursor:
        if not text:
            return cls()
        if not text.startswith("{"):  # the cursor before requests were tracked: a landed position
            return cls(landed=text)
        state = json.loads(text)
        return cls(landed=state.get("landed"), run_key=state.get("run_key"))

    def serialize(self) -> str:
        return json.dumps({"landed": self.landed, "run_key": self.run_key})


class Outcome(Enum):
    IN_PROGRESS = "in progress"  # queued, running, or failed with an automatic retry coming
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NOT_LAUNCHED = "not launched"


def requested_run_outcome(instance: dg.DagsterInstance, run_key: str) -> tuple[Outcome, str | None]:
    """What became of the ingestion this sensor requested under `run_key` (retries included)."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key, SENSOR_NAME_TAG: LANDING_SENSOR}), limit=1
    )
    if not runs:
        return Outcome.NOT_LAUNCHED, None
    group = instance.get_run_group(runs[0].run_id)
    attempts = group[1] if group else runs
    if any(run.status == dg.DagsterRunStatus.SUCCESS for run in attempts):
        return Outcome.SUCCEEDED, runs[0].run_id
    if any(not run.is_finished for run in attempts):
        return Outcome.IN_PROGRESS, runs[0].run_id
    retried = {run.parent_run_id for run in attempts}
    if any(run.tags.get(WILL_RETRY_TAG) == "true" and run.run_id not in retried for run in attempts):
        return Outcome.IN_PROGRESS, runs[0].run_id
    return Outcome.FAILED, runs[0].run_id


# A named job, so that its runs show what they target in the UI's run list.
ingestion_job = dg.define_asset_job(
    "ingest_landing_files",
    selection=[raw_cdc_log],
    description="Store files that landed since the last run in the raw CDC log (landing sensor).",
    # One step: run it in the run's own process, without a step process (or pod) to start and
    # its engine events to store, every two minutes.
    executor_def=dg.in_process_executor,
)


@dg.sensor(
    name=LANDING_SENSOR,
    description=(
        "Requests one ingestion run for all files that landed since the cursor, and moves past them "
        "only once that run (or its automatic retry) has succeeded: while it runs, new files wait; "
        "if it failed, the next tick requests ingestion again. Ingestion skips files already stored, "
        "so a repeated request loses and duplicates nothing."
    ),
    target=ingestion_job,
    # The raw log only has to be current for the 30-minute batch; the speed layer reads the
    # landing zone itself. Every two minutes keeps ingestion runs from crowding a small machine.
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def landing_files_sensor(context: dg.SensorEvaluationContext, landing: LandingZoneResource):
    cursor = LandingCursor.parse(context.cursor)
    failed_run_id = None
    if cursor.run_key is not None:
        outcome, run_id = requested_run_outcome(context.instance, cursor.run_key)
        if outcome is Outcome.IN_PROGRESS:
            return dg.SkipReason(f"Waiting for ingestion run {run_id} ({cursor.run_key}) to finish.")
        if outcome is Outcome.NOT_LAUNCHED:
            # The request was recorded but no run came of it: ask again under the same key.
            return dg.SensorResult(run_requests=[dg.RunRequest(run_key=cursor.run_key)])
        if outcome is Outcome.FAILED:
            failed_run_id = run_id

    new_files = landing.get().new_files(after=parse_cursor(cursor.landed))
    if failed_run_id is not None:
        # Ingestion reads every file not yet stored, so one run covers the failed files and new ones.
        run_key = f"landing-retry-of-{failed_run_id}"
        landed = new_files[-1].cursor if new_files else cursor.landed
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=run_key, tags={"newsrec/retry_of": failed_run_id})],
            cursor=LandingCursor(landed, run_key).serialize(),
        )
    if not new_files:
        context.update_cursor(LandingCursor(cursor.landed).serialize())
        return dg.SkipReason("No new files in the landing zone since the last tick.")
    newest = new_files[-1]
    digest = hashlib.sha1("\n".join(f.path for f in new_files).encode()).hexdigest()[:12]
    run_key = f"landing-{newest.landed_at_ns}-{digest}"
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=run_key, tags={"newsrec/new_files": str(len(new_files))})],
        cursor=LandingCursor(newest.cursor, run_key).serialize(),
    )
