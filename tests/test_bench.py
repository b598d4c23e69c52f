"""The benchmark suite's own tests: the report writer, the CLI registry, the scoring benchmark at a
tiny size, and the grouped top-k selection that the scoring benchmark drove into `ranking.py`.

No load generation and no model training here: those run in `python -m bench --quick`.
"""

from __future__ import annotations

import http.server
import json
import math
import subprocess
import threading

import numpy as np
import pytest

from bench.__main__ import REGISTRY, Benchmark, main
from bench.common import Context
from bench.report import (
    BenchmarkResult,
    Figure,
    RunReport,
    load_results,
    planned,
    render_markdown,
    write_marked_section,
    write_reports,
)
from bench.scoring import top_k_scores_before
from newsrec_assets.domain.ranking import _GroupedLayout, top_k_scores


def test_figure_ratio_and_verdicts():
    assert Figure("p99", 4.0, "ms", 5.0, "at_most").status == "pass"
    assert Figure("p99", 6.0, "ms", 5.0, "at_most").status == "FAIL"
    assert Figure("p99", 6.0, "ms", 5.0, "at_most").ratio == pytest.approx(1.2)
    assert Figure("share", 0.8, "× peak", 0.7, "at_least").status == "pass"
    assert Figure("share", 0.6, "× peak", 0.7, "at_least").status == "FAIL"
    assert Figure("gflops", 90.0, "GFLOP/s").status == "info"
    assert Figure("failed", 0.0, "", 0.0, "at_most").status == "pass"  # goal 0: no ratio, still a verdict
    assert Figure("failed", 0.0, "", 0.0, "at_most").ratio is None
    assert Figure("p99", math.inf, "ms", 5.0, "at_most").status == "FAIL"
    assert planned("p50", "s", 8.0, "at_most").status == "not run"


def _report(tmp_path):
    results = [
        BenchmarkResult(
            "endpoint",
            "Endpoint",
            "ok",
            figures=[
                Figure("SQLite API p99", 3.1, "ms", 5.0, "at_most"),
                Figure("SQLite API p99 / bare p99", 2.5, "×", 2.0, "at_most", reference="bare p99 1.24 ms"),
                Figure("bare p50", 0.12, "ms"),
            ],
            seconds=12.0,
            tables=[("Every run", "| a |\n|---|\n| 1 |")],
            cpu={"others_cores": 0.25, "cores": 2},
        ),
        BenchmarkResult("speed_path", "Speed path", "not run", figures=[planned("p50", "s", 8.0, "at_most")]),
    ]
    return RunReport(
        command="python -m bench --quick",
        started_at="2026-11-26T10:00:00+00:00",
        finished_at="2026-11-26T10:02:00+00:00",
        quick=True,
        machine={"cpu_model": "Test CPU", "cores": 2, "memory_gib": 24.0, "numpy": "2.x"},
        results=results,
        seconds=120.0,
    )


def test_report_writer(tmp_path):
    report = _report(tmp_path)
    markdown, results_json = tmp_path / "BENCHMARKS.md", tmp_path / "results.json"
    write_reports(report, markdown, results_json)

    text = markdown.read_text()
    assert "`python -m bench --quick`" in text
    assert "| endpoint | SQLite API p99 | 3.10 ms | ≤ 5.00 ms | 0.62 | — | pass |" in text
    assert (
        "| endpoint | SQLite API p99 / bare p99 | 2.50 × | ≤ 2.00 × | 1.25 | bare p99 1.24 ms | **FAIL** |"
        in text
    )
    assert "| speed_path | p50 | — | ≤ 8.00 s | — | — | not run |" in text
    assert "| CPU | Test CPU |" in text
    assert "other processes used 0.25 of 2 cores" in text
    assert "### Every run" in text

    data = json.loads(results_json.read_text())
    assert data["quick"] is True and data["machine"]["cores"] == 2
    figure = data["benchmarks"]["endpoint"]["figures"][1]
    assert figure["ratio"] == pytest.approx(1.25) and figure["status"] == "FAIL"
    assert data["benchmarks"]["speed_path"]["figures"][0]["status"] == "not run"

    again = load_results(results_json)  # what `--only` carries over
    assert again["endpoint"].figures[0].value == 3.1
    assert again["endpoint"].carried_over_from == report.started_at
    assert again["speed_path"].figures[0].status == "not run"
    assert render_markdown(report) == text


