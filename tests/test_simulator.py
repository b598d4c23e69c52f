"""The news-app simulator: landing format, determinism, at-least-once delivery, ground truth, live mode."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from newsrec_assets.cli import main
from newsrec_assets.domain.cdc import ChangeRecord, parse_change_line, parse_ts
from newsrec_assets.domain.events import reconstruct_view_events
from newsrec_assets.domain.simulator import (
    ClickOracle,
    LiveSettings,
    LiveSimulator,
    SimulationConfig,
    load_true_view_events,
    simulate_history,
    write_history,
)
from newsrec_assets.domain.simulator.emitter import MAX_BINLOG_FILE_BYTES, Binlog
from newsrec_assets.domain.simulator.vocabulary import TOPICS, Taxonomy
from newsrec_assets.domain.simulator.world import datetime_to_ms

END = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
TINY = SimulationConfig(end=END, seed=11, users=80, articles=90, days=1.5, window_minutes=10)
FILE_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})/(\d{2})(\d{2})-(\d{4})\.jsonl$")


def _simulate(root: Path, config: SimulationConfig = TINY, at_least_once: bool = False) -> dict:
    history = simulate_history(config)
    return write_history(history, root / "landing", root / "ground_truth", at_least_once=at_least_once)


def _landing_files(landing: Path) -> list[Path]:
    return sorted(landing.rglob("*.jsonl"))


def _read_records(landing: Path) -> list[tuple[Path, ChangeRecord]]:
    return [
        (path, parse_change_line(line))
        for path in _landing_files(landing)
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    _simulate(root)
    return root


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("noisy")
    _simulate(root, at_least_once=True)
    return root


def test_same_seed_gives_identical_bytes(clean: Path, tmp_path: Path) -> None:
    _simulate(tmp_path)
    ours = {
        path.relative_to(tmp_path / "landing"): path.read_bytes()
        for path in _landing_files(tmp_path / "landing")
    }
    theirs = {
        path.relative_to(clean / "landing"): path.read_bytes() for path in _landing_files(clean / "landing")
    }
    assert ours == theirs

    other = tmp_path / "other_seed"
    _simulate(other, replace(TINY, seed=12))
    assert {
        p.relative_to(other / "landing"): p.read_bytes() for p in _landing_files(other / "landing")
    } != theirs


def test_window_size_only_changes_how_records_are_filed(clean: Path, tmp_path: Path) -> None:
    _simulate(tmp_path, replace(TINY, window_minutes=5))

    def lines(landing: Path) -> list[str]:
        return sorted(line for path in _landing_files(landing) for line in path.read_text().splitlines())

    assert lines(tmp_path / "landing") == lines(clean / "landing")
    assert len(_landing_files(tmp_path / "landing")) > len(_landing_files(clean / "landing"))


def test_every_line_parses_and_sits_in_its_window_file(clean: Path) -> None:
    records = _read_records(clean / "landing")
    assert {record.table for _, record in records} == {"articles", "user_article_views", "impressions"}
    for path, record in records:
        relative = path.relative_to(clean / "landing" / record.table)
        match = FILE_NAME.match(relative.as_posix())
        assert match, relative
        day, hour, minute, _ = match.groups()
        window_start = datetime.fromisoformat(f"{day}T{hour}:{minute}:00+00:00")
        assert window_start <= record.source_timestamp < window_start + timedelta(minutes=10)
        assert record.read_timestamp > record.source_timestamp
        assert record.log_file is not None and record.log_position is not None
    assert len({record.change_key for _, record in records}) == len(records)  # no duplicates without noise


def test_log_positions_grow_with_source_time(clean: Path) -> None:
    records = sorted(
        (record for _, record in _read_records(clean / "landing")), key=lambda r: r.sort_keys[1:]
    )
    assert len({tuple(r.sort_keys[1:]) for r in records}) == len(records)
    times = [record.source_timestamp for record in records]
    assert times == sorted(times)


def test_binlog_rotates_and_stays_ordered() -> None:
    binlog = Binlog(position=MAX_BINLOG_FILE_BYTES - 500)
    files, positions = binlog.append(np.full(10, 200))
    assert files.tolist() == [1, 1] + [2] * 8
    assert list(zip(files, positions, strict=True)) == sorted(zip(files, positions, strict=True))


def test_view_count_increments_per_row(clean: Path) -> None:
    rows: dict[tuple[str, str], list[ChangeRecord]] = defaultdict(list)
    for _, record in _read_records(clean / "landing"):
        if record.table == "user_article_views":
            rows[(record.payload["user_id"], record.payload["article_id"])].append(record)
    assert rows
    for versions in rows.values():
        versions.sort(key=lambda r: (r.log_file, r.log_position))
        assert [v.payload["view_count"] for v in versions] == list(range(1, len(versions) + 1))
        assert [v.change_type for v in versions] == ["INSERT"] + ["UPDATE-INSERT"] * (len(versions) - 1)
        assert len({v.payload["first_viewed_at"] for v in versions}) == 1
        assert versions[0].payload["first_viewed_at"] == versions[0].payload["last_viewed_at"]
    assert sum(len(v) >= 2 for v in rows.values()) / len(rows) > 0.05  # in-place updates are common


def _window_of_file(path: Path) -> datetime:
    day, hour, minute, _ = FILE_NAME.match(f"{path.parent.name}/{path.name}").groups()
    return datetime.fromisoformat(f"{day}T{hour}:{minute}:00+00:00")


def test_at_least_once_only_duplicates_changes_that_dedup_by_change_key(clean: Path, noisy: Path) -> None:
    originals = {record.change_key: record for _, record in _read_records(clean / "landing")}
    copies_by_key: dict[str, list[tuple[Path, ChangeRecord]]] = defaultdict(list)
    for path, record in _read_records(noisy / "landing"):
        copies_by_key[record.change_key].append((path, record))
    assert set(copies_by_key) == set(originals)

    resent = reread = late = 0
    for key, copies in copies_by_key.items():
        original = originals[key]
        for _, record in copies:
            assert (record.payload, record.change_type, record.sort_keys, record.source_timestamp) == (
                original.payload,
                original.change_type,
                original.sort_keys,
                original.source_timestamp,
            )
        assert len(copies) <= 2
        if len(copies) == 1:  # delivered once, but maybe in a later window's file
            late += _window_of_file(copies[0][0]) > original.source_timestamp
        if len(copies) == 2:
            assert copies[0][0] != copies[1][0]  # a copy always arrives in another file
            same_uuid = copies[0][1].uuid == copies[1][1].uuid
            resent += same_uuid
            reread += not same_uuid
    assert resent > 0 and reread > 0 and late > 0


def test_reconstructed_view_events_equal_the_true_ones(noisy: Path) -> None:
    records = [record for _, record in _read_records(noisy / "landing")]
    truth = load_true_view_events(noisy / "ground_truth")
    assert reconstruct_view_events(records) == truth
    summary = json.loads((noisy / "ground_truth" / "summary.json").read_text())
    assert summary["view_events"] == len(truth)
    assert summary["duplicates_injected"]["resent_same_uuid"] > 0


def test_users_click_their_interest_subcategories_more(clean: Path) -> None:
    with np.load(clean / "ground_truth" / "world.npz") as world:
        interest = world["user_interest"]
        article_subcategory = world["article_subcategory"]
    records = [record for _, record in _read_records(clean / "landing")]
    clicked = {
        (r.payload["last_impression_id"], r.payload["article_id"])
        for r in records
        if r.table == "user_article_views" and r.payload["last_impression_id"] is not None
    }
    shown = [r.payload for r in records if r.table == "impressions"]
    assert clicked <= {(p["impression_id"], p["article_id"]) for p in shown}
    outcomes: dict[bool, list[bool]] = {True: [], False: []}
    for row in shown:
        user, article = int(row["user_id"][1:]) - 1, int(row["article_id"][1:]) - 1
        interested = interest[user, article_subcategory[article]] > 0
        outcomes[bool(interested)].append((row["impression_id"], row["article_id"]) in clicked)
    assert np.mean(outcomes[True]) > 3 * np.mean(outcomes[False])


def test_oracle_loads_and_scores_impressions(clean: Path) -> None:
    oracle = ClickOracle.load(clean / "ground_truth")
    shown_at = np.array(["2026-11-19T12:00:00"] * 3, dtype="datetime64[ms]")
    probabilities = oracle.click_probability(
        ["u000001", "u000002", "u000080"], ["a000001", "a000002", "a000090"], shown_at, [0, 4, 9]
    )
    assert probabilities.shape == (3,)
    assert np.all((probabilities > 0) & (probabilities < 1))
    as_datetimes = oracle.click_probability(
        ["u000001"], ["a000001"], [datetime(2026, 11, 19, 12, tzinfo=UTC)], [0]
    )
    assert as_datetimes[0] == pytest.approx(probabilities[0])
    # Top positions are more likely to be clicked, all else equal.
    by_position = oracle.click_probability(
        ["u000003"] * 10, ["a000005"] * 10, shown_at[[0] * 10], np.arange(10)
    )
    assert np.all(np.diff(by_position) < 0)
    with pytest.raises(KeyError):
        oracle.click_probability(["u999999"], ["a000001"], shown_at[:1], [0])

    # The oracle is the model that generated the clicks: its mean matches the observed click rate.
    summary = json.loads((clean / "ground_truth" / "summary.json").read_text())
    assert summary["mean_true_click_probability"] == pytest.approx(summary["click_through_rate"], abs=0.03)


def test_articles_have_topical_text_and_a_cms_lifecycle(clean: Path) -> None:
    taxonomy = Taxonomy.default()
    assert taxonomy.n_categories >= 8 and taxonomy.n_subcategories >= 30
    assert all(25 <= len(words) <= 40 for _, subtopics in TOPICS.values() for words in subtopics.values())

    versions = [r for _, r in _read_records(clean / "landing") if r.table == "articles"]
    inserts = [r for r in versions if r.change_type == "INSERT"]
    assert len(inserts) == TINY.articles
    assert {r.change_type for r in versions} >= {"INSERT", "UPDATE-INSERT"}
    for record in inserts:
        row = record.payload
        assert 6 <= len(row["title"].split()) <= 15
        assert 40 <= len(row["body"].split()) <= 150
        assert row["subcategory"] in taxonomy.subcategories
        assert row["status"] == "published" and row["published_at"] == record.source_timestamp
    for record in versions:
        assert 40 <= len(record.payload["body"].split()) <= 150


def test_live_mode_continues_the_stream(tmp_path: Path) -> None:
    summary = _simulate(tmp_path, at_least_once=True)
    landing, ground_truth = tmp_path / "landing", tmp_path / "ground_truth"
    history_records = [record for _, record in _read_records(landing)]
    last_history_position = max((r.log_file, r.log_position) for r in history_records)

    now = [datetime_to_ms(END) + 60_000]  # a fake wall clock that advances when the loop sleeps

    def sleep(seconds: float) -> None:
        now[0] += int(seconds * 1000)

    settings = LiveSettings(rate=30, duration_seconds=120, articles_per_hour=600, at_least_once=True)
    live_summary = LiveSimulator(landing, ground_truth, settings).run(clock_ms=lambda: now[0], sleep=sleep)
    assert live_summary.view_events > 0 and live_summary.new_articles > 0
    assert not list(landing.rglob("*.tmp"))

    all_records = [record for _, record in _read_records(landing)]
    live_records = [r for r in all_records if r.source_timestamp >= END]
    assert live_records
    assert min((r.log_file, r.log_position) for r in live_records) > last_history_position
    assert reconstruct_view_events(all_records) == load_true_view_events(ground_truth)
    assert len(load_true_view_events(ground_truth)) == summary["view_events"] + live_summary.view_events
    # Articles published live are known to the oracle.
    newest = max(r.payload["article_id"] for r in live_records if r.table == "articles")
    oracle = ClickOracle.load(ground_truth)
    assert 0 < oracle.click_probability(["u000001"], [newest], [now[0]], [0])[0] < 1


def test_cli_simulate_writes_summary_and_refuses_to_mix_runs(tmp_path: Path) -> None:
    arguments = [
        "simulate",
        "--users",
        "40",
        "--articles",
        "40",
        "--days",
        "1",
        "--end",
        "2026-11-20T00:00:00Z",
        "--landing",
        str(tmp_path / "landing"),
        "--ground-truth",
        str(tmp_path / "truth"),
    ]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "truth" / "summary.json").read_text())["users"] == 40
    assert CliRunner().invoke(main, arguments).exit_code != 0
    assert CliRunner().invoke(main, [*arguments, "--overwrite"]).exit_code == 0
    first_time = min(
        parse_ts(json.loads(p.read_text().splitlines()[0])["source_timestamp"])
        for p in (tmp_path / "landing").rglob("*.jsonl")
    )
    assert first_time >= END - timedelta(days=1)
