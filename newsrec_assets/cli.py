"""The `newsrec` command line. Commands import their dependencies lazily to keep startup fast."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from newsrec_assets.settings import local_paths


def _default_end() -> datetime:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(minutes=now.minute % 10)


def _parse_end(value: str | None) -> datetime:
    if value is None:
        return _default_end()
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time", param_hint="--end") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.group()
def main() -> None:
    """newsrec: a near-real-time news recommender."""


@main.command()
@click.option("--seed", type=int, default=7, show_default=True, help="Random seed; same seed, same bytes.")
@click.option("--users", type=click.IntRange(min=1), default=3000, show_default=True)
@click.option("--articles", type=click.IntRange(min=10), default=3000, show_default=True)
@click.option("--days", type=click.FloatRange(min=0.01), default=7.0, show_default=True)
@click.option(
    "--sessions-per-day",
    type=click.FloatRange(min=0.01),
    default=None,
    help="Mean app sessions per user per day, heavy-tailed across users (default: 5.2, the simulator's).",
)
@click.option(
    "--end", help="End of the history (ISO 8601, UTC if no zone). Default: now, rounded down to 10 min."
)
@click.option(
    "--window-minutes",
    type=click.IntRange(1, 60),
    default=10,
    show_default=True,
    help="Source-time span of one landing file.",
)
@click.option(
    "--landing",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: local_paths().landing,
    show_default=True,
    help="Landing folder (<landing>/<table>/<date>/<HHMM>-<seq>.jsonl).",
)
@click.option(
    "--ground-truth",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: local_paths().ground_truth,
    show_default=True,
    help="Folder for the true interests, click model, view events and simulator state.",
)
@click.option(
    "--at-least-once",
    is_flag=True,
    help="Deliver ~3% of records twice (same or new uuid) and ~1% late, into other files.",
)
@click.option("--overwrite", is_flag=True, help="Replace change files already in the landing folder.")
@click.option("--live", is_flag=True, help="Continue from the saved state at wall-clock time.")
@click.option(
    "--rate",
    type=click.FloatRange(min=0.01),
    default=5.0,
    show_default=True,
    help="Live mode: view events per second (about 5x as many impression records).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Live mode: seconds to run (default: until Ctrl-C).",
)
@click.option(
    "--articles-per-hour",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Live mode: newly published articles per hour.",
)
def simulate(
    seed: int,
    users: int,
    articles: int,
    days: float,
    sessions_per_day: float,
    end: str | None,
    window_minutes: int,
    landing: Path,
    ground_truth: Path,
    at_least_once: bool,
    overwrite: bool,
    live: bool,
    rate: float,
    duration: float | None,
    articles_per_hour: float,
) -> None:
    """Simulate the news app's database and write its CDC change stream to the landing folder.

    Batch mode writes `--days` of history ending at `--end` plus the ground truth; `--live` then
    keeps appending small files (one flush a second) until `--duration` is over or Ctrl-C.
    """
    if live:
        _simulate_live(
            landing, ground_truth, rate, duration, articles_per_hour, window_minutes, at_least_once
        )
        return

    import time

    from newsrec_assets.domain.simulator import SimulationConfig, simulate_history, write_history

    config = SimulationConfig(
        end=_parse_end(end),
        seed=seed,
        users=users,
        articles=articles,
        days=days,
        window_minutes=window_minutes,
        **({} if sessions_per_day is None else {"mean_sessions_per_day": sessions_per_day}),
    )
    started = time.perf_counter()
    history = simulate_history(config, progress=True)
    try:
        summary = write_history(history, landing, ground_truth, at_least_once, overwrite, progress=True)
    except FileExistsError as error:
        raise click.UsageError(f"{error} (use --overwrite)") from error
    click.echo(json.dumps(summary, indent=2))
    click.echo(f"wrote {landing} and {ground_truth} in {time.perf_counter() - started:.1f} s")


def _simulate_live(
    landing: Path,
    ground_truth: Path,
    rate: float,
    duration: float | None,
    articles_per_hour: float,
    window_minutes: int,
    at_least_once: bool,
) -> None:
    from newsrec_assets.domain.simulator import LiveSettings, LiveSimulator

    settings = LiveSettings(
        rate=rate,
        duration_seconds=duration,
        articles_per_hour=articles_per_hour,
        window_minutes=window_minutes,
        at_least_once=at_least_once,
    )
    try:
        simulator = LiveSimulator(landing, ground_truth, settings)
    except FileNotFoundError as error:
        raise click.UsageError(str(error)) from error
    click.echo(f"live: ~{rate:g} view events/s into {landing}; Ctrl-C to stop", err=True)
    flushes = 0

    def report(summary: object) -> None:
        nonlocal flushes
        flushes += 1
        if flushes % 10 == 0:
            click.echo(
                f"  {json.dumps(simulator.summary.records_by_table)} files={simulator.summary.files}",
                err=True,
            )

    summary = simulator.run(on_flush=report)
    click.echo(json.dumps(summary.to_json(), indent=2))


if __name__ == "__main__":
    main()


@main.command()
@click.option("--select", default="*", show_default=True, help="Dagster asset selection, e.g. 'group:model'.")
def materialize(select: str) -> None:
    """Materialise assets once, in this process, recorded in the Dagster instance (DAGSTER_HOME)."""
    from newsrec_assets.orchestration import materialize_selection

    result = materialize_selection(select)
    raise SystemExit(0 if result.success else 1)


@main.command()
@click.option("--days", type=click.FloatRange(min=1.0), default=2.0, show_default=True, help="Days measured.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the plot (PNG) here.",
)
def replay(days: float, seed: int, plot: Path | None) -> None:
    """What near-real-time is worth: replay the simulated app with four serving policies.

    Materialises `freshness_replay` (recorded in the Dagster instance, plots in the UI) on the
    published model and the simulated history under $NEWSREC_HOME, and prints its table: daily
    batch at 04:00, 30-minute batch, + speed layer, + fresh-article merge at read time.
    """
    import dagster as dg

    from newsrec_assets.defs.evaluation.assets import FreshnessReplayConfig
    from newsrec_assets.orchestration import materialize_selection

    result = materialize_selection(
        "freshness_replay",
        run_config=dg.RunConfig(ops={"freshness_replay": FreshnessReplayConfig(days=days, seed=seed)}),
    )
    if not result.success:
        raise SystemExit(1)
    metadata = result.asset_materializations_for_node("freshness_replay")[0].metadata
    click.echo(metadata["policies"].value)
    if plot is not None:
        import base64

        embedded = metadata["plot"].value  # ![plot](data:image/png;base64,...)
        plot.write_bytes(base64.b64decode(embedded[embedded.index("base64,") + 7 : embedded.rindex(")")]))
        click.echo(f"plot: {plot}")


@main.command(name="import-mind")
@click.option(
    "--news", "news_path", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True
)
@click.option(
    "--behaviors",
    "behaviors_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    required=True,
)
@click.option(
    "--landing",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: local_paths().landing,
    show_default="$NEWSREC_HOME/landing",
)
@click.option("--window-minutes", type=click.IntRange(1, 60), default=10, show_default=True)
def import_mind(news_path: Path, behaviors_path: Path, landing: Path, window_minutes: int) -> None:
    """Convert MIND news.tsv + behaviors.tsv into landing-format change records.

    Rows that are malformed or reference unknown news are counted and reported, never fatal.
    """
    from newsrec_assets.domain.mind import convert, write_landing_files
    from newsrec_assets.resources.landing import LocalLandingZone

    records, report = convert(news_path, behaviors_path)
    files = write_landing_files(records, LocalLandingZone(landing), window_minutes)
    click.echo(json.dumps(report.as_dict() | {"records": len(records), "files": files}, indent=2))


@main.command()
@click.option("--users", type=click.IntRange(min=1), default=3000, show_default=True)
@click.option("--articles", type=click.IntRange(min=10), default=3000, show_default=True)
@click.option("--days", type=click.FloatRange(min=0.01), default=7.0, show_default=True)
@click.option(
    "--serve/--no-serve",
    default=True,
    show_default=True,
    help="Run Dagster, the API and the live app (--no-serve: simulate, build everything once here, exit).",
)
@click.option("--ui-port", type=int, default=3000, show_default=True)
@click.option("--api-port", type=int, default=8000, show_default=True)
@click.option("--live-rate", type=float, default=2.0, show_default=True, help="Live view events per second.")
def demo(
    users: int, articles: int, days: float, serve: bool, ui_port: int, api_port: int, live_rate: float
) -> None:
    """The whole system on this laptop: Dagster, the API and a live news app, until Ctrl-C.

    Dagster and the API start at once; the news app's history is simulated (unless
    $NEWSREC_HOME/landing holds one) and the API serves its popularity list; the `initial_build`
    job then builds what was never built (ingestion, dbt, encoder, embeddings, NAML) as a run you
    can watch in the UI, and the automation ranks the user shards and publishes their lists. The
    terminal shows a compact status; every log goes to $NEWSREC_HOME/logs/.

    With --no-serve (scripts, benchmarks): simulate if needed, materialise everything once in this
    process, print the warehouse's counts and exit.
    """
    if serve:
        from newsrec_assets.demo.supervisor import DemoOptions, DemoSupervisor

        options = DemoOptions(users, articles, days, ui_port, api_port, live_rate)
        raise SystemExit(DemoSupervisor(options).run())

    import time

    from newsrec_assets.orchestration import ensure_dagster_home, materialize_selection, warehouse_summary

    paths = local_paths()
    ensure_dagster_home()
    started = time.perf_counter()
    if not paths.landing.exists() or not any(paths.landing.rglob("*.jsonl")):
        click.secho(f"simulating {users} users, {articles} articles, {days} days", bold=True)
        click.get_current_context().invoke(
            simulate,
            users=users,
            articles=articles,
            days=days,
            landing=paths.landing,
            ground_truth=paths.ground_truth,
            at_least_once=True,
        )
    click.secho("materialising the asset graph once (the on-demand evaluation aside)", bold=True)
    result = materialize_selection("not group:evaluation")
    click.echo(json.dumps(warehouse_summary(), indent=2))
    click.echo(f"materialised in {time.perf_counter() - started:.0f} s; success: {result.success}")
    raise SystemExit(0 if result.success else 1)


@main.command(name="seed-popular")
@click.option("--k", type=click.IntRange(min=1), default=100, show_default=True, help="List length.")
def seed_popular(k: int) -> None:
    """Put the popularity list of the landed history into the online store (unless it holds one).

    `newsrec demo` runs this before anything is built, so that the API serves popular articles at once.
    """
    from newsrec_assets.demo.seed import seed_popular as seed

    paths = local_paths()
    click.echo(json.dumps(seed(paths.landing, paths.online_store, k)))
