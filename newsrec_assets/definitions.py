"""The `newsrec` code location: ingestion, dbt features, embeddings, model and the batch layer.

Kept light on purpose: nothing here imports torch or transformers (assets import them inside
their bodies). The speed layer lives in its own, lighter code location (`speed_definitions`), so
its sensor-triggered runs do not pay for importing dbt.
"""

import dagster as dg

from newsrec_assets.defs.embeddings.assets import article_embeddings, text_encoder
from newsrec_assets.defs.evaluation.assets import ab_variant_ctr, freshness_replay
from newsrec_assets.defs.features.dbt import dbt_resource, newsrec_dbt_models
from newsrec_assets.defs.ingestion.assets import raw_cdc_log
from newsrec_assets.defs.ingestion.sensors import landing_files_sensor
from newsrec_assets.defs.model.assets import naml_model, published_model
from newsrec_assets.defs.recommendations.assets import batch_recommendations, batch_shard_lists
from newsrec_assets.defs.resources import build_executor, build_resources
from newsrec_assets.settings import get_environment

defs = dg.Definitions(
    assets=[
        raw_cdc_log,
        newsrec_dbt_models,
        text_encoder,
        article_embeddings,
        naml_model,
        published_model,
        batch_shard_lists,
        batch_recommendations,
        freshness_replay,
        ab_variant_ctr,
    ],
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
    executor=build_executor(get_environment()),
)
