"""`birdtrap run`: watch folder -> settle -> queue -> batches (birdtrap.daemon.ingest) -> systemd.

Only this module knows the whole chain. It owns the long-running loop: watching and
reconciling the folder, batching, backing off when the database refuses writes, reloading
models, the vanished-folder case, and what systemd hears (READY, WATCHDOG, STATUS).
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from birdtrap import evaluate as evaluation
from birdtrap import store
from birdtrap.config import Config, check_folders
from birdtrap.daemon import health
from birdtrap.daemon.ingest import Ingestor, Prepared, file_signature
from birdtrap.daemon.memory import one_malloc_arena
from birdtrap.daemon.notify import OutboxSender
from birdtrap.daemon.notify import channels as notify_channels
from birdtrap.daemon.systemd import Notifier
from birdtrap.daemon.watcher import FolderWatcher, PhotoFilter, SettleTracker
from birdtrap.daemon.wiring import build_identifier
from birdtrap.errors import BirdtrapError, ModelError, StoreError, first_line
from birdtrap.identify.identifier import Identifier
from birdtrap.identify.motion import BurstMemory
from birdtrap.store import health as health_store
from birdtrap.store.backup import RollingBackup
from birdtrap.store.lock import DaemonLock

if TYPE_CHECKING:
    from tqdm import tqdm

log = logging.getLogger(__name__)
# How many of the next batch's files start decoding before this batch is identified; one more
# starts as each of this batch's photos is searched and lets its frame go (Ingestor.read_ahead).
# One is enough to keep the decode behind the searches (a decode ~25 ms, a search ~100-150 ms)
# and holds ~5 frames of 2.25 MB at once instead of 8 (issue 22 item 5, bench/README.md).
READ_AHEAD_START = 1
HEALTH_EVERY_SECONDS = 60.0  # silence and STATUS='s camera problems (issue 19)


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


class Daemon:
    """`birdtrap run`: the long-running loop. One thread owns the models and the database."""

    def __init__(self, config: Config, notifier: Notifier | None = None) -> None:
        check_folders(config)
        self.config = config
        self.folder = config.watch.folder.resolve()
        self.notifier = notifier or Notifier()
        self.stop_requested = threading.Event()
        database = store.sqlite_path(config.database.url)
        # First of all, before the database or any photo is touched: a second daemon on the same
        # SQLite file would classify the same photos (issue 16). A server database takes several.
        self.lock = DaemonLock.acquire(database) if database is not None else None
        try:
            self.sessions: sessionmaker[Session] = store.open_store(config.database.url, config.database.busy_timeout_seconds)
            identifier = build_identifier(config)
        except BaseException:
            if self.lock is not None:  # a daemon made in-process (tests) that fails to start
                self.lock.release()
            raise
        every = config.database.backup_every_hours
        self.backups = (
            RollingBackup(database, every, config.database.backup_keep, config.database.busy_timeout_seconds)
            if database is not None and every > 0
            else None
        )
        self.decode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode")
        self.ingestor = Ingestor(config, identifier, self.sessions, self.folder, self.decode_pool)
        self.tracker = SettleTracker(config.watch.settle_seconds)
        self.filter = PhotoFilter(config.watch.patterns)
        self.watcher = FolderWatcher(self.folder, config.watch.recursive, self.filter, self.tracker)
        self.queue: deque[str] = deque()
        self.queued: set[str] = set()
        self.totals: Counter[str] = Counter({"done": 0, "failed": 0, "duplicate": 0, "birds": 0})
        self.last_write = time.monotonic()
        self.last_progress = time.monotonic()
        self.write_backoff = 0.0
        self.write_backoff_delay = 0.5
        self.healthy = True
        self.bar: tqdm | None = None
        self.folder_present = True
        self.reload_requested = threading.Event()
        self.model_files = ModelFiles(config)
        self.in_flight: Prepared | None = None
        self.sender = OutboxSender(self.sessions, config.notify) if notify_channels(config.notify) else None
        self.camera_problems: list[str] = []  # open camera health problems, for STATUS= (issue 19)
        self.next_health = 0.0

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
        if self.sender is not None:
            self.sender.start()
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
                # A batch already decoding (in_flight) is always ready to finish.
                full = len(self.queue) >= self.config.batch.size or self.in_flight is not None
                waited = batch_started is not None and now - batch_started >= self.config.batch.max_wait_seconds
                ready = (self.queue or self.in_flight is not None) and (full or waited)
                if ready:
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
                if self.backups is not None:
                    self.backups.tick()
                if now >= self.next_health:
                    self.check_health()
                    self.next_health = now + HEALTH_EVERY_SECONDS
                self.heartbeat()
                if (self.queue or self.in_flight is not None) and time.monotonic() >= self.write_backoff and (
                    len(self.queue) >= self.config.batch.size or self.in_flight is not None
                ):
                    continue
                self.tracker.wake.wait(self._sleep_for(next_rescan, batch_started))
        finally:
            self.finish_in_flight()
            self.notifier.stopping()
            self.watcher.stop()
            if self.sender is not None:
                self.sender.stop()
            self.decode_pool.shutdown(wait=True)
            if self.backups is not None:
                self.backups.stop()
            if self.bar is not None:
                self.bar.close()
            log.info("stopped: %s", self.status_line())
            if self.lock is not None:
                self.lock.release()

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
            self.check_acceptance(candidate)
        except BirdtrapError as e:
            log.error("refused the new model: %s; keeping %s", e, self.ingestor.identifier.species.bundle.model_path)
            self.notifier.status(f"new model refused: {e}")
            return
        self.requeue_in_flight()
        self.ingestor.use(candidate)
        bundle = candidate.species.bundle
        log.info("now using model %s (sha256 %s)", bundle.model_path, bundle.model_sha256[:12])

    def check_acceptance(self, candidate: Identifier) -> None:
        """Raise ModelError if `candidate` scores worse than the running model on the labelled set."""
        labels = self.config.model.acceptance_labels
        if labels is None:
            return
        photos = evaluation.read_labels(labels)
        running, new = (evaluation.summarise(evaluation.evaluate(photos, without_memory(i))) for i in (self.ingestor.identifier, candidate))
        worse = new.named_right < running.named_right or new.false_birds > running.false_birds
        verdict = (
            f"on {labels}: birds named right {running.named_right} -> {new.named_right} of {new.bird_photos}, "
            f"non-birds called birds {running.false_birds} -> {new.false_birds} of {new.no_bird_photos}"
        )
        if worse and not self.config.model.accept_worse:
            raise ModelError(f"it scores worse {verdict}. Set model.accept_worse: true to load it anyway")
        log.info("the new model scores %s", verdict)

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
            + "".join(f"; CAMERA {problem}" for problem in self.camera_problems)
        )

    def refresh_problems(self) -> None:
        """The open camera problems for STATUS=, after a batch may have opened or resolved one (and
        the outbox sender woken for its notice)."""
        try:
            with self.sessions() as session:
                problems = health_store.open_problems(session)
        except SQLAlchemyError as e:
            log.debug("open camera problems not read (%s)", e)
            return
        self.camera_problems = [f"{p.camera_id} {p.check.replace('_', ' ')}" for p in problems]
        if self.sender is not None:
            self.sender.wake.set()

    def check_health(self) -> None:
        """Silence (no photo triggers it) and the open camera problems for STATUS= (issue 19).

        Runs once a minute; a database that is busy or failing is the batch path's concern, so
        a failure here is logged and tried again at the next minute.
        """
        try:
            with self.sessions.begin() as session:
                health.check_silence(session, self.config)
        except SQLAlchemyError as e:
            log.warning("camera health could not be checked (%s); trying again in a minute", e)
        self.refresh_problems()

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
        for text in pending:
            # A stored name is text (store.path_as_text); the file may have a name that is not.
            self.enqueue(text if os.path.lexists(text) else store.path_from_text(text))

    def reconcile(self, startup: bool = False) -> None:
        """Compare the folder with the database; offer every file not on record (or changed).

        A file is compared as registration recorded it (ingest.file_signature: a symlink by the
        file it points to, its name as stored text), so what is on record is never offered again.
        """
        with self.sessions.begin() as session:
            known = store.known_files(session)
        found = 0
        settle = self.config.watch.settle_seconds
        for entry in self.watcher.scan():
            size, mtime = file_signature(entry.path)
            if size is None or mtime is None:
                continue
            if (size, mtime) in known.get(store.path_as_text(entry.path), ()):
                continue
            if entry.path in self.queued:
                continue
            found += 1
            old_enough = time.time() - mtime >= settle
            self.tracker.touch(entry.path, settled=old_enough)
        if found and not startup:
            log.warning("rescan found %d photos the folder events missed", found)
        elif found:
            log.info("found %d photos to process in %s", found, self.folder)

    # --- one batch -----------------------------------------------------------------------

    def take_batch(self) -> list[str]:
        return [self.queue.popleft() for _ in range(min(self.config.batch.size, len(self.queue)))]

    def process_next_batch(self) -> None:
        """Finish one batch; meanwhile the next one is already being decoded.

        Decoding the next batch while this one is identified keeps both cores busy: the
        decoder threads and the interpreter overlap instead of taking turns. The next batch is
        registered in the transaction that stores this one's results (one commit a batch).
        """
        taken: list[list[str]] = []
        try:
            if self.in_flight is None:
                batch = self.take_batch()
                taken.append(batch)
                current = self.ingestor.prepare(batch)
            else:
                current, self.in_flight = self.in_flight, None
                taken.append(current.paths)
            following = None
            if self.queue:
                following_paths = self.take_batch()
                taken.append(following_paths)
                following = self.ingestor.read_ahead(following_paths, start=READ_AHEAD_START)
            outcome = self.ingestor.finish(current, following)
            self.in_flight = following
        except (SQLAlchemyError, StoreError) as e:
            # Locked or full database, I/O error: nothing of these batches was committed past
            # registration. Keep the photos queued and back off; they stay pending (or
            # unregistered) on disk, never lost.
            self._back_off(taken, f"database write failed ({first_line(e)})")
            return
        except Exception as e:  # noqa: BLE001 - no error that is not about one photo may stop the daemon (issue 16)
            # Anything else (a bug in events or notifications, the disk): the batch was not
            # committed, so its photos are kept the same way and tried again after the back-off.
            log.exception("storing a batch failed unexpectedly; please report this with the lines above")
            self._back_off(taken, f"storing a batch failed ({type(e).__name__}: {first_line(e)})")
            return
        self.write_backoff_delay = 0.5
        self.totals.update(outcome)
        # Copies registered by an earlier run can turn failed now (ingest._store): no count below 0.
        self.totals["duplicate"] = max(0, self.totals["duplicate"])
        if outcome.get("notifications") and self.sender is not None:
            self.sender.wake.set()
        self.refresh_problems()
        for path in current.paths:
            self.queued.discard(path)
        for path in current.retry:
            self.enqueue(path)
        self.last_write = time.monotonic()
        self.report_progress()

    def _back_off(self, taken: list[list[str]], what: str) -> None:
        """Put the batches' paths back at the head of the queue and wait longer before the next try."""
        self.in_flight = None
        delay = min(60.0, max(1.0, 2 * self.write_backoff_delay))
        self.write_backoff_delay = delay
        self.write_backoff = time.monotonic() + delay
        waiting = sum(len(batch) for batch in taken)
        log.error("%s; keeping %d photos queued, retrying in %.0f s", what, waiting, delay)
        self.notifier.status(f"{what}; {waiting + len(self.queue)} photos waiting")
        for batch in reversed(taken):
            for path in reversed(batch):
                self.queue.appendleft(path)

    def finish_in_flight(self) -> None:
        """At stop: the batch already registered and decoded is finished, or left pending."""
        if self.in_flight is None:
            return
        prepared, self.in_flight = self.in_flight, None
        try:
            self.totals.update(self.ingestor.finish(prepared))
        except (SQLAlchemyError, StoreError) as e:
            log.error("could not finish the last batch (%s); its photos stay pending for the next start", first_line(e))

    def requeue_in_flight(self) -> None:
        """Before a model switch: the batch in flight goes back to the head of the queue.

        It was decoded into the running models' inputs, perhaps without its pixels (see
        Identifier.searches_regions), so the new models read it again. Its photos stay registered
        as pending; files already settled as unreadable or duplicate are not read twice.
        """
        if self.in_flight is None:
            return
        prepared, self.in_flight = self.in_flight, None
        again = [candidate.path for candidate in prepared.work]
        for path in set(prepared.paths) - set(again):
            self.queued.discard(path)
        self.queue.extendleft(reversed(again))

    # --- progress ------------------------------------------------------------------------

    def report_progress(self) -> None:
        waiting = len(self.queue) + len(self.tracker)
        processed = sum(self.totals[k] for k in ("done", "failed", "duplicate"))
        if sys.stderr.isatty() and waiting > 0:
            if self.bar is None:
                # Imported only for a terminal: a service (no tty) never draws it, ~1.5 MB resident.
                from tqdm import tqdm

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


def without_memory(identifier: Identifier) -> Identifier:
    """The same models with a burst memory of their own, so scoring a labelled set leaves the
    daemon's bursts untouched."""
    twin = copy.copy(identifier)
    if identifier.bursts is not None:
        twin.bursts = BurstMemory(identifier.bursts.gap_seconds)
    return twin


def run(config: Config) -> None:
    """Entry point of `birdtrap run`."""
    one_malloc_arena()  # before the first thread allocates (see memory.one_malloc_arena)
    daemon = Daemon(config)
    daemon.install_signal_handlers()
    daemon.run()

