"""The reads behind the pages a birder opens every day (issue 18): today, the gallery, failed photos.

People's verdicts are applied as everywhere else (`review_of`): a corrected burst counts as its new
species, one marked blank not at all. Functions take a Session and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from birdtrap.store.corrections import review_of
from birdtrap.store.tables import DONE, FAILED, KIND_BIRD, ImageRecord


@dataclass(frozen=True)
class SpeciesDay:
    """One species over a span of time: how many photos and events, when, and its best photo."""

    scientific_name: str
    common_name: str | None
    taxon_rank: str | None
    photos: int
    events: int
    first: datetime | None
    last: datetime | None
    best_photo_id: int
    best_confidence: float | None


def species_summary(session: Session, since: datetime | None = None, until: datetime | None = None) -> list[SpeciesDay]:
    """Each species seen in [since, until) with counts, first and last time and its best photo.

    The best photo is the one the machine was surest of for the species shown; a photo a person
    moved to another species only stands for it when there is no other. Most photos first.
    """
    photo = review_of(ImageRecord)
    query = (
        select(
            ImageRecord.id,
            ImageRecord.event_id,
            ImageRecord.captured_at,
            ImageRecord.scientific_name,
            ImageRecord.confidence,
            photo.scientific_name,
            photo.common_name,
            photo.taxon_rank,
        )
        .select_from(ImageRecord)
        .outerjoin(photo.correction, photo.onclause)
        .where(ImageRecord.status == DONE, ImageRecord.kind == KIND_BIRD, photo.kind == KIND_BIRD, photo.scientific_name.is_not(None))
    )
    if since is not None:
        query = query.where(ImageRecord.captured_at >= since)
    if until is not None:
        query = query.where(ImageRecord.captured_at < until)
    groups: dict[str, list] = {}
    for row in session.execute(query):
        groups.setdefault(row[5], []).append(row)
    summaries = []
    for name, rows in groups.items():
        times = [r.captured_at for r in rows if r.captured_at is not None]
        best = max(rows, key=lambda r: (r[3] == name, r.confidence or 0.0, -r.id))
        summaries.append(
            SpeciesDay(
                scientific_name=name,
                common_name=next((r[6] for r in rows if r[6]), None),
                taxon_rank=rows[0][7],
                photos=len(rows),
                events=len({r.event_id for r in rows if r.event_id is not None}),
                first=min(times, default=None),
                last=max(times, default=None),
                best_photo_id=best.id,
                best_confidence=best.confidence if best[3] == name else None,
            )
        )
    return sorted(summaries, key=lambda s: (-s.photos, s.scientific_name))


def day_summary(session: Session, day: date) -> list[SpeciesDay]:
    """`species_summary` for one calendar day on the camera's clock."""
    start = datetime.combine(day, datetime.min.time())
    return species_summary(session, start, start + timedelta(days=1))


def latest_bird_day(session: Session) -> date | None:
    """The most recent day (camera clock) with a bird photo, people's verdicts applied; None if none."""
    photo = review_of(ImageRecord)
    query = (
        select(func.max(ImageRecord.captured_at))
        .select_from(ImageRecord)
        .outerjoin(photo.correction, photo.onclause)
        .where(ImageRecord.status == DONE, ImageRecord.kind == KIND_BIRD, photo.kind == KIND_BIRD)
    )
    newest = session.scalar(query)
    return newest.date() if newest is not None else None


def failed_photos(session: Session, limit: int = 100, offset: int = 0) -> tuple[list[ImageRecord], int]:
    """Photos that could not be read, newest first, with their reasons; and how many there are."""
    query = select(ImageRecord).where(ImageRecord.status == FAILED).order_by(ImageRecord.id.desc()).limit(limit).offset(offset)
    total = session.scalar(select(func.count()).select_from(ImageRecord).where(ImageRecord.status == FAILED))
    return list(session.scalars(query)), int(total or 0)
