"""`birdtrap sync`: push this device's processed photos and reviews to a central PostgreSQL, pull back central reviews.

Each device keeps its own SQLite (it must work offline); a timer pushes what is new. The push is:

- keyed by identity, not by address: the device has one id (`meta.device_id`, store/fleet.py) and
  the central database one (`central_meta.central_id`), so a second spelling of the URL, a role per
  trap or a moved server changes nothing; events are keyed centrally by (device, local event id);
- idempotent: photos are upserted (`INSERT ... ON CONFLICT`) keyed by (camera_id, sha256), models
  by sha256, events by (device, local event id), reviews by (device, local review id);
- resumable by the device's own sequence, not by its clock: each processed photo carries the number
  the device gave it when it was last written (`images.sync_seq`); after each batch commits
  centrally the device keeps the highest number pushed in `sync_state`. A photo stamped by a clock
  that was behind, committed late or processed again still travels; a run with nothing new sends
  nothing;
- batched, with retries and exponential back-off on a lost connection; a refused batch (bad
  data) stops the run with the reason, the progress still at the last good batch.

Reviews travel both ways: a device's reviews are pushed onto the central events they became; a
review made centrally (`birdtrap serve` on the central database) on one of this device's events is
pulled back. Both keep when they were made; the latest wins everywhere and the older stays in the
history.

Only processed photos (status done) travel, with their ranked predictions, their event and their
model. Pending, failed and duplicate rows stay on the device; their counts go to the central
`devices` table (`birdtrap fleet status`). `with_thumbnails` adds a small JPEG of each photo.

The central schema is made and upgraded only by migrations (store/central.py says the
compatibility rule); sync creates it in an empty database and otherwise upgrades it only when told
(`upgrade_central`).
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import and_, bindparam, create_engine, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload, sessionmaker

import birdtrap
from birdtrap import store
from birdtrap.config import Config
from birdtrap.errors import PhotoError, StoreError, first_line
from birdtrap.identify import thumbnail
from birdtrap.identify.preprocess import PreprocessSettings, read_photo_bytes
from birdtrap.identify.privacy import boxes_from_text
from birdtrap.identify.regions import Box
from birdtrap.scale import camera_learning
from birdtrap.scale.retry import is_transient, with_retries
from birdtrap.store import (
    DONE,
    FAILED,
    PENDING,
    CorrectionRecord,
    EventRecord,
    ImageRecord,
    ModelRecord,
    PredictionRecord,
    fleet,
    utcnow,
)
from birdtrap.store import central as central_schema
from birdtrap.store.central import DeploymentRecord, DeviceRecord, SyncedEvent, ThumbnailRecord
from birdtrap.store.examples import add_review_examples
from birdtrap.store.fleet import SyncState
from birdtrap.store.health import open_problems

log = logging.getLogger(__name__)

THUMBNAIL_SIDE = 320
THUMBNAIL_QUALITY = 75
# The identity of a photo in the central database: one row per camera and content.
ORIGINAL = "duplicate_of IS NULL AND status IN ('pending', 'done')"
CENTRAL_LOCK = 0x6269726474726170  # "birdtrap": serialises schema changes and identity adoption


class SyncError(StoreError):
    """The central database refused a batch or stayed unreachable; the next run resumes."""


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


def prepare_central(url: str, engine: Engine, upgrade: bool = False) -> None:
    """Check the central schema against this trap's; create it in an empty database.

    An older central database is upgraded (by the migrations) only with `upgrade`; one newer
    than this trap is used as it is when within the compatibility rule. Raises StoreError with
    the fix otherwise (store/central.py).
    """
    where = store.display_url(url)
    schema = central_schema.read_schema(engine)
    if schema.current:
        return
    if not central_schema.check_compatible(schema, where, upgrade):
        return
    with engine.connect() as connection:  # one trap at a time makes or upgrades it
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": CENTRAL_LOCK})
        try:
            if not central_schema.read_schema(engine).current:
                central_schema.upgrade_central(engine, url)
                log.info("made %s central schema %s/%s", where, store.HEAD_REVISION, central_schema.CENTRAL_HEAD)
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": CENTRAL_LOCK})
            connection.commit()


def _local_state(sessions: sessionmaker[Session], central_id: str, target: str) -> tuple[SyncState, str, list[str]]:
    """This central database's progress row (made on first sync), the device id and its legacy ids."""
    with sessions.begin() as session:
        device = fleet.device_id(session)
        legacy = fleet.legacy_sources(session)
        state = session.get(SyncState, central_id)
        if state is None:
            state = SyncState(
                central_id=central_id, url=target, image_seq=0, image_id=0, corrections_pushed=0, corrections_pulled=0, pushed=0
            )
            session.add(state)
        state.url = target
        session.flush()
        return state, device, legacy


