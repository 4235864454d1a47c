"""The API's JSON shapes, as pydantic models: they document the OpenAPI schema and check answers.

Times come in two kinds, and the schema says which (issue 16):
- `CameraTime` (`captured_at`, an event's `start` and `end`): the camera's clock as the photo
  records it. EXIF DateTimeOriginal has no zone and the camera may be set to any zone, so the
  stored value is naive local time and the API gives it as such: an RFC 3339 date-time without
  the offset (the OpenAPI registry's `date-time-local`), never with an offset it does not know.
  `camera.utc_offset` and the Camtrap DP export are where a camera's offset is stated.
- `UtcTime` (`discovered_at`, `processed_at`, `created_at`): the server's own clock, stored as
  naive UTC; the API gives it as RFC 3339 `date-time` with its offset (`...Z`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from birdtrap.web.problems import ProblemDetails

LOCAL_DATE_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?$"


def _camera_clock(value: datetime) -> str:
    # Naive in the database; an aware value would be a bug upstream, and its wall time is the camera's.
    return value.replace(tzinfo=None).isoformat()


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


CameraTime = Annotated[
    datetime,
    PlainSerializer(_camera_clock, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time-local",
            "pattern": LOCAL_DATE_TIME,
            "description": "The camera's clock (EXIF DateTimeOriginal, else DateTime, else the file time): local time "
            "without a UTC offset, because the camera records none (see camera.utc_offset).",
            "examples": ["2021-04-11T20:43:09"],
        }
    ),
]
UtcTime = Annotated[
    datetime,
    AfterValidator(_as_utc),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "description": "The server's clock, UTC, RFC 3339 with its offset",
            "examples": ["2021-04-11T20:43:09Z"],
        }
    ),
]


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
    created_at: UtcTime


class Sighting(Schema):
    id: int = Field(description="The photo's id (GET /api/v1/photos/{id})")
    captured_at: CameraTime | None
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
    start: CameraTime
    end: CameraTime
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
    captured_at: CameraTime | None
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
    discovered_at: UtcTime | None
    processed_at: UtcTime | None
    captured_at: CameraTime | None
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


class LastPhoto(Schema):
    id: int
    path: str
    status: str
    discovered_at: UtcTime
    captured_at: CameraTime | None


class Health(Schema):
    status: Literal["ok", "loading", "degraded"]
    version: str
    model: dict[str, str | int | None]
    runtime: dict[str, str | None]
    queue_depth: int | None = Field(description="Photos registered but not yet processed (the daemon's queue as the database sees it)")
    photos_by_status: dict[str, int]
    last_photo: LastPhoto | None
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


class _Verdict(Schema):
    reviewer: str | None = Field(None, max_length=100)
    note: str | None = Field(None, max_length=1000)


class Confirm(_Verdict):
    """Confirm the machine's species (the event must have a bird)."""

    verdict: Literal["confirm"]
    species: None = Field(None, description="Not used: the machine's species is confirmed")


class Correct(_Verdict):
    """Name the species the event really shows."""

    verdict: Literal["correct"]
    # `pattern`: at least one visible character, so the schema refuses what the route would.
    species: str = Field(
        min_length=2,
        max_length=200,
        pattern=r"\S",
        description="A model label ('Ardea cinerea (Grey Heron)'), its scientific or common name, a genus, family or order "
        "the taxonomy knows (GET /api/v1/names), or 'other: <a name of your own>'; anything else is refused (422)",
    )


class MarkEmpty(_Verdict):
    """No bird there: the event becomes `blank`, or what `site_class` names. "empty" is the older word for "blank"."""

    verdict: Literal["blank", "empty"]
    species: None = Field(None, description="Not used")
    site_class: str | None = Field(
        None,
        min_length=2,
        max_length=100,
        pattern=r"^[a-z][a-z0-9 _-]*$",
        description="What is there instead, taught to the camera's head: animal, person or a site class ('fence post')",
    )


# One schema per verdict, so the OpenAPI document says that only a correction needs a species.
ReviewIn = Annotated[Confirm | Correct | MarkEmpty, Field(discriminator="verdict")]


class KnownName(Schema):
    """A name a review may use (GET /api/v1/names)."""

    label: str = Field(description="What to send as a correction's species")
    scientific_name: str
    common_name: str | None
    rank: str = Field(description="species, genus, family or order")


class BulkConfirm(Schema):
    """Confirm the machine's bird on each of these events (the only verdict given in bulk)."""

    verdict: Literal["confirm"]
    # 2**53 - 1: the largest integer every JSON reader (and the OpenAPI document's number) holds exactly.
    event_ids: list[Annotated[int, Field(ge=1, le=2**53 - 1)]] = Field(min_length=1, max_length=500)
    reviewer: str | None = Field(None, max_length=100)
    note: str | None = Field(None, max_length=1000)


class Undone(Schema):
    undone: int = Field(description="The review taken back")
    event_id: int
    review: Review | None = Field(description="The verdict that decides now; null: the machine's answer stands")
