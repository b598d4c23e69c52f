"""Live mode: continue the simulated app at wall-clock time, flushing small landing files.

It picks up the saved simulator state (binlog position, row view counts, app memory), so the
stream it writes continues the history's: log positions keep growing and `view_count` keeps
counting. Sessions arrive as a Poisson process sized to the requested view-event rate; clicks
land a few seconds to minutes after their list was shown, so views are held until their time.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from newsrec_assets.domain.simulator.app import NewsApp, Views, concat_views
from newsrec_assets.domain.simulator.click_model import ClickOracle
from newsrec_assets.domain.simulator.emitter import (
    LATE,
    REREAD,
    RESENT,
    TABLES,
    ChangeLog,
    LandingWriter,
    Redelivery,
    uuid_at,
)
from newsrec_assets.domain.simulator.ground_truth import (
    STATE_FILE,
    TRUE_VIEW_COLUMNS,
    SimulatorState,
    load_world,
    save_articles,
    save_true_views,
    true_view_arrays,
)
from newsrec_assets.domain.simulator.world import ArticleChange, Articles, Newsroom, ms_to_datetime

STATE_SAVE_INTERVAL_MS = 5_000


@dataclass(frozen=True)
class LiveSettings:
    """How fast and how long live mode runs."""

    rate: float = 5.0  # view events per second (impressions come at about 5x that)
    duration_seconds: float | None = None  # None: until interrupted
    flush_seconds: float = 1.0
    articles_per_hour: float = 30.0
    window_minutes: int = 10
    at_least_once: bool = False


@dataclass
class LiveSummary:
    started: str = ""
    stopped: str = ""
    records_by_table: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    view_events: int = 0
    new_articles: int = 0
    files: int = 0
    duplicates_injected: int = 0
    late_records: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _StopFlag:
    """Set by Ctrl-C/SIGTERM so the loop ends between flushes; a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.is_set = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.is_set and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.is_set = True

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class LiveSimulator:
    """The app running in real time, writing to the same landing layout as the history."""

    def __init__(self, landing: Path, ground_truth: Path, settings: LiveSettings) -> None:
        self.ground_truth = Path(ground_truth)
        if not (self.ground_truth / STATE_FILE).exists():
            raise FileNotFoundError(
                f"no simulator state in {self.ground_truth}; run the history simulation first"
            )
        self.settings = settings
        self.taxonomy, self.params, self.users, self.articles, _ = load_world(self.ground_truth)
        self.state = SimulatorState.load(self.ground_truth)
        self.state.live_runs += 1
        self.rng = np.random.default_rng([self.state.seed, self.state.live_runs])
        topic_share = np.bincount(self.articles.subcategory, minlength=self.taxonomy.n_subcategories) + 1.0
        self.newsroom = Newsroom(
            self.rng, self.taxonomy, self.params.quality_sd, topic_share / topic_share.sum()
        )
        self.app = NewsApp(self.articles, self._oracle(self.articles), self.state.app_state)
        self.writer = LandingWriter(Path(landing), settings.window_minutes)
        self.redelivery = Redelivery()
        self.pending_views = concat_views([])
        self.deferred_lines: dict[tuple[str, int], list[str]] = defaultdict(list)
        self.articles_changed = False
        self.true_views: list[dict[str, np.ndarray]] = []
        self.summary = LiveSummary()

    def _oracle(self, articles: Articles) -> ClickOracle:
        return ClickOracle(
            self.params,
            self.users.interest,
            self.taxonomy.subcategory_category,
            articles.subcategory,
            articles.quality,
            articles.published_ms,
        )

    def run(
        self,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        sleep: Callable[[float], None] = time.sleep,
        on_flush: Callable[[LiveSummary], None] | None = None,
    ) -> LiveSummary:
        """Run until the duration is over or Ctrl-C/SIGTERM; always leaves a consistent state."""
        settings = self.settings
        # If the saved history ends in the future (an `--end` ahead of now), run that far ahead of
        # the wall clock so that source times keep growing.
        ahead_ms = max(self.state.clock_ms + 1 - clock_ms(), 0)

        def simulated_now() -> int:
            return clock_ms() + ahead_ms

        previous_ms = simulated_now()
        stop_ms = (
            None if settings.duration_seconds is None else previous_ms + int(settings.duration_seconds * 1000)
        )
        last_save_ms = previous_ms
        self.summary.started = ms_to_datetime(previous_ms).isoformat()
        with _StopFlag() as stop:
            while not stop.is_set and (stop_ms is None or previous_ms < stop_ms):
                wake_ms = previous_ms + int(settings.flush_seconds * 1000)
                if stop_ms is not None:
                    wake_ms = min(wake_ms, stop_ms)
                sleep(max(wake_ms - simulated_now(), 0) / 1000)
                now_ms = max(simulated_now(), previous_ms + 1)
                if stop_ms is not None:
                    now_ms = min(now_ms, stop_ms)
                self._tick(previous_ms, now_ms)
                previous_ms = now_ms
                if on_flush is not None:
                    on_flush(self.summary)
                if now_ms - last_save_ms >= STATE_SAVE_INTERVAL_MS:
                    self._save(now_ms)
                    last_save_ms = now_ms
            self._write_deferred()
            self._save(previous_ms)
        self.summary.stopped = ms_to_datetime(previous_ms).isoformat()
        return self.summary

    def _tick(self, previous_ms: int, now_ms: int) -> None:
        """Simulate (previous_ms, now_ms] and write what happened in it."""
        rng, settings = self.rng, self.settings
        elapsed_s = (now_ms - previous_ms) / 1000
        article_changes = self._publish(previous_ms, now_ms, elapsed_s)

        sessions_per_second = settings.rate / max(self.state.views_per_session, 0.1)
        n_sessions = int(rng.poisson(sessions_per_second * elapsed_s))
        session_ms = np.sort(rng.integers(previous_ms + 1, now_ms + 1, size=n_sessions))
        activity = self.users.sessions_per_day / self.users.sessions_per_day.sum()
        session_users = rng.choice(self.users.count, size=n_sessions, p=activity)
        outcome = self.app.serve(rng, session_users, session_ms, previous_ms, now_ms)

        views = concat_views([self.pending_views, outcome.views])
        due = views.viewed_ms <= now_ms
        self.pending_views = views.select(~due)
        due_views: Views = views.select(due)

        log = ChangeLog.build(
            rng, article_changes, outcome.impressions, due_views, self.state.binlog, self.state.view_rows
        )
        self._write(log)
        self.true_views.append(true_view_arrays(log))
        self.summary.view_events += len(due_views)
        self.summary.records_by_table["articles"] += len(article_changes)
        self.summary.records_by_table["impressions"] += len(outcome.impressions)
        self.summary.records_by_table["user_article_views"] += len(due_views)

    def _publish(self, previous_ms: int, now_ms: int, elapsed_s: float) -> list[ArticleChange]:
        count = int(self.rng.poisson(self.settings.articles_per_hour * elapsed_s / 3600))
        changes = []
        for published_ms in np.sort(self.rng.integers(previous_ms + 1, now_ms + 1, size=count)).tolist():
            subcategory = self.newsroom.draw_subcategory()
            index = self.articles.append(subcategory, self.newsroom.draw_quality(), published_ms)
            self.state.app_state.add_article()
            changes.append(
                ArticleChange(
                    published_ms, index, "INSERT", self.newsroom.new_row(index, subcategory, published_ms)
                )
            )
        if changes:
            self.app.oracle = self._oracle(self.articles)
            self.articles_changed = True
            self.summary.new_articles += len(changes)
        return changes

    def _write(self, log: ChangeLog) -> None:
        """One new file per table and window touched; lines held back from the last flush follow.

        With at-least-once noise, late lines and copies are held back to the next flush, so they
        arrive in a later file than their original.
        """
        previously_deferred, self.deferred_lines = self.deferred_lines, defaultdict(list)
        files: dict[tuple[str, int], list[str]] = defaultdict(list)
        windows = self.writer.window_of(log.source_ms)
        draws = self.rng.random(len(log)) if self.settings.at_least_once else np.ones(len(log))
        kinds = self.redelivery.classify(draws).tolist()
        for change, kind in enumerate(kinds):
            key = (TABLES[int(log.table[change])], int(windows[change]))
            line = log.record(change).to_json_line()
            (self.deferred_lines if kind == LATE else files)[key].append(line)
            if kind == RESENT:
                self.deferred_lines[key].append(line)
            elif kind == REREAD:
                reread_ms = int(log.read_ms[change]) + int(self.rng.integers(1_000, 30_000))
                reread = log.record(change, uuid=uuid_at(self.rng.bytes(16), 0), read_ms=reread_ms)
                self.deferred_lines[key].append(reread.to_json_line())
            self.summary.late_records += int(kind == LATE)
            self.summary.duplicates_injected += int(kind in (RESENT, REREAD))
        for batch in (files, previously_deferred):
            for (table, window_ms), lines in sorted(batch.items()):
                self.writer.write(table, window_ms, self.writer.next_seq(table, window_ms), lines)
        self.summary.files = self.writer.files_written

    def _write_deferred(self) -> None:
        for (table, window_ms), lines in sorted(self.deferred_lines.items()):
            self.writer.write(table, window_ms, self.writer.next_seq(table, window_ms), lines)
        self.deferred_lines.clear()
        self.summary.files = self.writer.files_written

    def _save(self, now_ms: int) -> None:
        if self.articles_changed:
            save_articles(self.ground_truth, self.taxonomy, self.users, self.articles)
            self.articles_changed = False
        if self.true_views:
            columns = {
                name: np.concatenate([part[name] for part in self.true_views]) for name in TRUE_VIEW_COLUMNS
            }
            save_true_views(self.ground_truth, columns, live_run=self.state.live_runs)
        self.state.clock_ms = now_ms
        self.state.save(self.ground_truth)
