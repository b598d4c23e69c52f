"""`python -m bench.instance_growth --dagster-home H --minutes 30`: how fast a running Dagster
instance grows, extrapolated to a day.

Point it at the instance of a demo in its steady state (`make demo`, after the first batch
published: the live app then sends ~2 view events/s). It measures the instance's files by part
(the event log, ticks and automation evaluations, captured logs) at the start and the end of the
window, and counts the runs, ticks and automation evaluations created in it. On an instance kept
in PostgreSQL (`NEWSREC_DAGSTER_STORAGE=postgres`, or production) it measures the database's
tables by the same parts. Nothing here writes to the instance.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from pathlib import Path

from tqdm import tqdm

from bench.speed_path import _instance_bytes, _runs_by_job

MB = 1e6


# The PostgreSQL instance's tables, by the parts the SQLite instance keeps in separate files.
POSTGRES_PARTS = {
    "event_logs": "postgres: event log",
    "runs": "postgres: runs",
    "run_tags": "postgres: runs",
    "job_ticks": "postgres: ticks and evaluations",
    "asset_daemon_asset_evaluations": "postgres: ticks and evaluations",
}


def _postgres_url(dagster_home: Path) -> str | None:
    """The instance's PostgreSQL URL, or None for an instance kept in SQLite files."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        return getattr(instance.run_storage, "postgres_url", None)


def _postgres_bytes(url: str) -> dict[str, int]:
    """The instance's tables with their indexes and TOAST, by part."""
    import sqlalchemy

    parts: dict[str, int] = {}
    with sqlalchemy.create_engine(url).connect() as connection:
        rows = connection.execute(
            sqlalchemy.text("select relname, pg_total_relation_size(relid) from pg_statio_user_tables")
        )
        for table, size in rows:
            part = POSTGRES_PARTS.get(table, "postgres: rest (asset index, sensors' state)")
            parts[part] = parts.get(part, 0) + size
    return parts


def _instance_size(dagster_home: Path, postgres_url: str | None) -> dict[str, int]:
    parts = _instance_bytes(dagster_home)  # in PostgreSQL, only the captured logs stay in files
    return parts | _postgres_bytes(postgres_url) if postgres_url else parts


TICKS_SINCE = "select count(*) from job_ticks where create_timestamp >= {since}"
EVALUATIONS_SINCE = (
    "select count(*), coalesce(sum(length(asset_evaluation_body)), 0) from "
    "asset_daemon_asset_evaluations where create_timestamp >= {since}"
)


def _rows_since(dagster_home: Path, postgres_url: str | None, since: float) -> dict[str, int]:
    """Ticks and automation evaluations stored after `since`, from the schedule storage."""
    if postgres_url:
        import sqlalchemy

        with sqlalchemy.create_engine(postgres_url).connect() as connection:
            after = "to_timestamp(:since) at time zone 'UTC'"
            ticks = connection.execute(
                sqlalchemy.text(TICKS_SINCE.format(since=after)), {"since": since}
            ).scalar_one()
            evaluations = connection.execute(
                sqlalchemy.text(EVALUATIONS_SINCE.format(since=after)), {"since": since}
            ).one()
    else:
        database = dagster_home / "schedules" / "schedules.db"
        if not database.exists():
            return {}
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            after = "datetime(?, 'unixepoch')"
            ticks = db.execute(TICKS_SINCE.format(since=after), (since,)).fetchone()[0]
            evaluations = db.execute(EVALUATIONS_SINCE.format(since=after), (since,)).fetchone()
    return {"ticks": ticks, "evaluations": evaluations[0], "evaluation_bytes": evaluations[1]}


def measure(dagster_home: Path, minutes: float) -> dict:
    postgres_url = _postgres_url(dagster_home)
    started = time.time()
    before = _instance_size(dagster_home, postgres_url)
    for _ in tqdm(
        range(int(minutes * 60)), desc="measuring", unit="s", bar_format="{l_bar}{bar}| {n}/{total} s"
    ):
        time.sleep(1)
    elapsed = time.time() - started
    after = _instance_size(dagster_home, postgres_url)
    per_day = 86_400 / elapsed
    parts = {
        part: round((after.get(part, 0) - before.get(part, 0)) * per_day / MB, 1)
        for part in sorted(set(before) | set(after))
    }
    rows = _rows_since(dagster_home, postgres_url, started)
    return {
        "storage": "postgres" if postgres_url else "sqlite",
        "window_minutes": round(elapsed / 60, 1),
        "mb_per_day": round((sum(after.values()) - sum(before.values())) * per_day / MB, 1),
        "mb_per_day_by_part": parts,
        "runs_in_window": _runs_by_job(dagster_home, started),
        "rows_in_window": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dagster-home", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=30.0)
    args = parser.parse_args()
    result = measure(args.dagster_home, args.minutes)
    print(
        f"instance growth ({result['storage']}): {result['mb_per_day']:.0f} MB/day "
        f"over {result['window_minutes']} min"
    )
    for part, mb in result["mb_per_day_by_part"].items():
        print(f"  {part:<46} {mb:8.1f} MB/day")
    print(f"  runs in the window: {result['runs_in_window']}")
    print(f"  rows in the window: {result['rows_in_window']}")


if __name__ == "__main__":
    main()
