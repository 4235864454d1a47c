"""Camera health in the database (issue 19): each frame's measures (columns of `images`) and the
cameras' problems, open until resolved. Functions take a Session and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from birdtrap.identify.health import FrameMeasure
from birdtrap.store import DONE, FAILED, CameraProblemRecord, ImageRecord, utcnow


@dataclass(frozen=True)
class MeasuredFrame:
    """A processed photo as the health checks see it."""

    measure: FrameMeasure
    captured_at: datetime | None
    captured_at_source: str | None
    file_mtime: float | None  # the file's modification time, seconds since the epoch


def recent_frames(session: Session, camera_id: str, limit: int, before: datetime | None = None) -> list[MeasuredFrame]:
    """The camera's newest `limit` measured photos (processed before `before`, if given), oldest
    first, in the order they were processed."""
    query = (
        select(ImageRecord)
        .where(ImageRecord.camera_id == camera_id, ImageRecord.status == DONE, ImageRecord.scene.is_not(None))
        .order_by(ImageRecord.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(ImageRecord.processed_at < before)
    frames = []
    for image in reversed(list(session.scalars(query))):
        values = (image.brightness, image.contrast, image.sharpness, image.colour)
        measure = FrameMeasure(*(value or 0.0 for value in values), scene=image.scene or b"")
        frames.append(MeasuredFrame(measure, image.captured_at, image.captured_at_source, image.file_mtime))
    return frames


def arrivals(session: Session, camera_id: str, days: float = 30.0) -> list[datetime]:
    """When the camera's photos reached birdtrap over the last `days`, oldest first (UTC).

    Arrival, not capture time: a camera's clock may be wrong, and silence is about photos not
    coming in.
    """
    since = utcnow() - timedelta(days=days)
    query = (
        select(ImageRecord.discovered_at)
        .where(ImageRecord.camera_id == camera_id, ImageRecord.status.in_((DONE, FAILED)), ImageRecord.discovered_at >= since)
        .order_by(ImageRecord.discovered_at)
    )
    return list(session.scalars(query))


def cameras(session: Session) -> list[str]:
    """Every camera id with a photo on record."""
    return sorted(session.scalars(select(ImageRecord.camera_id).distinct()))


def open_problems(session: Session, camera_id: str | None = None) -> list[CameraProblemRecord]:
    """Problems not resolved yet, oldest first; of one camera or of all."""
    query = select(CameraProblemRecord).where(CameraProblemRecord.resolved_at.is_(None)).order_by(CameraProblemRecord.id)
    if camera_id is not None:
        query = query.where(CameraProblemRecord.camera_id == camera_id)
    return list(session.scalars(query))


def open_problem(session: Session, camera_id: str, check: str, detail: str) -> CameraProblemRecord | None:
    """Open a problem; None when the same check of this camera is open already (once per problem)."""
    if any(p.check == check for p in open_problems(session, camera_id)):
        return None
    record = CameraProblemRecord(camera_id=camera_id, check=check, detail=detail, opened_at=utcnow())
    session.add(record)
    session.flush()
    return record


def resolve_problem(session: Session, camera_id: str, check: str) -> CameraProblemRecord | None:
    """Mark the open problem of this check resolved; None when there was none."""
    for problem in open_problems(session, camera_id):
        if problem.check == check:
            problem.resolved_at = utcnow()
            session.flush()
            return problem
    return None
