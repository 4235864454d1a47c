"""`birdtrap sync`: push this device's processed photos to a central PostgreSQL.

Each device keeps its own SQLite (it must work offline); a timer pushes what is new. The push is:

- idempotent: photos are upserted (`INSERT ... ON CONFLICT`) keyed by (camera_id, sha256), models
  by sha256, events by (device, local event id), so running it twice, or resuming a cut run,
  never duplicates anything;
- resumable: after each batch is committed centrally, a high-water mark (processed_at, id of the
  last photo pushed) is written to the `sync_state` table of the *device's* database, one row per
  central database. A run starts a few minutes before the mark (`overlap`), so a batch that the
  device committed late (its processed_at is older than its commit) is still picked up;
- batched, with retries and exponential back-off on a lost connection; a refused batch (bad
  data) stops the run with the reason, the mark still at the last good batch.

Only processed photos (status done) travel, with their ranked predictions, their event and their
model. Pending, failed and duplicate rows stay on the device (they are the device's own
bookkeeping). Photos stay on the device too; `with_thumbnails` adds a small JPEG of each photo to
the central `thumbnails` table (about 10-20 KB at 320 px), enough to review a sighting remotely.

The central database has the device schema (made by the migrations, as for a device) plus three
tables defined here (`deployments`, `thumbnails`, `sync_events`), and two identity constraints
scoped to the camera (see `prepare_central`): two traps may hold the same file, and each keeps
its own row. The tables of this module live on their own MetaData, created here with
`create_all`, so the migrations' metadata stays exactly the device schema; docs/SCALE.md says
how to fold them into a migration.
"""

from __future__ import annotations

import io
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    DateTime,
    Float,
    Integer,
    LargeBinary,
    String,
    and_,
    bindparam,
    create_engine,
    func,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, selectinload, sessionmaker

from birdtrap import store
from birdtrap.config import Config
from birdtrap.errors import StoreError, first_line
from birdtrap.identify.privacy import boxes_from_text, redact
from birdtrap.identify.regions import Box
from birdtrap.store import DONE, EventRecord, ImageRecord, ModelRecord, PredictionRecord, utcnow

log = logging.getLogger(__name__)

THUMBNAIL_SIDE = 320
THUMBNAIL_QUALITY = 75
# The identity of a photo in the central database: one row per camera and content.
ORIGINAL = "duplicate_of IS NULL AND status IN ('pending', 'done')"
CENTRAL_LOCK = 0x6269726474726170  # "birdtrap": serialises the one-time schema changes of first syncs


class SyncError(StoreError):
    """The central database refused a batch or stayed unreachable; the next run resumes."""


# --- tables ----------------------------------------------------------------------------------


class SyncBase(DeclarativeBase):
    """Tables of sync alone, apart from store.Base: the migrations never see (or drop) them."""


class SyncState(SyncBase):
    """Device side: how far this database has been pushed to each central database."""

    __tablename__ = "sync_state"
    target: Mapped[str] = mapped_column(String(300), primary_key=True)  # the central URL, without password
    source: Mapped[str] = mapped_column(String(36))  # this device's id in the central sync_events table
    processed_at: Mapped[datetime | None] = mapped_column(DateTime)
    image_id: Mapped[int] = mapped_column(Integer, default=0)
    pushed: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class DeploymentRecord(SyncBase):
    """Central side: where and how a camera stood, as its device's config says (Camtrap DP needs it)."""

    __tablename__ = "deployments"
    deployment_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(100), index=True)
    location_name: Mapped[str | None] = mapped_column(String(200))
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    coordinate_uncertainty: Mapped[int | None] = mapped_column(Integer)
    utc_offset: Mapped[str | None] = mapped_column(String(8))
    camera_model: Mapped[str | None] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(36))
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ThumbnailRecord(SyncBase):
    """Central side: a small JPEG of a photo (`birdtrap sync --with-thumbnails`)."""

    __tablename__ = "thumbnails"
    camera_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class SyncedEvent(SyncBase):
    """Central side: which central event a device's event became (events have no natural key).

    No foreign key to events: that table belongs to the other metadata; `_drop_emptied_events`
    deletes the mapping with the event.
    """

    __tablename__ = "sync_events"
    source: Mapped[str] = mapped_column(String(36), primary_key=True)
    source_event_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer, index=True)


