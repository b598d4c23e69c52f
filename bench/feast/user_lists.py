"""The Feast peer's feature repo: one entity, `user_id`, and one feature view holding each user's
ranked list (article ids and their scores), as a Feast user would model precomputed recommendations.

`bench/feast_peer.py` copies this file next to a generated `feature_store.yaml` and runs
`feast apply`; it runs in the Feast venv only. The lists reach the online store through
`write_to_online_store` (`load_lists.py`), so the file source below is never read; Feast requires
every feature view to name one.
"""

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float32, String

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)

user_lists = FeatureView(
    name="user_lists",
    entities=[user],
    ttl=timedelta(0),  # lists never expire: the batch layer replaces them
    schema=[
        Field(name="article_ids", dtype=Array(String)),
        Field(name="scores", dtype=Array(Float32)),
    ],
    source=FileSource(path="user_lists.parquet", timestamp_field="computed_at"),
    online=True,
)
