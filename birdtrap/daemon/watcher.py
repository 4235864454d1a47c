"""Which photo files exist in the watch folder, and when each one has finished arriving.

Three sources feed one `SettleTracker`: watchdog's observer (inotify on Linux), a scan at start
and a periodic reconciliation. The observer alone is not enough: inotify drops events when its
queue overflows (watchdog does not report that), network and FUSE mounts send none, and the
observer thread can die silently, so the daemon checks it and restarts it.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger(__name__)

TEMPORARY_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial")


@dataclass(frozen=True)
class PhotoFilter:
    patterns: tuple[str, ...]

    def wants(self, name: str) -> bool:
        """Photo names only; hidden and temporary files (`.*`, `*.part`, `*.tmp`, `~*`) never."""
        lower = name.lower()
        if name.startswith((".", "~")) or lower.endswith(TEMPORARY_SUFFIXES):
            return False
        return any(fnmatch.fnmatch(lower, pattern.lower()) for pattern in self.patterns)


class SettleTracker:
    """Holds candidate files until their size and mtime have stopped changing.

    Thread-safe: the observer thread adds, the daemon's loop collects. `wake` is set whenever
    something arrives, so the loop sleeps instead of polling.
    """

    def __init__(self, settle_seconds: float) -> None:
        self.settle_seconds = settle_seconds
        self._lock = threading.Lock()
        self._files: dict[str, tuple[int, int, float, bool]] = {}
        self.wake = threading.Event()

    def __len__(self) -> int:
        with self._lock:
            return len(self._files)

    def touch(self, path: str, closed: bool = False, settled: bool = False) -> None:
        """Note that `path` was created or changed. `closed`: a writer closed it (inotify close-write)."""
        signature = _signature(path)
        now = time.monotonic()
        with self._lock:
            previous = self._files.get(path)
            if settled:
                since = now - self.settle_seconds
            elif previous is None or previous[:2] != signature[:2]:
                since = now
            else:
                since = previous[2]
            # A close-write seen earlier still counts if nothing changed since.
            closed_before = previous is not None and previous[3] and previous[:2] == signature[:2]
            self._files[path] = (signature[0], signature[1], since, closed or closed_before)
        self.wake.set()

    def due(self) -> list[str]:
        """Paths that have settled (or were closed after writing); they leave the tracker.

        Oldest first (file time, then name): a backlog found at start-up is then processed in the
        order the camera wrote it, so the frames of a burst arrive together (motion needs the
        burst's other frames; an event is regrouped once instead of once per scattered frame).
        """
        now = time.monotonic()
        ready: list[tuple[int, str]] = []
        with self._lock:
            for path, (size, mtime, since, closed) in list(self._files.items()):
                current = _signature(path)
                if current == (-1, -1):
                    # Gone (deleted or renamed away): the daemon records nothing for it.
                    if now - since >= self.settle_seconds:
                        del self._files[path]
                    continue
                if current != (size, mtime):
                    self._files[path] = (current[0], current[1], now, False)
                    continue
                if closed or now - since >= self.settle_seconds:
                    ready.append((mtime, path))
                    del self._files[path]
        return [path for _, path in sorted(ready)]

    def next_due_in(self) -> float | None:
        now = time.monotonic()
        with self._lock:
            if not self._files:
                return None
            return max(0.0, min(since + self.settle_seconds - now for _, _, since, _ in self._files.values()))


def _signature(path: str) -> tuple[int, int]:
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return (-1, -1)
    return (info.st_size, info.st_mtime_ns)


class _Handler(FileSystemEventHandler):
    def __init__(self, tracker: SettleTracker, photo_filter: PhotoFilter) -> None:
        self.tracker = tracker
        self.filter = photo_filter

    def _offer(self, path: str | bytes, closed: bool = False) -> None:
        path = os.fsdecode(path)
        if self.filter.wants(os.path.basename(path)):
            self.tracker.touch(path, closed=closed)

    def on_created(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._offer(event.src_path)

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._offer(event.src_path)

    def on_moved(self, event: FileSystemEvent) -> None:
        # Cameras and rsync write `x.jpg.part` then rename: the rename is the arrival.
        if not event.is_directory:
            self._offer(event.dest_path)

    def on_closed(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._offer(event.src_path, closed=True)


class FolderWatcher:
    """The watchdog observer on one folder, restartable when its thread dies."""

    def __init__(self, folder: Path, recursive: bool, photo_filter: PhotoFilter, tracker: SettleTracker) -> None:
        self.folder = Path(folder)
        self.recursive = recursive
        self.filter = photo_filter
        self.tracker = tracker
        self.handler = _Handler(tracker, photo_filter)
        self._observer: Observer | None = None
        self.restarts = 0  # starts after the first one
        self.started_once = False

    def start(self) -> None:
        observer = Observer()
        observer.schedule(self.handler, str(self.folder), recursive=self.recursive)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def alive(self) -> bool:
        return self._observer is not None and self._observer.is_alive()

    def ensure_running(self) -> bool:
        """Restart a dead observer; returns False if it cannot be started (folder gone)."""
        if self.alive():
            return True
        restarting = self._observer is not None or self.started_once
        if self._observer is not None:
            log.warning("the folder observer on %s stopped; restarting it", self.folder)
        self.stop()
        try:
            self.start()
        except (OSError, RuntimeError) as e:
            log.error("cannot watch %s (%s); retrying, photos will be picked up by the rescan", self.folder, e)
            self._observer = None
            return False
        self.restarts += restarting
        self.started_once = True
        return True

    def stop(self) -> None:
        if self._observer is not None:
            try:
                self._observer.stop()
                self._observer.join(timeout=5)
            except RuntimeError:
                pass
            self._observer = None

    def scan(self) -> Iterator[os.DirEntry]:
        """Every wanted file in the folder now (not following symlinked folders)."""
        stack = [str(self.folder)]
        while stack:
            current = stack.pop()
            try:
                with os.scandir(current) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            if self.recursive and not entry.name.startswith("."):
                                stack.append(entry.path)
                        elif self.filter.wants(entry.name):
                            yield entry
            except OSError as e:
                log.warning("cannot list %s (%s)", current, e.strerror)
