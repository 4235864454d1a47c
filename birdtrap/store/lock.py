"""One daemon per SQLite database: an OS lock on `<database>.lock`, held for the daemon's life.

Two daemons on one file would both classify the same new photos (issue 16: 8 of 40 twice). An
flock is released by the kernel when its process ends however it ends (kill -9, a power cut
reboots), so there is never a stale lock for systemd's restart to trip over; the file itself
stays and means nothing without the lock. It holds the holder's PID for the message. A server
database (PostgreSQL) takes no lock: several daemons may write to it.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from birdtrap.errors import DaemonRunningError, DatabaseFileError


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


class DaemonLock:
    """The held lock; `release()` (or the process ending) lets the next daemon start."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd: int | None = fd

    @classmethod
    def acquire(cls, database: Path, doing: str | None = None) -> DaemonLock:
        """Take the lock of `database` without waiting.

        `doing` names what a command other than `birdtrap run` was about to do, for the message.
        Raises DaemonRunningError naming the holder's PID and the lock file when a daemon holds
        it, and DatabaseFileError when the lock file cannot be made (the folder is missing or not
        writable).
        """
        path = lock_path(database)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if not path.parent.is_dir():
                raise DatabaseFileError(
                    f"the database's folder {path.parent} does not exist",
                    f"create it (mkdir -p {path.parent}) and make it writable for the user birdtrap runs as, or change database.url",
                ) from None
            if not path.is_file():
                raise DatabaseFileError(
                    f"cannot create the lock file {path} ({e.strerror})",
                    f"make the folder {path.parent} writable for the user birdtrap runs as (chown birdtrap: {path.parent}); "
                    f"`lsattr -d {path.parent}` shows an immutable flag, `mount` a read-only file system",
                ) from None
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # an flock needs no write access
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DatabaseFileError(f"cannot lock {path} ({e.strerror})", "keep the database on a local file system") from None
            stop = f"systemctl stop birdtrap, or kill {holder}" if holder else "systemctl stop birdtrap"
            then = (
                "or give this one its own database.url; only a server database (PostgreSQL) takes several daemons"
                if doing is None
                else "then run this again"
            )
            raise DaemonRunningError(
                f"cannot {doing or 'start a second daemon'}: a birdtrap daemon (PID {holder or 'unknown'}) is already running on "
                f"{database}; it holds the lock on {path}. Stop it first ({stop}), {then}."
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # a read-only lock file: the lock holds all the same, only the PID is not shown
        return cls(path, fd)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None


def _holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
