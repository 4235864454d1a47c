"""What the CLI, the web and exports read: sightings, events, failures, stats (corrections
applied). One name per question; functions take a Session and never commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from birdtrap.identify.kinds import Kind
from birdtrap.identify.privacy import boxes_from_text
from birdtrap.store.corrections import Reviewed, as_reviewed, join_review, review_of
from birdtrap.store.tables import DONE, FAILED, KIND_BIRD, PENDING, CorrectionRecord, EventRecord, ImageRecord
from birdtrap.store.writes import path_as_text


def known_files(session: Session) -> dict[str, set[tuple[int | None, float | None]]]:
    """Stored path -> every (size, mtime) on record for it, for reconciling the folder.

    A path can have several rows (its content replaced, then restored): the file is on record
    if it matches any of them. Compare a scanned name through `path_as_text`.
    """
    known: dict[str, set[tuple[int | None, float | None]]] = {}
    for path, size, mtime in session.execute(select(ImageRecord.path, ImageRecord.size_bytes, ImageRecord.file_mtime)):
        known.setdefault(path, set()).add((size, mtime))
    return known


def pending_photos(session: Session) -> list[ImageRecord]:
    return list(session.scalars(select(ImageRecord).where(ImageRecord.status == PENDING).order_by(ImageRecord.id)))


def counts_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(ImageRecord.status, func.count()).group_by(ImageRecord.status))
    return {status: count for status, count in rows}


def find_sightings(
    session: Session,
    since: datetime | None = None,
    until: datetime | None = None,
    species: str | None = None,
    min_confidence: float | None = None,
    camera: str | None = None,
    limit: int | None = None,
) -> list[ImageRecord | Reviewed]:
    """Photos whose decision is a bird, newest capture first, filtered as the CLI asks.

    A person's correction of the photo's event wins over the machine's answer (see join_review).
    """
    query = _sightings_query(since, until, species, min_confidence, camera)
    query = query.order_by(ImageRecord.captured_at.desc(), ImageRecord.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return as_reviewed(session.execute(query))


def _filtered(
    query: Any,
    review: Any,
    start: Any,
    end: Any,
    camera_column: Any,
    since: datetime | None,
    until: datetime | None,
    species: str | None,
    min_confidence: float | None,
    camera: str | None,
) -> Any:
    """The filters `sightings` and `events` share, on a query joined to its reviews (join_review)."""
    if since is not None:
        query = query.where(end >= since)
    if until is not None:
        query = query.where(start < until)
    if species:
        pattern = species.lower() + "%"
        query = query.where(or_(func.lower(review.scientific_name).like(pattern), func.lower(review.common_name).like(pattern)))
    if min_confidence is not None:
        query = query.where(review.at_least(min_confidence))
    if camera:
        query = query.where(camera_column == camera)
    return query


def find_events(
    session: Session,
    since: datetime | None = None,
    until: datetime | None = None,
    species: str | None = None,
    min_confidence: float | None = None,
    camera: str | None = None,
    limit: int | None = None,
    birds_only: bool = True,
    kind: Kind | None = None,
) -> list[EventRecord | Reviewed]:
    """Events (bursts), newest first, with the same filters as `find_sightings`; `kind` keeps one kind only.

    A person's correction wins over the machine's answer (see join_review).
    """
    query = _events_query(since, until, species, min_confidence, camera, birds_only, kind)
    query = query.order_by(EventRecord.start.desc(), EventRecord.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return as_reviewed(session.execute(query))


def _sightings_query(since: datetime | None, until: datetime | None, species: str | None, min_confidence: float | None,
                     camera: str | None) -> Any:  # fmt: skip
    query = select(ImageRecord).where(ImageRecord.status == DONE, ImageRecord.kind == KIND_BIRD)
    query, review = join_review(query, ImageRecord)
    query = query.where(review.kind == KIND_BIRD)
    return _filtered(query, review, ImageRecord.captured_at, ImageRecord.captured_at, ImageRecord.camera_id,
                     since, until, species, min_confidence, camera)  # fmt: skip


def _events_query(since: datetime | None, until: datetime | None, species: str | None, min_confidence: float | None,
                  camera: str | None, birds_only: bool, kind: str | None = None) -> Any:  # fmt: skip
    query, review = join_review(select(EventRecord), EventRecord)
    if kind is not None:
        query = query.where(review.kind == kind)
    elif birds_only:
        query = query.where(review.kind == KIND_BIRD)
    return _filtered(query, review, EventRecord.start, EventRecord.end, EventRecord.camera_id,
                     since, until, species, min_confidence, camera)  # fmt: skip


def find_failed(session: Session, limit: int | None = None) -> list[ImageRecord]:
    """Photos that could not be read, newest first, with the reason (`birdtrap failed`)."""
    query = select(ImageRecord).where(ImageRecord.status == FAILED)
    query = query.order_by(ImageRecord.discovered_at.desc(), ImageRecord.id.desc())
    return list(session.scalars(query.limit(limit) if limit is not None else query))


def count_sightings(session: Session, since: datetime | None = None, until: datetime | None = None, species: str | None = None,
                    min_confidence: float | None = None, camera: str | None = None) -> int:  # fmt: skip
    """How many rows `find_sightings` with the same filters and no limit returns."""
    query = _sightings_query(since, until, species, min_confidence, camera)
    return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)


def count_events(session: Session, since: datetime | None = None, until: datetime | None = None, species: str | None = None,
                 min_confidence: float | None = None, camera: str | None = None, birds_only: bool = True,
                 kind: str | None = None) -> int:  # fmt: skip
    """How many rows `find_events` with the same filters and no limit returns."""
    query = _events_query(since, until, species, min_confidence, camera, birds_only, kind)
    return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)


def stats_rows(session: Session, by: str, since: datetime | None, until: datetime | None, camera: str | None) -> list[dict[str, Any]]:
    """What `birdtrap stats` and the web stats page show: per species totals, or photos per
    species by day or hour (`until` applies to the totals only: activity takes no end date)."""
    if by == "species":
        return [
            {
                "scientific_name": s.scientific_name,
                "common_name": s.common_name,
                "taxon_rank": s.taxon_rank,
                "photos": s.photos,
                "events": s.events,
                "first_seen": s.first_seen.isoformat(sep=" ") if s.first_seen else None,
                "last_seen": s.last_seen.isoformat(sep=" ") if s.last_seen else None,
            }
            for s in species_stats(session, since, until, camera)
        ]
    return [{"scientific_name": name, by: bucket, "photos": count} for name, bucket, count in activity(session, by, since, camera)]


@dataclass(frozen=True)
class SpeciesStats:
    scientific_name: str
    common_name: str | None
    taxon_rank: str | None
    photos: int
    events: int
    first_seen: datetime
    last_seen: datetime


def images_by_path(session: Session, paths: Iterable[str]) -> list[ImageRecord]:
    texts = [path_as_text(path) for path in paths]
    return list(session.scalars(select(ImageRecord).where(ImageRecord.path.in_(texts)).order_by(ImageRecord.id)))


def event_photos(session: Session, event_ids: Iterable[int]) -> dict[int, list[ImageRecord]]:
    """event id -> its photos in capture order."""
    ids = list(event_ids)
    if not ids:
        return {}
    query = select(ImageRecord).where(ImageRecord.event_id.in_(ids)).order_by(ImageRecord.captured_at, ImageRecord.id)
    photos: dict[int, list[ImageRecord]] = {}
    for image in session.scalars(query):
        photos.setdefault(image.event_id, []).append(image)  # type: ignore[arg-type]
    return photos


def pending_count(session: Session) -> int:
    """Photos registered but not yet processed: the daemon's queue as the database sees it."""
    return int(session.scalar(select(func.count()).select_from(ImageRecord).where(ImageRecord.status == PENDING)) or 0)


