"""The online store port (`OnlineStore`) and its adapters: SQLite (embedded) and Redis (networked).

See `base` for the record types, the watermark rule and how batch publishes stay atomic for
readers; each adapter's module docstring says how it implements them.
"""

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
from newsrec_assets.resources.online_store.redis import RedisOnlineStore
from newsrec_assets.resources.online_store.sqlite import SQLiteOnlineStore

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
