"""Bench photos: the real camera-trap JPEGs of ../shared/images, upscaled to camera sizes.

The shared photos are 2-12 MP; the traps in the field write 12-20 MP. Each source is cropped
to 4:3, resized to 3, 12 and 20 MP, encoded once, and given its source's EXIF block so EXIF
parsing costs what it costs on a camera file. Every copy then gets a JPEG comment segment with a
unique text: its own sha256 (the daemon would otherwise record copies as duplicates and skip
them) for the price of a byte splice instead of a re-encode per file. Nothing here is ever
written inside the repository.
"""

from __future__ import annotations

import os
import re
import struct
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

SIZES: dict[str, tuple[int, int]] = {"3mp": (2048, 1536), "12mp": (4000, 3000), "20mp": (5472, 3648)}
SOURCE_FOLDERS = ("camtrap_heron", "camtrap_owls", "camtrap_nonbird", "real")
JPEG_QUALITY = 92


@dataclass(frozen=True)
class BenchPhoto:
    """One encoded bench photo: where it came from, its pixel size and its bytes."""

    source: Path
    size: str
    width: int
    height: int
    data: bytes


def source_photos(shared: Path, count: int) -> list[Path]:
    """Up to `count` real JPEGs, taken in turn from each folder so a few already mix day, night and scenes."""
    folders = [sorted(p for p in (shared / "images" / name).glob("*") if p.suffix.lower() in (".jpg", ".jpeg")) for name in SOURCE_FOLDERS]
    chosen: list[Path] = []
    while len(chosen) < count and any(folders):
        for folder in folders:
            if folder and len(chosen) < count:
                chosen.append(folder.pop(0))
    if not chosen:
        raise SystemExit(f"no JPEG photos under {shared / 'images'}; the shared folder must sit beside the repository")
    return chosen


def _segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of the header segments before the first non-APP/COM marker."""
    found = []
    offset = 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        length = struct.unpack(">H", data[offset + 2 : offset + 4])[0]
        found.append((marker, offset, offset + 2 + length))
        if not (0xE0 <= marker <= 0xEF or marker == 0xFE):
            break
        offset += 2 + length
    return found


def _after_app_segments(data: bytes) -> int:
    for marker, start, _end in _segments(data):
        if not (0xE0 <= marker <= 0xEF or marker == 0xFE):
            return start
    return 2


def exif_segment(data: bytes) -> bytes | None:
    """The APP1 Exif segment of a JPEG (marker and length included), if it has one."""
    for marker, start, end in _segments(data):
        if marker == 0xE1 and data[start + 4 : start + 10] == b"Exif\x00\x00":
            return data[start:end]
    return None


def insert_segment(data: bytes, segment: bytes) -> bytes:
    """Insert a header segment after the APP segments, where decoders expect extra metadata."""
    at = _after_app_segments(data)
    return data[:at] + segment + data[at:]


def comment_segment(text: str) -> bytes:
    payload = text.encode("ascii")
    return b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload


def render(source: Path, size: str) -> BenchPhoto:
    """The source cropped to 4:3 and resized to `size`, JPEG-encoded with the source's EXIF."""
    original = source.read_bytes()
    # Orientation is left to the EXIF tag copied below, as the camera left it.
    bgr = cv2.imdecode(np.frombuffer(original, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        raise SystemExit(f"{source} could not be decoded to build bench photos")
    width, height = SIZES[size]
    h, w = bgr.shape[:2]
    if w * height > h * width:
        keep = h * width // height
        bgr = bgr[:, (w - keep) // 2 : (w - keep) // 2 + keep]
    else:
        keep = w * height // width
        bgr = bgr[(h - keep) // 2 : (h - keep) // 2 + keep]
    grow = width > bgr.shape[1]
    resized = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_CUBIC if grow else cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise SystemExit(f"could not encode a {size} copy of {source}")
    data = encoded.tobytes()
    exif = exif_segment(original)
    if exif is not None:
        data = insert_segment(data, exif)
    return BenchPhoto(source, size, width, height, data)


def unique(photo: BenchPhoto, tag: str) -> bytes:
    """The photo's bytes with a comment naming `tag`: same pixels, its own sha256."""
    return insert_segment(photo.data, comment_segment(f"birdtrap-bench {tag} {time.time_ns()}"))


_EXIF_TIME = re.compile(rb"\d{4}:\d{2}:\d{2} \d{2}:\d{2}:\d{2}")
BACKLOG_START = datetime(2024, 5, 1, 6, 0, 0)
BURST = 5


def with_capture_time(data: bytes, when: datetime) -> bytes:
    """The photo with every EXIF date-time replaced by `when` (same length, so no offset moves)."""
    segment = exif_segment(data)
    if segment is None:
        return data
    stamped = _EXIF_TIME.sub(when.strftime("%Y:%m:%d %H:%M:%S").encode(), segment)
    return data.replace(segment, stamped, 1)


def write_backlog(folder: Path, photos: list[BenchPhoto], count: int) -> list[Path]:
    """Write `count` unique photos into `folder`, a burst of each of `photos` in turn, dated an hour ago.

    An hour-old mtime means the daemon treats them as settled at start-up, so the run measures
    the drain, not the settle wait. Capture times are rewritten into bursts of five frames a
    second apart, seven minutes between bursts, like a trap on a busy day: copies sharing their
    source's time would make one event of hundreds of frames, which no camera produces.
    """
    folder.mkdir(parents=True, exist_ok=True)
    old = time.time() - 3600 - count
    paths = []
    for index in range(count):
        path = folder / f"backlog-{index:05d}.jpg"
        when = BACKLOG_START + timedelta(minutes=7 * (index // BURST), seconds=index % BURST)
        path.write_bytes(with_capture_time(unique(photos[(index // BURST) % len(photos)], f"backlog {index}"), when))
        os.utime(path, (old + index, old + index))
        paths.append(path)
    return paths


def bound_sample(backlog: list[Path], sources: int, at_least: int) -> list[Path]:
    """The first frame of each burst, for whole rounds of the sources: each source weighs as in the backlog.

    The sources do not decode alike (a 12 MP owl frame takes 1.6x a heron frame's time), so a
    bound over the first few backlog files, two sources' bursts, would not be the bound of the
    backlog the daemon drains.
    """
    firsts = backlog[::BURST]
    rounds = max(1, -(-at_least // sources))
    return firsts[: rounds * sources]
