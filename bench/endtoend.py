"""The real daemon draining a backlog, and a naive pipeline on the same photos in the same run.

The daemon is `birdtrap run` as systemd would start it: a subprocess with NOTIFY_SOCKET pointing
at a datagram socket the bench listens on, so READY=1 is timed from the outside. Progress is read
from the SQLite file itself (a row counts once committed, which is what survives a power cut),
and CPU, memory, wake-ups and bytes written come from /proc, not from the daemon's own account.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import yaml

from bench.measure import context_switches, cpu_seconds, io_counters, status_kb
from bench.report import Results
from birdtrap import store
from birdtrap.daemon.ingest import to_result
from birdtrap.identify.exif import read_metadata
from birdtrap.identify.identifier import Identifier
from birdtrap.identify.photos import Decoded
from birdtrap.identify.preprocess import PreprocessSettings, decode, read_photo_bytes

DRAIN_TIMEOUT_PER_PHOTO = 2.0


def write_config(folder: Path, shared: Path, batch_size: int = 4, finder: bool = False) -> Path:
    """A daemon config for `folder`: the shipped defaults, the shared iNat model, no gate or detector.

    Gate and detector are off so every photo costs one invoke, the cost the bound assumes; the
    delegate is pinned to the CPU so a missing Coral does not log a warning per start. With
    `finder` (written as config-finder.yaml) they are on: the shipped default configuration
    (config.yaml's defaults with ../shared/models for the model paths), what a real camera trap costs.
    """
    (folder / "inbox").mkdir(parents=True, exist_ok=True)
    data = {
        "watch": {"folder": "inbox"},
        "model": {"path": str(shared / "models" / "inat_birds" / "model.tflite"), "delegate": "cpu"},
        "gate": {"path": str(shared / "models" / "imagenet_mobilenet_v2" / "model.tflite") if finder else None},
        "detector": {"path": str(shared / "models" / "coco_ssd_mobilenet_v1" / "model.tflite") if finder else None},
        "batch": {"size": batch_size},
        "database": {"url": "sqlite:///birdtrap.db"},
        "logging": {"level": "INFO"},
    }
    path = folder / ("config-finder.yaml" if finder else "config.yaml")
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass
class DaemonRun:
    """What one `birdtrap run` draining a backlog showed from the outside."""

    photos: int
    ready_s: float
    drain_s: float
    total_s: float
    steady_per_photo_s: float | None
    rss_ready_mb: float
    peak_rss_mb: float
    drain_cpu_s: float
    drain_wakeups: int
    write_bytes: int
    wchar: int
    log_bytes: int
    db_bytes: int
    idle_cpu_percent: list[float]
    idle_wakeups_per_s: list[float]
    notify_messages: int
    exit_code: int


def _committed(database: Path) -> int:
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute("select count(*) from images where status != 'pending'").fetchone()[0]
    except sqlite3.Error:
        return 0


def _steady_per_photo(database: Path, batch_size: int) -> float | None:
    """Median interval between the last rows of consecutive batches, per photo (skips start-up)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        stamps = [
            datetime.fromisoformat(row[0])
            for row in connection.execute("select processed_at from images where status = 'done' order by id")
        ]
    ends = stamps[batch_size - 1 :: batch_size]
    gaps = [(b - a).total_seconds() / batch_size for a, b in zip(ends, ends[1:], strict=False)]
    return statistics.median(gaps) if gaps else None


def _stored_bytes(database: Path) -> int:
    """Bytes of the database in use once its WAL is folded in (the daemon has stopped by now).

    Counted from dbstat where SQLite has it (used bytes, not whole pages, so a handful of photos
    does not read as zero), else from whole pages.
    """
    with sqlite3.connect(database) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        try:
            return int(connection.execute("select sum(pgsize - unused) from dbstat").fetchone()[0] or 0)
        except sqlite3.Error:
            pages = connection.execute("PRAGMA page_count").fetchone()[0] - connection.execute("PRAGMA freelist_count").fetchone()[0]
            return pages * connection.execute("PRAGMA page_size").fetchone()[0]


def empty_store_bytes(folder: Path) -> int:
    """Size of a new, empty store: subtracted so the per-photo figure is the photos' own share."""
    path = folder / "empty.db"
    store.open_store(f"sqlite:///{path}").kw["bind"].dispose()
    return _stored_bytes(path)


class NotifyListener(threading.Thread):
    """Reads every sd_notify datagram, as systemd does, and notes when READY=1 arrived.

    It must keep reading: the daemon's socket blocks once the receive queue is full (10
    datagrams by default on Linux), so a listener that stopped after READY=1 would stall it.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True, name="notify-listener")
        path.unlink(missing_ok=True)
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(path))
        self.socket.settimeout(0.05)
        self.ready_at: float | None = None
        self.ready = threading.Event()
        self.messages = 0
        self.finished = threading.Event()

    def run(self) -> None:
        while not self.finished.is_set():
            try:
                fields = self.socket.recv(4096).split(b"\n")
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages += 1
            if b"READY=1" in fields and self.ready_at is None:
                self.ready_at = time.monotonic()
                self.ready.set()

    def close(self) -> None:
        self.finished.set()
        self.join(1)
        self.socket.close()
        self.path.unlink(missing_ok=True)


def run_daemon(
    config: Path, photos: int, batch_size: int, idle_seconds: float, idle_chunks: int, extra_env: dict[str, str] | None = None
) -> DaemonRun:
    """Start `birdtrap run` on a folder pre-filled with `photos` photos; time READY and the drain.

    A fresh database each time; the inbox is reused (the photos never move: after.action keep).
    With `idle_seconds`, the daemon is then left alone that long and its CPU and wake-ups read
    in `idle_chunks` windows. Raises RuntimeError with the daemon's log tail if it dies or stalls.
    """
    folder = config.parent
    database = folder / "birdtrap.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    socket_path = folder / "notify.sock"
    listener = NotifyListener(socket_path)
    listener.start()
    log_path = folder / "daemon.log"
    environment = {**os.environ, **(extra_env or {}), "NOTIFY_SOCKET": str(socket_path), "PYTHONUNBUFFERED": "1"}
    for name in ("JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID"):
        environment.pop(name, None)
    with log_path.open("wb") as log:
        start = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "birdtrap", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=folder,
        )
    pid = process.pid

    def fail(what: str) -> RuntimeError:
        if process.poll() is None:
            process.kill()
            process.wait()
        tail = log_path.read_text(errors="replace")[-3000:]
        return RuntimeError(f"birdtrap run {what}; its log ({log_path}) ends:\n{tail}")

    try:
        deadline = start + 60
        while not listener.ready.wait(0.05):
            if process.poll() is not None:
                raise fail(f"exited with {process.returncode} before READY=1")
            if time.monotonic() > deadline:
                raise fail("sent no READY=1 within 60 s")
        ready_at = listener.ready_at
        messages_ready = listener.messages
        rss_ready = status_kb(pid, "VmRSS") / 1024
        cpu_ready = cpu_seconds(pid)
        switches_ready = context_switches(pid)[0]
        io_ready = io_counters(pid)
        deadline = ready_at + 30 + DRAIN_TIMEOUT_PER_PHOTO * photos
        while _committed(database) < photos:
            if process.poll() is not None:
                raise fail(f"exited with {process.returncode} while draining")
            if time.monotonic() > deadline:
                raise fail(f"did not commit {photos} photos in time (only {_committed(database)})")
            time.sleep(0.05)
        done_at = time.monotonic()
        cpu_done = cpu_seconds(pid)
        switches_done = context_switches(pid)[0]
        io_done = io_counters(pid)
        messages_done = listener.messages
        peak = status_kb(pid, "VmHWM") / 1024
        log_bytes = log_path.stat().st_size
        idle_cpu, idle_wakeups = [], []
        if idle_seconds > 0:
            time.sleep(1.0)  # the last batch's log lines and bookkeeping are not idle time
            chunk = idle_seconds / idle_chunks
            for _ in range(idle_chunks):
                cpu, switches, began = cpu_seconds(pid), context_switches(pid)[0], time.monotonic()
                time.sleep(chunk)
                elapsed = time.monotonic() - began
                idle_cpu.append(100 * (cpu_seconds(pid) - cpu) / elapsed)
                idle_wakeups.append((context_switches(pid)[0] - switches) / elapsed)
        steady = _steady_per_photo(database, batch_size)
        process.send_signal(signal.SIGTERM)
        try:
            exit_code = process.wait(30)
        except subprocess.TimeoutExpired:
            raise fail("did not stop within 30 s of SIGTERM") from None
    finally:
        listener.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    return DaemonRun(
        photos=photos,
        ready_s=ready_at - start,
        drain_s=done_at - ready_at,
        total_s=done_at - start,
        steady_per_photo_s=steady,
        rss_ready_mb=rss_ready,
        peak_rss_mb=peak,
        drain_cpu_s=cpu_done - cpu_ready,
        drain_wakeups=switches_done - switches_ready,
        write_bytes=io_done["write_bytes"] - io_ready["write_bytes"],
        wchar=io_done["wchar"] - io_ready["wchar"],
        log_bytes=log_bytes,
        db_bytes=_stored_bytes(database),
        idle_cpu_percent=idle_cpu,
        idle_wakeups_per_s=idle_wakeups,
        notify_messages=messages_done - messages_ready,
        exit_code=exit_code,
    )


def import_time(repeats: int) -> float:
    """Median seconds for a bare `python -c 'import birdtrap.daemon.loop'`: start-up before any work."""
    times = []
    for _ in range(repeats):
        start = time.monotonic()
        subprocess.run([sys.executable, "-c", "import birdtrap.daemon.loop"], check=True)
        times.append(time.monotonic() - start)
    return statistics.median(times)


def daemon_figures(results: Results, runs: list[DaemonRun], empty_db: int, import_s: float, import_repeats: int) -> None:
    """Medians over the runs, each against its baseline (bound, RSS at READY, stored bytes...)."""
    n = len(runs)
    photos = runs[0].photos

    def median(values: list[float]) -> float:
        return statistics.median(values)

    per_photo = median([r.drain_s / r.photos for r in runs])
    results.add(
        "daemon.import_s", "python -c 'import birdtrap.daemon.loop'", import_s, "s", None, import_repeats,
        note="interpreter + imports, no model",
    )
    results.add(
        "daemon.ready_s",
        "daemon start -> READY=1",
        median([r.ready_s for r in runs]),
        "s",
        "daemon.import_s",
        n,
        goal="<= 2 s",
        note="from the outside, NOTIFY_SOCKET",
    )
    results.add(
        "daemon.per_photo",
        f"daemon drain per photo, {photos} x 12mp",
        1000 * per_photo,
        "ms",
        "bound.per_photo",
        n,
        goal="ratio <= 1",
        note="READY=1 -> last row committed",
    )
    results.add(
        "daemon.per_photo_from_start",
        "daemon per photo incl. start-up",
        1000 * median([r.total_s / r.photos for r in runs]),
        "ms",
        "bound.per_photo",
        n,
        note="process start -> last row committed",
    )
    steady = [r.steady_per_photo_s for r in runs if r.steady_per_photo_s is not None]
    results.add(
        "daemon.steady_per_photo",
        "daemon per photo, batch to batch",
        1000 * median(steady) if steady else 1000 * per_photo,
        "ms",
        "bound.per_photo",
        n,
        note="median gap between batch commits / batch size" if steady else "one batch only: same as the drain figure",
    )
    results.add("daemon.photos_per_s", "daemon throughput", 1 / per_photo, "photos/s", None, n)
    results.add("daemon.rss_ready_mb", "daemon RSS at READY=1", median([r.rss_ready_mb for r in runs]), "MB", None, n)
    results.add(
        "daemon.peak_rss_mb",
        "daemon peak RSS (VmHWM)",
        median([r.peak_rss_mb for r in runs]),
        "MB",
        "daemon.rss_ready_mb",
        n,
        goal="<= 150 MB",
    )
    results.add(
        "daemon.cpu_per_photo",
        "daemon CPU per photo",
        1000 * median([r.drain_cpu_s / r.photos for r in runs]),
        "ms CPU",
        "bound.cpu_per_photo",
        n,
        note="energy figure; all threads",
    )
    results.add(
        "daemon.drain_cpu_percent",
        "daemon CPU while draining",
        100 * median([r.drain_cpu_s / r.drain_s for r in runs]),
        "% of a core",
        None,
        n,
    )
    results.add(
        "daemon.drain_wakeups_per_s",
        "daemon wake-ups while draining",
        median([r.drain_wakeups / r.drain_s for r in runs]),
        "/s",
        None,
        n,
        note="voluntary context switches, all threads",
    )
    results.add(
        "daemon.notify_per_photo",
        "sd_notify datagrams per photo",
        median([r.notify_messages / r.photos for r in runs]),
        "/photo",
        None,
        n,
        note="STATUS and WATCHDOG while draining",
    )
    stored = median([max(0, r.db_bytes - empty_db) / r.photos for r in runs])
    results.add(
        "daemon.stored_bytes_per_photo",
        "database size per photo",
        stored,
        "B",
        None,
        n,
        note="after WAL checkpoint, empty schema subtracted",
    )
    results.add(
        "daemon.write_bytes_per_photo",
        "bytes to storage per photo",
        median([r.write_bytes / r.photos for r in runs]),
        "B",
        "daemon.stored_bytes_per_photo",
        n,
        note="/proc io write_bytes: DB, WAL, log",
    )
    results.add(
        "daemon.wchar_per_photo",
        "bytes written (write calls) per photo",
        median([r.wchar / r.photos for r in runs]),
        "B",
        "daemon.stored_bytes_per_photo",
        n,
        note="/proc io wchar",
    )
    results.add(
        "daemon.log_bytes_per_photo",
        "log bytes per photo",
        median([r.log_bytes / r.photos for r in runs]),
        "B",
        "daemon.stored_bytes_per_photo",
        n,
        note="stdout+stderr at INFO",
    )
    idle = runs[-1]
    if idle.idle_cpu_percent:
        chunks = len(idle.idle_cpu_percent)
        results.add(
            "daemon.idle_cpu_percent",
            "daemon CPU when idle",
            median(idle.idle_cpu_percent),
            "% of a core",
            "daemon.drain_cpu_percent",
            chunks,
            goal="~0",
            note="after the drain, nothing arriving",
        )
        results.add(
            "daemon.idle_wakeups_per_s",
            "daemon wake-ups when idle",
            median(idle.idle_wakeups_per_s),
            "/s",
            "daemon.drain_wakeups_per_s",
            chunks,
            goal="no busy polling",
        )
    if any(r.exit_code != 0 for r in runs):
        results.notes.append(f"birdtrap run exit codes after SIGTERM: {[r.exit_code for r in runs]}")


# --- naive -------------------------------------------------------------------------------


def _daemon_top1(database: Path) -> dict[str, tuple[int, str, str | None]]:
    """path -> (top-1 label index, kind, label) as the daemon stored them."""
    with sqlite3.connect(database) as connection:
        query = "select i.path, p.label_index, i.kind, i.label from images i join predictions p on p.image_id = i.id where p.rank = 1"
        return {row[0]: row[1:] for row in connection.execute(query)}


def full_decode_agreement(results: Results, paths: list[Path], identifier: Identifier) -> None:
    """Does the daemon's shortcut change the answer? Top-1 from a full-size decode against the reduced one.

    The naive pipeline's own agreement mixes two things: the daemon's reduced decode and the
    naive non-local means (which changes the pixels the model sees, and is slow enough that it
    runs on two photos). Here both sides are the daemon's steps, in process, on each distinct
    photo of the backlog; only the decode differs.
    """
    full = replace(identifier.preprocess, reduced_decode=False)
    agree = 0
    for path in paths:
        data = read_photo_bytes(path)
        ours, every_pixel = (identifier.identify([decode(data, str(path), s)])[0] for s in (identifier.preprocess, full))
        agree += int(ours.prediction.best.label.index == every_pixel.prediction.best.label.index)
    results.add(
        "naive.full_decode_top1_agreement",
        "full-size decode top-1 = reduced decode top-1",
        agree / len(paths),
        "fraction",
        None,
        len(paths),
        note=f"{agree} of {len(paths)} photos; the daemon's steps otherwise, no denoise",
    )


def naive(
    results: Results,
    paths: list[Path],
    identifier: Identifier,
    folder: Path,
    daemon_database: Path,
    tile_megapixels: float | None,
) -> None:
    """The pipeline as first written: full decode, full-resolution non-local-means, a commit per photo.

    The float32 model of the issue is not in ../shared/models, so the same int8 model runs here:
    the naive figure is then a lower bound on the naive cost. With `tile_megapixels` the
    denoise runs on a centre tile of that size and its time is scaled to the whole photo.
    """
    settings = PreprocessSettings(reduced_decode=False, crop_info_bars=False, max_pixels=identifier.preprocess.max_pixels)
    sessions = store.open_store(f"sqlite:///{folder / 'naive.db'}")
    bundle = identifier.species.bundle
    with sessions.begin() as session:
        model_id = store.record_model(session, bundle.model_sha256, bundle.name, bundle.version, str(bundle.model_path))
    totals, parts, agree, same_decision = [], {"decode": [], "denoise": [], "infer": [], "commit": []}, 0, 0
    daemon_rows = _daemon_top1(daemon_database)
    for path in paths:
        began = time.perf_counter()
        data = read_photo_bytes(path)
        photo = decode(data, str(path), settings)
        metadata = read_metadata(data, path.stat().st_mtime)
        decoded_at = time.perf_counter()
        bgr = photo.bgr
        if tile_megapixels:
            height, width = bgr.shape[:2]
            side = int((tile_megapixels * 1e6) ** 0.5)
            top, left = (height - side) // 2, (width - side) // 2
            tile_began = time.perf_counter()
            denoised_tile = cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(bgr[top : top + side, left : left + side]))
            scaled = (time.perf_counter() - tile_began) * (height * width) / (side * side)
            bgr = bgr.copy()
            bgr[top : top + side, left : left + side] = denoised_tile
            denoise_s = scaled
        else:
            denoise_began = time.perf_counter()
            bgr = cv2.fastNlMeansDenoisingColored(bgr)
            denoise_s = time.perf_counter() - denoise_began
        infer_began = time.perf_counter()
        # The decision (what is stored) needs an Identification; identify() also runs the model.
        identification = identifier.identify([replace(photo, bgr=bgr)])[0]
        commit_began = time.perf_counter()
        with sessions.begin() as session:
            image_id = store.register_photo(session, str(path), f"{time.time_ns():064x}", len(data), 0.0, "naive").image_id
            store.record_result(session, image_id, to_result(identification, Decoded(photo, metadata), None), model_id)
        ended = time.perf_counter()
        parts["decode"].append(decoded_at - began)
        parts["denoise"].append(denoise_s)
        parts["infer"].append(commit_began - infer_began)
        parts["commit"].append(ended - commit_began)
        # With a tile, the tile's own time is swapped for its scaled estimate.
        totals.append(ended - began - (infer_began - decoded_at) + denoise_s)
        prediction = identification.prediction
        top1, kind, label = daemon_rows.get(str(path), (None, None, None))
        agree += int(top1 == prediction.best.label.index)
        same_decision += int((kind, label) == (identification.decision.kind, identification.decision.label))
    sessions.kw["bind"].dispose()
    n = len(paths)
    how = f"NLM on a {tile_megapixels} MP tile, scaled to the photo" if tile_megapixels else "NLM on the whole photo"
    results.add(
        "naive.per_photo",
        "naive pipeline per photo, 12mp",
        1000 * statistics.median(totals),
        "ms",
        "daemon.per_photo",
        n,
        goal="ratio >= 10",
        note=f"{how}; same int8 model (no float32 in shared/)",
    )
    results.add("naive.decode", "naive: full decode + EXIF", 1000 * statistics.median(parts["decode"]), "ms", "naive.per_photo", n)
    results.add(
        "naive.denoise",
        "naive: non-local means, full resolution",
        1000 * statistics.median(parts["denoise"]),
        "ms",
        "naive.per_photo",
        n,
        note=how,
    )
    results.add(
        "naive.infer",
        "naive: resize + invoke + decision",
        1000 * statistics.median(parts["infer"]),
        "ms",
        "naive.per_photo",
        n,
        note="from the full-size decode",
    )
    results.add("naive.commit", "naive: one commit per photo", 1000 * statistics.median(parts["commit"]), "ms", "naive.per_photo", n)
    results.add("naive.top1_agreement", "naive top-1 = daemon top-1", agree / n, "fraction", None, n, note=f"{agree} of {n} photos")
    results.add(
        "naive.decision_agreement",
        "naive decision = daemon decision",
        same_decision / n,
        "fraction",
        None,
        n,
        note=f"{same_decision} of {n}: kind and label stored",
    )


def finder_figures(results: Results, runs: list[DaemonRun]) -> None:
    """The same backlog with the shipped finder on (gate and detector models, region search): medians of the drains."""
    results.add(
        "daemon.finder_per_photo",
        f"daemon drain per photo, shipped finder, {runs[0].photos} x 12mp",
        1000 * statistics.median([r.drain_s / r.photos for r in runs]),
        "ms",
        "daemon.per_photo",
        len(runs),
        note="bird gate + COCO detector + region search on uncertain frames (camera-trap frames mostly are)",
    )
    results.add(
        "daemon.finder_peak_rss_mb",
        "daemon peak RSS (VmHWM), shipped finder",
        statistics.median([r.peak_rss_mb for r in runs]),
        "MB",
        "daemon.peak_rss_mb",
        len(runs),
        note="three models loaded",
    )
