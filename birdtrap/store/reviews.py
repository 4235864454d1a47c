"""The review queue, bulk confirmation and undo (issue 18): what `/review` needs from the database.

Kept apart from `store/__init__.py` so the review workflow moves as one piece. Functions take a
Session and never commit; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import case, delete, exists, func, select
from sqlalchemy.orm import Session

from birdtrap.errors import StoreError
from birdtrap.identify.kinds import Kind
from birdtrap.store.corrections import add_correction
from birdtrap.store.examples import REVIEW, add_review_examples
from birdtrap.store.queries import event_photos
from birdtrap.store.tables import CONFIRMED, CameraExampleRecord, CorrectionRecord, EventRecord

# Who needs a person most: unsure first, then birds (least sure first), then what a detector
# named, and blank (already decided on evidence) last.
_PRIORITY = {Kind.UNSURE: 0, Kind.BIRD: 1, Kind.ANIMAL: 2, Kind.PERSON: 2, Kind.VEHICLE: 2, Kind.BLANK: 3}


def _unreviewed() -> object:
    return ~exists().where(CorrectionRecord.event_id == EventRecord.id)


def review_queue(session: Session, limit: int = 50, offset: int = 0, camera: str | None = None) -> tuple[list[EventRecord], int]:
    """Events no person has reviewed, the ones that need a person most first; and how many there are.

    Order: unsure, then birds by rising confidence, then animal/person/vehicle, then blank; newest
    first within a tie. Failed photos make no events, so they never queue here.
    """
    priority = case(*((EventRecord.kind == kind, rank) for kind, rank in _PRIORITY.items()), else_=2)
    query = select(EventRecord).where(_unreviewed())
    counted = select(func.count()).select_from(EventRecord).where(_unreviewed())
    if camera:
        query = query.where(EventRecord.camera_id == camera)
        counted = counted.where(EventRecord.camera_id == camera)
    query = query.order_by(priority, func.coalesce(EventRecord.confidence, 0.0), EventRecord.start.desc(), EventRecord.id.desc())
    events = list(session.scalars(query.limit(limit).offset(offset)))
    return events, int(session.scalar(counted) or 0)


def confirm_events(
    session: Session, event_ids: Iterable[int], reviewer: str | None = None, note: str | None = None
) -> list[CorrectionRecord]:
    """Confirm the machine's bird on every event of a selection, all or none.

    Raises StoreError naming every event that does not exist or shows no bird, so a person can
    take those out of the selection; nothing is stored then.
    """
    ids = list(dict.fromkeys(event_ids))
    events = {e.id: e for e in session.scalars(select(EventRecord).where(EventRecord.id.in_(ids)))}
    missing = [i for i in ids if i not in events]
    birdless = [i for i in ids if i in events and (events[i].kind != "bird" or not events[i].scientific_name)]
    problems = []
    if missing:
        problems.append(f"no event {', '.join(map(str, missing))} (regrouped since the page was loaded; reload it)")
    if birdless:
        problems.append(f"event {', '.join(map(str, birdless))} shows no bird to confirm (correct or mark them blank one by one)")
    if problems:
        raise StoreError("nothing was confirmed: " + "; ".join(problems) + ".")
    corrections = []
    for event_id in ids:
        correction = add_correction(session, event_id, CONFIRMED, reviewer=reviewer, note=note)
        add_review_examples(session, event_id, correction)
        corrections.append(correction)
    return corrections


def undo_review(session: Session, review_id: int) -> tuple[int, CorrectionRecord | None]:
    """Take back review `review_id`; returns its event and the verdict that decides now (or None).

    Only the newest verdict of an event can be taken back, so an undo never silently drops a
    later person's work. The camera's examples follow: they are relabelled by the verdict that
    decides now, or removed when none is left. Raises StoreError otherwise.
    """
    correction = session.get(CorrectionRecord, review_id)
    if correction is None:
        raise StoreError(f"there is no review {review_id}; it may have been undone already. Reload the page.")
    newest = session.scalar(select(func.max(CorrectionRecord.id)).where(CorrectionRecord.event_id == correction.event_id))
    if newest != review_id:
        raise StoreError(
            f"review {review_id} is no longer the newest of event {correction.event_id} (review {newest} came after); undo that one first."
        )
    event_id = correction.event_id
    session.delete(correction)
    session.flush()
    previous = session.scalar(
        select(CorrectionRecord).where(CorrectionRecord.event_id == event_id).order_by(CorrectionRecord.id.desc()).limit(1)
    )
    if previous is not None:
        add_review_examples(session, event_id, previous)
    else:
        _forget_review_examples(session, event_id)
    return event_id, previous


def _forget_review_examples(session: Session, event_id: int) -> None:
    """Remove the examples a review of this event taught (a labelled folder's examples stay)."""
    photos = event_photos(session, [event_id]).get(event_id, [])
    for image in photos:
        if image.sha256:
            session.execute(
                delete(CameraExampleRecord).where(
                    CameraExampleRecord.camera_id == image.camera_id,
                    CameraExampleRecord.sha256 == image.sha256,
                    CameraExampleRecord.source == REVIEW,
                )
            )