def test_regenerating_the_report_keeps_the_marked_sections_in_order(tmp_path):
    report = _report(tmp_path)
    markdown, results_json = tmp_path / "BENCHMARKS.md", tmp_path / "results.json"
    ab = "<!-- ab:begin -->\n## A/B\n\n| target | p99 ms |\n|---|---|\n| api | 1.85 |\n<!-- ab:end -->"
    soak = "<!-- soak:begin -->\n## Soak\n\nmeasured by hand\n<!-- soak:end -->"
    markdown.write_text(f"# old run\n\n## Endpoint\n\nold figures\n\n{ab}\n\n## Speed path\n\n{soak}\n")

    write_reports(report, markdown, results_json)

    text = markdown.read_text()
    assert "old figures" not in text and "# old run" not in text
    assert text == render_markdown(report) + "\n" + ab + "\n\n" + soak + "\n"  # after the generated part
    write_reports(report, markdown, results_json)
    assert markdown.read_text() == text  # kept once, not piled up


def test_a_marked_section_is_replaced_in_place(tmp_path):
    markdown = tmp_path / "BENCHMARKS.md"
    write_marked_section(markdown, "ab", "## A/B\n\nfirst run")
    assert markdown.read_text() == "<!-- ab:begin -->\n## A/B\n\nfirst run\n<!-- ab:end -->\n"
    write_marked_section(markdown, "soak", "## Soak\n\nsoaked")
    write_marked_section(markdown, "ab", "## A/B\n\nsecond run\n")

    text = markdown.read_text()
    assert "first run" not in text and text.count("<!-- ab:begin -->") == 1
    assert text.index("second run") < text.index("soaked")  # where the first one was, not appended
    assert text.endswith("soaked\n<!-- soak:end -->\n")


def test_cli_reports_an_unimplemented_benchmark_as_not_run(tmp_path, monkeypatch):
    import bench.__main__ as cli

    missing = Benchmark(
        "later",
        "bench._not_written_yet",
        "A benchmark whose module does not exist yet",
        (
            planned("event landed → list served, p50", "s", 8.0, "at_most"),
            planned("p95", "s", 15.0, "at_most"),
        ),
    )
    monkeypatch.setattr(cli, "REGISTRY", (*REGISTRY[:1], missing))
    markdown, results_json = tmp_path / "B.md", tmp_path / "r.json"
    code = main(["--quiet", "--only", "later", "--markdown", str(markdown), "--json", str(results_json)])
    assert code == 0
    data = json.loads(results_json.read_text())
    later = data["benchmarks"]["later"]
    assert later["status"] == "not run"
    assert [f["status"] for f in later["figures"]] == ["not run", "not run"]
    assert [f["goal"] for f in later["figures"]] == [8.0, 15.0]
    assert data["benchmarks"][REGISTRY[0].name]["status"] == "skipped"  # not selected, nothing carried over
    assert (
        "| later | event landed → list served, p50 | — | ≤ 8.00 s | — | — | not run |" in markdown.read_text()
    )


def test_registry_plans_the_speed_path():
    speed = next(b for b in REGISTRY if b.name == "speed_path")
    assert speed.module == "bench.speed_path"
    assert [(f.goal, f.kind) for f in speed.planned] == [(4.0, "at_most"), (8.0, "at_most")]


def test_scoring_benchmark_at_tiny_size():
    from bench import scoring

    ctx = Context(
        quick=True,
        verbose=False,
        options={
            "scoring.users": "300,1200",
            "scoring.articles": "1000",
            "scoring.k": "10",
            "scoring.sgemm_n": "128",
            "scoring.sgemm_repeats": "1",
            "scoring.before_users": "300",
            "scoring.chunk_size": "256",
        },
    )
    outcome = scoring.run(ctx)  # raises if top_k_scores disagrees with a brute-force sort

    by_name = {f.name: f for f in outcome.figures}
    share = by_name["scoring matmul, share of sgemm peak"]
    assert share.value > 0 and share.goal == 0.70 and share.kind == "at_least"
    assert [c["users"] for c in outcome.details["curve"]] == [300, 1200]
    assert outcome.details["before_after_same_ranking"] is True
    assert any(title.startswith("ranking.top_k_scores before/after") for title, _ in outcome.tables)


