"""The `newsrec` code location: ingestion, dbt features, embeddings, model and the batch layer.

Kept light on purpose: nothing here imports torch or transformers (assets import them inside
their bodies). The speed layer lives in its own, lighter code location (`speed_definitions`), so
its sensor-triggered runs do not pay for importing dbt.
"""

import dagster as dg

from newsrec_assets.defs.embeddings.assets import article_embeddings, text_encoder
from newsrec_assets.defs.evaluation.assets import freshness_replay
from newsrec_assets.defs.features.dbt import dbt_resource, newsrec_dbt_models
from newsrec_assets.defs.ingestion.assets import raw_cdc_log
from newsrec_assets.defs.ingestion.sensors import landing_files_sensor
from newsrec_assets.defs.model.assets import naml_model, published_model
from newsrec_assets.defs.recommendations.assets import batch_recommendations
from newsrec_assets.defs.resources import build_resources
from newsrec_assets.settings import get_environment

# The first build of everything `make demo` needs, launched by `newsrec demo` as one named run so
# that the lineage turns green in the UI (the on-demand evaluation aside); afterwards automation
# and sensors keep it current.
INITIAL_BUILD_JOB = "initial_build"
initial_build_job = dg.define_asset_job(
    INITIAL_BUILD_JOB,
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups("evaluation"),
    description="Build every asset once: ingestion, dbt features, encoder, embeddings, NAML, lists.",
)

defs = dg.Definitions(
    assets=[
        raw_cdc_log,
        newsrec_dbt_models,
        text_encoder,
        article_embeddings,
        naml_model,
        published_model,
        batch_recommendations,
        freshness_replay,
    ],
    jobs=[initial_build_job],
    sensors=[
        landing_files_sensor,
        dg.AutomationConditionSensorDefinition(
            "batch_automation_sensor",
            target=dg.AssetSelection.all(),
            default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=30,
        ),
    ],
    resources={**build_resources(get_environment()), "dbt": dbt_resource()},
    # One process per run: on a 2-core machine a subprocess per step only adds start-up CPU that
    # the speed layer's runs then wait for; the batch's steps are sequential anyway.
    executor=dg.in_process_executor,
)
