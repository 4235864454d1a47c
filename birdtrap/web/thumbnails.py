"""Thumbnails made on the fly and cached on disk; nothing outside the configured folders is served.

Every path (from the database or from a request) is resolved, symlinks included, and must then
lie inside one of the folders the configuration names: watch, archive, empty, quarantine, and
the folder recorded uploads go to. A 12 MP original is decoded reduced (the JPEG decoder's DCT
scaling) and shrunk once; later requests read the small cached file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
import threading
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from birdtrap.config import Config
from birdtrap.errors import PhotoError
from birdtrap.identify.preprocess import read_photo_bytes
from birdtrap.identify.thumbnail import make_thumbnail, whole_frame
from birdtrap.web.problems import Problem
from birdtrap.web.settings import ServeSettings

log = logging.getLogger(__name__)

MIN_SIZE, MAX_SIZE = 32, 1024
JPEG_QUALITY = 80
PRUNE_EVERY = 64  # writes between two size checks of the cache folder
Box = tuple[float, float, float, float]


def allowed_folders(config: Config, upload_folder: Path) -> dict[str, Path]:
    """The folders photos may be served from, by the config key that names them, resolved."""
    folders = {
        "watch.folder": config.watch.folder,
        "after.archive_folder": config.after.archive_folder,
        "after.empty_folder": config.after.empty_folder,
        "after.quarantine_folder": config.after.quarantine_folder,
        "serve.upload_folder": upload_folder,
    }
    return {key: Path(path).resolve() for key, path in folders.items() if path is not None}


def default_cache_folder(config: Config) -> Path:
    """'thumbnails' beside the SQLite file (the state directory on a Pi), else the temp folder."""
    try:
        url = make_url(config.database.url)
    except ArgumentError:
        url = None
    if url is not None and url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).resolve().parent / "thumbnails"
    return Path(tempfile.gettempdir()) / "birdtrap-thumbnails"


class Thumbnails:
    """Checks paths against the allowed folders and makes, caches and prunes thumbnails."""

    def __init__(self, config: Config, settings: ServeSettings, upload_folder: Path) -> None:
        self.folders = allowed_folders(config, upload_folder)
        self.cache = (settings.thumbnail_cache or default_cache_folder(config)).resolve()
        self.max_bytes = int(settings.thumbnail_cache_mb * 1024 * 1024)
        # The daemon's bounds (max_pixels, aspect, side, file size): what it refuses is never decoded here.
        self.preprocess = config.preprocess.settings()
        self._writes = 0
        self._lock = threading.Lock()
        # A Pi Zero has 512 MB and 4 slow cores: decode at most two originals at a time.
        self._decoding = threading.BoundedSemaphore(2)

    def check(self, path: str | Path) -> Path:
        """The resolved path if it lies inside an allowed folder and is a file; else a problem.

        403 for anything outside (without saying whether it exists), 404 for a photo that has
        gone (moved or deleted since it was recorded).
        """
        candidate = Path(path)
        if not candidate.is_absolute():  # relative to the watch folder, never to the server's cwd
            candidate = self.folders["watch.folder"] / candidate
        try:
            resolved = candidate.resolve()
        except (OSError, RuntimeError, ValueError):
            raise Problem(
                403, "outside-folders", "the path cannot be resolved; only photos in the configured folders are served."
            ) from None
        if not any(resolved == folder or resolved.is_relative_to(folder) for folder in self.folders.values()):
            raise Problem(
                403,
                "outside-folders",
                f"{path} is outside the configured folders ({', '.join(self.folders)}); refused.",
            )
        # Every OSError about the file itself (gone, name too long for the file system, no
        # permission, an I/O error on the card) is the same answer: this photo cannot be served.
        # Path.is_file would raise some of them (ENAMETOOLONG) instead of answering False.
        try:
            info = resolved.stat()
            readable = os.access(resolved, os.R_OK)
        except OSError as e:
            raise Problem(404, "photo-missing", f"{path} cannot be read ({e.strerror or e}).") from None
        if not stat.S_ISREG(info.st_mode):
            raise Problem(404, "photo-missing", f"{path} is no longer there (moved or deleted after it was recorded).")
        if not readable:
            raise Problem(404, "photo-missing", f"{path} cannot be read (permission denied); let the server's user read it.")
        return resolved

    def thumbnail(self, path: str | Path, size: int, hide: tuple[Box, ...] = (), box: Box | None = None) -> Path:
        """A cached JPEG at most `size` pixels on its long side; made now if not cached yet.

        The `hide` boxes (people, identify/privacy.py) are filled. With `box` (0-1 of the frame
        the models saw), the thumbnail is cropped around the region that decided, with the box
        drawn, so a small bird is visible in a list (issue 18).
        """
        source = self.check(path)
        try:
            info = source.stat()
        except OSError as e:  # removed between the check and now
            raise Problem(404, "photo-missing", f"{path} cannot be read ({e.strerror or e}).") from None
        box = box if box is not None and not whole_frame(box) else None
        key = hashlib.sha256(f"{source}\0{info.st_size}\0{info.st_mtime_ns}\0{size}\0{box}\0{hide}".encode()).hexdigest()
        target = self.cache / key[:2] / f"{key}.jpg"
        if target.is_file():
            return target
        with self._decoding:
            if target.is_file():
                return target
            data = self._encode(source, size, hide, box)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".part")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, target)
        self._maybe_prune()
        return target

    def _encode(self, source: Path, size: int, hide: tuple[Box, ...] = (), box: Box | None = None) -> bytes:
        try:
            data = read_photo_bytes(source, self.preprocess.max_bytes)
            return make_thumbnail(data, str(source), size, self.preprocess, hide, box, JPEG_QUALITY)[0]
        except PhotoError as e:
            raise Problem(422, "unreadable-image", str(e)) from None
        except OSError as e:  # an I/O error while reading (a failing card)
            raise Problem(404, "photo-missing", f"{source} cannot be read ({e.strerror or e}).") from None

    def _maybe_prune(self) -> None:
        with self._lock:
            self._writes += 1
            if self._writes % PRUNE_EVERY != 1:
                return
        files = []
        for path in self.cache.glob("*/*.jpg"):
            try:
                info = path.stat()
            except OSError:  # pruned by another thread meanwhile
                continue
            files.append((info.st_mtime, info.st_size, path))
        total = sum(size for _, size, _ in files)
        if total <= self.max_bytes:
            return
        for _, size, path in sorted(files):  # oldest first, down to 80 % of the limit
            path.unlink(missing_ok=True)
            total -= size
            if total <= 0.8 * self.max_bytes:
                break
        log.info("thumbnail cache pruned to %.0f MB", total / 1e6)
