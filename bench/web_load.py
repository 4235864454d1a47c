"""`python -m bench.web_load`: a bounded loopback load on `birdtrap serve`, requests/s and p99.

    python -m bench.web_load                 # about a minute on 2 cores, ~4,000 requests
    python -m bench.web_load --quick         # a few seconds, a few hundred requests

Builds a site in a temporary folder (the real daemon fills a database from ../shared/images,
then --extra-sightings synthetic rows copy those so the query has a realistic table to search),
starts the real server in its own process (so client and server do not share one GIL), and
measures from loopback: the sightings query, a cached thumbnail, classify of a photo the server
has answered before (cached), and classify of photos it has never seen (uncached: the model runs).
Prints a table and one JSON object naming the machine. Stops by itself; nothing is left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODELS = SHARED / "models"
TOKEN = "bench-token-bench-token"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.web_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few hundred requests (smoke)")
    parser.add_argument("--sightings", type=int, help="GET /api/v1/sightings requests [2000; quick 200]")
    parser.add_argument("--thumbnails", type=int, help="cached thumbnail requests [1000; quick 100]")
    parser.add_argument("--cached", type=int, help="POST /classify of an answered photo [800; quick 80]")
    parser.add_argument("--uncached", type=int, help="POST /classify of new photos [120; quick 12]")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads for the cheap requests [8]")
    parser.add_argument("--classify-concurrency", type=int, default=2, help="client threads for uncached classify [2]")
    parser.add_argument("--extra-sightings", type=int, help="synthetic sightings added to the table [5000; quick 500]")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "sightings": (2000, 200),
        "thumbnails": (1000, 100),
        "cached": (800, 80),
        "uncached": (120, 12),
        "extra_sightings": (5000, 500),
    }
    for name, (full, small) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    return args


# --- the site --------------------------------------------------------------------------------


def write_config(folder: Path) -> Path:
    (folder / "inbox").mkdir(parents=True)
    config = {
        "watch": {"folder": "inbox", "settle_seconds": 0.3, "rescan_seconds": 60},
        "model": {"path": str(MODELS / "inat_birds" / "model.tflite"), "delegate": "cpu"},
        "gate": {"path": str(MODELS / "imagenet_mobilenet_v2" / "model.tflite")},
        "detector": {"path": str(MODELS / "coco_ssd_mobilenet_v1" / "model.tflite")},
        "database": {"url": "sqlite:///birdtrap.db"},
        "batch": {"size": 8, "max_wait_seconds": 0.3},
        "logging": {"level": "WARNING"},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fill(folder: Path, config: Path) -> int:
    """The real daemon processes the shared camera-trap photos; returns how many it stored."""
    photos = [p for sub in ("camtrap_heron", "camtrap_owls", "camtrap_nonbird") for p in sorted((SHARED / "images" / sub).iterdir())]
    for path in photos:
        shutil.copyfile(path, folder / "inbox" / path.name)
    daemon = subprocess.Popen([sys.executable, "-m", "birdtrap", "run", "--config", str(config)], cwd=folder, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if _count(folder / "birdtrap.db", "select count(*) from images where status in ('done', 'failed')") >= len(photos):
                break
            time.sleep(0.5)
        else:
            raise SystemExit("the daemon did not process the photos within 5 minutes")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    return len(photos)


def _count(database: Path, query: str) -> int:
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(database, timeout=10) as connection:
            return int(connection.execute(query).fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def add_synthetic_sightings(database: Path, count: int) -> None:
    """Copies of the real bird rows (new path, sha256, capture time) so the query searches a season."""
    with sqlite3.connect(database) as connection:
        columns = [row[1] for row in connection.execute("pragma table_info(images)") if row[1] != "id"]
        birds = connection.execute(f"select {', '.join(columns)} from images where kind = 'bird'").fetchall()
        if not birds or count <= 0:
            return
        index = {name: i for i, name in enumerate(columns)}
        start = datetime(2024, 4, 1, 5, 0)
        rows = []
        for n in range(count):
            row = list(birds[n % len(birds)])
            row[index["path"]] = f"/synthetic/{n:06d}.jpg"
            row[index["sha256"]] = f"{n:064x}"
            row[index["captured_at"]] = (start + timedelta(minutes=7 * n)).isoformat(sep=" ")
            row[index["event_id"]] = None
            row[index["duplicate_of"]] = None
            rows.append(row)
        marks = ", ".join("?" for _ in columns)
        connection.executemany(f"insert into images ({', '.join(columns)}) values ({marks})", rows)


# --- the server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(folder: Path, config: Path, port: int) -> subprocess.Popen:
    # Through the `serve` command itself, whether or not cli.py registers it yet.
    code = "from birdtrap.cli.web import serve; serve()"
    command = [sys.executable, "-c", code, "--config", str(config), "--port", str(port), "--token", TOKEN]
    server = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5).json()["status"] == "ok":
                return server
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        if server.poll() is not None:
            raise SystemExit("the server exited at start")
        time.sleep(0.3)
    server.kill()
    raise SystemExit("the server did not become ready within 2 minutes")


# --- the load --------------------------------------------------------------------------------


def run_load(base: str, total: int, concurrency: int, request: Callable[[httpx.Client, int], httpx.Response]) -> dict:
    """`total` requests from `concurrency` keep-alive clients; returns rate and latency figures."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        nonlocal errors
        with httpx.Client(base_url=base, timeout=120) as client:
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                started = time.perf_counter()
                try:
                    ok = request(client, n).status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    errors += not ok

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": total,
        "concurrency": concurrency,
        "errors": errors,
        "requests_per_s": round(total / wall, 1),
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
    }


