"""The `newsrec` code location: ingestion, dbt features, embeddings, model and the batch layer.

Kept light on purpose: nothing here imports torch or transformers (assets import them inside
their bodies). The speed layer lives in its own, lighter code location (`speed_definitions`), so
its sensor ticks, which compute the lists themselves, do not pay for importing dbt.
"""

import dagster as dg

from newsrec_assets.defs.automation import AUTOMATION_INTERVAL, features_schedule
from newsrec_assets.defs.embeddings.assets import article_embeddings, text_encoder
from newsrec_assets.defs.evaluation.assets import ab_variant_ctr, freshness_replay
from newsrec_assets.defs.features.dbt import dbt_resource, newsrec_dbt_models
from newsrec_assets.defs.housekeeping import prune_run_history, prune_run_history_schedule
from newsrec_assets.defs.ingestion.assets import raw_cdc_log
from newsrec_assets.defs.model.assets import naml_model, published_model
from newsrec_assets.defs.recommendations.assets import batch_recommendations, batch_shard_lists
from newsrec_assets.defs.resources import build_executor, build_resources
from newsrec_assets.settings import get_environment

# The first build of everything `make demo` needs, launched by `newsrec demo` as one named run so
# that the lineage turns green in the UI (the on-demand evaluation aside); afterwards the
# schedules, the automation and the sensors keep it current. The batch layer is not in it: one run
# cannot hold both the user shards (partitions) and unpartitioned assets, and the automation
# builds missing shards, then the publish, as soon as their inputs exist.
INITIAL_BUILD_JOB = "initial_build"
initial_build_job = dg.define_asset_job(
    INITIAL_BUILD_JOB,
    selection=dg.AssetSelection.all()
    - dg.AssetSelection.groups("evaluation")
    - dg.AssetSelection.assets(batch_shard_lists, batch_recommendations),
    description="Build every asset the batch layer needs once: ingestion, dbt features, encoder, "
    "embeddings, NAML; the automation then builds the user shards' lists and publishes them.",
)

# The batch's inputs in one run per batch cadence: the files landed since the last batch into the
# raw log, then the dbt features, then the new articles' embeddings.
BATCH_FEATURES_JOB = "batch_features"
_batch_inputs = [raw_cdc_log, newsrec_dbt_models, article_embeddings]
batch_features_job = dg.define_asset_job(
    BATCH_FEATURES_JOB,
    selection=dg.AssetSelection.assets(*_batch_inputs),
    description="Ingest the landed files, build the dbt features and embed new articles: the "
    "batch layer's inputs, once per batch cadence.",
)

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
    jobs=[initial_build_job, batch_features_job, prune_run_history],
    schedules=[
        features_schedule(
            batch_features_job,
            asset_keys=[key for assets in _batch_inputs for key in assets.keys],
            # every check but the dbt tests: ingestion's quarantine and file checks
            checks_every_run=[*raw_cdc_log.check_keys, *article_embeddings.check_keys],
            first_build_job=initial_build_job.name,
        ),
        prune_run_history_schedule,
    ],
    sensors=[
        dg.AutomationConditionSensorDefinition(
            "batch_automation_sensor",
            target=dg.AssetSelection.all(),
            default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=int(AUTOMATION_INTERVAL.total_seconds()),
        ),
    ],
    resources={**build_resources(get_environment()), "dbt": dbt_resource()},
    executor=build_executor(get_environment()),
)