def adopt_legacy_sources(session: Session, device: str, legacy: list[str]) -> int:
    """Fold the central rows a device wrote under its older, per-URL source ids into its identity.

    Where two sources mapped the same local event (the duplicate of issue 21), the older central
    event's photos and reviews move to the device's event and the older event goes. Returns the
    number of duplicate events removed.
    """
    removed = 0
    for old in legacy:
        if old == device:
            continue
        pairs = (
            "SELECT o.event_id AS old_event, n.event_id AS new_event FROM sync_events o "
            "JOIN sync_events n ON n.source = :device AND n.source_event_id = o.source_event_id WHERE o.source = :old"
        )
        values = {"device": device, "old": old}
        session.execute(text(f"UPDATE images SET event_id = p.new_event FROM ({pairs}) p WHERE images.event_id = p.old_event"), values)
        moved = f"UPDATE corrections SET event_id = p.new_event FROM ({pairs}) p WHERE corrections.event_id = p.old_event"
        session.execute(text(moved), values)
        gone = session.execute(text(f"DELETE FROM events WHERE id IN (SELECT old_event FROM ({pairs}) p) RETURNING id"), values).all()
        removed += len(gone)
        session.execute(
            text(
                "DELETE FROM sync_events o WHERE o.source = :old AND EXISTS "
                "(SELECT 1 FROM sync_events n WHERE n.source = :device AND n.source_event_id = o.source_event_id)"
            ),
            values,
        )
        session.execute(text("UPDATE sync_events SET source = :device WHERE source = :old"), values)
        session.execute(text("UPDATE deployments SET source = :device WHERE source = :old"), values)
    return removed


# --- one batch, read from the device -------------------------------------------------------


IMAGE_COLUMNS = tuple(
    c.key for c in ImageRecord.__table__.columns if c.key not in ("id", "duplicate_of", "event_id", "model_id", "sync_seq")
)
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
    last: tuple[int, int]  # (sync_seq, id) of the batch's last photo
    thumbnails: dict[tuple[str, str], tuple[bytes, int, int]] = field(default_factory=dict)


