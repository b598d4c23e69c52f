"""Model: NAML trained on real impressions, evaluated against baselines, published when it wins."""

import json
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np

from newsrec_assets.defs.embeddings.assets import article_embeddings
from newsrec_assets.defs.plots import grouped_bars, line_plot, markdown_table
from newsrec_assets.defs.resources import ArtifactStoreResource, WarehouseResource
from newsrec_assets.domain.evaluation import METRICS
from newsrec_assets.settings import local_paths

GROUP = "model"
NAML_KIND = "naml"
BEATS_BASELINES_CHECK = "beats_popularity_on_test_window"
EVALUATION_FILE = "evaluation.json"


class NamlTrainingConfig(dg.Config):
    news_dim: int = 128
    negatives: int = 4
    # 1024 samples per step on one thread: one step encodes nearly the whole catalogue whatever its
    # size, so larger steps cost little more each and an epoch ~3x less than at 256, with the
    # learning rate raised to match; one thread, because the intra-op pool spins when the other
    # core is busy on this shared 2-core machine
    batch_size: int = 1024
    num_threads: int = 1
    learning_rate: float = 2e-3
    max_epochs: int = 10
    patience: int = 2
    # validation AUC gains below this do not count as progress: the demo's validation window's
    # AUC has a 95 % interval about 0.007 wide, and epochs past a plateau cost ~25 s each
    min_improvement: float = 5e-4
    time_budget_seconds: float = 280.0
    seed: int = 0
    use_prior: bool = True  # add the popularity/recency prior (age, CTR so far) to the dot product
    use_affinity: bool = True  # add the exposure-aware user x subcategory affinity term
    # The gate: NAML's AUC must beat popularity's on the test window by a 95 % paired-bootstrap
    # interval lying above 0, over at least this many scorable test impressions (a click and a
    # non-click); below it the evidence is insufficient and nothing new is published.
    min_test_impressions: int = 1000
    bootstrap_resamples: int = 1000
    ground_truth_dir: str = ""  # the simulator's oracle, when the data is simulated


def oracle_scores(ground_truth_dir: Path, user_ids, article_ids, shown_times, positions) -> np.ndarray | None:
    """True click probabilities from the simulator's ground truth, if this data is simulated."""
    from newsrec_assets.domain.simulator.click_model import CLICK_MODEL_FILE, ClickOracle

    if not (ground_truth_dir / CLICK_MODEL_FILE).exists():
        return None
    oracle = ClickOracle.load(ground_truth_dir)
    try:
        return oracle.click_probability(user_ids, article_ids, shown_times, positions)
    except KeyError:  # ids the simulated world does not know: not simulated data
        return None


