"""Camera health, run by the daemon (issue 19): after each batch the camera's checks are run on
its stored frame measures, problems are opened and resolved in the database, and each change is
queued once in the notification outbox ("lens blocked", later "resolved").

Silence has no photo to trigger it, so the loop calls `check_silence` now and then. Everything
that reports health (doctor, /metrics, systemd STATUS=, the web banner) reads the open problems.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from birdtrap.config import Config, NotifySettings
from birdtrap.daemon.notify import channels
from birdtrap.identify import health
from birdtrap.identify.health import HealthSettings
from birdtrap.store import CameraProblemRecord, OutboxRecord, utcnow
from birdtrap.store import health as health_store

log = logging.getLogger(__name__)

HEALTH_MESSAGE = "camera_health"  # the `type` of a health notification's payload


@dataclass(frozen=True)
class Change:
    """A problem that was opened or resolved just now."""

    problem: CameraProblemRecord
    resolved: bool


def settings(config: Config) -> HealthSettings:
    return config.health.settings()


def after_batch(session: Session, config: Config, camera: str) -> list[Change]:
    """Run the frame checks of `camera` and queue a notice for each change, in the caller's transaction."""
    rules = settings(config)
    if not rules.enabled:
        return []
    frames = health_store.recent_frames(session, camera, rules.history + rules.confirm)
    measures = [frame.measure for frame in frames]
    recent = measures[-rules.confirm :]
    blocked = health.lens_blocked(recent, _reference(session, camera, health.BLOCKED, measures, rules), rules)
    moved = None if blocked else health.moved(recent, _reference(session, camera, health.MOVED, measures, rules), rules)
    verdicts: dict[str, tuple[bool | None, str]] = {
        health.BLOCKED: (blocked, health.WHAT[health.BLOCKED]),
        # Through a blocked lens no scene can be judged: moved waits until it clears.
        health.MOVED: (moved, health.WHAT[health.MOVED]),
        health.NIGHT_BLACK: (health.night_black(measures, rules), health.WHAT[health.NIGHT_BLACK]),
        health.CLOCK: _clock(frames[-rules.confirm :], config, rules),
    }
    changes = [change for check, (verdict, detail) in verdicts.items() if (change := _apply(session, camera, check, verdict, detail))]
    _notify(session, changes, config.notify)
    return changes


def _reference(session: Session, camera: str, check: str, measures: list[health.FrameMeasure], rules: HealthSettings) -> list:
    """The frames the newest are judged against: the ones before them, or, while this check's
    problem is open, the ones before it opened (else a lens blocked for a week becomes normal)."""
    problem = next((p for p in health_store.open_problems(session, camera) if p.check == check), None)
    if problem is None:
        return measures[: -rules.confirm]
    before = health_store.recent_frames(session, camera, rules.history + rules.confirm, before=problem.opened_at)
    return [frame.measure for frame in before[: -rules.confirm]]  # less the frames that opened it


def check_silence(session: Session, config: Config, now: datetime | None = None) -> list[Change]:
    """Open or resolve `silence` for every camera on record; queue a notice for each change."""
    rules = settings(config)
    if not rules.enabled:
        return []
    changes = []
    for camera in health_store.cameras(session):
        verdict = health.silent(health_store.arrivals(session, camera), now or utcnow(), rules)
        if verdict is None:
            continue
        quiet, allowed = verdict
        detail = f"no photo for more than {allowed.total_seconds() / 3600:.1f} h ({health.WHAT[health.SILENCE]})"
        change = _apply(session, camera, health.SILENCE, quiet, detail)
        if change is not None:
            changes.append(change)
    _notify(session, changes, config.notify)
    return changes


def _clock(frames: list[health_store.MeasuredFrame], config: Config, rules: HealthSettings) -> tuple[bool | None, str]:
    """A wrong clock: each of the newest `confirm` frames with an EXIF time says so (None: too few)."""
    offset = utc_offset(config.camera.utc_offset)
    reasons = []
    dated = [f for f in frames if f.captured_at is not None and (f.captured_at_source or "").startswith("exif")]
    if len(dated) < rules.confirm:
        return None, ""
    for frame in dated:
        file_time = None
        if frame.file_mtime is not None:
            # The EXIF time is the camera's local time: compare it with the file's time in the same zone.
            if offset is not None:
                file_time = datetime.fromtimestamp(frame.file_mtime, UTC).replace(tzinfo=None) + offset
            else:
                file_time = datetime.fromtimestamp(frame.file_mtime)
        reason = health.clock_drift(
            frame.captured_at, file_time, frame.measure.night, rules, config.camera.latitude, config.camera.longitude, offset
        )
        reasons.append(reason)
    if all(reasons):
        return True, f"{health.WHAT[health.CLOCK]}: {reasons[-1]}"
    return (False, "") if not any(reasons) else (None, "")


def utc_offset(text: str | None) -> timedelta | None:
    """camera.utc_offset ("+02:00", "-0530", "Z") as a timedelta; None when not configured."""
    if text is None:
        return None
    if text == "Z":
        return timedelta(0)
    match = re.fullmatch(r"([+-])(\d\d):?(\d\d)", text)
    if match is None:
        return None
    sign = 1 if match.group(1) == "+" else -1
    return sign * timedelta(hours=int(match.group(2)), minutes=int(match.group(3)))


def _apply(session: Session, camera: str, check: str, verdict: bool | None, detail: str) -> Change | None:
    if verdict is None:
        return None
    if verdict:
        opened = health_store.open_problem(session, camera, check, detail)
        if opened is not None:
            log.warning("camera %s: %s", camera, detail)
            return Change(opened, resolved=False)
        return None
    resolved = health_store.resolve_problem(session, camera, check)
    if resolved is not None:
        log.info("camera %s: resolved: %s", camera, resolved.detail)
        return Change(resolved, resolved=True)
    return None


def notice_key(change: Change) -> int:
    """The outbox's event id of a health notice: negative, so it never meets a real event's id;
    one for the problem and one for its resolution, so each is sent once."""
    return -(2 * change.problem.id + (1 if change.resolved else 0))


def message(change: Change) -> dict:
    problem = change.problem
    return {
        "type": HEALTH_MESSAGE,
        "camera": problem.camera_id,
        "check": problem.check,
        "status": "resolved" if change.resolved else "problem",
        "detail": problem.detail,
        "since": problem.opened_at.isoformat(),
        "resolved_at": problem.resolved_at.isoformat() if problem.resolved_at else None,
    }


def _notify(session: Session, changes: list[Change], notify: NotifySettings) -> int:
    queued = 0
    for change in changes:
        for channel in channels(notify):
            key = notice_key(change)
            if session.scalar(select(OutboxRecord.id).where(OutboxRecord.event_id == key, OutboxRecord.channel == channel)) is None:
                session.add(OutboxRecord(event_id=key, channel=channel, payload=json.dumps(message(change)), next_attempt_at=utcnow()))
                queued += 1
    session.flush()
    return queued
