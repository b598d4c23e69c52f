"""Evaluation: what near-real-time is worth (the simulated app replayed in a closed loop), and the
click-through rate of the API's A/B variants on real exposures."""

import time

import dagster as dg

from newsrec_assets.defs.embeddings.assets import article_embeddings
from newsrec_assets.defs.model.assets import published_model
from newsrec_assets.defs.plots import figure_markdown, grouped_bars, markdown_table
from newsrec_assets.defs.resources import ArtifactStoreResource, WarehouseResource
from newsrec_assets.settings import local_paths, warehouse_kind

GROUP = "evaluation"


class FreshnessReplayConfig(dg.Config):
    days: float = 2.0  # measured days (from the first 04:00 after the data ends)
    seed: int = 0
    step_minutes: int = 5  # the loop's step: clicks in a step reach the speed layer at its end
    ground_truth_dir: str = ""  # default: $NEWSREC_HOME/ground_truth


@dg.asset(
    group_name=GROUP,
    deps=[
        published_model,
        article_embeddings,
        dg.AssetKey("training_impressions"),
        dg.AssetKey("view_events"),
    ],
    kinds={"numpy"},
)
def freshness_replay(
    context: dg.AssetExecutionContext,
    config: FreshnessReplayConfig,
    warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource,
) -> dg.MaterializeResult:
    """The simulated app continued for `days` with four serving policies, the same users and seed.

    Daily batch at 04:00 (the old system), 30-minute batch, + speed layer, + fresh-article merge at
    read time: each serves the published model's lists (the product's ranking code) to the same
    sessions, the simulator's click model decides the clicks, and each policy learns only from its
    own impressions. Reports CTR, clicks per session, the median age of clicked articles, the share
    of clicks on articles published that day and catalogue coverage (`domain/replay.py`). Runs on
    demand (simulated data only): `newsrec replay` or materialise it in the UI.
    """
    from pathlib import Path

    from newsrec_assets.defs.evaluation.replay import replay_figure, replay_table, run_freshness_replay
    from newsrec_assets.domain.replay import ReplaySettings

    started = time.perf_counter()
    ground_truth = Path(config.ground_truth_dir) if config.ground_truth_dir else local_paths().ground_truth
    result, model_version = run_freshness_replay(
        warehouse.get(read_only=True),
        artifacts.get(),
        ground_truth,
        ReplaySettings(days=config.days, seed=config.seed, step_minutes=config.step_minutes),
        log=context.log.info,
    )
    seconds = time.perf_counter() - started
    context.log.info(f"replayed {len(result.policies)} policies in {seconds:.0f} s\n{replay_table(result)}")
    return dg.MaterializeResult(
        metadata={
            "model_version": model_version,
            "measured_sessions": result.sessions,
            "new_articles": result.new_articles,
            "seconds": round(seconds, 1),
            "policies": dg.MetadataValue.md(replay_table(result)),
            "plot": figure_markdown(replay_figure(result)),
            "metrics": dg.MetadataValue.json(
                {name: outcome.metrics for name, outcome in result.policies.items()}
            ),
            "batches_and_speed_updates": dg.MetadataValue.json(
                {name: [o.batches, o.speed_updates] for name, o in result.policies.items()}
            ),
        }
    )


@dg.asset(group_name=GROUP, deps=[dg.AssetKey("training_impressions")], kinds={warehouse_kind()})
def ab_variant_ctr(warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Click-through rate per A/B variant of the API (`NEWSREC_VARIANTS`): the exposures each
    variant served (`impressions` records carry it) joined with the clicks that came from those
    lists, with 95 % Wilson intervals, as a table and a bar plot. Runs on demand."""
    from newsrec_assets.domain.evaluation import ctr_interval

    rows = warehouse.get(read_only=True).variant_ctr().to_pylist()
    intervals = {row["variant"]: ctr_interval(row["clicks"], row["impressions"]) for row in rows}
    table = {
        row["variant"]: {
            "lists": row["lists"],
            "impressions": row["impressions"],
            "clicks": row["clicks"],
            "ctr": intervals[row["variant"]].estimate,
            "ctr_95_low": intervals[row["variant"]].low,
            "ctr_95_high": intervals[row["variant"]].high,
        }
        for row in rows
    }
    metadata: dict[str, object] = {"variants": len(rows), "by_variant": dg.MetadataValue.json(table)}
    if rows:
        metadata["table"] = markdown_table(table, first="variant")
        metadata["plot"] = grouped_bars(
            {name: {"CTR": i.estimate} for name, i in intervals.items()},
            "CTR per A/B variant (95 % Wilson interval)",
            {name: {"CTR": (i.low, i.high)} for name, i in intervals.items()},
        )
    return dg.MaterializeResult(metadata=metadata)
