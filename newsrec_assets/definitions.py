"""The newsrec code location: the whole asset graph, its checks, sensors and resources.

Kept light on purpose: nothing here imports torch or transformers (assets import them inside
their bodies), so `dagster dev` and every sensor-triggered run start fast.
"""

import dagster as dg

from newsrec_assets.defs.embeddings.assets import article_embeddings, text_encoder
from newsrec_assets.defs.features.dbt import newsrec_dbt_models
from newsrec_assets.defs.ingestion.assets import raw_cdc_log
from newsrec_assets.defs.ingestion.sensors import landing_files_sensor
from newsrec_assets.defs.model.assets import naml_model, published_model
from newsrec_assets.defs.resources import build_resources
from newsrec_assets.settings import get_environment

defs = dg.Definitions(
    assets=[raw_cdc_log, newsrec_dbt_models, text_encoder, article_embeddings, naml_model, published_model],
    sensors=[landing_files_sensor],
    resources=build_resources(get_environment()),
)
