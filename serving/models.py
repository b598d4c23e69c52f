"""Request and response schemas of the API: they validate and serialise what the routes return,
and they are the OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$"
ID_MAX_LENGTH = 64

EntityId = Annotated[str, StringConstraints(pattern=ID_PATTERN, min_length=1, max_length=ID_MAX_LENGTH)]
Source = Literal["stored", "fresh", "cold_start"]


class Provenance(BaseModel):
    """Where a list came from."""

    model_version: str | None = Field(description="model that produced the list")
    layer: Literal["batch", "speed", "cold_start"] = Field(description="layer that wrote the list")
    computed_at: datetime | None = Field(description="when the list was computed")
    watermark: datetime | None = Field(description="event time of the newest behaviour event reflected")
    fresh_merged: int = Field(description="items merged in at read time (published after computed_at)")
    variant: str = Field(description="the A/B variant (ranker settings) this user is assigned to")


class ArticleItem(BaseModel):
    rank: int = Field(ge=1)
    article_id: str
    title: str
    category: str
    subcategory: str
    published_at: datetime
    url: str | None
    score: float


class RecommendationItem(ArticleItem):
    source: Source = Field(description="stored list, read-time fresh merge, or cold-start list")


class RecommendationsResponse(BaseModel):
    user_id: str
    request_id: str = Field(description="identifies this exposure; send it back as impression_id")
    served_at: datetime
    k: int
    offset: int = Field(description="items skipped before the first one (paging)")
    provenance: Provenance
    items: list[RecommendationItem]


class RelatedResponse(BaseModel):
    article_id: str
    k: int
    model_version: str = Field(description="model whose article vectors were compared")
    items: list[ArticleItem] = Field(description="live articles nearest by cosine, best first")


class ViewEventIn(BaseModel):
    """A view reported by an app that has no change-data-capture stream."""

    model_config = ConfigDict(extra="forbid")

    user_id: EntityId
    article_id: EntityId
    viewed_at: datetime | None = Field(
        default=None,
        description="event time; naive means UTC; default now. Refused (422) before "
        "NEWSREC_EARLIEST_VIEWED_AT, "
        "older than NEWSREC_MAX_EVENT_AGE_DAYS or ahead of the server's clock by more than "
        "NEWSREC_MAX_EVENT_CLOCK_SKEW_SECONDS",
    )
    impression_id: EntityId | None = Field(default=None, description="request_id of the list it came from")


class ViewEventAccepted(BaseModel):
    status: Literal["accepted"]
    event_id: str
    user_id: str
    article_id: str
    viewed_at: datetime
    change_key: str
    landing_file: str


class ErrorDetail(BaseModel):
    loc: list[str]
    msg: str
    type: str


class Error(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] | None = None


class ErrorResponse(BaseModel):
    error: Error


class Health(BaseModel):
    status: str
    model_version: str | None = None
    generation: int | None = None
