"""A person's verdicts on events, and the review-aware view of photos and events: every query
shows a correction in place of the machine's answer, which is itself never overwritten.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, or_, select
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql import ColumnElement, Select

from birdtrap.errors import StoreError
from birdtrap.identify import taxonomy
from birdtrap.store.tables import (
    CONFIRMED,
    CORRECTED,
    KIND_BIRD,
    KIND_BLANK,
    MARKED_EMPTY,
    VERDICTS,
    CorrectionRecord,
    EventRecord,
    ImageRecord,
)


class Reviewed:
    """A sighting (ImageRecord) or an event (EventRecord) as a person reviewed it.

    The names and kind come from the correction, everything else from the machine's record, so
    the CLI and the web print it like a record. The confidence is kept only where the person
    agreed with the machine's species for this record; otherwise the machine's number would be
    about another species.
    """

    _NAMES = ("kind", "label", "scientific_name", "common_name", "taxon_rank")

    def __init__(self, record: ImageRecord | EventRecord, correction: CorrectionRecord) -> None:
        self.record = record
        self.correction = correction

    @property
    def reviewed(self) -> str:
        return self.correction.verdict

    @property
    def confidence(self) -> float | None:
        if self.correction.kind == KIND_BIRD and self.correction.scientific_name == self.record.scientific_name:
            return self.record.confidence
        return None

    def __getattr__(self, name: str) -> Any:
        if name in Reviewed._NAMES:
            return getattr(self.correction, name)
        return getattr(self.record, name)

    def __repr__(self) -> str:
        return f"Reviewed({self.record!r}, {self.correction.verdict} {self.correction.scientific_name})"


@dataclass(frozen=True)
class ReviewJoin:
    """A record's newest correction, outer-joined, and the columns as a person left them.

    `kind`, `scientific_name`, `common_name` and `taxon_rank` are the correction's where there is
    one (all of them, even empty: a free-text species has no common name), else the machine's.
    """

    correction: Any  # the aliased CorrectionRecord
    onclause: ColumnElement[bool]
    kind: ColumnElement[Any]
    scientific_name: ColumnElement[Any]
    common_name: ColumnElement[Any]
    taxon_rank: ColumnElement[Any]
    confidence: ColumnElement[Any]
    reviewed: ColumnElement[Any]

    def at_least(self, confidence: float) -> ColumnElement[bool]:
        """A person's verdict counts as sure: reviewed rows pass any --min-confidence."""
        return or_(self.reviewed.is_not(None), self.confidence >= confidence)


def review_of(record: type[ImageRecord] | type[EventRecord]) -> ReviewJoin:
    """How to join each photo (by its event) or event to its newest correction."""
    correction = aliased(CorrectionRecord)
    event_key = ImageRecord.event_id if record is ImageRecord else EventRecord.id
    # The latest review wins by when it was made, not by row id: a review pulled from the central
    # database (or pushed to it) gets its row later than it was made (issue 21).
    newest = (
        select(CorrectionRecord.id)
        .where(CorrectionRecord.event_id == event_key)
        .order_by(CorrectionRecord.created_at.desc(), CorrectionRecord.id.desc())
        .limit(1)
        .scalar_subquery()
    )

    def shown(column: str) -> ColumnElement[Any]:
        return case((correction.id.is_not(None), getattr(correction, column)), else_=getattr(record, column))

    return ReviewJoin(
        correction=correction,
        onclause=correction.id == newest,
        kind=shown("kind"),
        scientific_name=shown("scientific_name"),
        common_name=shown("common_name"),
        taxon_rank=shown("taxon_rank"),
        confidence=record.confidence,
        reviewed=correction.id,
    )


def join_review(query: Select[Any], record: type[ImageRecord] | type[EventRecord]) -> tuple[Select[Any], ReviewJoin]:
    """Add each row's newest correction (or None) as a second column; returns the columns to filter on.

    The species, kind and confidence filters must use the returned columns so they match what is
    shown: a person's species where there is one, else the machine's.
    """
    review = review_of(record)
    return query.add_columns(review.correction).outerjoin(review.correction, review.onclause), review


def as_reviewed(rows: Iterable[Any]) -> list[Any]:
    """(record, correction or None) rows -> the record itself, or a `Reviewed` view of it."""
    return [record if correction is None else Reviewed(record, correction) for record, correction in rows]


def taxon_rank_of(scientific_name: str) -> str:
    """The rank of a name a person typed: a family or order by the package's taxonomy, else by its words."""
    words = len(scientific_name.split())
    if words == 1:
        return taxonomy.rank_of(scientific_name) or ("class" if scientific_name == taxonomy.CLASS_NAME else "genus")
    return "species" if words == 2 else "subspecies"


def add_correction(
    session: Session,
    event_id: int,
    verdict: str,
    label: str | None = None,
    scientific_name: str | None = None,
    common_name: str | None = None,
    reviewer: str | None = None,
    note: str | None = None,
) -> CorrectionRecord:
    """Store a person's verdict on event `event_id`: confirmed, corrected (to a species) or empty.

    Raises StoreError for an unknown event, a confirmation of an event with no bird, or a
    correction without a species.
    """
    event = session.get(EventRecord, event_id)
    if event is None:
        raise StoreError(f"event {event_id} does not exist (it may have been merged into a neighbouring burst); reload the list.")
    if verdict not in VERDICTS:
        raise StoreError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}.")
    if verdict == CONFIRMED:
        if event.kind != KIND_BIRD or not event.scientific_name:
            raise StoreError(f"event {event_id} has no bird to confirm (the machine said {event.kind}); correct it with a species instead.")
        label, scientific_name, common_name, rank = event.label, event.scientific_name, event.common_name, event.taxon_rank
    elif verdict == CORRECTED:
        if not scientific_name:
            raise StoreError("a correction needs the species (scientific name); or mark the event empty.")
        rank = taxon_rank_of(scientific_name)
        label = label or (f"{scientific_name} ({common_name})" if common_name else scientific_name)
    else:
        label = scientific_name = common_name = rank = None
    correction = CorrectionRecord(
        event_id=event_id,
        verdict=verdict,
        kind=KIND_BLANK if verdict == MARKED_EMPTY else KIND_BIRD,
        label=label,
        scientific_name=scientific_name,
        common_name=common_name,
        taxon_rank=rank,
        machine_kind=event.kind,
        machine_label=event.label,
        machine_scientific_name=event.scientific_name,
        machine_common_name=event.common_name,
        machine_confidence=event.confidence,
        reviewer=reviewer,
        note=note,
    )
    session.add(correction)
    session.flush()
    return correction


def latest_reviews(session: Session, event_ids: Iterable[int]) -> dict[int, CorrectionRecord]:
    """event id -> its newest correction, for the events that have one."""
    ids = list(event_ids)
    if not ids:
        return {}
    latest: dict[int, CorrectionRecord] = {}
    query = select(CorrectionRecord).where(CorrectionRecord.event_id.in_(ids)).order_by(CorrectionRecord.created_at, CorrectionRecord.id)
    for correction in session.scalars(query):
        latest[correction.event_id] = correction  # by when it was made: see review_of
    return latest


def review_history(session: Session, event_id: int) -> list[CorrectionRecord]:
    """Every verdict on an event, newest first."""
    query = (
        select(CorrectionRecord)
        .where(CorrectionRecord.event_id == event_id)
        .order_by(CorrectionRecord.created_at.desc(), CorrectionRecord.id.desc())
    )
    return list(session.scalars(query))
