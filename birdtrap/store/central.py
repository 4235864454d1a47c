"""The central database of a fleet of traps (issue 21): its own tables, schema history and rules.

A central PostgreSQL holds the device schema (made by the device migrations, photo identity
scoped to the camera) plus the tables below, under their own Alembic history in
birdtrap/migrations/central (version table `central_version`). Nothing creates or changes a
table at run time.

Compatibility rule (docs/SCALE.md): the central database accepts a trap whose schemas are at most
`COMPATIBLE_VERSIONS` revisions older than its own; every migration keeps that promise by only
adding nullable columns, tables and indexes for that many revisions. A trap newer than the
centre says so and leaves it alone unless told to upgrade it (`birdtrap sync --upgrade-central`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Float, Integer, LargeBinary, String, Text, select, text
from sqlalchemy import inspect as inspect_schema
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from birdtrap import store
from birdtrap.errors import StoreError
from birdtrap.store.tables import utcnow

CENTRAL_MIGRATIONS = Path(__file__).parents[1] / "migrations" / "central"
CENTRAL_HEAD = "c003"  # a test keeps it equal to the head of birdtrap/migrations/central
COMPATIBLE_VERSIONS = 2


class CentralBase(DeclarativeBase):
    """Tables of the central database alone: the device migrations never see (or drop) them."""


class DeploymentRecord(CentralBase):
    """Where and how a camera stood, as its device's config says (Camtrap DP needs it)."""

    __tablename__ = "deployments"
    deployment_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(100), index=True)
    location_name: Mapped[str | None] = mapped_column(String(200))
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    coordinate_uncertainty: Mapped[int | None] = mapped_column(Integer)
    utc_offset: Mapped[str | None] = mapped_column(String(8))
    camera_model: Mapped[str | None] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(36))  # the device id
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ThumbnailRecord(CentralBase):
    """A small JPEG of a photo (`birdtrap sync --with-thumbnails`)."""

    __tablename__ = "thumbnails"
    camera_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class SyncedEvent(CentralBase):
    """Which central event a device's event became (events have no natural key)."""

    __tablename__ = "sync_events"
    source: Mapped[str] = mapped_column(String(36), primary_key=True)  # the device id
    source_event_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer, index=True)


class DeviceRecord(CentralBase):
    """One trap as its last sync left it: what `birdtrap fleet status` and /fleet show."""

    __tablename__ = "devices"
    device_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(100))
    deployment_id: Mapped[str | None] = mapped_column(String(100))
    host: Mapped[str | None] = mapped_column(String(200))
    birdtrap_version: Mapped[str | None] = mapped_column(String(32))
    schema_revision: Mapped[str | None] = mapped_column(String(32))
    last_sync_at: Mapped[datetime] = mapped_column(DateTime)  # the central server's clock (UTC)
    last_photo_at: Mapped[datetime | None] = mapped_column(DateTime)  # newest capture time (camera clock)
    last_processed_at: Mapped[datetime | None] = mapped_column(DateTime)  # the device's clock (UTC)
    photos: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)
    pending: Mapped[int] = mapped_column(Integer)
    health: Mapped[str | None] = mapped_column(Text)  # open camera-health problems at its last sync, or "ok"


class CentralMeta(CentralBase):
    __tablename__ = "central_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class TrapRole(CentralBase):
    """A database role that is a trap, and the camera whose rows it may read and write."""

    __tablename__ = "trap_roles"
    role_name: Mapped[str] = mapped_column(String(63), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(100), primary_key=True)


# --- schema: versions, the compatibility rule, upgrades ------------------------------------


def _number(revision: str | None) -> int:
    found = re.findall(r"\d+", revision or "")
    return int(found[-1]) if found else 0


def central_revision(connection: Connection) -> str | None:
    if not inspect_schema(connection).has_table("central_version"):
        return None
    return connection.execute(text("SELECT version_num FROM central_version")).scalar()


@dataclass(frozen=True)
class CentralSchema:
    """A central database's two schema revisions beside this birdtrap's."""

    device: str | None  # alembic_version: the device schema it shares
    central: str | None  # central_version: its own tables
    exists: bool  # it has a birdtrap schema at all

    @property
    def current(self) -> bool:
        return self.device == store.HEAD_REVISION and self.central == CENTRAL_HEAD


