"""The API's JSON shapes, as pydantic models: they document the OpenAPI schema and check answers.

Times: `captured_at`, `start` and `end` are the camera's clock (no zone, as the photo says);
`processed_at`, `discovered_at` and `created_at` are UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from birdtrap.web.problems import ProblemDetails


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Review(Schema):
    """A person's verdict on an event, beside what the machine said when it was given."""

    id: int
    event_id: int
    verdict: Literal["confirmed", "corrected", "empty"]
    kind: str
    label: str | None
    scientific_name: str | None
    common_name: str | None
    taxon_rank: str | None
    machine_kind: str | None
    machine_scientific_name: str | None
    machine_common_name: str | None
    machine_confidence: float | None
    reviewer: str | None
    note: str | None
    created_at: datetime


class Sighting(Schema):
    id: int = Field(description="The photo's id (GET /api/v1/photos/{id})")
    captured_at: datetime | None
    camera: str
    kind: str
    scientific_name: str | None
    common_name: str | None
    taxon_rank: str | None
    confidence: float | None = Field(description="The machine's; null where a person named another species")
    reviewed: str | None = Field(description="confirmed, corrected or empty when a person reviewed the event")
    event_id: int | None
    path: str
    thumbnail_url: str


class Page(Schema):
    limit: int
    offset: int
    next: str | None = Field(description="URL of the next page, null on the last")


class SightingPage(Page):
    items: list[Sighting]


class Event(Schema):
    id: int
    start: datetime
    end: datetime
    camera: str
    photo_count: int
    bird_photo_count: int
    kind: str
    label: str | None
    scientific_name: str | None
    common_name: str | None
    taxon_rank: str | None
    confidence: float | None
    reviewed: str | None
    cover_photo_id: int | None = Field(description="The surest bird photo of the event, else its first photo")
    thumbnail_url: str | None


class EventPage(Page):
    items: list[Event]


class PhotoSummary(Schema):
    id: int
    captured_at: datetime | None
    kind: str | None
    scientific_name: str | None
    common_name: str | None
    confidence: float | None
    thumbnail_url: str


class EventDetail(Event):
    machine: dict[str, str | float | None] = Field(description="The machine's answer, whatever a person said")
    photos: list[PhotoSummary]
    reviews: list[Review] = Field(description="Every verdict, newest first; the first one decides")


class Prediction(Schema):
    rank: int
    label_index: int
    label: str
    scientific_name: str | None
    common_name: str | None
    confidence: float


class Photo(Schema):
    id: int
    path: str
    archived_path: str | None
    sha256: str | None
    status: str
    error: str | None
    camera: str
    discovered_at: datetime | None
    processed_at: datetime | None
    captured_at: datetime | None
    captured_at_source: str | None
    width: int | None
    height: int | None
    kind: str | None
    label: str | None
    scientific_name: str | None
    common_name: str | None
    taxon_rank: str | None
    confidence: float | None
    box: list[float] | None = Field(description="x0, y0, x1, y1 in 0-1 of the frame")
    invokes: int | None
    event_id: int | None
    duplicate_of: int | None
    model: dict[str, str | None] | None
    predictions: list[Prediction]
    review: Review | None
    thumbnail_url: str
    original_url: str


class Stats(Schema):
    by: Literal["species", "day", "hour"]
    rows: list[dict[str, str | int | None]]
    photos_by_status: dict[str, int]


class FolderSpace(Schema):
    key: str
    path: str
    free_bytes: int | None
    total_bytes: int | None


class Health(Schema):
    status: Literal["ok", "loading", "degraded"]
    version: str
    model: dict[str, str | int | None]
    runtime: dict[str, str | None]
    queue_depth: int | None = Field(description="Photos registered but not yet processed (the daemon's queue as the database sees it)")
    photos_by_status: dict[str, int]
    last_photo: dict[str, str | int | None] | None
    disk: list[FolderSpace]
    database: str = Field(description="ok, or why it cannot be read")


class Changes(Schema):
    token: str = Field(description="Changes whenever a photo or verdict is added; pages poll it")


class Label(Schema):
    label_index: int
    label: str
    scientific_name: str | None
    common_name: str | None
    probability: float


class Answer(Schema):
    kind: str
    label: str | None
    scientific_name: str | None
    common_name: str | None
    taxon_rank: str | None
    confidence: float
    box: list[float] | None
    source: str
    invokes: int
    top: list[Label]


class Recorded(Schema):
    image_id: int
    outcome: Literal["new", "pending", "duplicate", "seen"]
    path: str


class ClassifyItem(Schema):
    index: int = Field(description="Position of the file in the request")
    filename: str
    sha256: str
    cached: bool = Field(description="Answered from the cache: the model was not invoked for this photo")
    result: Answer | None
    recorded: Recorded | None
    error: ProblemDetails | None = Field(description="Why this file failed (415 not an image, 422 unreadable); the others are unaffected")


class ClassifyResponse(Schema):
    model: dict[str, str | None]
    items: list[ClassifyItem]


class ReviewIn(Schema):
    verdict: Literal["confirm", "correct", "empty"] = Field(
        description="confirm the machine's species, correct it, or mark the event empty"
    )
    species: str | None = Field(
        None, min_length=2, max_length=200, description="For 'correct': a model label ('Ardea cinerea (Grey Heron)') or a scientific name"
    )
    site_class: str | None = Field(
        None, min_length=2, max_length=100, pattern=r"^[a-z][a-z0-9 _-]*$",
        description="For 'empty': what is there instead, taught to the camera's head: animal, person or a site class ('fence post')",
    )
    reviewer: str | None = Field(None, max_length=100)
    note: str | None = Field(None, max_length=1000)
