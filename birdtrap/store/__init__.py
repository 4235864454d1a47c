"""The database: what has been processed, and what was seen.

SQLAlchemy 2.x, SQLite by default. Functions here take a `Session` and never commit: the caller
owns the transaction (the daemon writes one batch per transaction), so a crash leaves either the
whole batch or none of it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    or_,
    select,
    text,
)
from sqlalchemy import inspect as inspect_schema
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from birdtrap.errors import DatabaseFileError, StoreError
from birdtrap.identify import taxonomy
from birdtrap.identify.health import FrameMeasure
from birdtrap.identify.kinds import Kind, Status
from birdtrap.identify.privacy import boxes_from_text, boxes_to_text
from birdtrap.store.backup import newest_backup

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parents[1] / "migrations"

PENDING, DONE, FAILED, DUPLICATE = Status.PENDING, Status.DONE, Status.FAILED, Status.DUPLICATE
KIND_BIRD, KIND_BLANK, KIND_UNSURE = Kind.BIRD, Kind.BLANK, Kind.UNSURE


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class ModelRecord(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(100), default="")
    path: Mapped[str] = mapped_column(Text)
    first_used: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ImageRecord(Base):
    """One photo file as found: its identity (sha256), status, capture time and the decision."""

    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("path", "sha256", name="uq_images_path_sha256"),
        # Exactly one original per content; copies under other names point at it.
        Index(
            "uq_images_original_sha256",
            "sha256",
            unique=True,
            sqlite_where=text("duplicate_of IS NULL AND status IN ('pending', 'done')"),
            postgresql_where=text("duplicate_of IS NULL AND status IN ('pending', 'done')"),
        ),
        Index("ix_images_status", "status"),
        Index("ix_images_captured_at", "captured_at"),
        Index("ix_images_kind_captured", "kind", "captured_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    file_mtime: Mapped[float | None] = mapped_column(Float)
    camera_id: Mapped[str] = mapped_column(String(100))
    deployment_id: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    error: Mapped[str | None] = mapped_column(Text)
    discovered_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime)
    captured_at: Mapped[datetime | None] = mapped_column(DateTime)
    captured_at_source: Mapped[str | None] = mapped_column(String(16))
    captured_at_plausible: Mapped[bool | None] = mapped_column(Boolean)
    camera_make: Mapped[str | None] = mapped_column(String(100))
    camera_model: Mapped[str | None] = mapped_column(String(100))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    duplicate_of: Mapped[int | None] = mapped_column(ForeignKey("images.id"))
    archived_path: Mapped[str | None] = mapped_column(Text)
    # The decision: what the photo shows, at which taxon rank, how sure, and the region that decided.
    kind: Mapped[str | None] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(Text)
    scientific_name: Mapped[str | None] = mapped_column(String(200))
    common_name: Mapped[str | None] = mapped_column(String(200))
    taxon_rank: Mapped[str | None] = mapped_column(String(16))
    confidence: Mapped[float | None] = mapped_column(Float)
    box_x0: Mapped[float | None] = mapped_column(Float)
    box_y0: Mapped[float | None] = mapped_column(Float)
    box_x1: Mapped[float | None] = mapped_column(Float)
    box_y1: Mapped[float | None] = mapped_column(Float)
    invokes: Mapped[int | None] = mapped_column(Integer)
    # People to hide in every image made from this photo (identify/privacy.py); null: none seen.
    person_boxes: Mapped[str | None] = mapped_column(Text)
    # What the frame looks like, for the camera's health checks (identify/health.py); null: not measured.
    brightness: Mapped[float | None] = mapped_column(Float)
    contrast: Mapped[float | None] = mapped_column(Float)
    sharpness: Mapped[float | None] = mapped_column(Float)
    colour: Mapped[float | None] = mapped_column(Float)
    scene: Mapped[bytes | None] = mapped_column(LargeBinary)
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id", ondelete="SET NULL"), index=True)

    predictions: Mapped[list[PredictionRecord]] = relationship(
        back_populates="image", cascade="all, delete-orphan", order_by="PredictionRecord.rank"
    )
    model: Mapped[ModelRecord | None] = relationship()


class EventRecord(Base):
    """A burst: the photos of one camera taken within the configured gap of each other.

    Its decision combines the probabilities of all its bird frames, so a bird seen clearly in
    two frames of ten decides the event.
    """

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_camera_start", "camera_id", "start"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(100))
    deployment_id: Mapped[str | None] = mapped_column(String(100))
    start: Mapped[datetime] = mapped_column(DateTime)
    end: Mapped[datetime] = mapped_column(DateTime)
    photo_count: Mapped[int] = mapped_column(Integer)
    bird_photo_count: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(Text)
    scientific_name: Mapped[str | None] = mapped_column(String(200))
    common_name: Mapped[str | None] = mapped_column(String(200))
    taxon_rank: Mapped[str | None] = mapped_column(String(16))
    confidence: Mapped[float | None] = mapped_column(Float)


class OutboxRecord(Base):
    """A notification waiting to be sent (MQTT, webhook).

    Written in the same transaction as the event it announces, so a restart never loses one;
    a sender thread delivers it with retries and marks it sent.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("event_id", "channel", name="uq_outbox_event_channel"),
        Index("ix_outbox_due", "sent_at", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(16))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class PredictionRecord(Base):
    __tablename__ = "predictions"
    __table_args__ = (Index("ix_predictions_image", "image_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(Integer)
    label_index: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(Text)
    scientific_name: Mapped[str | None] = mapped_column(String(200))
    common_name: Mapped[str | None] = mapped_column(String(200))
    confidence: Mapped[float] = mapped_column(Float)
    image: Mapped[ImageRecord] = relationship(back_populates="predictions")


def _sqlite_pragmas(busy_timeout_ms: int):
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets the CLI and web server read while the daemon writes. synchronous=FULL: a power
        # cut on a Pi must not lose a committed batch (NORMAL in WAL mode may lose the last ones).
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    return on_connect


def make_engine(url: str, busy_timeout_seconds: float = 10.0) -> Engine:
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": busy_timeout_seconds})
            event.listen(engine, "connect", _sqlite_pragmas(int(busy_timeout_seconds * 1000)))
            path = sqlite_path(url)
            if path is not None:
                event.listen(engine, "handle_error", _damage_explained(path))
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, ImportError) as e:
        raise StoreError(f"database.url {url!r} cannot be used ({e}); check the URL and that its driver is installed.") from None
    return engine


def open_store(url: str, busy_timeout_seconds: float = 10.0, create: bool = True) -> sessionmaker[Session]:
    """Open the database; returns a sessionmaker for `with sessions.begin()`.

    With `create` (the daemon, `birdtrap db upgrade`) a new database is created and an older one
    upgraded by the migrations, a SQLite file backed up first; a SQLite file must then also pass
    `PRAGMA quick_check` and take a test write, so a damaged or read-only file stops the daemon at
    start, not at its first batch. Without it (queries, exports) the schema must already be
    current. Raises StoreError for a database that cannot be opened, is older (without `create`)
    or was written by a newer birdtrap, and its DatabaseFileError for a damaged, read-only or
    unopenable SQLite file, naming the backup to restore.
    """
    if not create:
        _require_existing_sqlite(url)
    engine = make_engine(url, busy_timeout_seconds)
    path = sqlite_path(url)
    try:
        if create:
            migrate(engine, url)
            if path is not None:
                with engine.connect() as connection:
                    check_integrity(connection, path)
                    _check_writable(connection, path)
        else:
            with engine.connect() as connection:
                _check_revision(connection, url)
    except DatabaseError as e:
        if path is not None:
            raise database_file_error(path, e.orig) from None
        raise StoreError(f"cannot open database {display_url(url)} ({e.orig}); check database.url and the folder's permissions.") from None
    return sessionmaker(engine, expire_on_commit=False)


# --- a damaged or unwritable SQLite file (issue 16) ----------------------------------------

DAMAGE_SIGNS = ("file is not a database", "database disk image is malformed", "file is encrypted")


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, or None for a server database or an in-memory one."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def database_file_error(path: Path, reason: object) -> StoreError:
    """What to tell the user when SQLite refuses `path` with `reason`; the fix names the commands."""
    text = str(reason)
    if any(sign in text for sign in DAMAGE_SIGNS):
        return damaged_database_error(path, text)
    folder = path.parent
    if "readonly" in text or "read-only" in text:
        return DatabaseFileError(
            f"the database {path} is read-only ({text}): birdtrap cannot record anything in it",
            f"make {path} and its folder {folder} writable for the user birdtrap runs as (chown birdtrap: {path} {folder}); "
            f"`lsattr {path}` shows an immutable flag, `mount` a read-only file system",
        )
    if "unable to open" in text:
        return DatabaseFileError(
            f"cannot open the database {path} ({text})",
            f"the folder {folder} must exist and be writable for the user birdtrap runs as, as SQLite writes "
            f"{path.name}-wal and {path.name}-shm beside the file (chown birdtrap: {folder}; `lsattr -d {folder}` shows "
            "an immutable flag); or change database.url",
        )
    return StoreError(f"cannot use the database {path} ({text}); check database.url and the file's and folder's permissions.")


def damaged_database_error(path: Path, reason: str) -> DatabaseFileError:
    """The damaged-file message: restore the newest automatic backup, else start a new database."""
    backup = newest_backup(path)
    start_new = "move the damaged file aside (kept, not deleted) and start a new, empty database: birdtrap db move-aside, then birdtrap run"
    if backup is None:
        fix = f"No backup of it exists. Stop birdtrap (systemctl stop birdtrap), then {start_new}"
    else:
        taken = datetime.fromtimestamp(backup.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")
        fix = (
            f"Stop birdtrap (systemctl stop birdtrap), then restore the automatic backup {backup} (made {taken}): "
            f"birdtrap db restore {backup} ; or {start_new}"
        )
    return DatabaseFileError(f"the database {path} is damaged ({reason})", fix)


def _damage_explained(path: Path):
    """A handle_error listener: a damaged file met at any query becomes the damaged-file message."""

    def on_error(context: Any) -> None:
        if any(sign in str(context.original_exception) for sign in DAMAGE_SIGNS):
            raise damaged_database_error(path, str(context.original_exception)) from None

    return on_error


def check_integrity(connection: Any, path: Path) -> None:
    """Raise DatabaseFileError unless `PRAGMA quick_check` passes (seconds for a large file)."""
    verdict = [row[0] for row in connection.exec_driver_sql("PRAGMA quick_check")]
    if verdict != ["ok"]:
        raise damaged_database_error(path, "quick_check: " + "; ".join(verdict[:3]))


def _check_writable(connection: Any, path: Path) -> None:
    # A write that changes nothing still needs SQLite's write transaction, which a read-only file
    # refuses; a read-only file otherwise opens and reads fine, and fails only at the first batch.
    try:
        connection.execute(text("DELETE FROM meta WHERE 0 = 1"))
    finally:
        connection.rollback()


# --- schema migrations (Alembic) ---------------------------------------------------------


def _alembic(connection: Any = None) -> Any:
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _scripts() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic())


# The newest migration's revision. Known without Alembic so that opening a current database (every
# start of the daemon) imports none of it: Alembic and Mako cost 38 MB of RSS and 0.25 s. A test
# keeps it equal to the head of birdtrap/migrations.
HEAD_REVISION = "0008"


def head_revision() -> str:
    return HEAD_REVISION


def migrations_head() -> str:
    """The head revision as Alembic reads it from the migration scripts."""
    return str(_scripts().get_current_head())


def current_revision(connection: Any) -> str | None:
    if not inspect_schema(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _known(revision: str) -> bool:
    return revision in {script.revision for script in _scripts().walk_revisions()}


def _check_revision(connection: Any, url: str) -> str | None:
    current, head = current_revision(connection), head_revision()
    if current is None and not inspect_schema(connection).has_table("images"):
        raise StoreError(f"{display_url(url)} has no birdtrap schema; run `birdtrap run` (or `birdtrap db upgrade`) to create it.")
    if current is not None and not _known(current):
        raise StoreError(
            f"{display_url(url)} has schema revision {current}, newer than this birdtrap knows ({head}); upgrade birdtrap."
        )
    if current != head:
        raise StoreError(f"{display_url(url)} has schema revision {current or 'none'}, older than {head}; run `birdtrap db upgrade`.")
    return current


def migrate(engine: Engine, url: str) -> Path | None:
    """Bring the schema to the newest revision; returns the backup made first, if any.

    A SQLite file with data is copied with `VACUUM INTO` before an upgrade, so a migration that
    goes wrong on a Pi in the field can be undone by copying one file back.
    """
    head = head_revision()
    with engine.connect() as connection:
        current = current_revision(connection)
        has_tables = inspect_schema(connection).has_table("images")
    if current == head:
        return None
    if current is None and not has_tables:
        _create_at_head(engine)
        return None
    from alembic import command
    if current is not None and not _known(current):
        raise StoreError(
            f"{display_url(url)} has schema revision {current}, newer than this birdtrap knows ({head}); upgrade birdtrap."
        )
    backup = None
    if has_tables and engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        backup = Path(f"{engine.url.database}.before-{head}.bak")
        if backup.exists():
            backup.unlink()
        with engine.connect() as connection:
            connection.exec_driver_sql("VACUUM INTO ?", (str(backup),))
        log.warning("upgrading %s from schema %s to %s; a copy of the old database is in %s", display_url(url), current, head, backup)
    with engine.begin() as connection:
        config = _alembic(connection)
        if current is None and has_tables:
            # Created by create_all before migrations existed: only that exact schema is 0001.
            _require_initial_schema(connection, url)
            command.stamp(config, "0001")
        command.upgrade(config, "head")
    return backup


def _create_at_head(engine: Engine) -> None:
    """A new database: the models' tables, stamped with the head revision, as the migrations would.

    A test holds the migrations' schema equal to the models', so this is the same schema, made
    without importing Alembic (a first start on a Pi stays at the memory of every later one).
    """
    with engine.begin() as connection:
        Base.metadata.create_all(connection)
        connection.execute(
            text(
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
            )
        )
        connection.execute(text("INSERT INTO alembic_version (version_num) VALUES (:head)"), {"head": HEAD_REVISION})


def _require_existing_sqlite(url: str) -> None:
    # Opening a missing SQLite file would create an empty one and then fail on the missing schema.
    try:
        parsed = make_url(url)
    except ArgumentError:
        return
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        if not Path(parsed.database).exists():
            raise StoreError(f"no database at {parsed.database} yet; run `birdtrap run` to create it, or check database.url.")


def display_url(url: str) -> str:
    """A database URL without its password, for messages, logs and sync's progress key."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _require_initial_schema(connection: Any, url: str) -> None:
    inspector = inspect_schema(connection)
    tables = set(inspector.get_table_names())
    wanted = {"meta", "models", "images", "predictions", "events"}
    if not wanted <= tables or "event_id" not in {c["name"] for c in inspector.get_columns("images")}:
        raise StoreError(
            f"{display_url(url)} was made by a development build of birdtrap before schema migrations existed and "
            "cannot be upgraded; move it aside and let `birdtrap run` start a new database."
        )


def schema_version(session: Session) -> int:
    """The database's schema revision as a number (0: none); compare with SCHEMA_VERSION."""
    revision = current_revision(session.connection())
    return int(revision) if revision else 0


SCHEMA_VERSION = int(HEAD_REVISION)


# --- file names as text ---------------------------------------------------------------------

# A file name is bytes; Python shows a name that is not valid UTF-8 (Latin-1 from a FAT card or
# an old FTP tool: b"M\xf6we.jpg") with lone surrogates, which no database text column accepts.
# Such a name is stored with each undecodable byte written as a \xNN escape (readable; Python's
# "backslashreplace"); every valid name is stored unchanged, so rows written before this stay
# right, and the daemon compares a scanned name in this form, so a rescan finds it on record.
# `path_from_text` turns the text back into the name on disk.
_ESCAPED_BYTE = re.compile(r"\\x([89a-f][0-9a-f])")


def path_as_text(path: str) -> str:
    """The form of a file name (or any text holding one) that is stored and printed."""
    try:
        raw = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no file name decoded to
        return path.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def path_from_text(text: str) -> str:
    """The file name on disk of a stored path (the inverse of `path_as_text`).

    Only escapes that stand for bytes invalid in UTF-8 are undone, so a valid name that happens
    to hold the characters "\\xf6" comes back as it is unless those bytes could not be a name's.
    """
    if "\\x" not in text:
        return text
    raw = _ESCAPED_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text)
    name = os.fsencode(raw)
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return os.fsdecode(name)
    return text


# --- writing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    image_id: int
    outcome: str  # "new", "pending" (left by a crash), "duplicate" or "seen"


def register_photo(
    session: Session,
    path: str,
    sha256: str,
    size_bytes: int,
    file_mtime: float,
    camera_id: str,
    deployment_id: str | None = None,
) -> Registration:
    """Record a photo as pending, or as a duplicate of an earlier one with the same content.

    The same path with the same content is "seen": a photo is counted once. Its size and mtime
    are refreshed then, so the rescan knows the file as it is now (content rewritten and then
    restored, or only touched) and stops offering it.
    """
    path = path_as_text(path)
    existing = session.scalar(
        select(ImageRecord).where(ImageRecord.path == path, ImageRecord.sha256 == sha256, ImageRecord.status != FAILED)
    )
    if existing is not None:
        # Pending: registered by a run that died before finishing it; process it now.
        if existing.status == PENDING:
            return Registration(existing.id, "pending")
        if (existing.size_bytes, existing.file_mtime) != (size_bytes, file_mtime):
            existing.size_bytes, existing.file_mtime = size_bytes, file_mtime
            session.flush()
        return Registration(existing.id, "seen")
    original = session.scalar(
        select(ImageRecord).where(
            ImageRecord.sha256 == sha256, ImageRecord.duplicate_of.is_(None), ImageRecord.status.in_((PENDING, DONE))
        )
    )
    # A failed attempt at this path is replaced, never counted twice; a pending row whose file
    # was rewritten before it was processed can never finish, so it ends as failed.
    session.execute(ImageRecord.__table__.delete().where(ImageRecord.path == path, ImageRecord.status == FAILED))
    session.execute(
        ImageRecord.__table__.update()
        .where(ImageRecord.path == path, ImageRecord.status == PENDING, ImageRecord.sha256 != sha256)
        .values(status=FAILED, error="the file was replaced before it was processed; the new content is recorded instead")
    )
    image = ImageRecord(
        path=path,
        sha256=sha256,
        size_bytes=size_bytes,
        file_mtime=file_mtime,
        camera_id=camera_id,
        deployment_id=deployment_id,
        status=PENDING if original is None else DUPLICATE,
        duplicate_of=None if original is None else original.id,
        processed_at=None if original is None else utcnow(),
    )
    session.add(image)
    session.flush()
    return Registration(image.id, "new" if original is None else "duplicate")


def record_failure(
    session: Session,
    path: str,
    error: str,
    camera_id: str,
    image_id: int | None = None,
    sha256: str | None = None,
    size_bytes: int | None = None,
    file_mtime: float | None = None,
) -> int:
    """Mark a photo failed with its reason (creating its row if it never got one).

    Copies registered as duplicates of it are not settled here: see `fail_copies` and
    `release_copies`.
    """
    path, error = path_as_text(path), path_as_text(error)
    image = session.get(ImageRecord, image_id) if image_id is not None else None
    if image is None:
        # A pending row for this path (left by a crash) or an earlier failure is updated, not repeated.
        image = session.scalar(
            select(ImageRecord)
            .where(ImageRecord.path == path, ImageRecord.status.in_((PENDING, FAILED)))
            .order_by(ImageRecord.id.desc())
        )
    if image is None:
        image = ImageRecord(path=path, sha256=sha256, size_bytes=size_bytes, file_mtime=file_mtime, camera_id=camera_id)
        session.add(image)
    image.status = FAILED
    image.error = error
    if size_bytes is not None:
        image.size_bytes, image.file_mtime = size_bytes, file_mtime
    image.processed_at = utcnow()
    session.flush()
    return image.id


def fail_copies(session: Session, image_id: int, reason: str) -> list[str]:
    """Its identical copies fail with the photo `image_id`, each as its own failed row.

    For a failure the bytes themselves cause (they are no photo): every copy would fail the same
    way, so each is recorded failed (still pointing at the original), and a user listing the
    failures sees every file to copy again. Returns the copies' stored paths.
    """
    original = session.get(ImageRecord, image_id)
    copies = list(session.scalars(select(ImageRecord).where(ImageRecord.duplicate_of == image_id, ImageRecord.status == DUPLICATE)))
    for copy in copies:
        copy.status = FAILED
        where = original.path if original is not None else f"photo {image_id}"
        copy.error = f"{copy.path} has the same content as {where}, which failed: {path_as_text(reason)}"
        copy.processed_at = utcnow()
    session.flush()
    return [copy.path for copy in copies]


def release_copies(session: Session, image_id: int) -> str | None:
    """The first identical copy of the failed photo `image_id` becomes the original, pending again.

    For a failure that is about the file or the moment (it vanished, a passing error), not its
    bytes: a good copy must still be processed. The others point at the new original. Returns
    the new original's stored path (to be processed), or None when there are no copies.
    """
    copies = list(
        session.scalars(
            select(ImageRecord).where(ImageRecord.duplicate_of == image_id, ImageRecord.status == DUPLICATE).order_by(ImageRecord.id)
        )
    )
    if not copies:
        return None
    heir, rest = copies[0], copies[1:]
    heir.status, heir.duplicate_of, heir.processed_at = PENDING, None, None
    session.flush()  # the heir is an original before the others point at it
    for copy in rest:
        copy.duplicate_of = heir.id
    session.flush()
    return heir.path


def record_model(session: Session, sha256: str, name: str, version: str, path: str) -> int:
    """The id of this model's row, created on first use; last_used is refreshed."""
    model = session.scalar(select(ModelRecord).where(ModelRecord.sha256 == sha256))
    if model is None:
        model = ModelRecord(sha256=sha256, name=name, version=version, path=path)
        session.add(model)
    model.last_used = utcnow()
    session.flush()
    return model.id


@dataclass(frozen=True)
class RankedLabel:
    label_index: int
    label: str
    scientific_name: str | None
    common_name: str | None
    confidence: float


@dataclass(frozen=True)
class Result:
    """Everything stored for one processed photo (built by the daemon from the pipeline's output)."""

    kind: str
    label: str | None
    scientific_name: str | None
    common_name: str | None
    taxon_rank: str | None
    confidence: float | None
    ranked: tuple[RankedLabel, ...]
    captured_at: datetime | None
    captured_at_source: str | None
    captured_at_plausible: bool | None
    camera_make: str | None = None
    camera_model: str | None = None
    width: int | None = None
    height: int | None = None
    box: tuple[float, float, float, float] | None = None
    invokes: int | None = None
    archived_path: str | None = None
    person_boxes: tuple[tuple[float, float, float, float], ...] = ()
    measure: FrameMeasure | None = None


def record_result(session: Session, image_id: int, result: Result, model_id: int) -> None:
    # No flush per photo: a batch's updates and inserts go out together at the next query
    # (bench: 3.05 -> 1.75 ms a photo in a batch of four).
    with session.no_autoflush:
        image = session.get(ImageRecord, image_id)
    if image is None:
        raise StoreError(f"image row {image_id} vanished while it was being processed")
    for name in (
        "kind",
        "label",
        "scientific_name",
        "common_name",
        "taxon_rank",
        "confidence",
        "captured_at",
        "captured_at_source",
        "captured_at_plausible",
        "camera_make",
        "camera_model",
        "width",
        "height",
        "invokes",
        "archived_path",
    ):
        setattr(image, name, getattr(result, name))
    if result.archived_path is not None:
        image.archived_path = path_as_text(result.archived_path)
    if result.box is not None:
        image.box_x0, image.box_y0, image.box_x1, image.box_y1 = result.box
    image.person_boxes = boxes_to_text(result.person_boxes)
    if result.measure is not None:
        for name in ("brightness", "contrast", "sharpness", "colour", "scene"):
            setattr(image, name, getattr(result.measure, name))
    earlier_result = image.status != PENDING
    image.status = DONE
    image.error = None
    image.model_id = model_id
    image.processed_at = utcnow()
    if earlier_result:  # a pending photo has none: predictions are stored with its result
        session.execute(PredictionRecord.__table__.delete().where(PredictionRecord.image_id == image_id))
    session.add_all(
        PredictionRecord(
            image_id=image_id,
            rank=rank,
            label_index=ranked.label_index,
            label=ranked.label,
            scientific_name=ranked.scientific_name,
            common_name=ranked.common_name,
            confidence=ranked.confidence,
        )
        for rank, ranked in enumerate(result.ranked, start=1)
    )


# --- reading -------------------------------------------------------------------------------


def known_files(session: Session) -> dict[str, set[tuple[int | None, float | None]]]:
    """Stored path -> every (size, mtime) on record for it, for reconciling the folder.

    A path can have several rows (its content replaced, then restored): the file is on record
    if it matches any of them. Compare a scanned name through `path_as_text`.
    """
    known: dict[str, set[tuple[int | None, float | None]]] = {}
    for path, size, mtime in session.execute(select(ImageRecord.path, ImageRecord.size_bytes, ImageRecord.file_mtime)):
        known.setdefault(path, set()).add((size, mtime))
    return known


def pending_photos(session: Session) -> list[ImageRecord]:
    return list(session.scalars(select(ImageRecord).where(ImageRecord.status == PENDING).order_by(ImageRecord.id)))


def counts_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(ImageRecord.status, func.count()).group_by(ImageRecord.status))
    return {status: count for status, count in rows}