CENTRAL_TABLES = (DeploymentRecord.__table__, ThumbnailRecord.__table__, SyncedEvent.__table__)


# --- the central database ------------------------------------------------------------------


def central_engine(url: str, connect_timeout: int = 10) -> Engine:
    """An engine for the central PostgreSQL that notices a dead link in seconds, not minutes.

    Raises SyncError for a URL that is not PostgreSQL or whose driver is missing.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SyncError(f"--to {url!r} is not a database URL; write it as postgresql+psycopg://user@host/birdtrap.") from None
    if parsed.get_backend_name() != "postgresql":
        raise SyncError(
            f"--to must be a PostgreSQL URL (postgresql+psycopg://user@host/birdtrap), not {parsed.get_backend_name()}: "
            "sync upserts with INSERT ... ON CONFLICT."
        )
    # TCP keepalives: a link cut mid-statement (a 4G modem dropping) otherwise hangs for the
    # kernel's default of ~15 minutes before the retry logic ever sees an error.
    args = {"connect_timeout": connect_timeout, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}
    try:
        return create_engine(url, pool_pre_ping=True, connect_args=args)
    except (ArgumentError, ImportError) as e:
        raise SyncError(f"--to {store.display_url(url)} cannot be used ({e}); install the driver: pip install 'birdtrap[scale]'.") from None


def prepare_central(url: str, engine: Engine) -> None:
    """Create the schema on the central database and scope photo identity to the camera.

    The device schema says one row per content (sha256) and per (path, sha256); in the central
    database two traps may hold the same file (an SD card copied to two devices, a test photo), at
    the same path too, so both constraints become per camera. Idempotent; the DDL runs only where
    needed (ALTER TABLE takes a lock that would queue every reader).
    """
    store.open_store(url)  # the device schema and its version check, exactly as the daemon makes it
    SyncBase.metadata.create_all(engine, tables=list(CENTRAL_TABLES))
    with engine.begin() as connection:
        indexes = set(connection.scalars(text("SELECT indexname FROM pg_indexes WHERE tablename = 'images'")))
        constraints = set(connection.scalars(text("SELECT conname FROM pg_constraint WHERE conrelid = 'images'::regclass")))
        if (
            "uq_images_camera_sha256" in indexes
            and "uq_images_path_sha256" not in constraints
            and "uq_images_original_sha256" not in indexes
        ):
            return
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CENTRAL_LOCK})
        connection.execute(text("DROP INDEX IF EXISTS uq_images_original_sha256"))
        connection.execute(
            text(f"CREATE UNIQUE INDEX IF NOT EXISTS uq_images_camera_sha256 ON images (camera_id, sha256) WHERE {ORIGINAL}")
        )
        connection.execute(text("ALTER TABLE images DROP CONSTRAINT IF EXISTS uq_images_path_sha256"))
        connection.execute(text("CREATE UNIQUE INDEX IF NOT EXISTS uq_images_camera_path_sha256 ON images (camera_id, path, sha256)"))
        log.info("prepared the central database %s (photo identity per camera)", store.display_url(url))


def _prepare_local(sessions: sessionmaker[Session], target: str) -> SyncState:
    """Create sync_state (and an index for the high-water mark); returns this target's state.

    A new target gets a new source id: the device's events are keyed by it centrally.
    """
    engine = sessions.kw["bind"]
    SyncBase.metadata.create_all(engine, tables=[SyncState.__table__])
    with engine.begin() as connection:
        # Without it every batch scans all done photos; store.py should declare it (docs/SCALE.md).
        connection.execute(text("CREATE INDEX IF NOT EXISTS ix_images_processed_at ON images (processed_at, id)"))
    with sessions.begin() as session:
        state = session.get(SyncState, target)
        if state is None:
            state = SyncState(target=target, source=str(uuid.uuid4()), image_id=0, pushed=0)
            session.add(state)
        return state


# --- one batch, read from the device -------------------------------------------------------


IMAGE_COLUMNS = tuple(c.key for c in ImageRecord.__table__.columns if c.key not in ("id", "duplicate_of", "event_id", "model_id"))
EVENT_COLUMNS = tuple(c.key for c in EventRecord.__table__.columns if c.key != "id")
MODEL_COLUMNS = ("sha256", "name", "version", "path", "first_used", "last_used")
PREDICTION_COLUMNS = ("rank", "label_index", "label", "scientific_name", "common_name", "confidence")


@dataclass
class Batch:
    """One batch of the device's rows as plain values: read once, written (and retried) centrally."""

    images: list[dict[str, Any]]  # IMAGE_COLUMNS + local_id, local_model_id, local_event_id
    predictions: dict[int, list[dict[str, Any]]]  # local image id -> ranked predictions
    models: dict[int, dict[str, Any]]
    events: dict[int, dict[str, Any]]
    members: list[dict[str, Any]]  # other photos of the batch's events: b_camera, b_sha256, local_event_id
    last: tuple[datetime, int]
    thumbnails: dict[tuple[str, str], tuple[bytes, int, int]] = field(default_factory=dict)


