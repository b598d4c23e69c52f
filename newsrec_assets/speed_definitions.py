"""The `newsrec_speed` code location: the speed layer alone, so its runs start fast.

Every sensor-triggered run loads its code location in a fresh process; this one imports dagster,
numpy and the online store only (no dbt, no torch at module level) and runs in-process.
"""

import dagster as dg

from newsrec_assets.defs.recommendations.speed import (
    fresh_article_vectors,
    new_articles_sensor,
    speed_layer_sensor,
    speed_recommendations,
)
from newsrec_assets.defs.resources import build_resources
from newsrec_assets.settings import get_environment

defs = dg.Definitions(
    assets=[speed_recommendations, fresh_article_vectors],
    sensors=[speed_layer_sensor, new_articles_sensor],
    resources=build_resources(get_environment()),
    executor=dg.in_process_executor,
)
