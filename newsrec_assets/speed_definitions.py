"""The `newsrec_speed` code location: the speed layer alone, so its sensor ticks stay light.

`speed_layer_sensor` computes lists inside its tick, in this location's code server, and the new
articles' runs load it in a fresh process: it imports dagster, numpy and the online store only (no
dbt, no torch at module level) and runs in-process.
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
