"""The whole asset graph on one profile, for the prod tests' comparison of both profiles.

`python -m tests.prod_pipeline REPORT.json [SELECTION]` materialises every asset (or those of an
asset selection) of `newsrec_assets.definitions` as loaded in this process's environment (the prod
test runs it with `NEWSREC_ENV=prod`, so the definitions, resources, dbt target and manifest are
production's), recorded in the Dagster instance of `DAGSTER_HOME`, and writes what happened as
JSON. In production the warehouse's BigQuery client is dagster-gcp's; here it points at the
emulator (`BIGQUERY_EMULATOR_HOST`).

The budgets are step counts, not seconds, so both profiles train the same models on a loaded
machine: the comparison of their published lists depends on it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg

from newsrec_assets.defs.embeddings.assets import TextEncoderConfig
from newsrec_assets.defs.evaluation.assets import FreshnessReplayConfig
from newsrec_assets.defs.model.assets import NamlTrainingConfig
from newsrec_assets.orchestration import PhasedResult, materialize_in_phases

SIMULATION = {"seed": 3, "users": 250, "articles": 300, "days": 3.0}  # the local e2e test's app


def run_config(ground_truth_dir: Path) -> dg.RunConfig:
    return dg.RunConfig(
        ops={
            "text_encoder": TextEncoderConfig(time_budget_seconds=3600, max_steps=2, max_training_texts=200),
            "naml_model": NamlTrainingConfig(
                time_budget_seconds=3600, max_epochs=3, patience=3, ground_truth_dir=str(ground_truth_dir)
            ),
            "freshness_replay": FreshnessReplayConfig(days=0.5, ground_truth_dir=str(ground_truth_dir)),
        }
    )


def materialize_everything(
    defs: dg.Definitions,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    ground_truth_dir: Path,
    selection: str | None = None,
) -> PhasedResult:
    """Every asset, or those of an asset selection string (without the training configs): one
    run, then one per batch shard and the publish (`materialize_in_phases`)."""
    return materialize_in_phases(
        defs,
        dg.AssetSelection.from_string(selection) if selection else dg.AssetSelection.all(),
        resources=resources,
        instance=instance,
        run_config=None if selection else run_config(ground_truth_dir),  # configs of unselected ops fail
        tags={"newsrec/trigger": "prod-test"},
    )


def outcome(result: PhasedResult, warehouse) -> dict[str, Any]:
    """What the comparison needs: success, failed steps, checks, and the warehouse's counts."""
    return {
        "run_id": result.run_id,
        "success": result.success,
        "failed_steps": [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"],
        "checks": {e.check_name: e.passed for e in result.get_asset_check_evaluations()},
        "summary": warehouse.get(read_only=True).summary(),
    }


def main(report_path: str, selection: str | None = None) -> int:
    from newsrec_assets.definitions import defs
    from newsrec_assets.defs.features.dbt import dbt_resource
    from newsrec_assets.defs.gcp_resources import build_gcp_resources
    from newsrec_assets.settings import get_environment
    from tests.emulators import EmulatorBigQueryResource

    assert get_environment() == "prod", "run with NEWSREC_ENV=prod"
    resources = build_gcp_resources(
        bigquery=EmulatorBigQueryResource(
            project=dg.EnvVar("NEWSREC_GCP_PROJECT"),
            location=dg.EnvVar("NEWSREC_BQ_LOCATION"),
            api_endpoint=dg.EnvVar("BIGQUERY_EMULATOR_HOST"),
        )
    )
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        ground_truth = Path(os.environ["NEWSREC_GROUND_TRUTH"])
        result = materialize_everything(
            defs, {**resources, "dbt": dbt_resource()}, instance, ground_truth, selection
        )
        with dg.build_resources({"warehouse": resources["warehouse"]}) as built:
            report = outcome(result, built.warehouse)
    graph = defs.resolve_asset_graph()
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["kinds"] = {
        key.to_user_string(): sorted(graph.get(key).kinds)
        for key in (dg.AssetKey(["raw", "cdc_user_article_views"]), dg.AssetKey("view_events"))
    }
    Path(report_path).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
