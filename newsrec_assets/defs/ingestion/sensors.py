"""Sensor: new files in the landing zone trigger ingestion into the raw CDC log."""

import hashlib

import dagster as dg

from newsrec_assets.defs.ingestion.assets import raw_cdc_log
from newsrec_assets.defs.resources import LandingZoneResource
from newsrec_assets.resources.landing import parse_cursor


@dg.sensor(
    name="landing_files_sensor",
    description=(
        "Lists the landing zone and requests one ingestion run for all files that landed since the "
        "cursor (the newest file seen). Ingestion itself skips files already stored, so a missed or "
        "repeated tick loses and duplicates nothing."
    ),
    target=[raw_cdc_log],
    # The raw log only has to be current for the 30-minute batch; the speed layer reads the
    # landing zone itself. Every two minutes keeps ingestion runs from crowding a small machine.
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def landing_files_sensor(context: dg.SensorEvaluationContext, landing: LandingZoneResource):
    new_files = landing.get().new_files(after=parse_cursor(context.cursor))
    if not new_files:
        return dg.SkipReason("No new files in the landing zone since the last tick.")
    newest = new_files[-1]
    digest = hashlib.sha1("\n".join(f.path for f in new_files).encode()).hexdigest()[:12]
    context.update_cursor(newest.cursor)
    return dg.RunRequest(
        run_key=f"landing-{newest.landed_at_ns}-{digest}",
        tags={"newsrec/new_files": str(len(new_files))},
    )
