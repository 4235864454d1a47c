"""Database reads shaped for the API and the pages (plain dicts the schemas and templates share).

Everything goes through `store` (find_sightings, find_events and the review functions), so the
web shows exactly what `birdtrap sightings` and `birdtrap events` print, corrections included.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from birdtrap import store
from birdtrap.store import daily
from birdtrap.store import reviews as review_store

MAX_OFFSET = 10_000  # pages are sliced from the newest rows; deeper paging belongs in an export


@dataclass(frozen=True)
class Filters:
    """The CLI's query filters (`birdtrap sightings --since ... --species ...`)."""

    since: datetime | None = None
    until: datetime | None = None
    species: str | None = None
    camera: str | None = None
    min_confidence: float | None = None

    def __post_init__(self) -> None:
        # Capture times are the camera's clock, stored without a zone: compare like with like.
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is not None:
                object.__setattr__(self, name, value.replace(tzinfo=None))

    def as_kwargs(self) -> dict[str, Any]:
        return asdict(self)


def utc(value: datetime | None) -> datetime | None:
    """A stored UTC time (naive) as an aware one, so JSON says +00:00."""
    return value.replace(tzinfo=UTC) if value is not None else None


def thumbnail_url(image_id: int, size: int | None = None) -> str:
    return f"/api/v1/photos/{image_id}/thumbnail" + (f"?size={size}" if size else "")


def crop_url(image_id: int, size: int = 320) -> str:
    """A thumbnail cropped around the region that decided, with its box drawn."""
    return f"/api/v1/photos/{image_id}/thumbnail?size={size}&crop=true"


def review_dict(correction: store.CorrectionRecord) -> dict[str, Any]:
    return {
        "id": correction.id,
        "event_id": correction.event_id,
        "verdict": correction.verdict,
        "kind": correction.kind,
        "label": correction.label,
        "scientific_name": correction.scientific_name,
        "common_name": correction.common_name,
        "taxon_rank": correction.taxon_rank,
        "machine_kind": correction.machine_kind,
        "machine_scientific_name": correction.machine_scientific_name,
        "machine_common_name": correction.machine_common_name,
        "machine_confidence": correction.machine_confidence,
        "reviewer": correction.reviewer,
        "note": correction.note,
        "created_at": utc(correction.created_at),
    }


def sighting_dict(image: Any) -> dict[str, Any]:
    """One row of find_sightings (a record, or a `Reviewed` view of one)."""
    return {
        "id": image.id,
        "captured_at": image.captured_at,
        "camera": image.camera_id,
        "kind": image.kind,
        "scientific_name": image.scientific_name,
        "common_name": image.common_name,
        "taxon_rank": image.taxon_rank,
        "confidence": _round(image.confidence),
        "reviewed": getattr(image, "reviewed", None),
        "event_id": image.event_id,
        "path": image.archived_path or image.path,
        "thumbnail_url": thumbnail_url(image.id),
    }


def event_dict(event: Any, cover: store.ImageRecord | None) -> dict[str, Any]:
    """One row of find_events, with the photo that stands for it."""
    return {
        "id": event.id,
        "start": event.start,
        "end": event.end,
        "camera": event.camera_id,
        "photo_count": event.photo_count,
        "bird_photo_count": event.bird_photo_count,
        "kind": event.kind,
        "label": event.label,
        "scientific_name": event.scientific_name,
        "common_name": event.common_name,
        "taxon_rank": event.taxon_rank,
        "confidence": _round(event.confidence),
        "reviewed": getattr(event, "reviewed", None),
        "cover_photo_id": cover.id if cover is not None else None,
        "thumbnail_url": thumbnail_url(cover.id) if cover is not None else None,
    }