def _after(cursor: tuple[datetime, int]):
    when, last_id = cursor
    return or_(ImageRecord.processed_at > when, and_(ImageRecord.processed_at == when, ImageRecord.id > last_id))


def read_batch(session: Session, cursor: tuple[datetime, int], size: int) -> Batch | None:
    """The next `size` done photos after `cursor` (processed_at, id), with what they refer to."""
    query = (
        select(ImageRecord)
        .where(ImageRecord.status == DONE, ImageRecord.processed_at.is_not(None), _after(cursor))
        .options(selectinload(ImageRecord.predictions))
        .order_by(ImageRecord.processed_at, ImageRecord.id)
        .limit(size)
    )
    rows = list(session.scalars(query))
    if not rows:
        return None
    images, predictions = [], {}
    for image in rows:
        values = {name: getattr(image, name) for name in IMAGE_COLUMNS}
        values.update(local_id=image.id, local_model_id=image.model_id, local_event_id=image.event_id)
        images.append(values)
        predictions[image.id] = [{name: getattr(p, name) for name in PREDICTION_COLUMNS} for p in image.predictions]
    model_ids = {image.model_id for image in rows if image.model_id is not None}
    models = {
        m.id: {name: getattr(m, name) for name in MODEL_COLUMNS}
        for m in session.scalars(select(ModelRecord).where(ModelRecord.id.in_(model_ids)))
    }
    event_ids = {image.event_id for image in rows if image.event_id is not None}
    events = {
        e.id: {name: getattr(e, name) for name in EVENT_COLUMNS}
        for e in session.scalars(select(EventRecord).where(EventRecord.id.in_(event_ids)))
    }
    # A late photo can merge bursts: earlier photos of its event, pushed by an earlier run, must
    # point at the event as it is now.
    in_batch = {image.id for image in rows}
    members = [
        {"b_camera": camera, "b_sha256": sha256, "local_event_id": event_id}
        for image_id, camera, sha256, event_id in session.execute(
            select(ImageRecord.id, ImageRecord.camera_id, ImageRecord.sha256, ImageRecord.event_id).where(
                ImageRecord.event_id.in_(event_ids), ImageRecord.status == DONE
            )
        )
        if image_id not in in_batch
    ]
    return Batch(images, predictions, models, events, members, (rows[-1].processed_at, rows[-1].id))  # type: ignore[arg-type]