@pytest.mark.parametrize(
    ("n_users", "n_articles", "k", "excluded", "zero_users", "rounded"),
    [
        (200, 3000, 20, 0, 0, False),  # plain
        (200, 3001, 20, 40, 0, False),  # padding columns and exclusions
        (150, 2000, 25, 1990, 0, False),  # fewer eligible than k: -inf tail, exact fallback rows
        (150, 2000, 25, 0, 30, False),  # zero user vectors: all scores tie
        (150, 2000, 10, 5, 0, True),  # many ties
    ],
)
def test_grouped_top_k_matches_the_previous_implementation(
    n_users, n_articles, k, excluded, zero_users, rounded
):
    assert _GroupedLayout.plan(n_articles, k) is not None  # these sizes take the grouped path
    rng = np.random.default_rng(3)
    users = rng.standard_normal((n_users, 16)).astype(np.float32)
    articles = rng.standard_normal((n_articles, 16)).astype(np.float32)
    if rounded:
        users, articles = np.round(users), np.round(articles)
    users[:zero_users] = 0
    exclude = [
        rng.choice(n_articles, size=int(rng.integers(0, excluded + 1)), replace=False) for _ in range(n_users)
    ]

    old_idx, old_scores = top_k_scores_before(users, articles, k, exclude=exclude, chunk_size=64)
    idx, scores = top_k_scores(users, articles, k, exclude=exclude, chunk_size=64)

    # Same scores in the same order, to float32 rounding: BLAS may round the last bit of a dot
    # product differently for differently shaped matmuls (it does on some CPUs).
    np.testing.assert_allclose(scores, old_scores, rtol=1e-5, atol=1e-5)
    full = users @ articles.T
    for u, row in enumerate(exclude):
        full[u, row] = -np.inf
    np.testing.assert_allclose(np.take_along_axis(full, idx, axis=1), scores, rtol=1e-5, atol=1e-5)
    for u in range(n_users):
        assert len(set(idx[u].tolist())) == k
        pairs = list(zip((-scores[u]).tolist(), idx[u].tolist(), strict=True))
        assert pairs == sorted(pairs)  # score descending, then article index ascending
        eligible = np.isfinite(full[u]).sum()
        assert np.isfinite(scores[u]).sum() == min(k, eligible)
    where_exact = [u for u in range(n_users) if len(set(full[u].tolist())) == n_articles]
    np.testing.assert_array_equal(idx[where_exact], old_idx[where_exact])  # no ties: same articles


def test_ceiling_benchmark_at_tiny_size():
    from bench import ceiling

    result = ceiling.measure(users=300, articles=300, days=3.0, sessions=5.2, seed=1, log=lambda _: None)

    # history_rows checked that the click model's terms add up to the oracle's probabilities.
    auc, lift = result["auc"], result["lift"]
    assert set(auc) == {
        "oracle",
        "oracle without position",
        "oracle without quality",
        "click-share interest + true rest",
        "interest posterior + true rest",
        "all estimated, with position",
        "all estimated, position-blind",
        ceiling.POSITION_BLIND_CEILING,
    }
    assert lift["oracle"] == pytest.approx(1.0) and auc["oracle"] > 0.7
    assert all(0.5 < value < auc["oracle"] + 0.02 for value in auc.values())  # nothing beats the truth
    assert result["stats"]["holdout_rows"] > 0 and result["stats"]["view_events"] > 0


def test_ab_variant_specs(tmp_path):
    from bench.ab import Variant
    from bench.common import REPO_ROOT

    assert Variant.parse("now=redis") == Variant("now", "redis", REPO_ROOT, {})
    assert Variant.parse("nolog=sqlite,NEWSREC_LOG_EXPOSURES=false,A=b=c").env == {
        "NEWSREC_LOG_EXPOSURES": "false",
        "A": "b=c",
    }
    checkout = tmp_path / "wt"
    (checkout / "serving").mkdir(parents=True)
    (checkout / "serving" / "main.py").write_text("")
    assert Variant.parse(f"before=sqlite@{checkout}").checkout == checkout.resolve()
    assert Variant.parse("cpu50=bare,NEWSREC_BENCH_BARE_CPU_US=50") == Variant(
        "cpu50", "bare", REPO_ROOT, {"NEWSREC_BENCH_BARE_CPU_US": "50"}
    )
    for bad in ["redis", "=redis", "bare=redis", "x=mysql", "x=redis,NOVALUE", f"x=redis@{tmp_path}"]:
        with pytest.raises(ValueError):
            Variant.parse(bad)