def read_batch(session: Session, after: tuple[int, int], size: int) -> Batch | None:
    """The next `size` done photos after `after` (sync number, id), with what they refer to.

    The id breaks ties: on a device numbers are unique, but a database written by several
    processes at once (archive workers on PostgreSQL) may give two photos the same number.
    """
    seq, last_id = after
    query = (
        select(ImageRecord)
        .where(ImageRecord.status == DONE)
        .where(or_(ImageRecord.sync_seq > seq, and_(ImageRecord.sync_seq == seq, ImageRecord.id > last_id)))
        .options(selectinload(ImageRecord.predictions))
        .order_by(ImageRecord.sync_seq, ImageRecord.id)
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
    return Batch(images, predictions, models, events, members, (rows[-1].sync_seq, rows[-1].id))  # type: ignore[arg-type]


def make_thumbnail(
    path: Path, side: int = THUMBNAIL_SIDE, hide: tuple[Box, ...] = (), settings: PreprocessSettings | None = None
) -> tuple[bytes, int, int]:
    """A JPEG at most `side` pixels on its long side, upright, the `hide` boxes (people) filled,
    made by the web's thumbnail maker within the daemon's bounds; raises OSError if unreadable."""
    settings = settings or PreprocessSettings()
    data = read_photo_bytes(path, settings.max_bytes)
    try:
        return thumbnail.make_thumbnail(data, str(path), side, settings, hide, quality=THUMBNAIL_QUALITY)
    except PhotoError as e:
        raise OSError(str(e)) from None


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


# --- reviews, both ways ----------------------------------------------------------------------

REVIEW_COLUMNS = tuple(c.key for c in CorrectionRecord.__table__.columns if c.key not in ("id", "event_id", "origin", "origin_id"))


def read_local_reviews(session: Session, after: int, size: int) -> list[dict[str, Any]]:
    """Reviews made on this device (not pulled ones) with an id above `after`, oldest first."""
    query = (
        select(CorrectionRecord)
        .where(CorrectionRecord.id > after, CorrectionRecord.origin.is_(None))
        .order_by(CorrectionRecord.id)
        .limit(size)
    )
    return [{"local_id": c.id, "local_event_id": c.event_id, **{k: getattr(c, k) for k in REVIEW_COLUMNS}} for c in session.scalars(query)]


def write_reviews(session: Session, reviews: list[dict[str, Any]], device: str) -> tuple[int, set[int]]:
    """Insert a device's reviews on the central events its events became.

    Returns how many are new, and the local event ids that have no central event: merged away
    on the device (the review is left out, as no list shows it there either), or not pushed yet.
    """
    events = dict(
        session.execute(
            select(SyncedEvent.source_event_id, SyncedEvent.event_id).where(
                SyncedEvent.source == device, SyncedEvent.source_event_id.in_([r["local_event_id"] for r in reviews])
            )
        ).all()
    )
    table = CorrectionRecord.__table__
    rows = [
        _clip(
            table,
            {**{k: r[k] for k in REVIEW_COLUMNS}, "event_id": events[r["local_event_id"]], "origin": device, "origin_id": r["local_id"]},
        )
        for r in reviews
        if r["local_event_id"] in events
    ]
    unmapped = {r["local_event_id"] for r in reviews} - set(events)
    if not rows:
        return 0, unmapped
    statement = pg_insert(table).on_conflict_do_nothing(index_elements=[table.c.origin, table.c.origin_id]).returning(table.c.id)
    return len(session.execute(statement, rows).all()), unmapped


def read_central_reviews(session: Session, device: str, after: int, size: int) -> list[dict[str, Any]]:
    """Reviews made elsewhere than this device on its events, central id above `after`, oldest first."""
    query = (
        select(CorrectionRecord, SyncedEvent.source_event_id)
        .join(SyncedEvent, (SyncedEvent.event_id == CorrectionRecord.event_id) & (SyncedEvent.source == device))
        .where(CorrectionRecord.id > after, or_(CorrectionRecord.origin.is_(None), CorrectionRecord.origin != device))
        .order_by(CorrectionRecord.id)
        .limit(size)
    )
    return [
        {"central_id": c.id, "local_event_id": local, **{k: getattr(c, k) for k in REVIEW_COLUMNS}} for c, local in session.execute(query)
    ]


def store_pulled_reviews(session: Session, reviews: list[dict[str, Any]], central_id: str) -> int:
    """Add central reviews to the device's events (once each); returns how many are new.

    A review made at the office teaches this camera's head like one made on the trap (issue 23):
    each touched event's photos become examples labelled by its latest review, which need not be
    the pulled one (a newer review on the trap wins, as everywhere else).
    """
    have = set(
        session.scalars(
            select(CorrectionRecord.origin_id).where(
                CorrectionRecord.origin == central_id, CorrectionRecord.origin_id.in_([r["central_id"] for r in reviews])
            )
        )
    )
    alive = set(session.scalars(select(EventRecord.id).where(EventRecord.id.in_([r["local_event_id"] for r in reviews]))))
    added, touched = 0, set()
    for review in reviews:
        if review["central_id"] in have or review["local_event_id"] not in alive:
            continue
        values = {k: review[k] for k in REVIEW_COLUMNS}
        session.add(CorrectionRecord(event_id=review["local_event_id"], origin=central_id, origin_id=review["central_id"], **values))
        touched.add(review["local_event_id"])
        added += 1
    session.flush()
    for event_id, latest in store.latest_reviews(session, sorted(touched)).items():
        add_review_examples(session, event_id, latest)
    return added


# --- the device's row in the fleet ---------------------------------------------------------------


def device_values(config: Config, session: Session, device: str) -> dict[str, Any]:
    """What `birdtrap fleet status` shows of this device, from its own database."""
    counts = dict(session.execute(select(ImageRecord.status, func.count()).group_by(ImageRecord.status)).all())
    last_photo, last_processed = session.execute(
        select(func.max(ImageRecord.captured_at), func.max(ImageRecord.processed_at)).where(ImageRecord.status == DONE)
    ).one()
    return {
        "device_id": device,
        "camera_id": config.camera.id,
        "deployment_id": config.camera.deployment_id or config.camera.id,
        "host": socket.gethostname()[:200],
        "birdtrap_version": birdtrap.__version__,
        "schema_revision": store.HEAD_REVISION,
        "last_photo_at": last_photo,
        "last_processed_at": last_processed,
        "photos": counts.get(DONE, 0),
        "failed": counts.get(FAILED, 0),
        "pending": counts.get(PENDING, 0),
        "health": "; ".join(f"{p.check}: {p.detail}" for p in open_problems(session)) or "ok",
    }


def write_device(session: Session, values: dict[str, Any]) -> None:
    """Upsert the device's row; the time of the sync is the central server's clock, not the trap's."""
    table = DeviceRecord.__table__
    statement = pg_insert(table).values({**values, "last_sync_at": func.timezone("UTC", func.now())})
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[table.c.device_id], set_={k: statement.excluded[k] for k in (*values, "last_sync_at") if k != "device_id"}
        )
    )


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
    resumed_from: int | None  # the sync number this run started after (None: from the start)
    last: int | None  # the highest sync number pushed so far
    device: str = ""
    central: str = ""
    reviews_pushed: int = 0
    reviews_pulled: int = 0
    examples_pushed: int = 0  # this camera's examples and heads (scale/camera_learning.py)
    heads_pushed: int = 0
    duplicates_removed: int = 0

    @property
    def rows_per_second(self) -> float:
        return (self.images + self.predictions + self.events) / self.seconds if self.seconds > 0 else 0.0


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
    full: bool = False,
    upgrade_central: bool = False,
    on_batch: Callable[[Counter[str]], None] | None = None,
) -> SyncSummary:
    """Push the device database named by `config` to the central PostgreSQL at `to_url`, pull reviews back.

    `full` pushes everything again (safe: upserts). `upgrade_central` lets this trap upgrade an
    older central schema. `on_batch` is called with the running totals after each committed batch.
    Raises SyncError when the central database stays unreachable after `retries`, refuses a batch,
    or its schema does not fit this trap; what was pushed stays pushed.
    """
    started = time.monotonic()
    local = store.open_store(config.database.url, config.database.busy_timeout_seconds, create=False)
    target = store.display_url(to_url)
    engine = central_engine(to_url)
    totals: Counter[str] = Counter()

    def retried() -> None:
        totals["retries"] += 1

    def run(action: Callable[[], Any], what: str) -> Any:
        return _run(action, what, retries, backoff, retried, target, totals)

    try:
        try:
            with_retries(lambda: engine.connect().close(), f"connecting to {target}", retries, backoff)
        except SQLAlchemyError as e:
            raise SyncError(
                f"cannot reach the central database {target} ({first_line(e)}); check --to, the network and the password file "
                "(~/.pgpass or PGPASSFILE). Nothing was pushed; the next run tries again."
            ) from None
        try:
            prepare_central(to_url, engine, upgrade_central)
        except StoreError as e:
            message = str(e) if "Nothing was pushed" in str(e) else f"{e} Nothing was pushed; the next run tries again."
            raise SyncError(message) from None
        central = sessionmaker(engine, expire_on_commit=False)

        def identify() -> str:
            with central() as session:
                return central_schema.central_id(session)

        central_id = run(identify, "reading the central database's id")
        state, device, legacy = _local_state(local, central_id, target)

        def check_identity() -> None:
            with central() as session:
                known = session.get(DeviceRecord, device)
            if known is not None and known.camera_id != config.camera.id:
                raise SyncError(
                    f"device id {device} belongs to camera {known.camera_id!r} in the central database {target}, not to "
                    f"{config.camera.id!r}: this database was copied from that trap (or camera.id changed). Nothing was pushed. "
                    "Give the copy its own identity with `birdtrap sync --new-device-id`, or set camera.id back."
                )

        run(check_identity, "checking the device's identity")
        after = (0, 0) if full else (state.image_seq, state.image_id)
        resumed_from = None if after == (0, 0) else after[0]
        if legacy:

            def adopt() -> int:
                with central.begin() as session:
                    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CENTRAL_LOCK})
                    return adopt_legacy_sources(session, device, legacy)

            totals["duplicates_removed"] += run(adopt, "folding older source ids into the device's")
        with local() as session:
            deployment = deployment_values(config, session, device)
        if deployment["latitude"] is None or deployment["longitude"] is None or deployment["utc_offset"] is None:
            log.warning(
                "camera.latitude, camera.longitude or camera.utc_offset is not set in %s; a Camtrap DP export of the network "
                "leaves deployment %r out until they are",
                config.source or "the config",
                deployment["deployment_id"],
            )

        def deploy() -> None:
            with central.begin() as session:
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CENTRAL_LOCK})
                _write_deployment(session, deployment)

        run(deploy, "writing the deployment")
        if resumed_from is not None:
            log.info("resuming the push to %s after sync number %d", target, after[0])
        while True:
            with local() as session:
                batch = read_batch(session, after, batch_size)
            if batch is None:
                break
            if with_thumbnails:
                hide = config.privacy.redact_people
                preprocess = config.preprocess.settings()
                run(lambda b=batch, h=hide, p=preprocess: _add_thumbnails(central, b, h, p), "checking thumbnails")

            def write(b: Batch = batch) -> Counter[str]:
                with central.begin() as session:
                    return write_batch(session, b, device)

            totals.update(run(write, f"pushing {len(batch.images)} photos"))
            totals["batches"] += 1
            after = batch.last
            with local.begin() as session:
                row = session.get(SyncState, central_id)
                row.image_seq, row.image_id = after
                row.pushed += len(batch.images)
                row.updated_at = utcnow()
            log.debug("pushed %d photos to %s (up to sync number %d)", len(batch.images), target, after[0])
            if on_batch is not None:
                on_batch(totals)
        _sync_reviews(local, central, central_id, device, batch_size, run, totals)
        with local() as session:
            learnt = camera_learning.read_local(session)

        def teach() -> tuple[int, int]:
            with central.begin() as session:
                return camera_learning.write_central(session, *learnt)

        totals["examples"], totals["heads"] = run(teach, "pushing the camera's examples and heads")
        with local() as session:
            status = device_values(config, session, device)

        def report() -> None:
            with central.begin() as session:
                write_device(session, status)

        run(report, "writing the device's status")
        with local.begin() as session:  # `sync --status`: when this central database was last reached
            session.get(SyncState, central_id).updated_at = utcnow()
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
        resumed_from=resumed_from,
        last=after[0] or None,
        device=device,
        central=central_id,
        reviews_pushed=totals["reviews_pushed"],
        reviews_pulled=totals["reviews_pulled"],
        examples_pushed=totals["examples"],
        heads_pushed=totals["heads"],
        duplicates_removed=totals["duplicates_removed"],
    )
    log.info(
        "pushed %d photos (%d batches, %d retries), %d reviews, %d examples and %d heads, pulled %d reviews, to and from %s in %.1f s",
        summary.images,
        summary.batches,
        summary.retries,
        summary.reviews_pushed,
        summary.examples_pushed,
        summary.heads_pushed,
        summary.reviews_pulled,
        target,
        summary.seconds,
    )
    return summary


