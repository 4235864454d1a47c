"""Opening a database: the engine, SQLite's pragmas, a damaged or unwritable file, and the one
answer to "is this database current?" (`check_revision`, Alembic's head against the file's).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy import inspect as inspect_schema
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError
from sqlalchemy.orm import Session, sessionmaker

from birdtrap.errors import DatabaseFileError, StoreError
from birdtrap.store.backup import newest_backup
from birdtrap.store.tables import Base

log = logging.getLogger("birdtrap.store")

MIGRATIONS = Path(__file__).parents[1] / "migrations"


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
HEAD_REVISION = "0007"


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


@dataclass(frozen=True)
class RevisionState:
    """Where a database's schema stands against this birdtrap's (`revision_state`)."""

    current: str | None  # the file's revision; None: no alembic_version table
    head: str  # this birdtrap's newest revision
    has_tables: bool  # any birdtrap table at all (None + tables: made before migrations existed)
    known: bool  # the file's revision is one of this birdtrap's migrations

    @property
    def state(self) -> str:
        """current, older (run `db upgrade`), newer (upgrade birdtrap), or empty (no schema)."""
        if self.current == self.head:
            return "current"
        if self.current is None and not self.has_tables:
            return "empty"
        return "older" if self.current is None or self.known else "newer"

    def problem(self, url: str) -> str | None:
        """What is wrong for queries, with the fix; None when the schema is current."""
        where, current, head = display_url(url), self.current, self.head
        return {
            "current": None,
            "empty": f"{where} has no birdtrap schema; run `birdtrap run` (or `birdtrap db upgrade`) to create it.",
            "newer": f"{where} has schema revision {current}, newer than this birdtrap knows ({head}); upgrade birdtrap.",
            "older": f"{where} has schema revision {current or 'none'}, older than {head}; run `birdtrap db upgrade`.",
        }[self.state]


def revision_state(connection: Any) -> RevisionState:
    """The one answer to "is this database current?", for opening, migrating, doctor and `db current`.

    Whether an unknown revision is newer is asked of Alembic only when the file is not at this
    birdtrap's head, so opening a current database never imports Alembic.
    """
    current = current_revision(connection)
    has_tables = inspect_schema(connection).has_table("images")
    known = current is None or current == HEAD_REVISION or _known(current)
    return RevisionState(current, HEAD_REVISION, has_tables, known)


def _check_revision(connection: Any, url: str) -> str | None:
    revision = revision_state(connection)
    problem = revision.problem(url)
    if problem is not None:
        raise StoreError(problem)
    return revision.current


def migrate(engine: Engine, url: str) -> Path | None:
    """Bring the schema to the newest revision; returns the backup made first, if any.

    A SQLite file with data is copied with `VACUUM INTO` before an upgrade, so a migration that
    goes wrong on a Pi in the field can be undone by copying one file back.
    """
    head = head_revision()
    with engine.connect() as connection:
        revision = revision_state(connection)
    current, has_tables = revision.current, revision.has_tables
    if revision.state == "current":
        return None
    if revision.state == "empty":
        _create_at_head(engine)
        return None
    if revision.state == "newer":
        raise StoreError(revision.problem(url) or "")
    from alembic import command

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
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
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


