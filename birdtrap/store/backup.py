"""Rolling backups of the SQLite file, and putting one back.

A damaged database (a failing SD card, a power cut on a card that ignores fsync) must not cost a
season of sightings. The daemon copies the file with SQLite's online backup API every
`database.backup_every_hours`, checks the copy (`PRAGMA quick_check`) and only then lets it
replace the oldest of the `database.backup_keep` it keeps beside the database, named
`<database>.backup-<UTC time>`. Issue 16.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import threading
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from birdtrap.errors import StoreError

log = logging.getLogger(__name__)

BACKUP_MARK = ".backup-"
SET_ASIDE_MARK = ".set-aside-"
STAMP = "%Y%m%dT%H%M%SZ"
# The files SQLite keeps beside a database in WAL mode; they belong to it and move with it.
SIDE_FILES = ("-wal", "-shm")


def backups(database: Path) -> list[Path]:
    """The backups of `database` beside it, oldest first (their names sort by time)."""
    prefix = database.name + BACKUP_MARK
    try:
        entries = list(database.parent.iterdir())
    except OSError:
        return []
    return sorted(p for p in entries if p.name.startswith(prefix) and _stamp(p.name[len(prefix) :]) is not None and p.is_file())


def newest_backup(database: Path) -> Path | None:
    found = backups(database)
    return found[-1] if found else None


def _stamp(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, STAMP)
    except ValueError:
        return None


def _now_stamp() -> str:
    return datetime.now(UTC).strftime(STAMP)


def write_backup(database: Path, keep: int, busy_timeout_seconds: float = 10.0) -> Path:
    """Copy `database` to a new verified backup beside it; returns its path.

    The copy is made under a temporary name and renamed into place only after `quick_check`
    passes, so a damaged source or a full disk never replaces a good backup; the newest `keep`
    backups are kept. Raises StoreError naming the file and why.
    """
    database = Path(database)
    if not database.is_file():
        raise StoreError(f"no database at {database} to back up; check database.url.")
    target = database.with_name(f"{database.name}{BACKUP_MARK}{_now_stamp()}")
    partial = database.with_name(f".{database.name}.backup-partial-{os.getpid()}-{threading.get_ident()}")
    try:
        # mode=rw: never create an empty database where the real one went missing.
        source = sqlite3.connect(f"{database.resolve().as_uri()}?mode=rw", uri=True, timeout=busy_timeout_seconds)
        with closing(source), closing(sqlite3.connect(partial)) as copy:
            # One step (pages=-1), not many small ones: a step-wise backup starts again whenever
            # another connection (the daemon's) writes in between, so it might never finish. In
            # WAL mode the one long read does not block the daemon's writes.
            source.backup(copy)
            # A self-contained file: no -wal to carry along when it is restored.
            copy.execute("PRAGMA journal_mode=DELETE")
            verdict = [row[0] for row in copy.execute("PRAGMA quick_check")]
        if verdict != ["ok"]:
            raise StoreError(
                f"the backup of {database} failed its check ({'; '.join(verdict[:3])}): the database itself is probably "
                f"damaged; the earlier backups were kept ({newest_backup(database) or 'none yet'})."
            )
        _fsync(partial)
        os.replace(partial, target)
        _fsync(target.parent)
    except (sqlite3.Error, OSError) as e:
        raise StoreError(f"could not back up {database} to {target} ({e}); the earlier backups were kept.") from None
    finally:
        for leftover in (partial, Path(f"{partial}-journal")):
            leftover.unlink(missing_ok=True)
    for old in backups(database)[:-keep]:
        old.unlink(missing_ok=True)
    return target


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_backup(backup: Path) -> None:
    """Raise StoreError unless `backup` is a SQLite file that passes `quick_check`."""
    try:
        connection = sqlite3.connect(f"{backup.resolve().as_uri()}?mode=ro", uri=True)
        with closing(connection):
            verdict = [row[0] for row in connection.execute("PRAGMA quick_check")]
    except sqlite3.Error as e:
        raise StoreError(f"{backup} cannot be restored: it is not a usable SQLite database ({e}); pick another backup.") from None
    if verdict != ["ok"]:
        raise StoreError(f"{backup} cannot be restored: it fails its check ({'; '.join(verdict[:3])}); pick another backup.")


def move_aside(database: Path) -> Path:
    """Rename `database` and its -wal/-shm files to `<database>.set-aside-<UTC time>`; returns that.

    Nothing is deleted. The side files move first: a crash in between leaves the database
    without its log (still readable), never a stale log beside another database, which SQLite
    would replay into it.
    """
    target = database.with_name(f"{database.name}{SET_ASIDE_MARK}{_now_stamp()}")
    for suffix in (*SIDE_FILES, ""):
        source = Path(f"{database}{suffix}")
        if source.exists():
            os.replace(source, f"{target}{suffix}")
    _fsync(database.parent)
    return target


def restore(backup: Path, database: Path) -> Path | None:
    """Put `backup` in place of `database`; returns where the old database was set aside (if any).

    The caller holds the daemon lock, so no daemon writes meanwhile. Raises StoreError for a
    backup that does not pass its check (then nothing is moved).
    """
    check_backup(backup)
    set_aside = move_aside(database) if any(Path(f"{database}{s}").exists() for s in ("", *SIDE_FILES)) else None
    partial = database.with_name(f".{database.name}.restore-partial-{os.getpid()}")
    try:
        shutil.copyfile(backup, partial)
        _fsync(partial)
        os.replace(partial, database)
        _fsync(database.parent)
    except OSError as e:
        raise StoreError(f"could not copy {backup} to {database} ({e}); the old database is kept at {set_aside}.") from None
    finally:
        partial.unlink(missing_ok=True)
    return set_aside


class RollingBackup:
    """The daemon's backups: due every `every_hours`, written by a thread with its own connection.

    `tick()` is called between batches and only starts the thread, so batches go on while a
    large database is copied. The time of the newest backup on disk decides when the next is due,
    so a restart does not take one at once.
    """

    def __init__(self, database: Path, every_hours: float, keep: int, busy_timeout_seconds: float) -> None:
        self.database = database
        self.every_seconds = every_hours * 3600
        self.keep = keep
        self.busy_timeout_seconds = busy_timeout_seconds
        newest = newest_backup(database)
        self.due_at = (newest.stat().st_mtime if newest is not None else 0.0) + self.every_seconds
        self.thread: threading.Thread | None = None

    def tick(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            return
        now = time.time()
        # A clock set back (a Pi without a real-time clock) must not put the next backup off for years.
        if now < self.due_at and self.due_at - now <= self.every_seconds:
            return
        self.due_at = now + self.every_seconds
        self.thread = threading.Thread(target=self._backup, name="backup", daemon=True)
        self.thread.start()

    def _backup(self) -> None:
        started = time.monotonic()
        try:
            path = write_backup(self.database, self.keep, self.busy_timeout_seconds)
        except StoreError as e:
            retry = min(self.every_seconds, 3600.0)
            self.due_at = time.time() + retry
            log.error("%s Trying again in %.0f s.", e, retry)
            return
        log.info("backed up the database to %s in %.1f s", path, time.monotonic() - started)

    def stop(self, timeout: float = 30.0) -> None:
        """Wait for a backup in progress; one still running after `timeout` leaves only a temporary file."""
        if self.thread is not None:
            self.thread.join(timeout)