def variants(count: int) -> list[bytes]:
    """Distinct JPEGs (a few pixels differ) of one camera-trap photo: each is new to the server."""
    base = cv2.imread(str(SHARED / "images" / "camtrap_owls" / "IMG_1435.JPG"))
    base = cv2.resize(base, (1280, int(base.shape[0] * 1280 / base.shape[1])), interpolation=cv2.INTER_AREA)
    out = []
    for n in range(count):
        image = base.copy()
        image[:8, :8] = np.random.default_rng(n).integers(0, 256, (8, 8, 3), dtype=np.uint8)  # one noisy JPEG block
        out.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="birdtrap-web-load-"))
    server = None
    try:
        config = write_config(folder)
        photos = fill(folder, config)
        add_synthetic_sightings(folder / "birdtrap.db", args.extra_sightings)
        port = free_port()
        server = start_server(folder, config, port)
        base = f"http://127.0.0.1:{port}"
        total_rows = _count(folder / "birdtrap.db", "select count(*) from images where kind = 'bird'")
        first_bird = httpx.get(f"{base}/api/v1/sightings", params={"limit": 1, "until": "2023-01-01"}).json()["items"][0]["id"]
        photo = (SHARED / "images" / "camtrap_owls" / "IMG_1435.JPG").read_bytes()
        httpx.post(f"{base}/api/v1/classify", files={"files": ("owl.jpg", photo)}, timeout=120)  # now cached
        httpx.get(f"{base}/api/v1/photos/{first_bird}/thumbnail", timeout=60)  # now cached
        new_photos = variants(args.uncached)
        conc = args.concurrency
        owls = {"species": "athene", "limit": 50}
        thumbnail = f"/api/v1/photos/{first_bird}/thumbnail"
        figures = {
            "sightings": run_load(base, args.sightings, conc, lambda c, n: c.get("/api/v1/sightings", params={"limit": 50})),
            "sightings_species_filter": run_load(base, args.sightings // 2, conc, lambda c, n: c.get("/api/v1/sightings", params=owls)),
            "thumbnail_cached": run_load(base, args.thumbnails, conc, lambda c, n: c.get(thumbnail)),
            "classify_cached": run_load(base, args.cached, conc, lambda c, n: c.post("/api/v1/classify", files={"files": ("o", photo)})),
            "classify_uncached": run_load(
                base,
                args.uncached,
                args.classify_concurrency,
                lambda c, n: c.post("/api/v1/classify", files={"files": (f"new-{n}.jpg", new_photos[n])}),
            ),
        }
        metrics = httpx.get(f"{base}/metrics").text
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(folder, ignore_errors=True)
    invokes = [line for line in metrics.splitlines() if line.startswith("birdtrap_model_invokes_total")]
    report = {
        "bench": "web_load",
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "when": datetime.now().isoformat(timespec="seconds"),
        "site": {"real_photos": photos, "bird_rows": total_rows, "uncached_photo": "1280x960 JPEG"},
        "figures": figures,
        "server_invokes": invokes,
    }
    print(f"{'figure':26} {'requests':>8} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for name, f in figures.items():
        rate, p50, p99 = f["requests_per_s"], f["p50_ms"], f["p99_ms"]
        print(f"{name:26} {f['requests']:8d} {f['concurrency']:4d} {rate:8.1f} {p50:8.1f} {p99:8.1f} {f['errors']:6d}")
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if any(f["errors"] for f in figures.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
