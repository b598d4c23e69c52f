"""NAML trained on the train window, selected on validation, evaluated and gated on the test window.

The use case behind the `naml_model` asset, free of Dagster so that the model benchmark runs the
same code on the simulator's data (`bench/model.py`). Inputs are what `data.py` reads from the
marts: the catalogue, the impression log with its three windows, the click log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from newsrec_assets.defs.model.data import (
    ClickLog,
    Impressions,
    impression_affinity_features,
    impression_prior_features,
)
from newsrec_assets.domain.catalogue import Catalogue
from newsrec_assets.domain.evaluation import (
    METRICS,
    GateDecision,
    RankerComparison,
    compare_rankers,
    gate_decision,
    window_summary,
)
from newsrec_assets.domain.training import TrainResult

# (user ids, article ids, shown times, positions) of the test rows -> true click probabilities
Oracle = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray | None]


class TrainingSettings(Protocol):
    """What `train_and_evaluate` reads (`assets.NamlTrainingConfig` has these fields)."""

    news_dim: int
    negatives: int
    batch_size: int
    num_threads: int
    learning_rate: float
    max_epochs: int
    patience: int
    min_improvement: float
    time_budget_seconds: float
    seed: int
    use_prior: bool
    use_affinity: bool
    min_test_impressions: int
    bootstrap_resamples: int


@dataclass
class TrainedModel:
    """A trained model and its evaluation on the test window."""

    result: TrainResult
    windows: dict[str, dict[str, Any]]
    scores: dict[str, np.ndarray]  # ranker -> score of every test row
    comparison: RankerComparison
    decision: GateDecision
    table: dict[str, dict[str, float]]  # ranker -> metric -> mean
    lift: float | None  # NAML's AUC lift relative to the oracle's, on simulated data
    beats_both: bool  # NAML's AUC interval above both popularity baselines'
    evaluation: dict[str, Any]  # all of it as JSON, stored with the artifact


def train_and_evaluate(
    catalogue: Catalogue,
    data: Impressions,
    clicks: ClickLog,
    settings: TrainingSettings,
    oracle: Oracle | None = None,
    log: Callable[[str], None] = lambda message: None,
    progress: bool = True,
) -> TrainedModel:
    """Train NAML (train window, early stopping on validation), then compare rankers on the test window."""
    from newsrec_assets.domain.metrics import auc_lift, popularity_scores, recency_popularity_scores
    from newsrec_assets.domain.naml import NamlConfig
    from newsrec_assets.domain.training import (
        TrainConfig,
        build_click_histories,
        padded_histories,
        score_impressions,
        train_naml,
    )

    impression_log = data.log
    windows = window_summary(
        impression_log.impression_ids,
        impression_log.shown_times,
        impression_log.clicked,
        impression_log.split,
    )
    log(
        "time windows: "
        + "; ".join(
            f"{name} {w['first_shown_at']} to {w['last_shown_at']}, {w['impressions']:,} impressions "
            f"({w['scorable_impressions']:,} scorable)"
            for name, w in windows.items()
        )
    )
    known_clicks = clicks.article_rows >= 0
    histories = build_click_histories(
        impression_log.impression_ids,
        impression_log.user_ids,
        impression_log.shown_times,
        clicks.user_ids[known_clicks],
        clicks.viewed_at[known_clicks],
        clicks.article_rows[known_clicks],
    )
    prior = impression_prior_features(data, catalogue) if settings.use_prior else None
    affinity = impression_affinity_features(data, catalogue) if settings.use_affinity else None
    model_config = NamlConfig(
        news_dim=settings.news_dim,
        n_categories=len(catalogue.categories) + 1,
        n_subcategories=len(catalogue.subcategories) + 1,
        use_prior=settings.use_prior,
        use_affinity=settings.use_affinity,
    )
    result = train_naml(
        catalogue.features,
        impression_log,
        histories,
        model_config=model_config,
        config=TrainConfig(
            negatives=settings.negatives,
            batch_size=settings.batch_size,
            lr=settings.learning_rate,
            max_epochs=settings.max_epochs,
            patience=settings.patience,
            min_delta=settings.min_improvement,
            time_budget_s=settings.time_budget_seconds,
            seed=settings.seed,
            num_threads=settings.num_threads,
            progress=progress,
        ),
        prior_features=prior,
        affinity_features=affinity,
    )
    log(
        f"trained {len(result.history)} epochs in {result.seconds:.0f} s, best validation AUC "
        f"{result.best_val_auc:.4f} (stopped by {result.stopped_by})"
    )

    test = impression_log.split == "test"
    impression_ids = impression_log.impression_ids[test]
    unique_ids, codes = np.unique(impression_ids.astype(str), return_inverse=True)
    history_rows, history_mask = padded_histories(
        unique_ids.astype(object), histories, model_config.max_history
    )
    shown_times = impression_log.shown_times[test]
    scores = {
        "naml": score_impressions(
            result.model,
            catalogue.features,
            codes.reshape(-1),
            impression_log.article_rows[test],
            history_rows,
            history_mask,
            prior_features=None if prior is None else prior[test],
            affinity_features=None if affinity is None else affinity[test],
        ),
        "popularity": popularity_scores(
            data.article_ids[test], shown_times, clicks.article_ids, clicks.viewed_at
        ),
        "recency_popularity": recency_popularity_scores(
            data.article_ids[test], shown_times, clicks.article_ids, clicks.viewed_at
        ),
        "random": np.random.default_rng(settings.seed).random(int(test.sum())),
    }
    truth = (
        None
        if oracle is None
        else oracle(impression_log.user_ids[test], data.article_ids[test], shown_times, data.positions[test])
    )
    if truth is not None:
        scores["oracle"] = truth
    labels = impression_log.clicked[test].astype(np.int64)
    comparison = compare_rankers(
        impression_ids,
        labels,
        scores,
        candidate="naml",
        baseline="popularity",
        n_resamples=settings.bootstrap_resamples,
        seed=settings.seed,
    )
    decision = gate_decision(comparison, settings.min_test_impressions)
    table = {name: {m: comparison.metrics[name][m].estimate for m in METRICS} for name in scores}
    lift = auc_lift(table["naml"]["auc"], table["oracle"]["auc"]) if "oracle" in table else None
    naml_auc = comparison.metrics["naml"]["auc"]
    beats_both = naml_auc.low > max(
        comparison.metrics[b]["auc"].high for b in ("popularity", "recency_popularity")
    )
    evaluation = {
        "passed": decision.passed,
        "decision": decision.to_dict(),
        "comparison": comparison.to_dict(),
        "windows": windows,
        "beats_both_baselines": beats_both,
        "auc_lift_vs_oracle": lift,
        "table": table,
        "use_prior": settings.use_prior,
        "use_affinity": settings.use_affinity,
        "training_seconds": result.seconds,
    }
    return TrainedModel(result, windows, scores, comparison, decision, table, lift, beats_both, evaluation)
