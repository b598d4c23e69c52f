"""Batch mode: simulate days of the news app and write them as a landing zone plus ground truth."""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from newsrec_assets.domain.simulator.app import (
    AppState,
    Impressions,
    NewsApp,
    Views,
    concat_impressions,
    concat_views,
)
from newsrec_assets.domain.simulator.click_model import ClickModelParams, ClickOracle
from newsrec_assets.domain.simulator.emitter import (
    TABLES,
    Binlog,
    ChangeLog,
    DeliveryStats,
    LandingWriter,
    Redelivery,
    ViewRows,
    count_records,
    place_history,
    render_files,
)
from newsrec_assets.domain.simulator.ground_truth import (
    SUMMARY_FILE,
    SimulatorState,
    save_true_views,
    save_world,
    true_view_arrays,
    write_json,
)
from newsrec_assets.domain.simulator.vocabulary import Taxonomy
from newsrec_assets.domain.simulator.world import (
    MS_PER_DAY,
    MS_PER_MINUTE,
    READING_BY_HOUR,
    ArticleChange,
    Articles,
    Newsroom,
    Users,
    datetime_to_ms,
    generate_users,
    ms_to_datetime,
    sample_diurnal_times,
)

# The app's state (catalogue, popularity) advances in fixed steps, independent of the landing
# window, so that the simulated events do not depend on how they are filed.
STEP_MS = 10 * MS_PER_MINUTE


@dataclass(frozen=True)
class SimulationConfig:
    """Size and span of a simulated history; the same config and seed give identical output."""

    end: datetime
    seed: int = 7
    users: int = 3000
    articles: int = 3000
    days: float = 7.0
    window_minutes: int = 10
    # about 5 sessions a day: enough impressions per user for a recommender to tell a topic that a
    # user passes over from one they read (bench/ceiling.py measures what the density allows)
    mean_sessions_per_day: float = 5.2

    @property
    def end_ms(self) -> int:
        return datetime_to_ms(self.end)

    @property
    def start_ms(self) -> int:
        return self.end_ms - int(round(self.days * MS_PER_DAY))


@dataclass
class History:
    """A simulated history, in memory."""

    config: SimulationConfig
    taxonomy: Taxonomy
    params: ClickModelParams
    users: Users
    articles: Articles
    article_changes: list[ArticleChange]
    impressions: Impressions
    views: Views
    sessions: int
    app_state: AppState
    oracle: ClickOracle


def _streams(seed: int) -> dict[str, np.random.Generator]:
    names = ("users", "newsroom", "sessions", "app", "cdc", "redelivery")
    return {
        name: np.random.default_rng(sequence)
        for name, sequence in zip(names, np.random.SeedSequence(seed).spawn(len(names)), strict=True)
    }


def simulate_history(config: SimulationConfig, progress: bool = False) -> History:
    """Simulate users, articles, lists shown and views over [end - days, end)."""
    streams = _streams(config.seed)
    taxonomy = Taxonomy.default()
    params = ClickModelParams()
    users = generate_users(streams["users"], config.users, taxonomy, config.mean_sessions_per_day)
    newsroom = Newsroom(streams["newsroom"], taxonomy, params.quality_sd)
    articles, article_changes = newsroom.publish_history(config.articles, config.start_ms, config.end_ms)
    oracle = ClickOracle(
        params,
        users.interest,
        taxonomy.subcategory_category,
        articles.subcategory,
        articles.quality,
        articles.published_ms,
    )

    session_rng = streams["sessions"]
    sessions_per_user = session_rng.poisson(users.sessions_per_day * config.days)
    session_users = np.repeat(np.arange(users.count), sessions_per_user)
    session_ms = sample_diurnal_times(
        session_rng, len(session_users), config.start_ms, config.end_ms, READING_BY_HOUR
    )
    order = np.lexsort((session_users, session_ms))
    session_users, session_ms = session_users[order], session_ms[order]

    state = AppState.empty(users.count, articles.count, taxonomy.n_subcategories, config.start_ms)
    app = NewsApp(articles, oracle, state)
    app_rng = streams["app"]
    impressions: list[Impressions] = []
    views: list[Views] = []
    sessions_served = 0
    step_starts = range(config.start_ms, config.end_ms, STEP_MS)
    bounds = np.searchsorted(session_ms, [*step_starts, config.end_ms])
    for step, step_start in enumerate(
        tqdm(step_starts, desc="simulating", unit="step", disable=not progress)
    ):
        step_end = min(step_start + STEP_MS, config.end_ms)
        in_step = slice(bounds[step], bounds[step + 1])
        outcome = app.serve(
            app_rng, session_users[in_step], session_ms[in_step], step_start, step_end, config.end_ms
        )
        impressions.append(outcome.impressions)
        views.append(outcome.views)
        sessions_served += outcome.sessions
    return History(
        config=config,
        taxonomy=taxonomy,
        params=params,
        users=users,
        articles=articles,
        article_changes=article_changes,
        impressions=concat_impressions(impressions),
        views=concat_views(views),
        sessions=sessions_served,
        app_state=state,
        oracle=oracle,
    )


