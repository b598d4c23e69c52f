"""The online store the API settings name (kept free of FastAPI, so the exposure writer process
can open the same store without importing the web stack)."""

from __future__ import annotations

from newsrec_assets.resources.online_store import OnlineStore, SQLiteOnlineStore
from serving.core.config import Settings


def build_store(settings: Settings) -> OnlineStore:
    """The online store the settings name, opened for serving (SQLite lists read-only)."""
    if settings.store_backend == "redis":
        from newsrec_assets.resources.online_store import RedisOnlineStore  # imports redis-py

        return RedisOnlineStore(
            settings.redis_url, prefix=settings.redis_prefix, socket_timeout=settings.redis_timeout_seconds
        )
    return SQLiteOnlineStore(
        settings.sqlite_path, read_only=True, busy_timeout_ms=settings.sqlite_busy_timeout_ms
    )
