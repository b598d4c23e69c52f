"""Soak: reads and writes together for minutes, with the demo's Dagster running, and every
acknowledged view event accounted for in the warehouse afterwards.

`python -m bench.soak` against a running `newsrec demo` (same NEWSREC_HOME; its API key is read
from `$NEWSREC_HOME/api_key`):

- GET: `bench/loadgen.c` at `--get-rate` (default 1,000 req/s, open loop) on the users' lists;
- POST: `--post-rate` (default 50 events/s, open loop, 8 threads) view events of the simulated
  users on live articles, each response's `event_id` kept;
- meanwhile the demo's Dagster does what it does (speed layer, fresh articles, automation);
- afterwards one Dagster run ingests the landing files and rebuilds `view_events` (through the
  webserver, so it queues for the DuckDB writer like any other run), and every acknowledged
  event must appear exactly once in `view_events` (as `api|<event_id>`).

Prints a JSON summary and, with `--markdown`, writes it into the "Soak" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.common import Context, load_average
from bench.endpoint import build_loadgen
from bench.report import write_marked_section
from newsrec_assets.demo.dagster_client import DagsterClient
from newsrec_assets.domain.cdc import SOURCE_TABLES
from newsrec_assets.settings import local_paths

# What rebuilds view_events from the landing files: ingestion (the whole raw log: one multi-asset)
# and the dbt models upstream of it.
VIEW_EVENTS_PATH = [
    *(["raw", f"cdc_{table}"] for table in SOURCE_TABLES),
    ["raw", "cdc_quarantine"],
    ["stg_newsapp__user_article_views"],
    ["stg_newsapp__api_view_events"],
    ["int_as_of"],
    ["int_view_row_versions"],
    ["int_rejected_view_jumps"],
    ["int_view_events"],
    ["view_events"],
]


def post_events(api: str, key: str, rate: float, duration: float, users: int, articles: list[str]):
    """Open-loop POSTs: event i is due at t0 + i / rate; statuses and acknowledged event ids."""
    statuses: Counter[str] = Counter()
    acked: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()
    rng = random.Random(0)
    client = httpx.Client(base_url=api, headers={"X-API-Key": key}, timeout=10.0)

    def send(due: float, user: str, article: str) -> None:
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            response = client.post("/v1/events", json={"user_id": user, "article_id": article})
            status = str(response.status_code)
            event_id = response.json().get("event_id") if response.status_code < 300 else None
        except httpx.HTTPError as error:
            status, event_id = type(error).__name__, None
        with lock:
            statuses[status] += 1
            latencies.append(time.monotonic() - due)
            if event_id:
                acked.append(event_id)

    t0 = time.monotonic() + 1.0
    total = int(rate * duration)
    with ThreadPoolExecutor(8) as pool:
        for i in range(total):
            user = f"u{rng.randrange(1, users + 1):06d}"
            pool.submit(send, t0 + i / rate, user, rng.choice(articles))
            if i % 100 == 0:  # keep the queue short: submit about a second ahead
                time.sleep(max(0.0, t0 + i / rate - time.monotonic() - 1.0))
    client.close()
    latencies.sort()
    return statuses, acked, latencies


def count_in_view_events(warehouse: Path, event_ids: list[str], deadline_s: float = 300) -> Counter[str]:
    """How often each acknowledged API event is in `view_events` (the mart keys it `api|<event_id>`)."""
    import duckdb

    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with duckdb.connect(str(warehouse), read_only=True) as con:
                con.execute("create temp table acked(event_id varchar)")
                con.executemany("insert into acked values (?)", [(f"api|{k}",) for k in event_ids])
                rows = con.execute(
                    "select a.event_id, count(v.event_id) from acked a "
                    "left join view_events v using (event_id) group by a.event_id"
                ).fetchall()
                return Counter({key: n for key, n in rows})
        except duckdb.IOException:  # a run holds the write lock: wait for it
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="http://127.0.0.1:8000")
    parser.add_argument("--ui", default="http://127.0.0.1:3000")
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--get-rate", type=float, default=1000.0)
    parser.add_argument("--post-rate", type=float, default=50.0)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--markdown", type=Path, default=None, help="e.g. BENCHMARKS.md")
    args = parser.parse_args()

    paths = local_paths()
    key = (paths.home / "api_key").read_text().strip()
    cold = httpx.get(f"{args.api}/v1/users/nobody/recommendations", params={"k": 50}).json()
    articles = [item["article_id"] for item in cold["items"]]
    loadgen = build_loadgen(Context())
    load_before = load_average()

    get_command = [
        str(loadgen), "-r", str(args.get_rate), "-d", str(args.duration), "-w", "2", "-c", "32",
        "-n", str(args.users), "-p", "/v1/users/u%06ld/recommendations?k=10",
        "-P", args.api.rsplit(":", 1)[1], "-t", "10",
    ]  # fmt: skip
    started = time.monotonic()
    reader = subprocess.Popen(get_command, stdout=subprocess.PIPE, text=True)
    statuses, acked, post_latencies = post_events(
        args.api, key, args.post_rate, args.duration, args.users, articles
    )
    get_summary = json.loads(reader.communicate()[0])
    load_during = load_average()

    # every acknowledged event must be in the landing zone once the API's writer flushed: ingest
    # and rebuild view_events in one Dagster run, then count
    time.sleep(5)
    # the acknowledged ids outlive this process: a failed check can be repeated by hand
    (paths.home / "soak_acknowledged.json").write_text(json.dumps(acked))
    dagster = DagsterClient(args.ui, timeout_s=60)
    for _attempt in range(3):  # on a loaded machine a run can miss its start timeout: launch again
        run_id = dagster.launch("newsrec", "__ASSET_JOB", VIEW_EVENTS_PATH, {"newsrec/trigger": "soak"})
        while (state := dagster.run_state(run_id)).status not in ("SUCCESS", "FAILURE", "CANCELED"):
            time.sleep(3)
        if state.status == "SUCCESS":
            break
    counts = count_in_view_events(paths.warehouse, acked)
    once = sum(1 for n in counts.values() if n == 1)
    latency = get_summary.get("latency_us", {})

    def quantile(values: list[float], q: float) -> float | None:
        return round(1000 * values[min(len(values) - 1, int(len(values) * q))], 1) if values else None

    summary = {
        "duration_s": args.duration,
        "get": {
            "sent": get_summary["sent"],
            "achieved_rps": get_summary["achieved_rps"],
            "p50_ms": round(latency.get("p50", 0) / 1000, 1),
            "p99_ms": round(latency.get("p99", 0) / 1000, 1),
            **{k: get_summary[k] for k in ("timeouts", "non2xx", "errors_io", "errors_connect", "unsent")},
        },
        "post": {
            "sent": sum(statuses.values()),
            "statuses": dict(statuses),
            "acknowledged": len(acked),
            "p50_ms": quantile(post_latencies, 0.5),
            "p99_ms": quantile(post_latencies, 0.99),
        },
        "ingest_run": {"run_id": run_id, "status": state.status},
        "view_events": {
            "acknowledged_exactly_once": once,
            "missing": sum(1 for n in counts.values() if n == 0),
            "duplicated": sum(1 for n in counts.values() if n > 1),
        },
        "load_average": {"before": load_before[0], "during": load_during[0]},
        "wall_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(summary, indent=2))
    if args.markdown:
        write_markdown(args.markdown, summary, args)


def write_markdown(path: Path, s: dict, args: argparse.Namespace) -> None:
    get, post, events, load = s["get"], s["post"], s["view_events"], s["load_average"]
    get_failures = sum(int(get.get(k) or 0) for k in ("timeouts", "non2xx", "errors_io", "errors_connect"))
    command = (
        f"python -m bench.soak --duration {args.duration:g} --get-rate {args.get_rate:g} "
        f"--post-rate {args.post_rate:g}"
    )
    rows = [
        ("GET lists: sent / non-2xx, I/O errors, timeouts", f"{get['sent']} / {get_failures}", "0 errors"),
        (
            "GET lists: achieved rate; latency p50 / p99 (from due time)",
            f"{get['achieved_rps']} req/s; {get['p50_ms']} / {get['p99_ms']} ms",
            "1,000 req/s",
        ),
        (
            "POST events: sent / acknowledged / statuses",
            f"{post['sent']} / {post['acknowledged']} / {post['statuses']}",
            "0 errors",
        ),
        ("POST events: latency p50 / p99 (from due time)", f"{post['p50_ms']} / {post['p99_ms']} ms", "—"),
        (
            "acknowledged events in `view_events`: exactly once / missing / twice or more",
            f"{events['acknowledged_exactly_once']} / {events['missing']} / {events['duplicated']}",
            "all / 0 / 0",
        ),
        (
            "load average (1 min) before / at the end (2 cores, shared)",
            f"{load['before']} / {load['during']}",
            "—",
        ),
    ]
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    body = f"""## Soak: reads and writes with the demo's Dagster running (`bench/soak.py`)

`{command}` against `newsrec demo` (one API worker; Dagster's sensors, speed layer and automation
running), then one Dagster run that ingests the landing files and rebuilds `view_events`.

| figure | measured | goal |
|---|---|---|
{table}"""
    write_marked_section(path, "soak", body)


if __name__ == "__main__":
    main()