def _sync_reviews(
    local: sessionmaker[Session],
    central: sessionmaker[Session],
    central_id: str,
    device: str,
    batch_size: int,
    run: Callable[[Callable[[], Any], str], Any],
    totals: Counter[str],
) -> None:
    """Push the device's new reviews, then pull the central ones; each side's progress kept per batch."""
    while True:
        with local() as session:
            state = session.get(SyncState, central_id)
            reviews = read_local_reviews(session, state.corrections_pushed, batch_size)
        if not reviews:
            break

        def write(r: list[dict[str, Any]] = reviews) -> tuple[int, set[int]]:
            with central.begin() as session:
                return write_reviews(session, r, device)

        written, unmapped = run(write, f"pushing {len(reviews)} reviews")
        totals["reviews_pushed"] += written
        with local.begin() as session:
            # An event that still exists here but not centrally was made after this run pushed its
            # photos: its reviews wait for the next run (re-sending the later ones is harmless).
            waiting = set(session.scalars(select(EventRecord.id).where(EventRecord.id.in_(unmapped)))) if unmapped else set()
            first_waiting = next((r["local_id"] for r in reviews if r["local_event_id"] in waiting), None)
            state = session.get(SyncState, central_id)
            state.corrections_pushed = reviews[-1]["local_id"] if first_waiting is None else first_waiting - 1
        if first_waiting is not None:
            break
    while True:
        with local() as session:
            after = session.get(SyncState, central_id).corrections_pulled

        def read(a: int = after) -> list[dict[str, Any]]:
            with central() as session:
                return read_central_reviews(session, device, a, batch_size)

        reviews = run(read, "reading central reviews")
        if not reviews:
            break
        with local.begin() as session:
            totals["reviews_pulled"] += store_pulled_reviews(session, reviews, central_id)
            session.get(SyncState, central_id).corrections_pulled = reviews[-1]["central_id"]