def make_thumbnail(path: Path, side: int = THUMBNAIL_SIDE, hide: tuple[Box, ...] = ()) -> tuple[bytes, int, int]:
    """A JPEG at most `side` pixels on its long side, upright, the `hide` boxes (people,
    identify/privacy.py) filled; raises OSError if unreadable."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image.draft("RGB", (side * 2, side * 2))  # JPEG: decode at 1/2..1/8 size, much faster
        picture = ImageOps.exif_transpose(image).convert("RGB")
    picture.thumbnail((side, side))
    if hide:
        picture = Image.fromarray(redact(np.asarray(picture), hide))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
    return buffer.getvalue(), picture.width, picture.height


# --- one batch, written centrally ----------------------------------------------------------


def write_batch(session: Session, batch: Batch, source: str) -> Counter[str]:
    """Upsert one batch in the caller's transaction; returns counts of what was written."""
    images = ImageRecord.__table__
    counts: Counter[str] = Counter()
    model_ids: dict[int, int] = {}
    if batch.models:
        table = ModelRecord.__table__
        statement = pg_insert(table)
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.sha256],
            set_={
                "first_used": func.least(table.c.first_used, statement.excluded.first_used),
                "last_used": func.greatest(table.c.last_used, statement.excluded.last_used),
            },
        ).returning(table.c.id, sort_by_parameter_order=True)
        local_ids = list(batch.models)
        central = session.execute(statement, [_clip(table, dict(batch.models[i])) for i in local_ids]).scalars().all()
        model_ids = dict(zip(local_ids, central, strict=True))

    statement = pg_insert(images)
    statement = statement.on_conflict_do_update(
        index_elements=[images.c.camera_id, images.c.sha256],
        index_where=text(ORIGINAL),
        set_={name: statement.excluded[name] for name in (*IMAGE_COLUMNS, "model_id") if name not in ("camera_id", "sha256")},
    ).returning(images.c.id, sort_by_parameter_order=True)
    values = [
        _clip(
            images, {**{name: row[name] for name in IMAGE_COLUMNS}, "model_id": model_ids.get(row["local_model_id"]), "duplicate_of": None}
        )
        for row in batch.images
    ]
    central_ids = session.execute(statement, values).scalars().all()
    image_ids = {row["local_id"]: central for row, central in zip(batch.images, central_ids, strict=True)}
    counts["images"] = len(image_ids)

    predictions = PredictionRecord.__table__
    session.execute(predictions.delete().where(predictions.c.image_id.in_(list(image_ids.values()))))
    rows = [_clip(predictions, {**p, "image_id": image_ids[local]}) for local, ranked in batch.predictions.items() for p in ranked]
    if rows:
        session.execute(predictions.insert(), rows)
    counts["predictions"] = len(rows)

    event_ids = _write_events(session, batch, source)
    counts["events"] = len(event_ids)
    session.execute(
        images.update().where(images.c.id == bindparam("b_id")).values(event_id=bindparam("b_event")),
        [{"b_id": image_ids[row["local_id"]], "b_event": event_ids.get(row["local_event_id"])} for row in batch.images],
    )
    if batch.members:
        session.execute(
            images.update()
            .where(images.c.camera_id == bindparam("b_camera"), images.c.sha256 == bindparam("b_sha256"), text(ORIGINAL))
            .values(event_id=bindparam("b_event")),
            [{"b_camera": m["b_camera"], "b_sha256": m["b_sha256"], "b_event": event_ids[m["local_event_id"]]} for m in batch.members],
        )
    _drop_emptied_events(session, batch, source)

    if batch.thumbnails:
        table = ThumbnailRecord.__table__
        rows = [{"camera_id": c, "sha256": s, "jpeg": j, "width": w, "height": h} for (c, s), (j, w, h) in batch.thumbnails.items()]
        session.execute(pg_insert(table).on_conflict_do_nothing(), rows)
        counts["thumbnails"] = len(rows)
    return counts


