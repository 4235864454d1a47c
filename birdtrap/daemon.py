"""The whole chain: watch folder -> settle -> register -> decode -> identify -> store.

Only this module knows every stage. The database is the record of what has been processed: a
photo is registered (pending) before its pixels are touched and marked done in the same
transaction as its results, so a crash at any point loses nothing and counts nothing twice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from tqdm import tqdm

from birdtrap import events, store
from birdtrap.config import Config, check_folders
from birdtrap.errors import BirdtrapError, PhotoError
from birdtrap.exif import PhotoMetadata, read_metadata
from birdtrap.loading import build_identifier
from birdtrap.motion import BurstKey
from birdtrap.pipeline import Identification, Identifier
from birdtrap.preprocess import Photo, PreprocessSettings, decode, read_photo_bytes
from birdtrap.systemd import Notifier
from birdtrap.watcher import FolderWatcher, PhotoFilter, SettleTracker

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Decoded:
    photo: Photo
    metadata: PhotoMetadata


def decode_photo(data: bytes, name: str, mtime: float, settings: PreprocessSettings) -> Decoded:
    return Decoded(decode(data, name, settings), read_metadata(data, mtime))


def burst_key(camera: str, metadata: PhotoMetadata) -> BurstKey:
    # Photos from one camera a few seconds apart are one burst (motion proposals, events).
    return BurstKey(f"{camera}/{metadata.camera_make or ''}/{metadata.camera_model or ''}", metadata.captured.value)


def classify_files(paths: Iterable[Path], identifier: Identifier) -> Iterable[tuple[Path, Identification | PhotoError]]:
    """Identify photo files one by one, in order, without storing anything (`classify`, `evaluate`).

    The folder stands in for the camera, so the frames of a burst copied together are one burst.
    """
    for path in paths:
        try:
            data = read_photo_bytes(path)
            decoded = decode_photo(data, str(path), path.stat().st_mtime, identifier.preprocess)
        except PhotoError as e:
            yield path, e
            continue
        yield path, identifier.identify([decoded.photo], [burst_key(str(path.parent), decoded.metadata)])[0]


def to_result(identification: Identification, decoded: Decoded, archived: str | None) -> store.Result:
    decision = identification.decision
    ranked = tuple(
        store.RankedLabel(s.label.index, s.label.text, s.label.scientific, s.label.common, s.probability)
        for s in identification.prediction.top
    )
    captured = decoded.metadata.captured
    width, height = decoded.photo.original_size
    return store.Result(
        kind=decision.kind,
        label=decision.label,
        scientific_name=decision.scientific_name,
        common_name=decision.common_name,
        taxon_rank=decision.taxon_rank,
        confidence=decision.confidence,
        ranked=ranked,
        captured_at=captured.value,
        captured_at_source=captured.source,
        captured_at_plausible=captured.plausible,
        camera_make=decoded.metadata.camera_make,
        camera_model=decoded.metadata.camera_model,
        width=width,
        height=height,
        box=identification.box,
        invokes=identification.invokes,
        archived_path=archived,
    )


class ModelFiles:
    """Notices a model, labels or card file being replaced, once the new file has settled."""

    def __init__(self, config: Config) -> None:
        paths = [config.model.path, config.model.labels, config.gate.path, config.detector.path]
        folder = config.model.path if config.model.path.is_dir() else config.model.path.parent
        paths += [folder / "labels.txt", folder / "model.json"]
        self.paths = [Path(p) for p in paths if p is not None]
        self.current = self._signature()
        self.pending: tuple | None = None
        self.pending_since = 0.0

    def _signature(self) -> tuple:
        signature = []
        for path in self.paths:
            try:
                info = os.stat(path)
                signature.append((str(path), info.st_size, info.st_mtime_ns, info.st_ino))
            except OSError:
                signature.append((str(path), None))
        return tuple(signature)

    def changed(self, settle_seconds: float) -> bool:
        """True once after the files changed and then stayed unchanged for `settle_seconds`."""
        now = time.monotonic()
        signature = self._signature()
        if signature == self.current:
            self.pending = None
            return False
        if signature != self.pending:
            self.pending, self.pending_since = signature, now
            return False
        if now - self.pending_since < settle_seconds:
            return False
        self.current, self.pending = signature, None
        return True


@dataclass
class Candidate:
    path: str
    data: bytes
    sha256: str
    size: int
    mtime: float
    image_id: int = 0


class Daemon:
    """`birdtrap run`: the long-running loop. One thread owns the models and the database."""

    def __init__(self, config: Config, notifier: Notifier | None = None) -> None:
        check_folders(config)
        self.config = config
        self.folder = config.watch.folder.resolve()
        self.notifier = notifier or Notifier()
        self.stop_requested = threading.Event()
        self.sessions: sessionmaker[Session] = store.open_store(config.database.url, config.database.busy_timeout_seconds)
        self.identifier = build_identifier(config)
        self.decode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode")
        bundle = self.identifier.species.bundle
        with self.sessions.begin() as session:
            self.model_id = store.record_model(
                session, bundle.model_sha256, bundle.name, bundle.version, str(bundle.model_path)
            )
        self.tracker = SettleTracker(config.watch.settle_seconds)
        self.filter = PhotoFilter(config.watch.patterns)
        self.watcher = FolderWatcher(self.folder, config.watch.recursive, self.filter, self.tracker)
        self.queue: deque[str] = deque()
        self.queued: set[str] = set()
        self.totals = {"done": 0, "failed": 0, "duplicate": 0, "birds": 0}
        self.last_write = time.monotonic()
        self.last_progress = time.monotonic()
        self.write_backoff = 0.0
        self.write_backoff_delay = 0.5
        self.healthy = True
        self.bar: tqdm | None = None
        self.folder_present = True
        self.reload_requested = threading.Event()
        self.model_files = ModelFiles(config)

    # --- the loop ------------------------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        self.stop_requested.set()
        self.tracker.wake.set()

    def request_reload(self, *_: object) -> None:
        self.reload_requested.set()
        self.tracker.wake.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)

    def run(self) -> None:
        """Run until SIGTERM/SIGINT; the batch in flight is finished before returning."""
        self.watcher.ensure_running()
        self.requeue_pending()
        self.reconcile(startup=True)
        self.notifier.ready(self.status_line())
        log.info("watching %s (%d photos waiting)", self.folder, len(self.queue) + len(self.tracker))
        next_rescan = time.monotonic() + self.config.watch.rescan_seconds
        batch_started: float | None = None
        try:
            while not self.stop_requested.is_set():
                self.tracker.wake.clear()
                for path in self.tracker.due():
                    self.enqueue(path)
                now = time.monotonic()
                if self.queue and batch_started is None:
                    batch_started = now
                full = len(self.queue) >= self.config.batch.size
                waited = batch_started is not None and now - batch_started >= self.config.batch.max_wait_seconds
                if self.queue and (full or waited):
                    if now >= self.write_backoff:
                        self.process_next_batch()
                        batch_started = None if not self.queue else time.monotonic()
                folder_returned = self.check_folder()
                if now >= next_rescan or folder_returned:
                    self.reconcile()
                    next_rescan = now + self.config.watch.rescan_seconds
                if self.reload_requested.is_set() or self.model_files.changed(self.config.watch.settle_seconds):
                    self.reload_requested.clear()
                    self.reload_models()
                self.heartbeat()
                if self.queue and (full or waited) and time.monotonic() >= self.write_backoff:
                    continue
                self.tracker.wake.wait(self._sleep_for(next_rescan, batch_started))
        finally:
            self.notifier.stopping()
            self.watcher.stop()
            self.decode_pool.shutdown(wait=True)
            if self.bar is not None:
                self.bar.close()
            log.info("stopped: %s", self.status_line())

    def _sleep_for(self, next_rescan: float, batch_started: float | None) -> float:
        now = time.monotonic()
        # Wake at least every 10 s: a vanished folder or a replaced model sends no event.
        waits = [next_rescan - now, 10.0]
        if self.notifier.watchdog_seconds:
            waits.append(self.notifier.watchdog_seconds / 3)
        due = self.tracker.next_due_in()
        if due is not None:
            waits.append(due + 0.05)
        if batch_started is not None:
            waits.append(batch_started + self.config.batch.max_wait_seconds - now)
        if self.write_backoff > now:
            waits.append(self.write_backoff - now)
        return max(0.05, min(waits))

    def check_folder(self) -> bool:
        """Notice the watch folder vanishing (a USB drive unplugged) and coming back.

        Returns True when it has just come back, so the caller rescans it at once.
        """
        present = self.folder.is_dir()
        if present == self.folder_present:
            return False
        self.folder_present = present
        if not present:
            log.error("the watch folder %s has disappeared (unplugged or unmounted?); waiting for it to come back", self.folder)
            self.watcher.stop()
            return False
        log.warning("the watch folder %s is back; watching it again", self.folder)
        self.watcher.stop()
        self.watcher.ensure_running()
        return True

    def reload_models(self) -> None:
        """Load the models again (new files or SIGHUP) between batches; a bad set keeps the old."""
        try:
            candidate = build_identifier(self.config)
        except BirdtrapError as e:
            log.error("refused the new model: %s; keeping %s", e, self.identifier.species.bundle.model_path)
            self.notifier.status(f"new model refused: {e}")
            return
        bundle = candidate.species.bundle
        with self.sessions.begin() as session:
            self.model_id = store.record_model(session, bundle.model_sha256, bundle.name, bundle.version, str(bundle.model_path))
        self.identifier = candidate
        log.info("now using model %s (sha256 %s)", bundle.model_path, bundle.model_sha256[:12])

    def heartbeat(self) -> None:
        """WATCHDOG=1 only while the pipeline really works: observer alive, writes succeeding.

        A vanished watch folder is waited for, not a failure: restarting would not bring it back.
        """
        observer_ok = self.watcher.ensure_running() if self.folder_present else True
        stalled = bool(self.queue) and time.monotonic() - self.last_write > max(120.0, 10 * self.config.batch.max_wait_seconds)
        self.healthy = observer_ok and not stalled
        if self.healthy:
            self.notifier.watchdog()
        self.notifier.status(self.status_line())

    def status_line(self) -> str:
        t = self.totals
        return (
            f"queue {len(self.queue)} settling {len(self.tracker)}; done {t['done']} birds {t['birds']} "
            f"failed {t['failed']} duplicates {t['duplicate']}"
            + ("" if self.healthy else "; UNHEALTHY")
            + ("" if self.folder_present else "; WATCH FOLDER MISSING")
        )

    def enqueue(self, path: str) -> None:
        if path not in self.queued:
            self.queued.add(path)
            self.queue.append(path)

    # --- discovery -----------------------------------------------------------------------

    def requeue_pending(self) -> None:
        """Photos registered but not finished when the last run died are processed first."""
        with self.sessions.begin() as session:
            pending = [image.path for image in store.pending_photos(session)]
        if pending:
            log.info("resuming %d photos left pending by the last run", len(pending))
        for path in pending:
            self.enqueue(path)

    def reconcile(self, startup: bool = False) -> None:
        """Compare the folder with the database; offer every file not on record (or changed)."""
        with self.sessions.begin() as session:
            known = store.known_files(session)
        found = 0
        settle = self.config.watch.settle_seconds
        for entry in self.watcher.scan():
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            record = known.get(entry.path)
            if record is not None and record[0] == info.st_size and record[1] == info.st_mtime:
                continue
            if entry.path in self.queued:
                continue
            found += 1
            old_enough = time.time() - info.st_mtime >= settle
            self.tracker.touch(entry.path, settled=old_enough)
        if found and not startup:
            log.warning("rescan found %d photos the folder events missed", found)
        elif found:
            log.info("found %d photos to process in %s", found, self.folder)

    # --- one batch -----------------------------------------------------------------------

    def process_next_batch(self) -> None:
        size = self.config.batch.size
        batch = [self.queue.popleft() for _ in range(min(size, len(self.queue)))]
        try:
            self.handle(batch)
        except SQLAlchemyError as e:
            # Locked or full database, I/O error: nothing of this batch was committed. Keep the
            # photos queued and back off; they stay pending (or unregistered) on disk, never lost.
            delay = min(60.0, max(1.0, 2 * self.write_backoff_delay))
            self.write_backoff_delay = delay
            self.write_backoff = time.monotonic() + delay
            log.error("database write failed (%s); keeping %d photos queued, retrying in %.0f s", _short(e), len(batch), delay)
            self.notifier.status(f"database write failed: {_short(e)}; {len(batch) + len(self.queue)} photos waiting")
            for path in reversed(batch):
                self.queue.appendleft(path)
            return
        self.write_backoff_delay = 0.5
        for path in batch:
            self.queued.discard(path)
        self.last_write = time.monotonic()
        self.report_progress()

    def read_candidates(self, batch: list[str]) -> tuple[list[Candidate], list[tuple[str, str]]]:
        candidates, unreadable = [], []
        for path in batch:
            try:
                self.check_inside(path)
                data = read_photo_bytes(Path(path))
                info = os.stat(path)
            except PhotoError as e:
                unreadable.append((path, str(e)))
                continue
            except OSError as e:
                unreadable.append((path, f"{path} cannot be read ({e.strerror})."))
                continue
            candidates.append(Candidate(path, data, hashlib.sha256(data).hexdigest(), len(data), info.st_mtime))
        return candidates, unreadable

    def check_inside(self, path: str) -> None:
        """Refuse a symlink (or anything) that resolves outside the watch folder."""
        resolved = Path(path).resolve()
        if resolved != self.folder and self.folder not in resolved.parents:
            raise PhotoError(f"{path} points outside the watch folder ({resolved}); refused. Copy the photo in instead of linking it.")

    def handle(self, batch: list[str]) -> None:
        candidates, unreadable = self.read_candidates(batch)
        camera = self.config.camera
        work: list[Candidate] = []
        with self.sessions.begin() as session:
            for path, reason in unreadable:
                store.record_failure(session, path, reason, camera.id)
            for candidate in candidates:
                registration = store.register_photo(
                    session,
                    candidate.path,
                    candidate.sha256,
                    candidate.size,
                    candidate.mtime,
                    camera.id,
                    camera.deployment_id,
                )
                if registration.outcome in ("new", "pending"):
                    candidate.image_id = registration.image_id
                    work.append(candidate)
                elif registration.outcome == "duplicate":
                    self.totals["duplicate"] += 1
                    log.info("%s is a copy of a photo already recorded; stored as a duplicate", candidate.path)
        for _path, reason in unreadable:
            self.totals["failed"] += 1
            log.warning("failed: %s", reason)
        if not work:
            return
        settings = self.identifier.preprocess
        futures = [self.decode_pool.submit(decode_photo, c.data, c.path, c.mtime, settings) for c in work]
        decoded: list[tuple[Candidate, Decoded]] = []
        failed: list[tuple[Candidate, str]] = []
        for candidate, future in zip(work, futures, strict=False):
            try:
                decoded.append((candidate, future.result()))
            except PhotoError as e:
                failed.append((candidate, str(e)))
            candidate.data = b""
        identifications = self.identifier.identify(
            [d.photo for _, d in decoded], [burst_key(camera.id, d.metadata) for _, d in decoded]
        )
        moves: list[tuple[str, Path]] = []
        gap = timedelta(seconds=self.config.events.gap_seconds)
        with self.sessions.begin() as session:
            for (candidate, item), identification in zip(decoded, identifications, strict=True):
                destination = self.archive_destination(candidate.path, identification.decision.kind)
                result = to_result(identification, item, str(destination) if destination else None)
                store.record_result(session, candidate.image_id, result, self.model_id)
                if destination is not None:
                    moves.append((candidate.path, destination))
            for candidate, reason in failed:
                store.record_failure(
                    session, candidate.path, reason, camera.id, candidate.image_id, candidate.sha256, candidate.size, candidate.mtime
                )
            times = [item.metadata.captured.value for _, item in decoded]
            events.regroup(session, camera.id, times, gap, self.identifier.decide_combined, len(self.identifier.species.labels))
        for (candidate, _), identification in zip(decoded, identifications, strict=True):
            self.totals["done"] += 1
            decision = identification.decision
            if decision.kind == "bird":
                self.totals["birds"] += 1
                log.info("%s: %s (%s, %.2f)", Path(candidate.path).name, decision.label, decision.taxon_rank, decision.confidence)
            else:
                log.debug("%s: %s (%.2f)", Path(candidate.path).name, decision.kind, decision.confidence)
        for candidate, reason in failed:
            self.totals["failed"] += 1
            log.warning("failed: %s", reason)
            self.quarantine(candidate.path)
        for source, destination in moves:
            self.move(source, destination)

    # --- after-actions -------------------------------------------------------------------

    def archive_destination(self, path: str, kind: str) -> Path | None:
        """Where a processed photo goes (None: it stays). Empty frames may have their own folder."""
        after = self.config.after
        if kind == "empty" and after.empty_action == "move" and after.empty_folder is not None:
            folder = after.empty_folder
        elif after.action == "move" and after.archive_folder is not None:
            folder = after.archive_folder
        else:
            return None
        return folder / Path(path).resolve().relative_to(self.folder)

    def quarantine(self, path: str) -> None:
        folder = self.config.after.quarantine_folder
        if folder is None or not os.path.isfile(path):
            return
        self.move(path, folder / Path(path).resolve().relative_to(self.folder))

    def move(self, source: str, destination: Path) -> None:
        try:
            destination.parent.mkdir(parents=True, exist_ok=True)
            if destination.exists():
                destination = destination.with_name(f"{destination.stem}-{int(time.time())}{destination.suffix}")
            shutil.move(source, destination)
        except OSError as e:
            log.warning("could not move %s to %s (%s); it stays where it is", source, destination, e.strerror)

    # --- progress ------------------------------------------------------------------------

    def report_progress(self) -> None:
        waiting = len(self.queue) + len(self.tracker)
        processed = sum(self.totals[k] for k in ("done", "failed", "duplicate"))
        if sys.stderr.isatty() and waiting > 0:
            if self.bar is None:
                self.bar = tqdm(total=processed + waiting, initial=processed, unit="photo", desc="backlog")
            self.bar.total = processed + waiting
            self.bar.n = processed
            self.bar.refresh()
        elif self.bar is not None and waiting == 0:
            self.bar.close()
            self.bar = None
        now = time.monotonic()
        if waiting and now - self.last_progress >= self.config.logging.progress_seconds:
            self.last_progress = now
            log.info("progress: %s", self.status_line())


def _short(error: Exception) -> str:
    orig = getattr(error, "orig", None)
    return str(orig or error).splitlines()[0]


def run(config: Config) -> None:
    """Entry point of `birdtrap run`."""
    daemon = Daemon(config)
    daemon.install_signal_handlers()
    daemon.run()


__all__ = ["Daemon", "run", "build_identifier", "classify_files", "BirdtrapError"]