def _run(
    action: Callable[[], Any], what: str, retries: int, backoff: float, on_retry: Callable[[], None], target: str, totals: Counter[str]
) -> Any:
    try:
        return with_retries(action, what, retries, backoff, on_retry)
    except SQLAlchemyError as e:
        pushed = totals["images"]
        if is_transient(e):
            raise SyncError(
                f"the central database {target} is unreachable ({first_line(e)}) after {retries} retries; {pushed} photos were pushed "
                "before the link failed and stay pushed. Run `birdtrap sync` again to resume (the systemd timer does)."
            ) from None
        raise SyncError(f"the central database {target} refused {what} ({first_line(e)}); {pushed} photos were pushed before it.") from None


def _add_thumbnails(
    central: sessionmaker[Session], batch: Batch, hide_people: bool = True, settings: PreprocessSettings | None = None
) -> None:
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
            batch.thumbnails[key] = make_thumbnail(path, hide=hide, settings=settings)
        except OSError as e:
            # Moved or deleted since: the photo's row still travels, without its thumbnail.
            log.warning("no thumbnail for %s (%s)", path, getattr(e, "strerror", None) or e)


# --- what a device and the fleet look like ------------------------------------------------------


def local_status(config: Config) -> dict[str, Any]:
    """This device's id and, per central database, how far it has pushed and pulled (`sync --status`)."""
    sessions = store.open_store(config.database.url, config.database.busy_timeout_seconds, create=False)
    with sessions.begin() as session:  # begin: a device that never synced gets its id now, once
        device = fleet.device_id(session)
        newest = session.scalar(select(func.max(ImageRecord.sync_seq)).where(ImageRecord.status == DONE)) or 0
        centrals = []
        for state in fleet.sync_states(session):
            waiting = session.scalar(select(func.count()).where(ImageRecord.status == DONE, ImageRecord.sync_seq > state.image_seq))
            centrals.append(
                {
                    "central": state.central_id,
                    "url": state.url,
                    "last_sync": state.updated_at,
                    "pushed": state.pushed,
                    "waiting": waiting,
                    "sync_number": state.image_seq,
                    "reviews_pushed_to": state.corrections_pushed,
                    "reviews_pulled_to": state.corrections_pulled,
                }
            )
    return {"device": device, "camera": config.camera.id, "newest_sync_number": newest, "centrals": centrals}