def test_ab_summary_takes_ratios_within_rounds():
    from bench.ab import Measured, summary_rows

    results = {
        "bare": [Measured(0.1, 0.2, 40, 0), Measured(0.1, 1.0, 40, 0), Measured(0.1, 0.25, 40, 0)],
        "api": [Measured(0.2, 0.4, 100, 0), Measured(0.2, 1.5, 120, 1), Measured(0.3, 0.75, 110, 0)],
    }
    bare, api = summary_rows(results)
    assert bare[4] == 1.0
    # Per-round ratios 2.0, 1.5, 3.0: the median is 2.0, not the ratio of the median p99s (0.75 / 0.25).
    assert api == ["api", 0.2, 0.75, 110, 2.0, "2.00 / 1.50 / 3.00", 1]


def test_ab_writes_its_tables_into_the_markdown_section(tmp_path):
    import argparse
    from datetime import UTC, datetime

    from bench.ab import Measured, summary_tables, write_markdown

    args = argparse.Namespace(
        rounds=1,
        rate=[1000.0],
        users=1000,
        workers=2,
        warmup=2.0,
        duration=8.0,
        capacity=True,
        capacity_p99_ms=10.0,
    )
    results = {1000.0: {"bare": [Measured(0.2, 0.42, 85, 0)], "api": [Measured(0.9, 1.85, 727, 0)]}}
    tables = summary_tables(args, results, {"api": [1542.0]}, [["sqlite (our store)", 1000, 3.5, "cached"]])
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text("# newsrec benchmarks\n")
    command = "python -m bench.ab --rounds 1 --capacity --markdown BENCHMARKS.md api=sqlite"

    write_markdown(markdown, command, datetime(2026, 12, 6, 0, 59, tzinfo=UTC), tables)

    text = markdown.read_text()
    assert text.startswith("# newsrec benchmarks\n\n<!-- ab:begin -->\n## ")
    assert text.endswith("<!-- ab:end -->\n")
    assert f"```sh\n{command}\n```" in text and "2026-12-06 00:59 UTC" in text
    assert "1 interleaved rounds, 1,000 req/s, 1,000 users, 2 worker(s)" in text
    assert "| api | 0.9 | 1.85 | 727 | 4.40 | 4.40 | 0 |" in text
    assert "| api | 1,542 | 1,542 |" in text
    assert "| sqlite (our store) | 1,000 | 3.50 | cached |" in text
    assert all(table in text for _, table in tables)  # the same tables `main` prints


def test_the_bare_app_spends_the_cpu_it_is_told_to(monkeypatch):
    """The CPU-matched reference: each recommendation request costs at least the CPU asked for,
    on the thread's CPU clock, and is answered as before."""
    import asyncio
    import time

    from bench import bare_app

    async def call(path: str) -> tuple[int, float]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": path, "query_string": b""}
        start = time.thread_time_ns()
        await bare_app.app(scope, None, send)
        return sent[0]["status"], (time.thread_time_ns() - start) / 1e6

    monkeypatch.setattr(bare_app, "_CPU_NS", 20_000_000)
    status, cpu_ms = asyncio.run(call("/v1/users/u0000001/recommendations"))
    assert status == 200 and cpu_ms >= 20.0
    _, health_cpu_ms = asyncio.run(call("/healthz"))
    assert health_cpu_ms < 20.0  # only the recommendation route spends it


def _endpoint_run(target: str, round_: int, p99_us: float, cpu_s: float, **extra) -> dict:
    latency = {"p50": p99_us / 3, "p90": p99_us / 2, "p99": p99_us, "p999": p99_us * 2, "max": p99_us * 3}
    return {
        "target": target, "workers": 2, "round": round_, "latency_us": latency,
        "service_us": latency, "throughput_rps": 2000.0, "completed": 10_000, "server_cpu_s": cpu_s,
        "non2xx": 0, "errors_io": 0, "timeouts": 0, "unsent": 0, "duration_s": 5.0, "warmup_s": 1.0,
        "loadgen_cpu_s": 0.5, "others_cores": 0.0, "loop": "uvloop", "http": "httptools", **extra,
    }  # fmt: skip


