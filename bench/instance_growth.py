"""`python -m bench.instance_growth --dagster-home H --minutes 30`: how fast a running Dagster
instance grows, extrapolated to a day.

Point it at the instance of a demo in its steady state (`make demo`, after the first batch
published: the live app then sends ~2 view events/s). It measures the instance's files by part
(per-run event logs, the event-log index, ticks and automation evaluations, captured logs) at the
start and the end of the window, and counts the runs, ticks and automation evaluations created
in it. Nothing here writes to the instance.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from pathlib import Path

from tqdm import tqdm

from bench.speed_path import _instance_bytes, _runs_by_job

MB = 1e6


def _rows_since(dagster_home: Path, since: float) -> dict[str, int]:
    """Ticks and automation evaluations stored after `since`, from the schedule storage."""
    database = dagster_home / "schedules" / "schedules.db"
    if not database.exists():
        return {}
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        ticks = db.execute(
            "select count(*) from job_ticks where create_timestamp >= datetime(?, 'unixepoch')", (since,)
        ).fetchone()[0]
        evaluations = db.execute(
            "select count(*), coalesce(sum(length(asset_evaluation_body)), 0) from "
            "asset_daemon_asset_evaluations where create_timestamp >= datetime(?, 'unixepoch')",
            (since,),
        ).fetchone()
    return {"ticks": ticks, "evaluations": evaluations[0], "evaluation_bytes": evaluations[1]}


def measure(dagster_home: Path, minutes: float) -> dict:
    started = time.time()
    before = _instance_bytes(dagster_home)
    for _ in tqdm(
        range(int(minutes * 60)), desc="measuring", unit="s", bar_format="{l_bar}{bar}| {n}/{total} s"
    ):
        time.sleep(1)
    elapsed = time.time() - started
    after = _instance_bytes(dagster_home)
    per_day = 86_400 / elapsed
    parts = {
        part: round((after.get(part, 0) - before.get(part, 0)) * per_day / MB, 1)
        for part in sorted(set(before) | set(after))
    }
    rows = _rows_since(dagster_home, started)
    return {
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
    print(f"instance growth: {result['mb_per_day']:.0f} MB/day over {result['window_minutes']} min")
    for part, mb in result["mb_per_day_by_part"].items():
        print(f"  {part:<28} {mb:8.1f} MB/day")
    print(f"  runs in the window: {result['runs_in_window']}")
    print(f"  rows in the window: {result['rows_in_window']}")


if __name__ == "__main__":
    main()
