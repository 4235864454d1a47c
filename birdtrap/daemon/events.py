"""Bursts into events: photos of one camera within `gap` of each other are one event.

Grouping is recomputed for the stretch of time around new photos, from what is in the database,
so it is deterministic and idempotent: a photo that arrives late or out of order joins (or
joins up) the right event, and running it twice changes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from birdtrap.identify.decision import BIRD, RANK_DEPTH, SPECIES, Decision
from birdtrap.identify.kinds import Kind
from birdtrap.store import DONE, EventRecord, ImageRecord

# Turns an event's combined probability vector (label index -> mean probability) into a decision.
EventDecider = Callable[[np.ndarray, str], Decision]  # (mean probabilities, finest rank allowed)


def split_bursts(times: list[tuple[datetime, int]], gap: timedelta) -> list[list[int]]:
    """Group (time, id) pairs: a new group starts after a silence longer than `gap`. Ids in order."""
    groups: list[list[int]] = []
    previous: datetime | None = None
    for when, identifier in sorted(times):
        if previous is None or when - previous > gap:
            groups.append([])
        groups[-1].append(identifier)
        previous = when
    return groups


def _window(session: Session, camera: str, low: datetime, high: datetime) -> list[ImageRecord]:
    query = (
        select(ImageRecord)
        .where(ImageRecord.camera_id == camera, ImageRecord.status == DONE)
        .where(ImageRecord.captured_at >= low, ImageRecord.captured_at <= high)
        .order_by(ImageRecord.captured_at, ImageRecord.id)
    )
    return list(session.scalars(query))


def regroup(
    session: Session, camera: str, around: list[datetime], gap: timedelta, decide_event: EventDecider, labels: int
) -> list[EventRecord]:
    """Recompute the events of `camera` that touch the times `around` (in the caller's transaction).

    Returns the events as they now stand (for notifications).
    """
    touched: dict[int, EventRecord] = {}
    # One window per cluster of new times: a batch of photos hours apart must not summarise
    # every event in between (bench: 22 events summarised per batch of 4 before). Windows that
    # widen into the same burst regroup it twice, which changes nothing the second time.
    for first, last in _clusters(around, gap):
        for event in _regroup_window(session, camera, first - gap, last + gap, gap, decide_event, labels):
            touched[event.id] = event
    return list(touched.values())


def _clusters(times: list[datetime], gap: timedelta) -> list[tuple[datetime, datetime]]:
    """(first, last) of each run of `times` whose neighbours are at most 2 x `gap` apart."""
    spans: list[tuple[datetime, datetime]] = []
    for when in sorted(times):
        if spans and when - spans[-1][1] <= 2 * gap:
            spans[-1] = (spans[-1][0], when)
        else:
            spans.append((when, when))
    return spans


def _regroup_window(
    session: Session, camera: str, low: datetime, high: datetime, gap: timedelta, decide_event: EventDecider, labels: int
) -> list[EventRecord]:
    while True:  # widen until the window holds whole bursts
        images = _window(session, camera, low, high)
        if not images:
            return []
        new_low = min(low, images[0].captured_at - gap)
        new_high = max(high, images[-1].captured_at + gap)
        if (new_low, new_high) == (low, high):
            break
        low, high = new_low, new_high
    by_id = {image.id: image for image in images}
    previous_events = {image.event_id for image in images if image.event_id is not None}
    used: set[int] = set()
    touched: list[EventRecord] = []
    for group in split_bursts([(image.captured_at, image.id) for image in images], gap):
        members = [by_id[i] for i in group]
        # Keep the lowest existing event id of the group, so ids are stable as bursts grow.
        reusable = sorted({m.event_id for m in members if m.event_id is not None} - used)
        event = session.get(EventRecord, reusable[0]) if reusable else None
        if event is None:
            event = EventRecord(camera_id=camera, start=members[0].captured_at, end=members[-1].captured_at, photo_count=0, kind=Kind.BLANK)
            session.add(event)
            session.flush()
        _summarise(event, members, decide_event, labels)
        for member in members:
            member.event_id = event.id
        used.add(event.id)
        touched.append(event)
    for stale in previous_events - used:
        if not session.scalar(select(ImageRecord.id).where(ImageRecord.event_id == stale).limit(1)):
            session.delete(session.get(EventRecord, stale))
    session.flush()
    return touched


def _summarise(event: EventRecord, members: list[ImageRecord], decide_event: EventDecider, labels: int) -> None:
    event.start, event.end = members[0].captured_at, members[-1].captured_at
    event.photo_count = len(members)
    event.deployment_id = members[0].deployment_id
    birds = [m for m in members if m.kind == BIRD]
    event.bird_photo_count = len(birds)
    if not birds:
        event.kind = _kind_without_birds([m.kind for m in members])
        event.label = event.scientific_name = event.common_name = event.taxon_rank = None
        event.confidence = max((m.confidence or 0.0) for m in members)
        return
    combined = np.zeros(labels, np.float32)
    for member in birds:
        for prediction in member.predictions:
            if 0 <= prediction.label_index < labels:
                combined[prediction.label_index] += prediction.confidence
    combined /= len(birds)
    # An event is named no finer than its finest frame was (an infrared burst whose frames were
    # held to family rank stays a family): the mean of frames is no new evidence of colour.
    finest = min((m.taxon_rank or SPECIES for m in birds), key=lambda rank: RANK_DEPTH.get(rank, 0))
    decision = decide_event(combined, finest)
    if decision.kind != BIRD:
        # The frames disagree so much that no label survives the mean: the surest frame decides.
        best = max(birds, key=lambda m: m.confidence or 0.0)
        decision = Decision(BIRD, best.label, best.scientific_name, best.common_name, best.taxon_rank, best.confidence or 0.0)
    event.kind = BIRD
    event.label, event.scientific_name, event.common_name = decision.label, decision.scientific_name, decision.common_name
    event.taxon_rank, event.confidence = decision.taxon_rank, decision.confidence


def _kind_without_birds(kinds: list[str | None]) -> Kind:
    """An event with no bird frame: the commonest kind a detector named, else unsure, else blank.

    An event is blank only when every frame is: one unsure or unread frame means a person should look.
    """
    named = Counter(kind for kind in kinds if kind not in (None, Kind.BLANK, Kind.UNSURE))
    if named:
        return Kind(named.most_common(1)[0][0])
    return Kind.BLANK if kinds and all(kind == Kind.BLANK for kind in kinds) else Kind.UNSURE