def last_photo(session: Session) -> ImageRecord | None:
    """The photo found most recently (by discovery), whatever became of it."""
    return session.scalar(select(ImageRecord).order_by(ImageRecord.id.desc()).limit(1))


def change_token(session: Session) -> str:
    """A short string that changes whenever a photo is added or processed or a verdict is stored.

    The web page polls it and reloads its list only when it changes (cheap on a Pi Zero).
    """
    newest, processed, done = session.execute(
        select(func.max(ImageRecord.id), func.max(ImageRecord.processed_at), func.count(ImageRecord.processed_at))
    ).one()
    reviewed = session.scalar(select(func.max(CorrectionRecord.id)))
    return f"{newest or 0}.{done}.{processed.isoformat() if processed else '-'}.{reviewed or 0}"


def species_stats(
    session: Session, since: datetime | None = None, until: datetime | None = None, camera: str | None = None
) -> list[SpeciesStats]:
    """Per species (or genus, family, order): photos, events, first and last seen; most photos first.

    People's corrections count: a corrected burst counts as its new species, one marked blank not
    at all, so the CLI, plots and web agree.
    """
    photo = review_of(ImageRecord)
    photo_query = (
        select(
            photo.scientific_name,
            func.max(photo.common_name),
            func.max(photo.taxon_rank),
            func.count(),
            func.min(ImageRecord.captured_at),
            func.max(ImageRecord.captured_at),
        )
        .select_from(ImageRecord)
        .outerjoin(photo.correction, photo.onclause)
        .where(ImageRecord.status == DONE, ImageRecord.kind == KIND_BIRD, photo.kind == KIND_BIRD)
    )
    event = review_of(EventRecord)
    event_query = (
        select(event.scientific_name, func.count())
        .select_from(EventRecord)
        .outerjoin(event.correction, event.onclause)
        .where(event.kind == KIND_BIRD)
    )
    if since is not None:
        photo_query = photo_query.where(ImageRecord.captured_at >= since)
        event_query = event_query.where(EventRecord.end >= since)
    if until is not None:
        photo_query = photo_query.where(ImageRecord.captured_at < until)
        event_query = event_query.where(EventRecord.start < until)
    if camera:
        photo_query = photo_query.where(ImageRecord.camera_id == camera)
        event_query = event_query.where(EventRecord.camera_id == camera)
    events = dict(session.execute(event_query.group_by(event.scientific_name)).all())
    rows = session.execute(photo_query.group_by(photo.scientific_name)).all()
    stats = [SpeciesStats(name, common, rank, photos, events.get(name, 0), first, last) for name, common, rank, photos, first, last in rows]
    return sorted(stats, key=lambda s: (-s.photos, s.scientific_name))


