"""`birdtrap archive`: classify a folder tree of any size on dask.distributed.

The same batch core as the daemon (`birdtrap.daemon.ingest.Ingestor`: sha256 identity, the same
preprocessing, finder and models, one transaction per batch) runs inside Dask workers:

- a WorkerPlugin loads the models once per worker process, not per task, and keeps one
  Ingestor per folder; tasks are batches of file paths (`batch_size`, default 32);
- results go straight to `database.url`. With SQLite many workers mean one writer at a time, so
  every write transaction starts with BEGIN IMMEDIATE (it waits its turn instead of failing on a
  stale snapshot); on PostgreSQL a transaction-scoped advisory lock per camera keeps the event
  regrouping of concurrent batches consistent. Lost connections and lock timeouts are retried
  with back-off;
- a stopped run resumes: files already on record (same path, size and mtime, any status but
  pending) are not even submitted, and the workers' sha256 check skips a file recorded under the
  same content;
- a file that cannot be processed is recorded as failed with the reason; a batch that fails as a
  whole is retried photo by photo, so one bad file never takes its neighbours (or the run) down;
- each photo's camera comes from `Cameras`: the config's `camera.id` (one camera per run), the
  folder layout (`<root>/<camera>/...`) or a mapping file (folder -> camera, deployment). Tasks
  never mix cameras, so events (bursts of one camera) never span two (issue 21).

It runs on a LocalCluster by default and on any cluster by scheduler address, whose workers
must see the photos at the same paths and reach the database (PostgreSQL, for a real cluster).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed import Client, LocalCluster, WorkerPlugin, as_completed, get_worker
from sqlalchemy import event, or_, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from tqdm import tqdm

from birdtrap import store
from birdtrap.config import Config
from birdtrap.daemon.ingest import Ingestor
from birdtrap.daemon.watcher import PhotoFilter
from birdtrap.errors import BirdtrapError, StoreError, first_line
from birdtrap.scale.retry import is_transient_or_race, with_retries

log = logging.getLogger(__name__)

PLUGIN_NAME = "birdtrap-archive"
DEFAULT_BATCH = 32


class ArchiveError(BirdtrapError):
    """The archive run cannot start: no scheduler, no workers, or folders that are not there."""


# --- on the workers ------------------------------------------------------------------------


def serialize_writers(sessions: sessionmaker[Session], camera_id: str) -> None:
    """Make concurrent batches from several worker processes write one at a time, safely.

    SQLite: the driver begins a transaction lazily at the first write, on a snapshot taken
    earlier; when another process committed in between, SQLite answers "database is locked" at
    once rather than waiting. BEGIN IMMEDIATE takes the write lock first and waits up to
    database.busy_timeout_seconds (SQLAlchemy's documented pysqlite recipe).
    PostgreSQL: a per-camera advisory lock for the transaction, so two batches of one burst
    never regroup its events at the same time.
    """
    engine = sessions.kw["bind"]
    if engine.dialect.name == "sqlite":

        def autocommit_driver(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # the driver emits no BEGIN of its own

        def begin_immediate(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        event.listen(engine, "connect", autocommit_driver)
        event.listen(engine, "begin", begin_immediate)
        engine.dispose()  # connections opened before the listeners would keep the old behaviour
    elif engine.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"birdtrap:{camera_id}".encode()).digest()[:8], "big", signed=True)

        def lock_camera(_session: Session, _transaction: Any, connection: Any) -> None:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

        event.listen(sessions, "after_begin", lock_camera)


class ArchiveWorker:
    """What one Dask worker process holds: the models, the database, one Ingestor per folder."""

    def __init__(self, config: Config, retries: int, backoff: float) -> None:
        from birdtrap.daemon.wiring import build_identifier

        self.config = config
        self.retries = retries
        self.backoff = backoff
        self.identifier = build_identifier(config)
        # The client created or upgraded the schema; a worker only checks it.
        self.sessions = store.open_store(config.database.url, config.database.busy_timeout_seconds, create=False)
        serialize_writers(self.sessions, config.camera.id)
        self.decode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode")
        self.ingestors: dict[tuple[str, str, str | None], Ingestor] = {}
        # A worker started with several threads runs tasks concurrently; the interpreter is not
        # thread-safe, so tasks take turns (start workers with --nthreads 1).
        self.lock = threading.Lock()
        self.closing = False

    def close(self) -> None:
        """Let the task in flight finish (a stopped run leaves its photos pending, never failed)."""
        self.closing = True
        finished = self.lock.acquire(timeout=60)
        try:
            self.decode_pool.shutdown(wait=finished)
            self.sessions.kw["bind"].dispose()
        finally:
            if finished:
                self.lock.release()

    def camera_config(self, camera: str | None, deployment: str | None) -> Config:
        """The config with this batch's camera (the commit path groups events by it)."""
        if camera is None or camera == self.config.camera.id:
            return self.config
        return self.config.model_copy(update={"camera": self.config.camera.model_copy(update={"id": camera, "deployment_id": deployment})})

    def ingestor(self, root: str, camera: str | None = None, deployment: str | None = None) -> Ingestor:
        key = (root, camera or self.config.camera.id, deployment)
        if key not in self.ingestors:
            config = self.camera_config(camera, deployment)
            self.ingestors[key] = self._retry(lambda: Ingestor(config, self.identifier, self.sessions, Path(root), self.decode_pool, False))
        return self.ingestors[key]

    def _retry(self, action: Callable[[], Any]) -> Any:
        return with_retries(action, "database write", self.retries, self.backoff, transient=is_transient_or_race)

    def process(self, root: str, paths: list[str], camera: str | None = None, deployment: str | None = None) -> Counter[str]:
        """One task: the batch as the daemon would handle it; on a non-transient error, photo by photo.

        Raises StoreError when the database stays unreachable: the photos stay unprocessed (pending
        or unregistered) and the next run picks them up.
        """
        with self.lock:
            try:
                ingestor = self.ingestor(root, camera, deployment)
                try:
                    return self._retry(lambda: ingestor.handle(paths))
                except SQLAlchemyError as e:
                    if is_transient_or_race(e):
                        raise
                    log.warning("a batch of %d photos was refused (%s); storing them one by one", len(paths), first_line(e))
                except Exception as e:  # noqa: BLE001 - an unforeseen error in one photo must not lose the batch
                    if self.closing:
                        raise  # the worker is shutting down: not the photos' fault
                    log.warning("a batch of %d photos failed (%r); processing them one by one", len(paths), e)
                return self._one_by_one(ingestor, paths)
            except SQLAlchemyError as e:
                raise StoreError(
                    f"database {store.display_url(self.config.database.url)} unusable ({first_line(e)}) after {self.retries} retries; "
                    f"{len(paths)} photos left for the next run."
                ) from None

    def _one_by_one(self, ingestor: Ingestor, paths: list[str]) -> Counter[str]:
        totals: Counter[str] = Counter()
        for path in paths:
            try:
                totals.update(self._retry(lambda p=path: ingestor.handle([p])))
            except SQLAlchemyError as e:
                if is_transient_or_race(e):
                    raise
                reason = f"{path}: the database refused its result ({first_line(e)})."
                self._record_failure(path, reason, ingestor.config.camera.id)
                totals["failed"] += 1
            except Exception as e:  # noqa: BLE001 - recorded as failed, the run goes on
                if self.closing:
                    raise
                self._record_failure(
                    path, f"{path} could not be processed ({type(e).__name__}: {e}); report it with the file.", ingestor.config.camera.id
                )
                totals["failed"] += 1
        return totals

    def _record_failure(self, path: str, reason: str, camera: str) -> None:
        log.warning("failed: %s", reason)

        def record() -> None:
            with self.sessions.begin() as session:
                store.record_failure(session, path, reason, camera)

        self._retry(record)


class ArchivePlugin(WorkerPlugin):
    """Loads the models once per worker (and again on a restarted worker), before any task."""

    name = PLUGIN_NAME

    def __init__(self, config: Config, retries: int, backoff: float) -> None:
        self.config, self.retries, self.backoff = config, retries, backoff
        self.state: ArchiveWorker | None = None

    def setup(self, worker: Any) -> None:
        self.state = ArchiveWorker(self.config, self.retries, self.backoff)

    def teardown(self, worker: Any) -> None:
        if self.state is not None:
            self.state.close()


def process_batch(root: str, paths: list[str], camera: str | None = None, deployment: str | None = None) -> dict[str, int]:
    """The Dask task: one batch of one camera's files under `root`; returns counts (done, birds, failed, duplicate)."""
    plugin = get_worker().plugins[PLUGIN_NAME]
    return dict(plugin.state.process(root, paths, camera, deployment))


# --- which camera took each photo ----------------------------------------------------------


@dataclass(frozen=True)
class Cameras:
    """How archive names each photo's camera (and deployment).

    `by_folder`: the first folder under the root is the camera (`<root>/<camera>/...`).
    `mapping`: (folder, camera, deployment) rows; a folder is absolute or relative to a root, and
    the longest folder that holds the photo wins. Otherwise, and for a photo neither places, the
    config's camera.
    """

    default: tuple[str, str | None]
    by_folder: bool = False
    mapping: tuple[tuple[str, str, str | None], ...] = ()

    def of(self, root: Path, path: str) -> tuple[str, str | None] | None:
        """(camera, deployment) of the photo at `path` under `root`; None where the layout or mapping has none."""
        relative = Path(path).relative_to(root)
        if self.by_folder:
            return (relative.parts[0], None) if len(relative.parts) > 1 else None
        if self.mapping:
            best = None
            for folder, camera, deployment in self.mapping:
                base = Path(folder) if Path(folder).is_absolute() else root / folder
                if Path(path).is_relative_to(base) and (best is None or len(base.parts) > best[0]):
                    best = (len(base.parts), camera, deployment)
            return None if best is None else (best[1], best[2])
        return self.default


def load_camera_map(path: Path) -> tuple[tuple[str, str, str | None], ...]:
    """Read a CSV of `folder,camera_id[,deployment_id]` rows (a header row of those names is allowed).

    Raises ArchiveError naming the file and line of a row without a folder or camera.
    """
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as e:
        raise ArchiveError(
            f"--cameras {path}: cannot read it ({e.strerror}); give a CSV of folder,camera_id[,deployment_id] rows."
        ) from None
    rows = []
    for number, row in enumerate(csv.reader(lines), start=1):
        cells = [cell.strip() for cell in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if number == 1 and cells[:2] == ["folder", "camera_id"]:
            continue
        if len(cells) < 2 or not cells[0] or not cells[1] or len(cells) > 3:
            raise ArchiveError(
                f"--cameras {path}, line {number}: {','.join(row)!r} is not folder,camera_id[,deployment_id]; "
                "e.g. card07,pond-cam,pond-2024."
            )
        rows.append((cells[0].rstrip("/"), cells[1], cells[2] or None if len(cells) == 3 else None))
    if not rows:
        raise ArchiveError(f"--cameras {path} has no rows; write one folder,camera_id[,deployment_id] line per camera.")
    return tuple(rows)


# --- on the client -------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveSummary:
    found: int  # photo files under the folders
    skipped: int  # already on record: not submitted
    done: int
    birds: int
    failed: int
    duplicate: int
    unfinished: int  # in batches that failed as a whole (database unreachable, workers lost)
    seconds: float
    workers: int
    scheduler: str

    @property
    def photos_per_second(self) -> float:
        processed = self.done + self.failed + self.duplicate
        return processed / self.seconds if self.seconds > 0 else 0.0


def find_photos(folders: list[Path], photo_filter: PhotoFilter) -> Iterator[tuple[Path, str]]:
    """(root, path) of every wanted file, folder by folder in name order (bursts stay together)."""
    for root in folders:
        stack = [root]
        while stack:
            current = stack.pop()
            try:
                entries = sorted(os.scandir(current), key=lambda e: e.name)
            except OSError as e:
                log.warning("cannot list %s (%s); skipped", current, e.strerror)
                continue
            subfolders = []
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if not entry.name.startswith("."):
                        subfolders.append(Path(entry.path))
                elif photo_filter.wants(entry.name):
                    yield root, entry.path
            stack.extend(reversed(subfolders))


def _on_record(sessions: sessionmaker[Session], folders: list[Path]) -> dict[str, tuple[int | None, float | None]]:
    """path -> (size, mtime) of files under `folders` recorded as done, duplicate or failed."""
    image = store.ImageRecord
    under = or_(*[image.path.startswith(store.path_as_text(str(folder) + os.sep), autoescape=True) for folder in folders])
    query = select(image.path, image.size_bytes, image.file_mtime).where(image.status != store.PENDING, under)
    with sessions() as session:
        return {path: (size, mtime) for path, size, mtime in session.execute(query)}


Batch = tuple[str, list[str], str, str | None]  # root, paths, camera, deployment


def plan(config: Config, folders: list[Path], batch_size: int, cameras: Cameras | None = None) -> tuple[int, int, list[Batch]]:
    """(found, skipped, batches): the files not yet on record, in batches of `batch_size` per folder and camera.

    A photo the folder layout or mapping does not place is given the config's camera.id, with a
    warning naming how many and the first.
    """
    cameras = cameras or Cameras((config.camera.id, config.camera.deployment_id))
    unplaced: list[str] = []
    sessions = store.open_store(config.database.url, config.database.busy_timeout_seconds)
    try:
        known = _on_record(sessions, folders)
    finally:
        sessions.kw["bind"].dispose()
    found = skipped = 0
    batches: list[Batch] = []
    current: list[str] = []
    current_key: tuple[str, str, str | None] = ("", "", None)
    for root, path in find_photos(folders, PhotoFilter(config.watch.patterns)):
        found += 1
        record = known.get(store.path_as_text(path))
        if record is not None:
            try:
                info = os.stat(path)
            except OSError:
                info = None
            if info is not None and record == (info.st_size, info.st_mtime):
                skipped += 1
                continue
        placed = cameras.of(root, path)
        if placed is None:
            unplaced.append(path)
            placed = (config.camera.id, config.camera.deployment_id)
        key = (str(root), *placed)
        if current and (key != current_key or len(current) >= batch_size):
            batches.append((current_key[0], current, current_key[1], current_key[2]))
            current = []
        current_key = key
        current.append(path)
    if current:
        batches.append((current_key[0], current, current_key[1], current_key[2]))
    if unplaced:
        how = "in a <root>/<camera>/ folder" if cameras.by_folder else "under a folder of --cameras"
        log.warning(
            "%d photos are not %s (the first: %s); they are stored as camera %r (camera.id in the config)",
            len(unplaced),
            how,
            unplaced[0],
            config.camera.id,
        )
    return found, skipped, batches


def run_archive(
    config: Config,
    folders: list[Path],
    scheduler: str = "local",
    *,
    workers: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    retries: int = 5,
    backoff: float = 1.0,
    progress: bool = True,
    on_batch: Callable[[Counter[str]], None] | None = None,
    cameras: Cameras | None = None,
) -> ArchiveSummary:
    """Classify every photo under `folders` into `config.database.url` on Dask.

    `scheduler` is "local" (a LocalCluster of `workers` processes, default: one per CPU core) or
    a scheduler address such as tcp://10.0.0.5:8786. `on_batch` is called with the running totals
    after each finished batch. Ctrl-C stops the run (KeyboardInterrupt is re-raised); running it
    again resumes. Raises ArchiveError for a missing folder or a scheduler that cannot be reached.
    """
    started = time.monotonic()
    roots = []
    for folder in folders:
        if not Path(folder).is_dir():
            raise ArchiveError(f"{folder} is not a folder; give the archive's top folder(s), e.g. birdtrap archive /mnt/sdcards/.")
        roots.append(Path(folder).resolve())
    found, skipped, batches = plan(config, roots, batch_size, cameras)
    todo = sum(len(paths) for _, paths, _, _ in batches)
    log.info("%d photos found, %d already on record, %d to classify in %d batches", found, skipped, todo, len(batches))
    totals: Counter[str] = Counter()
    cluster = client = None
    worker_count = 0
    if todo:
        url = config.database.url
        try:
            if scheduler == "local":
                worker_count = workers or os.cpu_count() or 1
                if worker_count * config.model.threads > (os.cpu_count() or 1):
                    log.info(
                        "%d workers x model.threads %d is more threads than this machine's %d cores; model.threads: %d may be faster",
                        worker_count,
                        config.model.threads,
                        os.cpu_count() or 1,
                        max(1, (os.cpu_count() or 1) // worker_count),
                    )
                cluster = LocalCluster(
                    n_workers=worker_count, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
                )
                client = Client(cluster)
            else:
                if url.startswith("sqlite"):
                    log.warning(
                        "database.url is SQLite and the scheduler is %s: every worker must reach %s on a local disk "
                        "(SQLite locking is unsafe on network file systems); use PostgreSQL for a real cluster",
                        scheduler,
                        store.display_url(url),
                    )
                client = Client(scheduler, timeout=30)
                client.wait_for_workers(1, timeout=120)
                worker_count = len(client.scheduler_info()["workers"])
        except (OSError, TimeoutError) as e:
            if cluster is not None:
                cluster.close()
            raise ArchiveError(f"cannot use the Dask scheduler {scheduler!r} ({e}); check --scheduler, or use --scheduler local.") from None
        try:
            client.register_plugin(ArchivePlugin(config, retries, backoff), name=PLUGIN_NAME)
            _drain(client, batches, worker_count, todo, totals, progress, on_batch)
        except KeyboardInterrupt:
            log.warning(
                "stopped after %d of %d photos; the photos in flight stay pending: run the same command again to resume",
                totals["done"] + totals["failed"] + totals["duplicate"],
                todo,
            )
            raise
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    summary = ArchiveSummary(
        found=found,
        skipped=skipped,
        done=totals["done"],
        birds=totals["birds"],
        failed=totals["failed"],
        duplicate=totals["duplicate"],
        unfinished=totals["unfinished"],
        seconds=time.monotonic() - started,
        workers=worker_count,
        scheduler=scheduler,
    )
    log.info(
        "archive: %d done (%d birds), %d failed, %d duplicates, %d skipped, %d unfinished in %.0f s (%.1f photos/s)",
        summary.done,
        summary.birds,
        summary.failed,
        summary.duplicate,
        summary.skipped,
        summary.unfinished,
        summary.seconds,
        summary.photos_per_second,
    )
    return summary


def _drain(
    client: Any,
    batches: list[Batch],
    workers: int,
    todo: int,
    totals: Counter[str],
    progress: bool,
    on_batch: Callable[[Counter[str]], None] | None,
) -> None:
    """Submit batches with a bounded number in flight (a million futures would swamp the scheduler)."""
    window = max(2, 2 * workers)
    pending = iter(batches)
    sizes: dict[str, int] = {}

    def submit() -> Any:
        root, paths, camera, deployment = next(pending)
        future = client.submit(process_batch, root, paths, camera, deployment, pure=False)
        sizes[future.key] = len(paths)
        return future

    first = []
    for _ in range(window):
        try:
            first.append(submit())
        except StopIteration:
            break
    queue = as_completed(first)
    # tqdm shows photos/s and the ETA; off a terminal (systemd, CI) a log line every so often.
    bar = tqdm(total=todo, unit="photo", desc="archive", disable=not (progress and sys.stderr.isatty()), smoothing=0.1)
    last_line = time.monotonic()
    started = time.monotonic()
    try:
        for future in queue:
            count = sizes.pop(future.key)
            if future.status == "finished":
                totals.update(future.result())
            else:
                totals["unfinished"] += count
                log.error("a batch of %d photos failed as a whole (%s); they are left for the next run", count, future.exception())
            future.release()
            try:
                queue.add(submit())
            except StopIteration:
                pass
            bar.update(count)
            bar.set_postfix(birds=totals["birds"], failed=totals["failed"], refresh=False)
            if progress and bar.disable and time.monotonic() - last_line >= 10:
                last_line = time.monotonic()
                rate = bar.n / max(1e-9, last_line - started)
                log.info("progress: %d of %d photos, %.1f photos/s, about %.0f s left", bar.n, todo, rate, (todo - bar.n) / max(rate, 1e-9))
            if on_batch is not None:
                on_batch(totals)
    finally:
        bar.close()


__all__ = [
    "ArchiveError",
    "ArchiveSummary",
    "Cameras",
    "load_camera_map",
    "run_archive",
    "plan",
    "find_photos",
    "serialize_writers",
    "process_batch",
]
