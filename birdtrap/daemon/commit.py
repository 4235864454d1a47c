"""The one way a batch of identified photos becomes rows: results, events and notifications.

The daemon, `classify --record`, `archive` and the web's `POST /classify?record=true` all call
`commit_results` inside their own transaction, so a photo recorded by any path regroups its
burst's event and queues its notification the same way (a web upload once sent none: issue 17).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.orm import Session

from birdtrap import store
from birdtrap.config import Config
from birdtrap.daemon import events, health, notify
from birdtrap.identify.identifier import Identifier


def commit_results(
    session: Session, config: Config, identifier: Identifier, camera: str, model_id: int, results: Sequence[tuple[int, store.Result]]
) -> int:
    """Store each (image id, result), regroup the camera's events they touch and queue their
    notifications, in the caller's transaction. Returns how many notifications were queued."""
    for image_id, result in results:
        store.record_result(session, image_id, result, model_id)
    times = [result.captured_at for _, result in results if result.captured_at is not None]
    gap = timedelta(seconds=config.events.gap_seconds)
    touched = events.regroup(session, camera, times, gap, identifier.decide_combined, len(identifier.species.labels))
    queued = notify.enqueue(session, touched, config.notify)
    if any(result.measure is not None for _, result in results):  # camera health (issue 19); its notices are its own
        health.after_batch(session, config, camera)
    return queued