def read_schema(engine: Engine) -> CentralSchema:
    with engine.connect() as connection:
        exists = inspect_schema(connection).has_table("images")
        return CentralSchema(store.current_revision(connection), central_revision(connection), exists)


def check_compatible(schema: CentralSchema, where: str, upgrade_allowed: bool) -> bool:
    """Whether this trap may sync to a central database at `schema`; True: upgrade it first.

    Raises StoreError (with the fix) for a centre more than COMPATIBLE_VERSIONS revisions newer
    than this trap, and for a centre older than this trap unless `upgrade_allowed`.
    """
    if not schema.exists:
        return True  # an empty database: the first sync makes the central schema
    for name, theirs, ours in (("device", schema.device, store.HEAD_REVISION), ("central", schema.central, CENTRAL_HEAD)):
        ahead = _number(theirs) - _number(ours)
        if ahead > COMPATIBLE_VERSIONS:
            raise StoreError(
                f"the central database {where} has {name} schema {theirs}, {ahead} revisions newer than this trap's {ours}; "
                f"it accepts traps at most {COMPATIBLE_VERSIONS} revisions older. Upgrade birdtrap on this trap."
            )
    behind = [
        f"{name} schema {theirs or 'none'} (this trap: {ours})"
        for name, theirs, ours in (("device", schema.device, store.HEAD_REVISION), ("central", schema.central, CENTRAL_HEAD))
        if _number(theirs) < _number(ours)
    ]
    if behind and not upgrade_allowed:
        raise StoreError(
            f"the central database {where} is older than this trap: {'; '.join(behind)}. Nothing was pushed and it was not changed. "
            "Upgrade it once with `birdtrap sync --upgrade-central` (traps up to "
            f"{COMPATIBLE_VERSIONS} revisions older keep syncing), or upgrade birdtrap on the central server."
        )
    return bool(behind)


def upgrade_central(engine: Engine, url: str) -> None:
    """Create or upgrade the central database: the device schema, then the central tables' history."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    store.open_store(url)  # the device schema, as the daemon makes it (created, or migrated)
    with engine.begin() as connection:
        config = AlembicConfig()
        config.set_main_option("script_location", str(CENTRAL_MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def central_migrations_head() -> str:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    config = AlembicConfig()
    config.set_main_option("script_location", str(CENTRAL_MIGRATIONS))
    return str(ScriptDirectory.from_config(config).get_current_head())


def central_id(session: Session) -> str:
    """The central database's own identity (made by its first migration)."""
    value = session.scalar(select(CentralMeta.value).where(CentralMeta.key == "central_id"))
    if value is None:
        raise StoreError("the central database has no central_id; upgrade it with `birdtrap sync --upgrade-central`.")
    return value


# --- fleet status ---------------------------------------------------------------------------


def fleet_status(session: Session) -> list[dict[str, Any]]:
    """One row per trap, as its last sync left it, oldest sync first (the one to worry about)."""
    rows = []
    for device in session.scalars(select(DeviceRecord).order_by(DeviceRecord.last_sync_at, DeviceRecord.camera_id)):
        rows.append(
            {
                "camera": device.camera_id,
                "deployment": device.deployment_id,
                "device": device.device_id,
                "host": device.host,
                "last_sync": device.last_sync_at,
                "last_photo": device.last_photo_at,
                "photos": device.photos,
                "failed": device.failed,
                "pending": device.pending,
                "version": device.birdtrap_version,
                "schema": device.schema_revision,
                "health": device.health or "unknown (birdtrap too old to say)",
            }
        )
    return rows


__all__ = [
    "CentralBase",
    "DeploymentRecord",
    "ThumbnailRecord",
    "SyncedEvent",
    "DeviceRecord",
    "CentralMeta",
    "TrapRole",
    "CENTRAL_HEAD",
    "COMPATIBLE_VERSIONS",
    "CentralSchema",
    "read_schema",
    "check_compatible",
    "upgrade_central",
    "central_id",
    "fleet_status",
]
