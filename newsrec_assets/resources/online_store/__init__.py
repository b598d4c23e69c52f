"""The online store port (`OnlineStore`) and its adapters: SQLite (embedded) and Redis (networked).

See `base` for the record types, the watermark rule and how batch publishes stay atomic for
readers; each adapter's module docstring says how it implements them.
"""

from typing import TYPE_CHECKING

from newsrec_assets.resources.online_store.base import (
    DEFAULT_CAPACITY,
    ArticleMeta,
    AsyncReads,
    ColdStartList,
    Exposure,
    FreshArticles,
    GenerationInfo,
    Layer,
    ModelVersion,
    OnlineStore,
    PublishResult,
    ReadOnlyStore,
    StoreError,
    StoreUnavailable,
    UserRecommendations,
    ViewCount,
    WriteResult,
)
from newsrec_assets.resources.online_store.sqlite import SQLiteOnlineStore

if TYPE_CHECKING:
    from newsrec_assets.resources.online_store.redis import RedisOnlineStore

__all__ = [
    "DEFAULT_CAPACITY",
    "ArticleMeta",
    "AsyncReads",
    "ColdStartList",
    "Exposure",
    "FreshArticles",
    "GenerationInfo",
    "Layer",
    "ModelVersion",
    "OnlineStore",
    "PublishResult",
    "ReadOnlyStore",
    "RedisOnlineStore",
    "SQLiteOnlineStore",
    "StoreError",
    "StoreUnavailable",
    "UserRecommendations",
    "ViewCount",
    "WriteResult",
]


def __getattr__(name: str) -> object:
    # The Redis adapter is imported on first use: redis-py takes ~0.1 s to import, which a
    # process serving SQLite (an API worker's exposure writer, a test) need not pay.
    if name == "RedisOnlineStore":
        from newsrec_assets.resources.online_store.redis import RedisOnlineStore

        return RedisOnlineStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