@dg.asset(
    group_name=GROUP,
    deps=[article_embeddings, dg.AssetKey("training_impressions"), dg.AssetKey("view_events")],
    kinds={"pytorch"},
    check_specs=[
        dg.AssetCheckSpec(
            BEATS_BASELINES_CHECK,
            asset="naml_model",
            blocking=True,
            description=(
                "NAML's AUC must beat the popularity baseline's on the test window (the last "
                "`test_hours`, never used in training or model selection): the 95 % paired-bootstrap "
                "interval of the per-impression AUC difference lies above 0, over at least "
                "`min_test_impressions` scorable impressions. A clear miss fails (ERROR, nothing "
                "published); too few impressions warns (WARN, nothing new published)."
            ),
        )
    ],
    automation_condition=dg.AutomationCondition.on_missing() | dg.AutomationCondition.on_cron("0 2 * * *"),
)
def naml_model(
    context: dg.AssetExecutionContext,
    config: NamlTrainingConfig,
    warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource,
):
    """NAML (title, body, category and subcategory views; attentive user encoder) trained on impressions.

    Three disjoint time windows (`training_impressions.split`): trained on `train` with negative
    sampling (K=4) from the same impression's unclicked articles; early stopping and the choice of
    the best epoch on `validation`; every reported metric and the publication gate on `test`.
    With `use_prior`, a popularity/recency prior (PP-Rec style: the article's age and its
    click-through rate so far) and with `use_affinity` an exposure-aware user x subcategory
    affinity term (the user's clicks and non-clicks per subcategory and category, shrunk) are
    added to the dot product; their numpy parameters are saved with the model. On the test window
    it is compared with popularity, recency-weighted popularity, random and (for simulated data)
    the oracle of true click probabilities, each metric with a 95 % bootstrap interval.
    """
    from newsrec_assets.defs.model.data import load_catalogue, load_clicks, load_impressions
    from newsrec_assets.defs.model.training_run import train_and_evaluate
    from newsrec_assets.domain.training import save_model

    db = warehouse.get(read_only=True)
    catalogue = load_catalogue(db)
    data = load_impressions(db, catalogue)
    ground_truth = Path(config.ground_truth_dir) if config.ground_truth_dir else local_paths().ground_truth
    run = train_and_evaluate(
        catalogue,
        data,
        load_clicks(db, catalogue),
        config,
        oracle=lambda *rows: oracle_scores(ground_truth, *rows),
        log=context.log.info,
    )
    result, decision, comparison, windows = run.result, run.decision, run.comparison, run.windows
    table, lift = run.table, run.lift
    with tempfile.TemporaryDirectory() as folder:
        version = save_model(
            result.model,
            folder,
            extra={
                "categories": catalogue.categories,
                "subcategories": catalogue.subcategories,
                "history": result.history,
                "best_val_auc": result.best_val_auc,
                "training_seconds": result.seconds,
                "stopped_by": result.stopped_by,
            },
        )
        (Path(folder) / EVALUATION_FILE).write_text(json.dumps(run.evaluation, indent=2))
        uri = artifacts.get().put(NAML_KIND, version, Path(folder))

    yield dg.Output(
        None,
        metadata={
            "version": version,
            "uri": uri,
            "epochs": len(result.history),
            "best_epoch": result.best_epoch,
            "best_validation_auc": round(float(result.best_val_auc), 4),
            "stopped_by": result.stopped_by,
            "training_seconds": round(result.seconds, 1),
            "train_samples": result.n_train_samples,
            "impressions_dropped_unknown_article": data.dropped_unknown_articles,
            "time_windows": markdown_table(windows, first="window"),
            "training_curve": line_plot(
                {
                    "train loss": [h["train_loss"] for h in result.history],
                    "validation AUC": [h["val_auc"] for h in result.history],
                },
                "epoch",
                "value",
                "NAML training",
            ),
        },
        data_version=dg.DataVersion(version),
    )
    insufficient = decision.status == "insufficient_evidence"
    yield dg.AssetCheckResult(
        check_name=BEATS_BASELINES_CHECK,
        passed=decision.passed,
        severity=dg.AssetCheckSeverity.WARN if insufficient else dg.AssetCheckSeverity.ERROR,
        description=decision.reason,
        metadata={
            "model_version": version,
            "status": decision.status,
            "test_impressions": windows["test"]["impressions"],
            "test_rows_scored": len(run.scores["naml"]),
            "scored_impressions": comparison.scored_impressions,
            "min_scored_impressions": decision.min_scored_impressions,
            "auc_difference": round(decision.auc_difference.estimate, 4),
            "auc_difference_low": round(decision.auc_difference.low, 4),
            "auc_difference_high": round(decision.auc_difference.high, 4),
            "beats_both_baselines": run.beats_both,
            "auc_lift_vs_oracle": round(lift, 4) if lift is not None else None,
            "metrics": metric_table(comparison),
            "comparison": grouped_bars(
                table,
                "test window: NAML vs baselines (95 % intervals)",
                {r: {m: (i.low, i.high) for m, i in ms.items()} for r, ms in comparison.metrics.items()},
            ),
            **{f"naml_{m}": round(table["naml"][m], 4) for m in METRICS},
            **{f"popularity_{m}": round(table["popularity"][m], 4) for m in METRICS},
        },
    )


def metric_table(comparison) -> dg.MetadataValue:
    """Rankers x metrics as `estimate [low, high]`, then NAML minus popularity."""
    rows = {ranker: {m: str(metrics[m]) for m in METRICS} for ranker, metrics in comparison.metrics.items()}
    rows[f"{comparison.candidate} - {comparison.baseline}"] = {
        m: str(comparison.differences[m]) for m in METRICS
    }
    return markdown_table(rows)


def factorize(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer code per row and the distinct ids in code order."""
    unique_ids, codes = np.unique(ids.astype(str), return_inverse=True)
    return codes, unique_ids.astype(object)


@dg.asset(
    group_name=GROUP,
    deps=[naml_model],
    automation_condition=dg.AutomationCondition.eager(),
    output_required=False,
)
def published_model(context: dg.AssetExecutionContext, artifacts: ArtifactStoreResource):
    """The NAML version that serving uses: the latest trained model that passed its gate.

    Re-reads the decision stored with the artifact, so it agrees with `naml_model`'s blocking
    check: a model that fails the gate never gets here (the check's ERROR blocks it) and is refused
    if materialised by hand; with insufficient evidence (the check's WARN) it runs, publishes
    nothing new and leaves no materialisation, so what serving uses does not change.
    """
    event = context.instance.get_latest_materialization_event(dg.AssetKey("naml_model"))
    if event is None or event.asset_materialization is None:
        raise dg.Failure("naml_model has never been materialised")
    version = event.asset_materialization.metadata["version"].value
    store = artifacts.get()
    evaluation = json.loads((store.fetch(NAML_KIND, version) / EVALUATION_FILE).read_text())
    decision = evaluation["decision"]
    if decision["status"] == "insufficient_evidence":
        context.log.warning(f"model {version} not published: {decision['reason']}")
        return
    if not decision["passed"]:
        raise dg.Failure(f"model {version} did not pass the gate ({decision['reason']}); not publishing it")
    previous = store.latest(NAML_KIND)
    store.set_latest(NAML_KIND, version)
    context.log.info(f"published {version} (was {previous})")
    yield dg.MaterializeResult(
        metadata={
            "version": version,
            "previous_version": previous,
            "gate": decision["reason"],
            "metrics": markdown_table(evaluation["table"]),
        },
        data_version=dg.DataVersion(version),
    )
