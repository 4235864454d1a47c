"""Helpers shared by the tests: real photos and models from ../shared, a config, the database."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IMAGES = SHARED / "images"
MODELS = SHARED / "models"
INAT = MODELS / "inat_birds"
HERON = sorted((IMAGES / "camtrap_heron").glob("*.JPG"))

if not SHARED.is_dir():
    pytest.exit(f"the shared folder {SHARED} (photos and models) must sit beside the repository", returncode=2)


def photo(name: str) -> Path:
    """A real photo from ../shared/images by folder/name or by name alone."""
    direct = IMAGES / name
    if direct.exists():
        return direct
    matches = list(IMAGES.glob(f"*/{name}"))
    assert matches, f"no shared photo named {name}"
    return matches[0]


def copy_photo(name: str, folder: Path, as_name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (as_name or Path(name).name)
    shutil.copyfile(photo(name), target)
    return target


def write_config(tmp_path: Path, **sections: dict) -> Path:
    """A config file in tmp_path with the real iNat model, an inbox and a database there."""
    (tmp_path / "inbox").mkdir(exist_ok=True)
    data: dict = {
        "watch": {"folder": "inbox", "settle_seconds": 0.3, "rescan_seconds": 30},
        "model": {"path": str(INAT / "model.tflite"), "delegate": "cpu"},
        "gate": {"path": str(MODELS / "imagenet_mobilenet_v2" / "model.tflite")},
        "detector": {"path": str(MODELS / "coco_ssd_mobilenet_v1" / "model.tflite")},
        "database": {"url": "sqlite:///birdtrap.db"},
        "batch": {"size": 4, "max_wait_seconds": 0.3},
        "logging": {"level": "INFO", "progress_seconds": 1},
    }
    for key, values in sections.items():
        data.setdefault(key, {}).update(values)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def rows(tmp_path: Path, query: str = "select path, status, kind, label, confidence, error from images order by id") -> list[tuple]:
    database = tmp_path / "birdtrap.db"
    if not database.exists():
        return []
    with sqlite3.connect(database, timeout=10) as connection:
        try:
            return list(connection.execute(query))
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):  # the daemon is still creating the schema
                return []
            raise


def sightings(tmp_path: Path) -> list[tuple]:
    return rows(tmp_path, "select path, scientific_name, confidence from images where kind = 'bird' order by id")


def wait_for(condition, timeout: float = 60.0, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def birdtrap_command() -> list[str]:
    return [sys.executable, "-m", "birdtrap"]


class DaemonProcess:
    """`birdtrap run` as a real subprocess, its stderr captured to a file."""

    def __init__(self, config: Path, env: dict | None = None, extra_args: list[str] | None = None) -> None:
        self.config = config
        self.log = config.parent / f"daemon-{time.monotonic_ns()}.log"
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        environment.pop("JOURNAL_STREAM", None)
        self.handle = self.log.open("w")
        self.process = subprocess.Popen(
            [*birdtrap_command(), "run", "--config", str(config), *(extra_args or [])],
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=config.parent,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = 15, timeout: float = 30) -> int:
        if self.alive():
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self.handle.close()


@pytest.fixture
def daemon_factory():
    started: list[DaemonProcess] = []

    def start(config: Path, env: dict | None = None) -> DaemonProcess:
        daemon = DaemonProcess(config, env)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.alive():
            daemon.process.kill()
            daemon.process.wait()
        daemon.handle.close()


def bird_variants(folder: Path, count: int, start: float, step_seconds: float, prefix: str = "bird") -> list[Path]:
    """`count` distinct PNGs of the real chickadee close-up (one pixel differs, so each has its
    own sha256), their file times `step_seconds` apart from `start` (their capture time: PNGs
    have no EXIF). Real pixels, so the real models decide them."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    source = Image.open(photo("bird.bmp")).convert("RGB")
    paths = []
    for i in range(count):
        variant = source.copy()
        variant.putpixel((0, 0), (i % 256, (i // 256) % 256, 7))
        variant.putpixel((1, 0), (sum(map(ord, prefix)) % 256, len(prefix), 7))  # another prefix, other bytes
        path = folder / f"{prefix}-{i:03d}.png"
        variant.save(path)
        os.utime(path, (start + i * step_seconds, start + i * step_seconds))
        paths.append(path)
    return paths