def activity(session: Session, by: str, since: datetime | None = None, camera: str | None = None) -> list[tuple[str, str, int]]:
    """(species, day or hour, photos) for bird photos, corrections applied; `by` is 'day' or 'hour'."""
    photo = review_of(ImageRecord)
    query = (
        select(photo.scientific_name, ImageRecord.captured_at)
        .select_from(ImageRecord)
        .outerjoin(photo.correction, photo.onclause)
        .where(ImageRecord.status == DONE, ImageRecord.kind == KIND_BIRD, photo.kind == KIND_BIRD)
    )
    if since is not None:
        query = query.where(ImageRecord.captured_at >= since)
    if camera:
        query = query.where(ImageRecord.camera_id == camera)
    counts: dict[tuple[str, str], int] = {}
    for name, when in session.execute(query):
        if when is None:
            continue
        bucket = when.strftime("%Y-%m-%d") if by == "day" else f"{when.hour:02d}"
        counts[(name, bucket)] = counts.get((name, bucket), 0) + 1
    return sorted((name, bucket, count) for (name, bucket), count in counts.items())


# --- people hidden at the source (issue 19) ------------------------------------------------


def hidden_boxes(session: Session, image_id: int) -> tuple[tuple[float, float, float, float], ...]:
    """The person boxes to hide in images made from photo `image_id`; () when none (or no such photo)."""
    return boxes_from_text(session.scalar(select(ImageRecord.person_boxes).where(ImageRecord.id == image_id)))


def hidden_boxes_at(session: Session, paths: Iterable[str]) -> tuple[tuple[float, float, float, float], ...]:
    """The person boxes of every photo recorded (or archived) at any of `paths`, together."""
    names = list(paths)
    rows = session.scalars(
        select(ImageRecord.person_boxes).where(
            or_(ImageRecord.path.in_(names), ImageRecord.archived_path.in_(names)), ImageRecord.person_boxes.is_not(None)
        )
    )
    return tuple(box for text_value in rows for box in boxes_from_text(text_value))


def redacted_count(session: Session) -> int:
    """How many processed photos have people hidden in every image birdtrap makes of them."""
    return session.scalar(select(func.count()).where(ImageRecord.status == DONE, ImageRecord.person_boxes.is_not(None))) or 0
