"""What a device keeps for fleet sync (issue 21): its identity, its progress, its change sequence.

- `device_id`: a UUID made once in the device database (`meta.device_id`), this device's name in
  every central database whatever URL, role or host reaches it.
- `SyncState`: how far this database has been pushed to (and pulled from) each central database,
  keyed by the central database's own id, so two spellings of its URL share one progress.
- `images.sync_seq`: every time a processed photo is written or changed (a result, a re-processing,
  a new event), it takes the next number of the device's own sequence, in the same transaction.
  Sync resumes after the highest number it pushed: a photo stamped by a clock that was behind, or
  committed late, still travels; a run with nothing new sends nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Integer, String, event, func, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from birdtrap.store.tables import DONE, Base, ImageRecord, Meta, utcnow

DEVICE_KEY = "device_id"
LEGACY_KEY = "sync_legacy_sources"


class SyncState(Base):
    """Device side: how far this database has been pushed to, and pulled from, one central database."""

    __tablename__ = "sync_state"
    central_id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the central database's own id
    url: Mapped[str] = mapped_column(String(300))  # the last URL that reached it, without password
    image_seq: Mapped[int] = mapped_column(Integer, default=0)  # images.sync_seq pushed up to
    image_id: Mapped[int] = mapped_column(Integer, default=0)  # and the id of that photo (ties: see sync.read_batch)
    corrections_pushed: Mapped[int] = mapped_column(Integer, default=0)  # local corrections.id pushed up to
    corrections_pulled: Mapped[int] = mapped_column(Integer, default=0)  # central corrections.id pulled up to
    pushed: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


def device_id(session: Session) -> str:
    """This device's identity, made (once) on first use; the caller's transaction keeps it."""
    row = session.get(Meta, DEVICE_KEY)
    if row is None:
        row = Meta(key=DEVICE_KEY, value=str(uuid.uuid4()))
        session.add(row)
        session.flush()
    return row.value


def new_device_id(session: Session) -> str:
    """Give this database a new identity and forget its progress: for a database copied from another trap."""
    row = session.get(Meta, DEVICE_KEY)
    if row is None:
        return device_id(session)
    row.value = str(uuid.uuid4())
    session.execute(SyncState.__table__.delete())
    session.flush()
    return row.value


def legacy_sources(session: Session) -> list[str]:
    """Source ids this device pushed under before it had one identity (one per URL spelling)."""
    row = session.get(Meta, LEGACY_KEY)
    return row.value.split() if row is not None and row.value else []


def forget_legacy_sources(session: Session) -> None:
    """Called once every central database known has folded the legacy sources in."""
    row = session.get(Meta, LEGACY_KEY)
    if row is not None:
        session.delete(row)


def sync_states(session: Session) -> list[SyncState]:
    return list(session.scalars(select(SyncState).order_by(SyncState.updated_at.desc())))


def next_sync_seq(session: Session) -> int:
    """The device's next sequence number, read in the caller's transaction, under the write lock.

    On SQLite the driver starts a transaction only at the first write, so a bare read could see a
    number another writer is about to commit too. A write that changes nothing takes the lock
    first: from there until the commit no other writer can take a number, so numbers are unique
    and follow commit order. (PostgreSQL: see docs/SCALE.md.)
    """
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        connection.execute(text("UPDATE images SET sync_seq = sync_seq WHERE 0 = 1"))
    return int(connection.scalar(select(func.coalesce(func.max(ImageRecord.sync_seq), 0)))) + 1


@event.listens_for(Session, "before_flush")
def _number_changed_photos(session: Session, _context: Any, _instances: Any) -> None:
    """Give each processed photo written in this flush the next sync number (see the module doc).

    One max() per flush under the write lock (next_sync_seq), the numbers assigned here: the
    UPDATEs stay one executemany.
    """
    changed = [
        record
        for record in (*session.new, *session.dirty)
        if isinstance(record, ImageRecord) and record.status == DONE and session.is_modified(record, include_collections=False)
    ]
    if not changed:
        return
    number = next_sync_seq(session)
    for record in sorted(changed, key=lambda r: (r.id is None, r.id or 0)):
        record.sync_seq = number
        number += 1


__all__ = ["SyncState", "device_id", "new_device_id", "legacy_sources", "forget_legacy_sources", "sync_states", "next_sync_seq"]