def test_the_endpoint_holds_p99_to_5_ms_at_1000_req_s_below_saturation():
    from bench.endpoint import FilledStore, summarise

    def curve_point(target: str, rate: float, p99_us: float) -> dict:
        return _endpoint_run(target, "curve", p99_us, 1.0, rate=rate, workers=1)

    runs = [
        _endpoint_run("bare", 1, 400.0, 1.0),
        _endpoint_run("sqlite", 1, 1200.0, 3.0),
        curve_point("bare", 1000.0, 300.0),
        curve_point("sqlite", 500.0, 900.0),
        curve_point("sqlite", 1000.0, 6000.0),
    ]
    store = FilledStore("sqlite", 1000, 1.0, None, True, {})
    figures = {f.name: f for f in summarise(runs, [store], [2], 2000.0, 5.0, 1.0, 1, {}, [], 1.0).figures}
    assert figures["SQLite API: p99 at 1,000 req/s (1 worker)"].status == "FAIL"  # 6 ms > 5 ms
    assert figures["SQLite API: p99 at 500 req/s (1 worker)"].status == "info"
    assert figures["bare ASGI app: p99 at 1,000 req/s (1 worker)"].status == "info"


def test_the_fastapi_floor_answers_what_the_bare_app_answers():
    from fastapi.testclient import TestClient

    from bench import bare_app

    with TestClient(bare_app.fastapi_app()) as client:
        found = client.get("/v1/users/u0000003/recommendations")
        assert found.status_code == 200 and found.content == bare_app._BY_USER["u0000003"]
        assert found.headers["content-type"] == "application/json"
        assert client.get("/v1/users/nobody/recommendations").status_code == 404
        assert client.get("/healthz").json() == {"status": "ok"}


def test_the_benchmark_serves_as_the_api_is_run_and_waits_for_every_worker(tmp_path):
    import urllib.request

    from bench import endpoint
    from bench.common import listening_processes

    server = endpoint.Server(endpoint.BARE_APP, 2, endpoint.bare_env(100), tmp_path / "server.log")
    try:
        server.wait_ready(timeout=60)
        assert "serving" in server.process.args and listening_processes(server.process.pid, server.port) == 2
        with urllib.request.urlopen(server.url("/v1/users/u0000003/recommendations"), timeout=5) as response:
            assert response.status == 200
    finally:
        server.stop()
    assert server.process.returncode is not None


def test_the_cpu_matched_bare_app_spends_the_sqlite_apis_extra_cpu_and_is_reported():
    from bench.endpoint import CPU_MATCHED, FilledStore, bare_env, extra_cpu_us, summarise

    assert bare_env(1000) == {"NEWSREC_BENCH_BARE_USERS": "1000"}
    assert bare_env(1000, 212.4) == {"NEWSREC_BENCH_BARE_USERS": "1000", "NEWSREC_BENCH_BARE_CPU_US": "212"}

    runs = [
        _endpoint_run("bare", 1, 400.0, 1.0),  # 100 µs per request
        _endpoint_run("sqlite", 1, 1200.0, 3.0),  # 300 µs
        _endpoint_run("bare", 2, 500.0, 1.2),  # 120 µs
        _endpoint_run("sqlite", 2, 2000.0, 3.5),  # 350 µs
    ]
    assert extra_cpu_us(runs, "sqlite", 2, 1) == pytest.approx(200.0)
    assert extra_cpu_us(runs, "sqlite", 2, 2) == pytest.approx(230.0)
    assert extra_cpu_us(runs, "sqlite", 1, 1) is None  # no run with 1 worker
    assert extra_cpu_us(runs, "redis", 2, 1) is None
    runs += [
        _endpoint_run(CPU_MATCHED, 1, 1000.0, 3.0, bare_cpu_us=200.0),  # 2.5x the round's bare p99
        _endpoint_run(CPU_MATCHED, 2, 1500.0, 3.5, bare_cpu_us=230.0),  # 3.0x
    ]
    store = FilledStore("sqlite", 1000, 1.0, None, True, {})
    outcome = summarise(runs, [store], [2], 2000.0, 5.0, 1.0, 2, {}, [], 1.0)
    figures = {f.name: f for f in outcome.figures}
    label = "bare ASGI app spending the SQLite API's extra CPU (215 µs per request)"
    assert figures[f"{label}: p99"].value == pytest.approx(1.25)
    assert figures[f"{label}: p99 / bare ASGI p99"].value == pytest.approx(2.75)
    assert figures["SQLite API: p99 / bare ASGI p99"].value == pytest.approx(3.5)  # 3.0 and 4.0
    assert figures["SQLite API: p99 / bare ASGI p99"].status == "info"  # reported, no longer a goal
    assert figures["SQLite API: p99 at 2,000 req/s"].goal == 10.0
    tables = dict(outcome.tables)
    assert "bare + 200 µs CPU" in tables["Every run"]
    assert "'bare + N µs CPU': the bare app spending" in tables["Set-up"]


