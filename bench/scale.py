"""Beyond one device, measured: archive mode on Dask against the daemon, and sync into PostgreSQL.

    python -m bench.scale                  # ~5 minutes on 2 cores: 200 photos of 12 MP, 20,000 rows synced
    python -m bench.scale --photos 60 --sync-photos 2000          # ~1.5 minutes
    python -m bench.scale --only sync --photos 20                  # the sync figures alone (~1 minute)

Figures (each beside its baseline from the same run; docs/SCALE.md reads them):
- daemon.photos_per_s: `birdtrap run` draining a backlog of N photos (first registration to last commit; the
  model load is left out, as for archive's figures), single process;
- archive.<w>w.photos_per_s: `birdtrap archive` on a LocalCluster of w worker processes, from the
  first registration to the last commit, and wall (cluster start and model loads included);
  ratio = archive / daemon; cpu_s_per_photo (all processes, start-up included) and its ratio
  are the figures to trust when other work shares the machine (loadavg_* say how much);
- sync.photos_per_s and sync.rows_per_s (photos + predictions + events) pushed into a local
  PostgreSQL in batches of 500, through a relay that counts the bytes on the wire;
- sizes: device SQLite and central PostgreSQL bytes per photo, sync bytes per photo, thumbnail
  bytes per photo.

Photos are the real camera-trap JPEGs of ../shared/images resized to 12 MP with their EXIF block,
each copy made unique by a JPEG comment (its own sha256), in a temporary folder deleted afterwards.
PostgreSQL is a throwaway cluster (initdb + pg_ctl, as the `postgres` user when run as root).
Prints JSON naming the machine; writes it to bench/out/scale.json too.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import pwd
import re
import resource
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
SIZE = (4000, 3000)


# --- photos -------------------------------------------------------------------------------


def _exif_segment(data: bytes) -> bytes | None:
    offset = 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker, length = data[offset + 1], struct.unpack(">H", data[offset + 2 : offset + 4])[0]
        if marker == 0xE1 and data[offset + 4 : offset + 10] == b"Exif\x00\x00":
            return data[offset : offset + 2 + length]
        if not 0xE0 <= marker <= 0xEF:
            return None
        offset += 2 + length
    return None


def make_photos(shared: Path, folder: Path, count: int) -> list[Path]:
    """`count` unique 12 MP JPEGs with their source's EXIF (old files: settled for the daemon at once).

    They come in bursts of three frames of one source, a second apart (the EXIF times are
    rewritten), a minute between bursts: events and motion proposals then do not depend on the
    order the daemon or the workers take the files in.
    """
    sources = sorted(p for p in (shared / "images").glob("camtrap_*/*") if p.suffix.lower() in (".jpg", ".jpeg"))
    encoded = []
    for source in sources:
        original = source.read_bytes()
        bgr = cv2.imdecode(np.frombuffer(original, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if bgr is None:
            continue
        ok, data = cv2.imencode(".jpg", cv2.resize(bgr, SIZE, interpolation=cv2.INTER_CUBIC), [cv2.IMWRITE_JPEG_QUALITY, 92])
        encoded.append((data.tobytes(), _exif_segment(original)))
    folder.mkdir(parents=True, exist_ok=True)
    start = datetime(2024, 5, 1, 6, 0, 0)
    paths = []
    for index in range(count):
        data, exif = encoded[(index // 3) % len(encoded)]
        taken = start + timedelta(seconds=60 * (index // 3) + index % 3)
        when = taken.strftime("%Y:%m:%d %H:%M:%S").encode()
        tag = f"birdtrap-scale {index} {time.time_ns()}".encode()
        header = b"\xff\xfe" + struct.pack(">H", len(tag) + 2) + tag
        if exif:
            header = re.sub(rb"\d{4}:\d{2}:\d{2} \d{2}:\d{2}:\d{2}", when, exif) + header
        path = folder / f"IMG_{index:05d}.JPG"
        path.write_bytes(data[:2] + header + data[2:])
        os.utime(path, (taken.timestamp(), taken.timestamp()))  # the capture time of photos without EXIF
        paths.append(path)
    return paths


def write_config(folder: Path, shared: Path, threads: int, database: str = "sqlite:///birdtrap.db") -> Path:
    models = shared / "models"
    data = {
        "watch": {"folder": "inbox", "settle_seconds": 0.5},
        "model": {"path": str(models / "inat_birds" / "model.tflite"), "delegate": "cpu", "threads": threads},
        "gate": {"path": str(models / "imagenet_mobilenet_v2" / "model.tflite")},
        "detector": {"path": str(models / "coco_ssd_mobilenet_v1" / "model.tflite")},
        "database": {"url": database},
        "camera": {"id": "bench-cam", "deployment_id": "bench", "latitude": 51.05, "longitude": 3.72, "utc_offset": "+02:00"},
        "logging": {"level": "WARNING"},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def processed_span(database: Path) -> tuple[int, float]:
    """(photos, seconds from the first registration to the last commit): the models are loaded
    by then, so the daemon and archive mode are compared on the work alone."""
    with sqlite3.connect(database) as connection:
        count, first, last = connection.execute(
            "select count(*), min(discovered_at), max(processed_at) from images where status in ('done', 'failed')"
        ).fetchone()
    return count, (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()


# --- the daemon and archive mode ---------------------------------------------------------------


def bench_daemon(work: Path, shared: Path, photos: list[Path], threads: int) -> dict[str, Any]:
    folder = work / "daemon"
    (folder / "inbox").mkdir(parents=True)
    for path in photos:
        os.link(path, folder / "inbox" / path.name)
    config = write_config(folder, shared, threads)
    environment = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "birdtrap", "run", "-c", str(config)], cwd=folder, env=environment, stderr=subprocess.DEVNULL
    )
    database = folder / "birdtrap.db"
    try:
        while True:
            time.sleep(0.5)
            if process.poll() is not None:
                raise SystemExit(f"the daemon exited with {process.returncode}")
            with contextlib.suppress(sqlite3.Error):
                with sqlite3.connect(database) as connection:
                    (finished,) = connection.execute("select count(*) from images where status in ('done', 'failed')").fetchone()
                if finished >= len(photos):
                    break
        wall = time.monotonic() - started
        cpu = _cpu_seconds(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    count, span = processed_span(database)
    steady = count / span if span else 0.0
    return {
        "daemon.photos_per_s": round(steady, 2),
        "daemon.wall_photos_per_s": round(len(photos) / wall, 2),
        "daemon.cpu_s_per_photo": round(cpu / len(photos), 3),
        "daemon.model_threads": threads,
        "daemon.loadavg_1m_after": round(os.getloadavg()[0], 2),
        "device.sqlite_bytes_per_photo": round(_sqlite_size(database) / count),
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _process_tree_cpu() -> float:
    """CPU-seconds of this process and its reaped children: robust to other load on the machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _sqlite_size(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        connection.execute("pragma wal_checkpoint(truncate)")
    return database.stat().st_size


def bench_archive(work: Path, shared: Path, photos: list[Path], workers: int, threads: int) -> dict[str, Any]:
    from birdtrap import config as config_module
    from birdtrap.scale.archive import run_archive

    folder = work / f"archive-{workers}"
    (folder / "inbox").mkdir(parents=True)
    config = config_module.load(write_config(folder, shared, threads))
    before = _process_tree_cpu()
    summary = run_archive(config, [photos[0].parent], workers=workers, progress=False)
    cpu = _process_tree_cpu() - before  # the workers are this process's children, reaped at cluster close
    count, span = processed_span(folder / "birdtrap.db")
    key = f"archive.{workers}w"
    return {
        f"{key}.cpu_s_per_photo": round(cpu / len(photos), 3),
        f"{key}.loadavg_1m_after": round(os.getloadavg()[0], 2),
        f"{key}.photos_per_s": round(count / span, 2) if span else 0.0,
        f"{key}.wall_photos_per_s": round(summary.photos_per_second, 2),
        f"{key}.model_threads": threads,
        f"{key}.failed": summary.failed,
        "_database": str(folder / "birdtrap.db"),
    }


# --- PostgreSQL and sync -----------------------------------------------------------------------


class TemporaryPostgres:
    """initdb + pg_ctl on a free loopback port in a temporary folder (as `postgres` when root)."""

    def __init__(self) -> None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        initdb = found[-1] if found else (Path(shutil.which("initdb")) if shutil.which("initdb") else None)
        if initdb is None:
            raise SystemExit("PostgreSQL is not installed (apt-get install postgresql); the sync figures need it")
        self.bin = initdb.parent
        self.folder = Path(tempfile.mkdtemp(prefix="birdtrap-bench-pg-"))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.prefix = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.folder, account.pw_uid, account.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]

    def __enter__(self) -> TemporaryPostgres:
        data = str(self.folder / "data")
        subprocess.run(
            [*self.prefix, str(self.bin / "initdb"), "-D", data, "-A", "trust", "-U", "birdtrap", "--no-sync"],
            check=True,
            capture_output=True,
        )
        # Durable settings (fsync on): the figure is what a real central server would do.
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        command = [str(self.bin / "pg_ctl"), "-D", data, "-l", str(self.folder / "log"), "-o", options, "-w", "start"]
        subprocess.run([*self.prefix, *command], check=True, capture_output=True)
        return self

    def __exit__(self, *_: object) -> None:
        subprocess.run([*self.prefix, str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, port: int | None = None) -> str:
        return f"postgresql+psycopg://birdtrap@127.0.0.1:{port or self.port}/postgres"


class CountingRelay:
    """A TCP relay that counts the bytes each way: what sync costs on a 4G link."""

    def __init__(self, port: int) -> None:
        self.target, self.sent, self.received = port, 0, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, up: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if up:
                    self.sent += len(data)
                else:
                    self.received += len(data)
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite format: text order is time order


def grow_device(real: Path, target: Path, photos: int) -> Path:
    """A device database of `photos` done photos: the real rows copied with new content ids,
    a photo every 30 s in bursts of three, so events and predictions look like the field's."""
    shutil.copyfile(real, target)
    with sqlite3.connect(target) as db:
        columns = [row[1] for row in db.execute("pragma table_info(images)") if row[1] not in ("id", "event_id")]
        real_rows = db.execute(f"select id, {', '.join(columns)} from images where status = 'done'").fetchall()
        db.execute("delete from predictions")
        db.execute("update images set event_id = null")
        db.execute("delete from events")
        db.execute("delete from images")
        start = datetime(2024, 5, 1, 5, 0, 0)
        sources = [dict(zip(["id", *columns], row, strict=True)) for row in real_rows]
        ranked = {}
        with sqlite3.connect(real) as original:
            for source in sources:
                ranked[source["id"]] = original.execute(
                    "select rank, label_index, label, scientific_name, common_name, confidence from predictions where image_id = ?",
                    (source["id"],),
                ).fetchall()
        event_id = 0
        for index in range(photos):
            source = dict(sources[index % len(sources)])
            when = start + timedelta(seconds=30 * (index // 3) + 2 * (index % 3))
            if index % 3 == 0:
                event_id += 1
                db.execute(
                    "insert into events (id, camera_id, deployment_id, start, \"end\", photo_count, bird_photo_count, kind, label, "
                    "scientific_name, common_name, taxon_rank, confidence) values (?, ?, ?, ?, ?, 3, 1, ?, ?, ?, ?, ?, ?)",
                    (event_id, source["camera_id"], source["deployment_id"], stamp(when), stamp(when + timedelta(seconds=4)),
                     source["kind"], source["label"], source["scientific_name"], source["common_name"], source["taxon_rank"],
                     source["confidence"]),
                )  # fmt: skip
            source.update(
                path=f"/srv/birdtrap/inbox/DCIM/{index // 1000:03d}MEDIA/IMG_{index:07d}.JPG",
                sha256=hashlib.sha256(f"scale {index}".encode()).hexdigest(),
                captured_at=stamp(when),
                processed_at=stamp(when + timedelta(seconds=1)),
                sync_seq=index + 1,  # the device's own sequence (store/fleet.py), as the daemon gives it
            )
            cursor = db.execute(
                f"insert into images ({', '.join(columns)}, event_id) values ({', '.join('?' * len(columns))}, ?)",
                [source[c] for c in columns] + [event_id],
            )
            db.executemany(
                "insert into predictions (image_id, rank, label_index, label, scientific_name, common_name, confidence) "
                "values (?, ?, ?, ?, ?, ?, ?)",
                [(cursor.lastrowid, *p) for p in ranked[source["id"]]],
            )
    return target


def bench_sync(work: Path, device_database: Path, photos: int, config_path: Path, sample: list[Path]) -> dict[str, Any]:
    from sqlalchemy import create_engine, text

    from birdtrap import config as config_module
    from birdtrap.scale.sync import make_thumbnail, push

    device = grow_device(device_database, work / "device.db", photos)
    config = config_module.load(config_path).model_copy(deep=True)
    config = config.model_copy(update={"database": config.database.model_copy(update={"url": f"sqlite:///{device}"})})
    results: dict[str, Any] = {"sync.photos": photos, "device.sqlite_bytes_per_photo_synthetic": round(_sqlite_size(device) / photos)}
    with TemporaryPostgres() as server:
        relay = CountingRelay(server.port)
        summary = push(config, server.url(relay.port), batch_size=500)
        before = relay.sent + relay.received
        again = push(config, server.url(relay.port), batch_size=500)  # the timer's run with nothing new
        idle_bytes = relay.sent + relay.received - before
        engine = create_engine(server.url())
        with engine.connect() as connection:
            sizes = dict(
                connection.execute(
                    text(
                        "select relname, pg_total_relation_size(c.oid) from pg_class c where relname in ('images', 'predictions', 'events')"
                    )
                ).all()
            )
        engine.dispose()
    rows = summary.images + summary.predictions + summary.events
    results.update(
        {
            "sync.photos_per_s": round(summary.images / summary.seconds, 1),
            "sync.rows_per_s": round(rows / summary.seconds, 1),
            "sync.rows_per_photo": round(rows / summary.images, 2),
            "sync.bytes_sent_per_photo": round(relay.sent / (summary.images + again.images)),
            "sync.bytes_received_per_photo": round(relay.received / (summary.images + again.images)),
            "sync.idle_run_s": round(again.seconds, 2),
            "sync.idle_run_photos": again.images,  # by the device's sequence: 0
            "sync.idle_run_bytes": idle_bytes,  # identity, schema and review checks, the device's status row
            "central.bytes_per_photo": round(sum(sizes.values()) / photos),
            "central.bytes_per_photo_by_table": {name: round(size / photos) for name, size in sizes.items()},
        }
    )
    started = time.monotonic()
    thumbnails = [make_thumbnail(path) for path in sample]
    results["thumbnail.bytes_per_photo"] = round(sum(len(t[0]) for t in thumbnails) / len(thumbnails))
    results["thumbnail.ms_per_photo"] = round(1000 * (time.monotonic() - started) / len(thumbnails), 1)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=200, help="12 MP photos classified by the daemon and by archive mode [200]")
    parser.add_argument("--sync-photos", type=int, default=20_000, help="photos in the device database that sync pushes [20000]")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="the shared photos and models [../shared]")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "scale.json", help="JSON output [bench/out/scale.json]")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--only", choices=("all", "sync"), default="all", help="sync: fill the device by an archive run, measure sync alone [all]"
    )
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="birdtrap-scale-"))
    results: dict[str, Any] = {
        "machine": platform.machine(),
        "cpus": cores,
        "python": platform.python_version(),
        "when": datetime.now().isoformat(timespec="seconds"),
        "photos": args.photos,
        "photo_size": f"{SIZE[0]}x{SIZE[1]}",
        "loadavg_1m_before": round(os.getloadavg()[0], 2),  # other work on the machine skews the wall-clock figures
    }
    try:
        photos = make_photos(args.shared, work / "photos", args.photos)
        if args.only == "sync":  # the device's real rows come from an archive run; its speed is not reported
            filled = bench_archive(work, args.shared, photos, workers=1, threads=2)
            results.update(bench_sync(work, Path(filled["_database"]), args.sync_photos, work / "archive-1" / "config.yaml", photos[:20]))
            return _write(results, args.out)
        results.update(bench_daemon(work, args.shared, photos, threads=2))
        results.update(bench_archive(work, args.shared, photos, workers=1, threads=2))
        two = bench_archive(work, args.shared, photos, workers=2, threads=max(1, cores // 2))
        device_database = Path(two.pop("_database"))
        results.pop("_database", None)
        results.update(two)
        for workers in (1, 2):
            key = f"archive.{workers}w"
            results[f"{key}.ratio_to_daemon"] = round(results[f"{key}.photos_per_s"] / results["daemon.photos_per_s"], 2)
            results[f"{key}.cpu_ratio_to_daemon"] = round(results[f"{key}.cpu_s_per_photo"] / results["daemon.cpu_s_per_photo"], 2)
        results.update(bench_sync(work, device_database, args.sync_photos, work / "archive-2" / "config.yaml", photos[:20]))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    _write(results, args.out)


def _write(results: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