def _round(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


def covers(session: Session, event_ids: list[int]) -> dict[int, store.ImageRecord | None]:
    """event id -> the photo that stands for it (one query for a whole page)."""
    return {event_id: cover_of(photos) for event_id, photos in store.event_photos(session, event_ids).items()}


def cover_of(photos: list[store.ImageRecord]) -> store.ImageRecord | None:
    """An event's surest bird photo, else its first photo."""
    birds = [p for p in photos if p.kind == store.KIND_BIRD]
    return max(birds, key=lambda p: p.confidence or 0.0) if birds else (photos[0] if photos else None)


def sightings_page(session: Session, filters: Filters, limit: int, offset: int) -> tuple[list[dict[str, Any]], bool]:
    """A page of sightings and whether more follow."""
    rows = store.find_sightings(session, limit=offset + limit + 1, **filters.as_kwargs())
    page = rows[offset : offset + limit]
    return [sighting_dict(image) for image in page], len(rows) > offset + limit


def events_page(session: Session, filters: Filters, limit: int, offset: int, birds_only: bool = True) -> tuple[list[dict[str, Any]], bool]:
    """A page of events (with cover photos) and whether more follow."""
    rows = store.find_events(session, limit=offset + limit + 1, birds_only=birds_only, **filters.as_kwargs())
    page = rows[offset : offset + limit]
    cover = covers(session, [event.id for event in page])
    return [event_dict(event, cover.get(event.id)) for event in page], len(rows) > offset + limit


def event_detail(session: Session, event_id: int) -> dict[str, Any] | None:
    """An event as shown (corrections applied), its machine answer, photos and review history."""
    event = session.get(store.EventRecord, event_id)
    if event is None:
        return None
    history = store.review_history(session, event_id)
    shown: Any = store.Reviewed(event, history[0]) if history else event
    photos = store.event_photos(session, [event_id]).get(event_id, [])
    detail = event_dict(shown, cover_of(photos))
    detail["machine"] = {
        "kind": event.kind,
        "label": event.label,
        "scientific_name": event.scientific_name,
        "common_name": event.common_name,
        "taxon_rank": event.taxon_rank,
        "confidence": _round(event.confidence),
    }
    detail["photos"] = [
        {
            "id": p.id,
            "captured_at": p.captured_at,
            "kind": p.kind,
            "scientific_name": p.scientific_name,
            "common_name": p.common_name,
            "confidence": _round(p.confidence),
            "thumbnail_url": thumbnail_url(p.id),
        }
        for p in photos
    ]
    detail["reviews"] = [review_dict(c) for c in history]
    return detail


def photo_detail(session: Session, image_id: int) -> dict[str, Any] | None:
    """One photo's record with its ranked predictions and its event's review."""
    image = session.get(store.ImageRecord, image_id)
    if image is None:
        return None
    review = store.latest_reviews(session, [image.event_id]).get(image.event_id) if image.event_id else None  # type: ignore[arg-type]
    box = [image.box_x0, image.box_y0, image.box_x1, image.box_y1]
    model = image.model
    return {
        "id": image.id,
        "path": image.path,
        "archived_path": image.archived_path,
        "sha256": image.sha256,
        "status": image.status,
        "error": image.error,
        "camera": image.camera_id,
        "discovered_at": utc(image.discovered_at),
        "processed_at": utc(image.processed_at),
        "captured_at": image.captured_at,
        "captured_at_source": image.captured_at_source,
        "width": image.width,
        "height": image.height,
        "kind": image.kind,
        "label": image.label,
        "scientific_name": image.scientific_name,
        "common_name": image.common_name,
        "taxon_rank": image.taxon_rank,
        "confidence": _round(image.confidence),
        "box": box if None not in box else None,
        "invokes": image.invokes,
        "event_id": image.event_id,
        "duplicate_of": image.duplicate_of,
        "model": {"name": model.name, "version": model.version, "sha256": model.sha256} if model is not None else None,
        "predictions": [
            {
                "rank": p.rank,
                "label_index": p.label_index,
                "label": p.label,
                "scientific_name": p.scientific_name,
                "common_name": p.common_name,
                "confidence": round(p.confidence, 6),
            }
            for p in image.predictions
        ],
        "review": review_dict(review) if review is not None else None,
        "thumbnail_url": thumbnail_url(image.id),
        "original_url": f"/api/v1/photos/{image.id}/original",
    }


def photo_location(session: Session, image_id: int) -> str | None:
    """Where a photo's file is now: the archive copy once moved, else where it was found."""
    found = photo_location_and_box(session, image_id)
    return found[0] if found is not None else None


def photo_location_and_box(session: Session, image_id: int) -> tuple[str, tuple[float, float, float, float] | None] | None:
    """Where a photo's file is now, and the region that decided (0-1 of the frame), if one was stored."""
    record = store.ImageRecord
    columns = (record.path, record.archived_path, record.box_x0, record.box_y0, record.box_x1, record.box_y1)
    row = session.execute(select(*columns).where(record.id == image_id)).first()
    if row is None:
        return None
    box = (row.box_x0, row.box_y0, row.box_x1, row.box_y1)
    return row.archived_path or row.path, box if None not in box else None  # type: ignore[return-value]


def stats(session: Session, by: str, since: datetime | None, until: datetime | None, camera: str | None) -> dict[str, Any]:
    """Per species totals, or photos per species by day or hour: what `birdtrap stats` prints,
    with people's corrections applied (see store.species_stats)."""
    window = Filters(since=since, until=until)
    since, until = window.since, window.until
    rows = store.stats_rows(session, by, since, until, camera)
    return {"by": by, "rows": rows, "photos_by_status": store.counts_by_status(session)}


def daily_counts(sightings: list[Any], most_days: int = 366) -> list[tuple[str, int]]:
    """Photos per day over the last `most_days` days with any, oldest first, quiet days as 0.

    Quiet days are kept so the chart's x axis is time, and a gap in activity shows as a gap.
    """
    days = Counter(s.captured_at.date() for s in sightings if s.captured_at is not None)
    if not days:
        return []
    last = max(days)
    first = max(min(days), last - timedelta(days=most_days - 1))
    span = (last - first).days + 1
    return [((first + timedelta(days=n)).isoformat(), days.get(first + timedelta(days=n), 0)) for n in range(span)]


def hourly_counts(session: Session) -> list[int]:
    """Bird photos per hour of day (0-23), all species, for the stats page."""
    hours = [0] * 24
    for _, bucket, count in store.activity(session, "hour"):
        hours[int(bucket)] += count
    return hours


# --- the review queue and the pages a birder opens every day (issue 18) ----------------------


def queue_page(session: Session, limit: int, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Unreviewed events, those that need a person most first (see store.reviews.review_queue), and how many."""
    events, total = review_store.review_queue(session, limit, offset)
    cover = covers(session, [event.id for event in events])
    page = []
    for event in events:
        row = event_dict(event, cover.get(event.id))
        photo = cover.get(event.id)
        row["crop_url"] = crop_url(photo.id) if photo is not None else None
        page.append(row)
    return page, total


def species_rows(summaries: list[daily.SpeciesDay]) -> list[dict[str, Any]]:
    """Species summaries as the today and gallery pages show them."""
    return [
        {
            "scientific_name": s.scientific_name,
            "common_name": s.common_name,
            "taxon_rank": s.taxon_rank,
            "photos": s.photos,
            "events": s.events,
            "first": s.first,
            "last": s.last,
            "best_photo_id": s.best_photo_id,
            "best_confidence": _round(s.best_confidence),
            "crop_url": crop_url(s.best_photo_id),
        }
        for s in summaries
    ]


def species_by_hour(session: Session) -> tuple[list[dict[str, Any]], int]:
    """Rows of (species, photos in each hour 0-23), most photos first; and the largest cell."""
    names = {s.scientific_name: s.common_name for s in store.species_stats(session)}
    counts: dict[str, list[int]] = {}
    for name, bucket, count in store.activity(session, "hour"):
        counts.setdefault(name, [0] * 24)[int(bucket)] += count
    rows = [{"scientific_name": n, "common_name": names.get(n), "hours": h, "total": sum(h)} for n, h in counts.items()]
    rows.sort(key=lambda r: (-r["total"], r["scientific_name"]))
    return rows, max((c for r in rows for c in r["hours"]), default=0)


def failed_page(session: Session, limit: int, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Photos that could not be read, newest first, with the reason; and how many there are."""
    records, total = daily.failed_photos(session, limit, offset)
    return [
        {"id": r.id, "path": store.path_as_text(r.path), "error": r.error, "camera": r.camera_id, "discovered_at": r.discovered_at}
        for r in records
    ], total


def axis_ticks(peak: int, count: int = 4) -> list[int]:
    """Round values for a chart's count axis, from 0 up to at least `peak` (0, 5, 10, 15 ...)."""
    if peak <= 0:
        return [0, 1]
    raw = peak / count
    magnitude = 10 ** (len(str(int(raw))) - 1) if raw >= 1 else 1
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    top = -(-peak // step) * step
    return list(range(0, int(top) + 1, int(step)))