def find_sightings(
    session: Session,
    since: datetime | None = None,
    until: datetime | None = None,
    species: str | None = None,
    min_confidence: float | None = None,
    camera: str | None = None,
    limit: int | None = None,
) -> list[ImageRecord | Reviewed]:
    """Photos whose decision is a bird, newest capture first, filtered as the CLI asks.

    A person's correction of the photo's event wins over the machine's answer (see join_review).
    """
    query = select(ImageRecord).where(ImageRecord.status == DONE, ImageRecord.kind == KIND_BIRD)
    query, review = join_review(query, ImageRecord)
    query = query.where(review.kind == KIND_BIRD)
    query = _filtered(query, review, ImageRecord.captured_at, ImageRecord.captured_at, ImageRecord.camera_id,
                      since, until, species, min_confidence, camera)  # fmt: skip
    query = query.order_by(ImageRecord.captured_at.desc(), ImageRecord.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return as_reviewed(session.execute(query))


def _filtered(
    query: Any,
    review: Any,
    start: Any,
    end: Any,
    camera_column: Any,
    since: datetime | None,
    until: datetime | None,
    species: str | None,
    min_confidence: float | None,
    camera: str | None,
) -> Any:
    """The filters `sightings` and `events` share, on a query joined to its reviews (join_review)."""
    if since is not None:
        query = query.where(end >= since)
    if until is not None:
        query = query.where(start < until)
    if species:
        pattern = species.lower() + "%"
        query = query.where(or_(func.lower(review.scientific_name).like(pattern), func.lower(review.common_name).like(pattern)))
    if min_confidence is not None:
        query = query.where(review.at_least(min_confidence))
    if camera:
        query = query.where(camera_column == camera)
    return query


def find_events(
    session: Session,
    since: datetime | None = None,
    until: datetime | None = None,
    species: str | None = None,
    min_confidence: float | None = None,
    camera: str | None = None,
    limit: int | None = None,
    birds_only: bool = True,
    kind: Kind | None = None,
) -> list[EventRecord | Reviewed]:
    """Events (bursts), newest first, with the same filters as `find_sightings`; `kind` keeps one kind only.

    A person's correction wins over the machine's answer (see join_review).
    """
    query, review = join_review(select(EventRecord), EventRecord)
    if kind is not None:
        query = query.where(review.kind == kind)
    elif birds_only:
        query = query.where(review.kind == KIND_BIRD)
    query = _filtered(query, review, EventRecord.start, EventRecord.end, EventRecord.camera_id,
                      since, until, species, min_confidence, camera)  # fmt: skip
    query = query.order_by(EventRecord.start.desc(), EventRecord.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return as_reviewed(session.execute(query))


def stats_rows(session: Session, by: str, since: datetime | None, until: datetime | None, camera: str | None) -> list[dict[str, Any]]:
    """What `birdtrap stats` and the web stats page show: per species totals, or photos per
    species by day or hour (`until` applies to the totals only: activity takes no end date)."""
    if by == "species":
        return [
            {
                "scientific_name": s.scientific_name,
                "common_name": s.common_name,
                "taxon_rank": s.taxon_rank,
                "photos": s.photos,
                "events": s.events,
                "first_seen": s.first_seen.isoformat(sep=" ") if s.first_seen else None,
                "last_seen": s.last_seen.isoformat(sep=" ") if s.last_seen else None,
            }
            for s in species_stats(session, since, until, camera)
        ]
    return [{"scientific_name": name, by: bucket, "photos": count} for name, bucket, count in activity(session, by, since, camera)]


@dataclass(frozen=True)
class SpeciesStats:
    scientific_name: str
    common_name: str | None
    taxon_rank: str | None
    photos: int
    events: int
    first_seen: datetime
    last_seen: datetime


def species_stats(
    session: Session, since: datetime | None = None, until: datetime | None = None, camera: str | None = None
) -> list[SpeciesStats]:
    """Per species (or genus): photos, events, first and last seen; most photos first.

    People's corrections count (see species_stats_reviewed), so the CLI, plots and web agree.
    """
    return species_stats_reviewed(session, since, until, camera)


def activity(session: Session, by: str, since: datetime | None = None, camera: str | None = None) -> list[tuple[str, str, int]]:
    """(species, day or hour, photos) for bird photos, corrections applied; `by` is 'day' or 'hour'."""
    return activity_reviewed(session, by, since, camera)


def images_by_path(session: Session, paths: Iterable[str]) -> list[ImageRecord]:
    texts = [path_as_text(path) for path in paths]
    return list(session.scalars(select(ImageRecord).where(ImageRecord.path.in_(texts)).order_by(ImageRecord.id)))


__all__ = [
    "SQLAlchemyError",
    "ImageRecord",
    "PredictionRecord",
    "ModelRecord",
    "Result",
    "RankedLabel",
    "open_store",
]


# =============================================================================================
# birdtrap serve (issue 7): a person's corrections, and the classify cache.
#
# Added for the web server and kept to this section; the migration *_web_corrections_and_the_classify_cache
# creates the two tables.
# find_sightings and find_events call join_review to show a person's verdict in place of the
# machine's answer; the machine's answer itself is never overwritten.
# =============================================================================================

from sqlalchemy import case  # noqa: E402
from sqlalchemy.orm import aliased  # noqa: E402
from sqlalchemy.sql import ColumnElement, Select  # noqa: E402

CONFIRMED, CORRECTED, MARKED_EMPTY = "confirmed", "corrected", "empty"
VERDICTS = (CONFIRMED, CORRECTED, MARKED_EMPTY)


class CorrectionRecord(Base):
    """A person's verdict on an event, stored beside the machine's answer (copied in at review time).

    Keyed by event id without a foreign key on purpose: regrouping may merge or delete an event,
    and a person's work must never be cascaded away. The newest row of an event decides; the
    older rows are its history.
    """

    __tablename__ = "corrections"
    __table_args__ = (Index("ix_corrections_event", "event_id", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[str] = mapped_column(String(16))  # confirmed, corrected or empty
    kind: Mapped[str] = mapped_column(String(16))  # bird or blank (a person saw no bird)
    label: Mapped[str | None] = mapped_column(Text)
    scientific_name: Mapped[str | None] = mapped_column(String(200))
    common_name: Mapped[str | None] = mapped_column(String(200))
    taxon_rank: Mapped[str | None] = mapped_column(String(16))
    machine_kind: Mapped[str | None] = mapped_column(String(16))
    machine_label: Mapped[str | None] = mapped_column(Text)
    machine_scientific_name: Mapped[str | None] = mapped_column(String(200))
    machine_common_name: Mapped[str | None] = mapped_column(String(200))
    machine_confidence: Mapped[float | None] = mapped_column(Float)
    reviewer: Mapped[str | None] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ClassifyCacheRecord(Base):
    """A `POST /classify` answer by photo content and pipeline, so a photo is never invoked twice.

    `pipeline` fingerprints the models and the settings that shape the answer: a new model or a
    new threshold starts a fresh cache instead of serving stale answers.
    """

    __tablename__ = "classify_cache"
    __table_args__ = (UniqueConstraint("sha256", "pipeline", name="uq_classify_cache_sha256_pipeline"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    pipeline: Mapped[str] = mapped_column(String(64))
    result: Mapped[str] = mapped_column(Text)  # JSON, as the API returns it (less `cached`)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


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
    newest = select(func.max(CorrectionRecord.id)).where(CorrectionRecord.event_id == event_key).scalar_subquery()

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
    newest = select(func.max(CorrectionRecord.id)).where(CorrectionRecord.event_id.in_(ids)).group_by(CorrectionRecord.event_id)
    return {c.event_id: c for c in session.scalars(select(CorrectionRecord).where(CorrectionRecord.id.in_(newest)))}


def review_history(session: Session, event_id: int) -> list[CorrectionRecord]:
    """Every verdict on an event, newest first."""
    query = select(CorrectionRecord).where(CorrectionRecord.event_id == event_id).order_by(CorrectionRecord.id.desc())
    return list(session.scalars(query))


def event_photos(session: Session, event_ids: Iterable[int]) -> dict[int, list[ImageRecord]]:
    """event id -> its photos in capture order."""
    ids = list(event_ids)
    if not ids:
        return {}
    query = select(ImageRecord).where(ImageRecord.event_id.in_(ids)).order_by(ImageRecord.captured_at, ImageRecord.id)
    photos: dict[int, list[ImageRecord]] = {}
    for image in session.scalars(query):
        photos.setdefault(image.event_id, []).append(image)  # type: ignore[arg-type]
    return photos


def pending_count(session: Session) -> int:
    """Photos registered but not yet processed: the daemon's queue as the database sees it."""
    return int(session.scalar(select(func.count()).select_from(ImageRecord).where(ImageRecord.status == PENDING)) or 0)


def last_photo(session: Session) -> ImageRecord | None:
    """The photo found most recently (by discovery), whatever became of it."""
    return session.scalar(select(ImageRecord).order_by(ImageRecord.id.desc()).limit(1))


def change_token(session: Session) -> str:
    """A short string that changes whenever a photo is added or processed or a verdict is stored.

    The web page polls it and reloads its list only when it changes (cheap on a Pi Zero).
    """
    newest, processed, done = session.execute(
        select(func.max(ImageRecord.id), func.max(ImageRecord.processed_at), func.count(ImageRecord.processed_at))
    ).one()
    reviewed = session.scalar(select(func.max(CorrectionRecord.id)))
    return f"{newest or 0}.{done}.{processed.isoformat() if processed else '-'}.{reviewed or 0}"


def cached_classification(session: Session, sha256: str, pipeline: str) -> str | None:
    """The stored `/classify` answer (JSON text) for this content and pipeline, or None."""
    query = select(ClassifyCacheRecord.result).where(ClassifyCacheRecord.sha256 == sha256, ClassifyCacheRecord.pipeline == pipeline)
    return session.scalar(query)


def save_classification(session: Session, sha256: str, pipeline: str, result: str) -> None:
    """Remember a `/classify` answer; an answer already stored (another request won) is kept."""
    if cached_classification(session, sha256, pipeline) is None:
        session.add(ClassifyCacheRecord(sha256=sha256, pipeline=pipeline, result=result))
        session.flush()


def species_stats_reviewed(
    session: Session, since: datetime | None = None, until: datetime | None = None, camera: str | None = None
) -> list[SpeciesStats]:
    """`species_stats` with people's corrections applied: a corrected burst counts as its new species,
    one marked empty not at all. Meant to replace species_stats's body (CLI, plots and web agree).
    """
    photo = review_of(ImageRecord)
    photo_query = (
        select(
            photo.scientific_name,
            func.max(photo.common_name),
            func.max(photo.taxon_rank),
            func.count(),
            func.min(ImageRecord.captured_at),
            func.max(ImageRecord.captured_at),
        )
        .select_from(ImageRecord)
        .outerjoin(photo.correction, photo.onclause)
        .where(ImageRecord.status == DONE, ImageRecord.kind == KIND_BIRD, photo.kind == KIND_BIRD)
    )
    event = review_of(EventRecord)
    event_query = (
        select(event.scientific_name, func.count())
        .select_from(EventRecord)
        .outerjoin(event.correction, event.onclause)
        .where(event.kind == KIND_BIRD)
    )
    if since is not None:
        photo_query = photo_query.where(ImageRecord.captured_at >= since)
        event_query = event_query.where(EventRecord.end >= since)
    if until is not None:
        photo_query = photo_query.where(ImageRecord.captured_at < until)
        event_query = event_query.where(EventRecord.start < until)
    if camera:
        photo_query = photo_query.where(ImageRecord.camera_id == camera)
        event_query = event_query.where(EventRecord.camera_id == camera)
    events = dict(session.execute(event_query.group_by(event.scientific_name)).all())
    rows = session.execute(photo_query.group_by(photo.scientific_name)).all()
    stats = [SpeciesStats(name, common, rank, photos, events.get(name, 0), first, last) for name, common, rank, photos, first, last in rows]
    return sorted(stats, key=lambda s: (-s.photos, s.scientific_name))


def activity_reviewed(session: Session, by: str, since: datetime | None = None, camera: str | None = None) -> list[tuple[str, str, int]]:
    """`activity` with people's corrections applied; meant to replace activity's body."""
    photo = review_of(ImageRecord)
    query = (
        select(photo.scientific_name, ImageRecord.captured_at)
        .select_from(ImageRecord)
        .outerjoin(photo.correction, photo.onclause)
        .where(ImageRecord.status == DONE, ImageRecord.kind == KIND_BIRD, photo.kind == KIND_BIRD)
    )
    if since is not None:
        query = query.where(ImageRecord.captured_at >= since)
    if camera:
        query = query.where(ImageRecord.camera_id == camera)
    counts: dict[tuple[str, str], int] = {}
    for name, when in session.execute(query):
        if when is None:
            continue
        bucket = when.strftime("%Y-%m-%d") if by == "day" else f"{when.hour:02d}"
        counts[(name, bucket)] = counts.get((name, bucket), 0) + 1
    return sorted((name, bucket, count) for (name, bucket), count in counts.items())


# --- this camera's examples and head (issue 23) --------------------------------------------



class CameraExampleRecord(Base):
    """A labelled frame of one camera: a review or a labelled folder teaches the camera's head.

    One row per camera and photo content (sha256): a later review of the same frame replaces its
    label. `box` is the bird's region when a person or the finder chose it. `vectors` caches the
    frame's region embeddings (by `embedder`) so relearning does not run the model again.
    """

    __tablename__ = "camera_examples"
    __table_args__ = (UniqueConstraint("camera_id", "sha256", name="uq_camera_examples_camera_sha256"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(200))
    x0: Mapped[float | None] = mapped_column(Float)
    y0: Mapped[float | None] = mapped_column(Float)
    x1: Mapped[float | None] = mapped_column(Float)
    y1: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(16))  # review or labels
    embedder: Mapped[str | None] = mapped_column(String(200))
    vectors: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class CameraHeadRecord(Base):
    """A head learnt for one camera, its cross-validated figures, and whether it is in use."""

    __tablename__ = "camera_heads"
    __table_args__ = (Index("ix_camera_heads_camera", "camera_id", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(100))
    embedder: Mapped[str] = mapped_column(String(200))
    head: Mapped[bytes] = mapped_column(LargeBinary)
    figures: Mapped[str] = mapped_column(Text)  # JSON of camera_head.Figures and counts per class
    in_use: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# --- people hidden at the source (issue 19) ------------------------------------------------


def hidden_boxes(session: Session, image_id: int) -> tuple[tuple[float, float, float, float], ...]:
    """The person boxes to hide in images made from photo `image_id`; () when none (or no such photo)."""
    return boxes_from_text(session.scalar(select(ImageRecord.person_boxes).where(ImageRecord.id == image_id)))


def hidden_boxes_at(session: Session, paths: Iterable[str]) -> tuple[tuple[float, float, float, float], ...]:
    """The person boxes of every photo recorded (or archived) at any of `paths`, together."""
    names = list(paths)
    rows = session.scalars(
        select(ImageRecord.person_boxes).where(
            or_(ImageRecord.path.in_(names), ImageRecord.archived_path.in_(names)), ImageRecord.person_boxes.is_not(None)
        )
    )
    return tuple(box for text_value in rows for box in boxes_from_text(text_value))


def redacted_count(session: Session) -> int:
    """How many processed photos have people hidden in every image birdtrap makes of them."""
    return session.scalar(select(func.count()).where(ImageRecord.status == DONE, ImageRecord.person_boxes.is_not(None))) or 0


class CameraProblemRecord(Base):
    """A health problem of one camera (identify/health.py), from when it was seen until resolved."""

    __tablename__ = "camera_problems"
    __table_args__ = (Index("ix_camera_problems_open", "camera_id", "resolved_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(100))
    check: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    opened_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime)
