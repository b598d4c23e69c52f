"""Serving settings, read from `NEWSREC_*` environment variables (pydantic-settings).

`NEWSREC_ENV` picks the defaults that differ between the embedded demo and production
(`newsrec_assets.settings.serving_profile`: store backend, landing zone, docs); the store and
landing-zone variables are the ones the Dagster resources read. `NEWSREC_API_KEYS` takes a
comma-separated list; with none, the event endpoint refuses every request (closed by default).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from newsrec_assets.resources.online_store.base import DEFAULT_CAPACITY
from newsrec_assets.settings import local_paths, serving_profile
from serving.models import ID_PATTERN


class Variant(BaseModel):
    """A ranker setting under test (`NEWSREC_VARIANTS`, JSON): its share of users and what it changes."""

    weight: float = Field(default=1.0, ge=0)
    # Diversity re-rank: at most this many items per subcategory ahead of the rest (0: off).
    diversity_cap: int = Field(default=0, ge=0)
    fresh_merge: bool = True  # merge articles published after the list was computed


class Settings(BaseSettings):
    """Configuration of the HTTP API."""

    model_config = SettingsConfigDict(env_prefix="NEWSREC_", extra="ignore")

    store_backend: Literal["sqlite", "redis"] = Field(default_factory=lambda: serving_profile().store_backend)
    sqlite_path: Path = Field(default_factory=lambda: local_paths().online_store)
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", repr=False)  # may hold a password
    redis_prefix: str = "newsrec"
    landing_kind: Literal["local", "gcs"] = Field(default_factory=lambda: serving_profile().landing_kind)
    landing_dir: Path = Field(default_factory=lambda: local_paths().landing)
    landing_bucket: str = ""
    landing_prefix: str = "datastream"
    gcp_project: str | None = None
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list, repr=False)
    api_docs: bool = Field(default_factory=lambda: serving_profile().api_docs)

    # A/B variants, assigned by a stable hash of the user id (and the salt: a new salt reshuffles).
    variants: dict[str, Variant] = Field(default_factory=lambda: {"default": Variant()})
    variant_salt: str = ""
    # Filters and the diversity re-rank look at no more than this many ranked candidates (the
    # stored list and the fresh articles merged into it), so a rare category costs a bounded read.
    max_candidates: int = Field(default=200, ge=1)
    # The demo feed page at /demo (static HTML and JS): on in the local demo, off in production.
    demo_page: bool = Field(default_factory=lambda: serving_profile().api_docs)

    default_k: int = Field(default=10, ge=1)
    max_k: int = Field(default=50, ge=1, le=DEFAULT_CAPACITY)
    # Read-time merge of articles published after a list was computed: the window of articles
    # considered, and how old the cached vectors of new articles may get.
    fresh_window_hours: float = Field(default=48.0, gt=0)
    fresh_refresh_seconds: float = Field(default=5.0, ge=0)
    cold_start_refresh_seconds: float = Field(default=10.0, ge=0)
    # Cached article metadata: how often to ask whether articles changed, i.e. the longest an
    # edited or unpublished article is served as it was (0: on every request).
    article_check_seconds: float = Field(default=1.0, ge=0)
    article_cache_entries: int = Field(default=200_000, ge=1)

    # What was served lands as `impressions` records, one landing object per window; a full
    # queue drops (counted) rather than slowing requests.
    log_exposures: bool = True
    exposure_window_seconds: float = Field(default=1.0, gt=0)
    exposure_queue_size: int = Field(default=50_000, ge=1)
    # POST /v1/events: one landing object per window; each request waits for its window's write.
    events_window_seconds: float = Field(default=0.05, ge=0)
    max_body_bytes: int = Field(default=64 * 1024, ge=0)
    # Plausible `viewed_at`: not before this, not older than the age, not ahead by more than the skew.
    earliest_viewed_at: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    max_event_age_days: float = Field(default=30.0, gt=0)
    max_event_clock_skew_seconds: float = Field(default=300.0, ge=0)

    redis_timeout_seconds: float = Field(default=0.5, gt=0)  # longer: the request is a 503
    sqlite_busy_timeout_ms: int = Field(default=1000, ge=0)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_api_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.landing_kind == "gcs" and not self.landing_bucket:
            raise ValueError("landing_kind 'gcs' needs landing_bucket (NEWSREC_LANDING_BUCKET)")
        if not self.variants or sum(v.weight for v in self.variants.values()) <= 0:
            raise ValueError("variants need a positive total weight (NEWSREC_VARIANTS)")
        if any(not re.fullmatch(ID_PATTERN, name) for name in self.variants):
            raise ValueError(f"variant names must match {ID_PATTERN}")
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) exceeds max_k ({self.max_k})")
        return self