def _write_events(session: Session, batch: Batch, source: str) -> dict[int, int]:
    """Local event id -> central event id, updating mapped events and creating new ones."""
    if not batch.events:
        return {}
    events = EventRecord.__table__
    values = {local: _clip(events, dict(row)) for local, row in batch.events.items()}
    mapped = dict(
        session.execute(
            select(SyncedEvent.source_event_id, SyncedEvent.event_id).where(
                SyncedEvent.source == source, SyncedEvent.source_event_id.in_(list(batch.events))
            )
        ).all()
    )
    # A mapped event deleted centrally by hand is created again rather than pointed at.
    alive = set(session.scalars(select(EventRecord.id).where(EventRecord.id.in_(list(mapped.values())))))
    gone = [local for local, central in mapped.items() if central not in alive]
    if gone:
        session.execute(SyncedEvent.__table__.delete().where(SyncedEvent.source == source, SyncedEvent.source_event_id.in_(gone)))
        for local in gone:
            del mapped[local]
    # bindparam names must differ from column names in an UPDATE's SET clause.
    updates = [{"b_id": mapped[local], **{f"v_{c}": v for c, v in row.items()}} for local, row in values.items() if local in mapped]
    if updates:
        session.execute(
            events.update().where(events.c.id == bindparam("b_id")).values({c: bindparam(f"v_{c}") for c in EVENT_COLUMNS}), updates
        )
    new = [local for local in batch.events if local not in mapped]
    if new:
        statement = events.insert().returning(events.c.id, sort_by_parameter_order=True)
        created = session.execute(statement, [values[local] for local in new]).scalars().all()
        session.execute(
            SyncedEvent.__table__.insert(),
            [{"source": source, "source_event_id": local, "event_id": central} for local, central in zip(new, created, strict=True)],
        )
        mapped.update(zip(new, created, strict=True))
    return mapped


def _drop_emptied_events(session: Session, batch: Batch, source: str) -> None:
    """Delete this device's central events left without photos (bursts merged on the device).

    Only events overlapping the batch's events in time can have lost their photos to them.
    """
    if not batch.events:
        return
    cameras = {values["camera_id"] for values in batch.events.values()}
    low = min(values["start"] for values in batch.events.values())
    high = max(values["end"] for values in batch.events.values())
    mapped = select(SyncedEvent.event_id).where(SyncedEvent.source == source)
    orphan = (
        EventRecord.__table__.delete()
        .where(EventRecord.camera_id.in_(cameras), EventRecord.start <= high, EventRecord.end >= low, EventRecord.id.in_(mapped))
        .where(~select(ImageRecord.id).where(ImageRecord.event_id == EventRecord.id).exists())
        .returning(EventRecord.id)
    )
    dropped = session.execute(orphan).scalars().all()
    if dropped:
        session.execute(SyncedEvent.__table__.delete().where(SyncedEvent.event_id.in_(dropped)))


def _clip(table: Any, values: dict[str, Any]) -> dict[str, Any]:
    """Cut strings to their column's length: PostgreSQL refuses a longer one (SQLite stores it).

    One photo with a 150-character EXIF Make would otherwise stop every sync at its batch.
    """
    for column in table.columns:
        length = getattr(column.type, "length", None)
        value = values.get(column.key)
        if length and isinstance(value, str) and len(value) > length:
            values[column.key] = value[:length]
    return values


# --- the run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncSummary:
    target: str
    images: int
    predictions: int
    events: int
    thumbnails: int
    batches: int
    retries: int
    seconds: float
    resumed_from: datetime | None
    last: datetime | None

    @property
    def rows_per_second(self) -> float:
        return (self.images + self.predictions + self.events) / self.seconds if self.seconds > 0 else 0.0