class _RecordingHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request with a small JSON body and records what it was sent."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the load generator expects
    disable_nagle_algorithm = True  # headers and body go out in two writes
    seen: list[tuple[str, str, str | None, bytes]] = []

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append((self.command, self.path, self.headers.get("Content-Type"), body))
        reply = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def recording_server():
    _RecordingHandler.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], _RecordingHandler.seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory):
    from bench.endpoint import build_loadgen

    folder = tmp_path_factory.mktemp("loadgen")
    return build_loadgen(Context(cache_dir=folder, work_dir=folder, verbose=False))


def _run_loadgen(loadgen, port: int, *request: str) -> subprocess.CompletedProcess:
    command = [str(loadgen), "-r", "200", "-d", "0.5", "-c", "2", "-n", "7", "-P", str(port), *request]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_loadgen_post_mode_sends_each_drawn_user_in_the_body(loadgen, recording_server):
    port, seen = recording_server
    done = _run_loadgen(
        loadgen, port, "-m", "POST", "-p", "/get-online-features", "-b", '{"user":["u%07ld"]}'
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["completed"] == summary["scheduled"] == len(seen) == 100
    assert summary["non2xx"] == summary["errors_io"] == summary["timeouts"] == 0
    assert {(method, path, content_type) for method, path, content_type, _ in seen} == {
        ("POST", "/get-online-features", "application/json")
    }
    users = [json.loads(body)["user"][0] for *_, body in seen]  # the whole body arrived: Content-Length
    assert set(users) <= {f"u{i:07d}" for i in range(7)} and len(set(users)) > 1


def test_loadgen_get_mode_is_unchanged(loadgen, recording_server):
    port, seen = recording_server
    done = _run_loadgen(loadgen, port, "-p", "/v1/users/u%07ld/recommendations")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["completed"] == len(seen) == 100
    assert {(method, content_type, body) for method, _, content_type, body in seen} == {("GET", None, b"")}
    assert {path for _, path, *_ in seen} <= {f"/v1/users/u{i:07d}/recommendations" for i in range(7)}


@pytest.mark.parametrize(
    "request_args",
    [
        ["-m", "POST", "-p", "/lookup"],  # POST without a body
        ["-b", '{"user":"%ld"}'],  # a body on a GET
        ["-m", "PUT", "-b", "{}"],
        ["-p", "/users/%s"],  # not a long integer: printf would read a string from a long
        ["-m", "POST", "-p", "/lookup", "-b", '{"user":"%ld","again":"%ld"}'],  # two conversions
    ],
)
def test_loadgen_refuses_requests_it_cannot_format(loadgen, request_args):
    done = _run_loadgen(loadgen, 9, *request_args)  # refused before connecting anywhere
    assert done.returncode == 2 and "usage" in done.stderr


def test_capacity_search_finds_the_highest_rate_within_the_limit():
    from bench.ab import highest_rate_within

    tried: list[float] = []

    def up_to(limit: float):
        def passes(rate: float) -> bool:
            tried.append(rate)
            return rate <= limit

        return passes

    found = highest_rate_within(up_to(5300), start=2000)
    assert 5300 / 1.1 <= found <= 5300
    assert tried[:3] == [2000, 4000, 8000]  # doubling, then bisecting between 4,000 and 8,000
    found = highest_rate_within(up_to(700), start=2000)  # failing from the start: halves, then bisects
    assert 700 / 1.1 <= found <= 700
    assert highest_rate_within(up_to(0), start=1000) == 0.0
    assert highest_rate_within(up_to(90), start=1000, floor=100) == 0.0  # never probes below the floor
    assert min(tried[-4:]) >= 100
    assert highest_rate_within(up_to(1e9), start=1000, ceiling=50_000) == 50_000


def test_ab_takes_feast_peers_as_variants():
    from bench.ab import Variant

    assert Variant.parse("feast=feast-redis").backend == "feast-redis"
    assert Variant.parse("api50=sqlite,NEWSREC_DEFAULT_K=50").env == {"NEWSREC_DEFAULT_K": "50"}
    with pytest.raises(ValueError, match="not served from a checkout"):
        Variant.parse("feast=feast-sqlite@/tmp")


def test_feast_peer_repo_config_and_lookup():
    import yaml

    from bench.feast_peer import LOOKUP, feature_store_yaml, lists_served, redis_connection_string

    redis = yaml.safe_load(
        feature_store_yaml("feast-redis", "newsrec_bench_1", "redis://:s3cret@10.0.0.5:6380/3")
    )
    assert redis["project"] == "newsrec_bench_1"
    assert redis["online_store"] == {
        "type": "redis",
        "connection_string": "10.0.0.5:6380,db=3,password=s3cret",
        "skip_dedup": True,
    }
    sqlite = yaml.safe_load(feature_store_yaml("feast-sqlite", "p"))
    assert sqlite["online_store"] == {"type": "sqlite", "path": "online.db"}
    assert redis_connection_string("redis://127.0.0.1") == "127.0.0.1:6379,db=0"
    for bad in ["rediss://h:6379/0", "unix:///tmp/redis.sock", "redis://h/x"]:
        with pytest.raises(ValueError):
            redis_connection_string(bad)
    with pytest.raises(ValueError):
        feature_store_yaml("feast-dynamo", "p")

    assert json.loads(LOOKUP.body(42))["entities"] == {"user_id": ["u0000042"]}  # the endpoint's user ids
    assert LOOKUP.loadgen_args()[:4] == ["-m", "POST", "-p", "/get-online-features"]

    def response(ids: list[str], status: str = "PRESENT") -> dict:
        return {
            "metadata": {"feature_names": ["user_id", "scores", "article_ids"]},
            "results": [
                {"values": ["u0000042"], "statuses": ["PRESENT"]},
                {"values": [[1.0] * len(ids)], "statuses": [status]},
                {"values": [ids], "statuses": [status]},
            ],
        }

    assert lists_served(response(["a000001", "a000002"]), 2)
    assert not lists_served(response(["a000001"]), 2)
    assert not lists_served(response([], "NOT_FOUND"), 0)


def test_feast_peer_without_its_venv_says_how_to_set_it_up(tmp_path):
    from bench.feast_peer import FeastPeer

    with pytest.raises(FileNotFoundError, match="make bench-feast-setup"):
        FeastPeer("feast-sqlite", 10, tmp_path, venv=tmp_path / "no-venv")


def test_batch_layer_benchmark_stages_every_shard_and_publishes_all_users():
    from bench.batch_layer import measure

    result = measure(users=300, articles=400, shards=2, log=lambda message: None, dim=16, k=10)
    assert sum(shard["users"] for shard in result["per_shard"]) == 300
    assert all(shard["peak_rss_mb"] > 0 for shard in result["per_shard"])


def test_the_instance_is_measured_by_part(tmp_path):
    from bench.speed_path import _instance_bytes

    files = {
        "history/events/event_log.db": 100,  # the one-file event log
        "history/events/event_log.db-wal": 10,
        "history/runs/0a1b.db": 20,  # an older home's per-run files and their index
        "history/runs/index.db": 30,
        "history/runs.db": 40,
        "schedules/schedules.db": 50,
        "storage/0a1b/compute_logs/step.out": 6,  # captured logs, a folder per run
        "storage/9f8e/compute_logs/step.err": 7,
    }
    for name, size in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * size)
    assert _instance_bytes(tmp_path) == {
        "history/events": 110,
        "history/runs/<run>.db": 20,
        "history/runs": 30,
        "history/runs.db": 40,
        "schedules/schedules.db": 50,
        "storage (captured logs)": 13,
    }
