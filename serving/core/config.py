"""Serving settings, read from `NEWSREC_*` environment variables (pydantic-settings).

`NEWSREC_API_KEYS` takes a comma-separated list. With no API keys configured, the event
endpoint refuses every request (closed by default). Local paths default to the embedded
profile's folder (`NEWSREC_HOME`, see `newsrec_assets.settings`), where the pipeline writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from newsrec_assets.resources.online_store import DEFAULT_CAPACITY
from newsrec_assets.settings import get_environment, local_paths

API_V1_PREFIX = "/v1"


class Settings(BaseSettings):
    """Configuration of the HTTP API."""

    model_config = SettingsConfigDict(env_prefix="NEWSREC_", extra="ignore")

    # Defaults follow NEWSREC_ENV, like the Dagster resources: Redis and GCS in production.
    store_backend: Literal["sqlite", "redis"] = Field(
        default_factory=lambda: "redis" if get_environment() == "prod" else "sqlite"
    )
    sqlite_path: Path = Field(default_factory=lambda: local_paths().online_store)
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "newsrec"
    # The landing zone for POST /v1/events: a local folder, or (production) the GCS prefix that
    # Datastream writes to; the variable names match the Dagster resources'.
    landing_kind: Literal["local", "gcs"] = Field(
        default_factory=lambda: "gcs" if get_environment() == "prod" else "local"
    )
    landing_dir: Path = Field(default_factory=lambda: local_paths().landing)
    landing_bucket: str = ""
    landing_prefix: str = "datastream"
    gcp_project: str | None = None
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list, repr=False)

    default_k: int = Field(default=10, ge=1)
    max_k: int = Field(default=50, ge=1, le=DEFAULT_CAPACITY)
    # Read-time merge of articles published after a list was computed.
    fresh_window_hours: float = Field(default=48.0, gt=0)
    fresh_refresh_seconds: float = Field(default=5.0, ge=0)
    # Between whole reloads of the fresh-article vectors, reloads only add newly published
    # articles: a vector written for an article older than the newest one held waits this long.
    fresh_full_reload_seconds: float = Field(default=300.0, ge=0)
    cold_start_refresh_seconds: float = Field(default=10.0, ge=0)
    # Cached article metadata: how often to ask the store whether articles changed (the longest
    # an edited or unpublished article is served as it was; 0 asks on every request).
    article_check_seconds: float = Field(default=1.0, ge=0)
    article_cache_entries: int = Field(default=200_000, ge=1)
    log_exposures: bool = True
    # Who writes the exposure log: a separate process (its store writes never hold this
    # process's GIL, see serving/services/exposures.py) or a thread of the API process.
    exposure_writer: Literal["process", "thread"] = "process"
    # Answer well-formed recommendation requests before FastAPI's middleware and routing
    # (serving/api/fast_lane.py).
    fast_lane: bool = True
    # Read the store from the event loop instead of the thread pool: Redis through its
    # non-blocking pipelined reader (online_store/redis_async.py), SQLite in place (an in-process
    # read is shorter than the hop to a pool thread and back).
    inline_store_reads: bool = True
    # How long a Redis command may take before the request fails with a 503.
    redis_timeout_seconds: float = Field(default=0.5, gt=0)
    # How long a SQLite read may wait for a lock (readers in WAL mode almost never wait).
    sqlite_busy_timeout_ms: int = Field(default=1000, ge=0)
    # How far in the future a client's `viewed_at` may lie (clock skew) before it is refused.
    max_event_clock_skew_seconds: float = Field(default=300.0, ge=0)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_api_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.landing_kind == "gcs" and not self.landing_bucket:
            raise ValueError("landing_kind 'gcs' needs landing_bucket")
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) exceeds max_k ({self.max_k})")
        return self