def _transient(error: BaseException) -> bool:
    """A lost or refused connection, worth retrying; not a batch the database rejects."""
    if isinstance(error, OperationalError | InterfaceError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


def with_retries(action: Callable[[], Any], what: str, retries: int, backoff: float, on_retry: Callable[[], None] | None = None) -> Any:
    """Run `action`; on a transient database error wait backoff x 2^n (+-25 %, at most 5 min) and retry.

    Raises the last error when `retries` retries did not help, and at once for any other error.
    """
    attempt = 0
    while True:
        try:
            return action()
        except SQLAlchemyError as e:
            if not _transient(e) or attempt >= retries:
                raise
            delay = min(300.0, backoff * 2**attempt) * random.uniform(0.75, 1.25)
            attempt += 1
            log.warning("%s failed (%s); retry %d of %d in %.1f s", what, first_line(e), attempt, retries, delay)
            if on_retry is not None:
                on_retry()
            time.sleep(delay)


def deployment_values(config: Config, session: Session, source: str) -> dict[str, Any]:
    """This device's deployment, as its config says; the camera model from its photos' EXIF."""
    camera = config.camera
    make_model = session.execute(
        select(ImageRecord.camera_make, ImageRecord.camera_model, func.count().label("n"))
        .where(ImageRecord.camera_id == camera.id, ImageRecord.status == DONE)
        .where(or_(ImageRecord.camera_make.is_not(None), ImageRecord.camera_model.is_not(None)))
        .group_by(ImageRecord.camera_make, ImageRecord.camera_model)
        .order_by(func.count().desc())
        .limit(1)
    ).first()
    model = "-".join(p.strip() for p in make_model[:2] if p and p.strip()) if make_model else None
    return {
        "deployment_id": camera.deployment_id or camera.id,
        "camera_id": camera.id,
        "location_name": camera.location_name,
        "latitude": camera.latitude,
        "longitude": camera.longitude,
        "coordinate_uncertainty": camera.coordinate_uncertainty,
        "utc_offset": camera.utc_offset,
        "camera_model": model or None,
        "source": source,
        "updated_at": utcnow(),
    }


def _write_deployment(session: Session, values: dict[str, Any]) -> None:
    table = DeploymentRecord.__table__
    existing = session.get(DeploymentRecord, values["deployment_id"])
    if existing is not None and existing.camera_id != values["camera_id"]:
        raise SyncError(
            f"deployment {values['deployment_id']!r} is already used by camera {existing.camera_id!r} in the central database; "
            f"give camera {values['camera_id']!r} its own camera.deployment_id in its config."
        )
    statement = pg_insert(table).values(values)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[table.c.deployment_id], set_={k: statement.excluded[k] for k in values if k != "deployment_id"}
        )
    )