def renew_device_id(config: Config) -> str:
    """A new identity for a device database copied from another trap; returns it."""
    sessions = store.open_store(config.database.url, config.database.busy_timeout_seconds, create=False)
    with sessions.begin() as session:
        return fleet.new_device_id(session)


def read_fleet(url: str) -> list[dict[str, Any]]:
    """Each trap's row in the central database at `url` (`birdtrap fleet status`)."""
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        backend = url
    if backend != "postgresql":
        raise SyncError(
            f"--from {store.display_url(url)} is not a central PostgreSQL database; give the URL the traps sync to, "
            "e.g. --from postgresql+psycopg://me@db.example.org/birdtrap."
        )
    engine = central_engine(url)
    try:
        with Session(engine) as session:
            return central_schema.fleet_status(session)
    except SQLAlchemyError as e:
        raise SyncError(
            f"cannot read the fleet from {store.display_url(url)} ({first_line(e)}); check --from, and that a trap has synced to it."
        ) from None
    finally:
        engine.dispose()


__all__ = [
    "local_status",
    "renew_device_id",
    "read_fleet",
    "SyncError",
    "SyncSummary",
    "push",
    "prepare_central",
    "central_engine",
    "adopt_legacy_sources",
    "DeploymentRecord",
    "ThumbnailRecord",
    "SyncState",
]