def landing_has_files(landing: Path) -> bool:
    return any(any((landing / table).rglob("*.jsonl")) for table in TABLES if (landing / table).exists())


def write_history(
    history: History,
    landing: Path,
    ground_truth: Path,
    at_least_once: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Write the landing files and the ground-truth folder; return the run summary."""
    landing, ground_truth = Path(landing), Path(ground_truth)
    if landing_has_files(landing):
        if not overwrite:
            raise FileExistsError(f"{landing} already holds change files; pass overwrite to replace them")
        for table in TABLES:
            shutil.rmtree(landing / table, ignore_errors=True)

    config = history.config
    streams = _streams(config.seed)
    binlog, view_rows = Binlog(), ViewRows()
    log = ChangeLog.build(
        streams["cdc"], history.article_changes, history.impressions, history.views, binlog, view_rows
    )
    writer = LandingWriter(landing, config.window_minutes)
    last_window_ms = int(writer.window_of(np.asarray([config.end_ms - 1]))[0])
    placement, delivery = place_history(
        log, writer, last_window_ms, streams["redelivery"] if at_least_once else None, Redelivery()
    )
    with tqdm(total=len(placement.change), desc="writing", unit="rec", disable=not progress) as bar:
        for table, window_ms, seq, lines in render_files(log, placement):
            writer.write(table, window_ms, seq, lines)
            bar.update(len(lines))

    for stale in ground_truth.glob("views_live_*.npz"):  # live runs that continued an older history
        stale.unlink()
    settings = {
        key: str(value) if isinstance(value, datetime) else value for key, value in asdict(config).items()
    }
    save_world(ground_truth, history.taxonomy, history.params, history.users, history.articles, settings)
    save_true_views(ground_truth, true_view_arrays(log))
    SimulatorState(
        seed=config.seed,
        clock_ms=config.end_ms,
        binlog=binlog,
        app_state=history.app_state,
        view_rows=view_rows,
        views_per_session=len(history.views) / max(history.sessions, 1),
    ).save(ground_truth)

    summary = _summary(history, log, view_rows, writer, delivery, at_least_once)
    write_json(ground_truth / SUMMARY_FILE, summary)
    return summary


def _summary(
    history: History,
    log: ChangeLog,
    view_rows: ViewRows,
    writer: LandingWriter,
    delivery: DeliveryStats,
    at_least_once: bool,
) -> dict[str, Any]:
    config = history.config
    clicks = int((history.views.impression_number >= 0).sum())
    rows = np.asarray([count for count, _ in view_rows.rows.values()])
    shown = history.impressions
    true_ctr = history.oracle.probability_by_index(shown.user, shown.article, shown.shown_ms, shown.position)
    return {
        "seed": config.seed,
        "start": ms_to_datetime(config.start_ms).isoformat(),
        "end": ms_to_datetime(config.end_ms).isoformat(),
        "users": history.users.count,
        "articles": history.articles.count,
        "sessions": history.sessions,
        "records_by_table": count_records(log),
        "distinct_records": len(log),
        "files": writer.files_written,
        "at_least_once": at_least_once,
        "duplicates_injected": {"resent_same_uuid": delivery.resent, "reread_new_uuid": delivery.reread},
        "late_records": delivery.late,
        "view_events": len(history.views),
        "view_events_from_lists": clicks,
        "view_events_reopened": len(history.views) - clicks,
        "view_rows": len(rows),
        "view_rows_with_2_or_more_views": float((rows >= 2).mean()) if len(rows) else 0.0,
        "click_through_rate": clicks / max(len(shown), 1),
        "mean_true_click_probability": float(true_ctr.mean()) if len(shown) else 0.0,
    }