def push(
    config: Config,
    to_url: str,
    *,
    batch_size: int = 500,
    with_thumbnails: bool = False,
    retries: int = 5,
    backoff: float = 2.0,
    overlap: timedelta = timedelta(minutes=5),
    full: bool = False,
    on_batch: Callable[[Counter[str]], None] | None = None,
) -> SyncSummary:
    """Push the device database named by `config` to the central PostgreSQL at `to_url`.

    `full` ignores the high-water mark and pushes everything again (safe: upserts). `on_batch` is
    called with the running totals after each committed batch. Raises SyncError when the central
    database stays unreachable after `retries` or refuses a batch; what was pushed stays pushed.
    """
    started = time.monotonic()
    local = store.open_store(config.database.url, config.database.busy_timeout_seconds, create=False)
    target = store.display_url(to_url)
    engine = central_engine(to_url)
    state = _prepare_local(local, target)
    source = state.source
    try:

        def connect() -> None:
            engine.connect().close()

        try:
            with_retries(connect, f"connecting to {target}", retries, backoff)
        except SQLAlchemyError as e:
            raise SyncError(
                f"cannot reach the central database {target} ({first_line(e)}); check --to, the network and the password file "
                "(~/.pgpass or PGPASSFILE). Nothing was pushed; the next run tries again."
            ) from None
        try:
            prepare_central(to_url, engine)
        except StoreError as e:
            raise SyncError(f"{e} Nothing was pushed; the next run tries again.") from None
        central = sessionmaker(engine, expire_on_commit=False)
        mark = None if full else state.processed_at
        with local() as session:
            deployment = deployment_values(config, session, source)
        if deployment["latitude"] is None or deployment["longitude"] is None or deployment["utc_offset"] is None:
            log.warning(
                "camera.latitude, camera.longitude or camera.utc_offset is not set in %s; a Camtrap DP export of the network "
                "leaves deployment %r out until they are",
                config.source or "the config",
                deployment["deployment_id"],
            )
        totals: Counter[str] = Counter()

        def _deploy() -> None:
            with central.begin() as session:
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CENTRAL_LOCK})
                _write_deployment(session, deployment)

        def retried() -> None:
            totals["retries"] += 1

        _run(_deploy, "writing the deployment", retries, backoff, retried, target, totals)
        cursor = (mark - overlap, 0) if mark is not None else (datetime(1900, 1, 1), 0)
        if mark is not None:
            log.info("resuming the push to %s from photos processed after %s", target, cursor[0])
        while True:
            with local() as session:
                batch = read_batch(session, cursor, batch_size)
            if batch is None:
                break
            if with_thumbnails:
                hide = config.privacy.redact_people
                thumbnails = lambda b=batch, h=hide: _add_thumbnails(central, b, h)  # noqa: E731
                _run(thumbnails, "checking thumbnails", retries, backoff, retried, target, totals)

            def _write(b: Batch = batch) -> Counter[str]:
                with central.begin() as session:
                    return write_batch(session, b, source)

            totals.update(_run(_write, f"pushing {len(batch.images)} photos", retries, backoff, retried, target, totals))
            totals["batches"] += 1
            cursor = batch.last
            with local.begin() as session:
                row = session.get(SyncState, target)
                row.processed_at, row.image_id = cursor
                row.pushed += len(batch.images)
                row.updated_at = utcnow()
            log.debug("pushed %d photos to %s (up to %s)", len(batch.images), target, cursor[0])
            if on_batch is not None:
                on_batch(totals)
    finally:
        engine.dispose()
    summary = SyncSummary(
        target=target,
        images=totals["images"],
        predictions=totals["predictions"],
        events=totals["events"],
        thumbnails=totals["thumbnails"],
        batches=totals["batches"],
        retries=totals["retries"],
        seconds=time.monotonic() - started,
        resumed_from=mark,
        last=cursor[0] if totals["batches"] else mark,
    )
    log.info(
        "pushed %d photos (%d batches, %d retries) to %s in %.1f s",
        summary.images,
        summary.batches,
        summary.retries,
        target,
        summary.seconds,
    )
    return summary


def _run(
    action: Callable[[], Any], what: str, retries: int, backoff: float, on_retry: Callable[[], None], target: str, totals: Counter[str]
) -> Any:
    try:
        return with_retries(action, what, retries, backoff, on_retry)
    except SQLAlchemyError as e:
        pushed = totals["images"]
        if _transient(e):
            raise SyncError(
                f"the central database {target} is unreachable ({first_line(e)}) after {retries} retries; {pushed} photos were pushed "
                "before the link failed and stay pushed. Run `birdtrap sync` again to resume (the systemd timer does)."
            ) from None
        raise SyncError(f"the central database {target} refused {what} ({first_line(e)}); {pushed} photos were pushed before it.") from None


def _add_thumbnails(central: sessionmaker[Session], batch: Batch, hide_people: bool = True) -> None:
    """Make thumbnails for the batch's photos the central database does not have yet, with
    their people hidden unless privacy.redact_people is off (issue 19)."""
    keys = [(row["camera_id"], row["sha256"]) for row in batch.images]
    with central() as session:
        have = set(
            session.execute(
                select(ThumbnailRecord.camera_id, ThumbnailRecord.sha256).where(ThumbnailRecord.sha256.in_([sha for _, sha in keys]))
            ).all()
        )
    for row in batch.images:
        key = (row["camera_id"], row["sha256"])
        if key in have or key in batch.thumbnails:
            continue
        path = Path(row["archived_path"] or row["path"])
        try:
            hide = boxes_from_text(row.get("person_boxes")) if hide_people else ()
            batch.thumbnails[key] = make_thumbnail(path, hide=hide)
        except OSError as e:
            # Moved or deleted since: the photo's row still travels, without its thumbnail.
            log.warning("no thumbnail for %s (%s)", path, getattr(e, "strerror", None) or e)


__all__ = ["SyncError", "SyncSummary", "push", "prepare_central", "central_engine", "DeploymentRecord", "ThumbnailRecord", "SyncState"]
