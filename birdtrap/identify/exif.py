"""When a photo was taken, from its EXIF block, and where that time came from.

Camera clocks are often wrong and EXIF blocks are often broken, so a capture time is always
returned (falling back to the file's modification time), together with its source and a flag for
implausible values.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta

from PIL import Image

EXIF_IFD = 0x8769
TAG_DATETIME = 306
TAG_DATETIME_ORIGINAL = 36867
TAG_MAKE = 271
TAG_MODEL = 272

# Trail cameras reset to 2000-01-01 or similar after a power loss; anything before the first
# digital camera traps or after tomorrow is flagged.
EARLIEST_PLAUSIBLE = datetime(2001, 1, 1)

_EXIF_DATE = re.compile(r"^\s*(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")


@dataclass(frozen=True)
class CaptureTime:
    """A capture time (naive camera-local time) and where it came from."""

    value: datetime
    source: str  # "exif_original", "exif_datetime" or "file_mtime"
    plausible: bool


@dataclass(frozen=True)
class PhotoMetadata:
    captured: CaptureTime
    camera_make: str | None
    camera_model: str | None


def parse_exif_datetime(text: object) -> datetime | None:
    """Parse an EXIF 'YYYY:MM:DD HH:MM:SS' value; None for anything unparseable or impossible."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    if not isinstance(text, str):
        return None
    match = _EXIF_DATE.match(text.replace("\x00", ""))
    if not match:
        return None
    try:
        return datetime(*map(int, match.groups()))
    except ValueError:
        return None


def _clean(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    # Bounded: the database columns hold 100 characters, and PostgreSQL refuses longer ones.
    value = value.replace("\x00", "").strip()[:100]
    return value or None


def read_metadata(data: bytes, file_mtime: float, now: datetime | None = None) -> PhotoMetadata:
    """Return the capture time (DateTimeOriginal, else DateTime, else file time) and camera.

    Never raises for a missing or corrupt EXIF block: the photo itself may still be good.
    """
    now = now or datetime.now()
    original = plain = make = model = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                exif = image.getexif()
                plain = parse_exif_datetime(exif.get(TAG_DATETIME))
                make, model = _clean(exif.get(TAG_MAKE)), _clean(exif.get(TAG_MODEL))
                original = parse_exif_datetime(exif.get_ifd(EXIF_IFD).get(TAG_DATETIME_ORIGINAL))
    except Exception:  # noqa: BLE001 - a broken EXIF block must never lose the photo
        pass
    if original is not None:
        value, source = original, "exif_original"
    elif plain is not None:
        value, source = plain, "exif_datetime"
    else:
        value, source = datetime.fromtimestamp(file_mtime), "file_mtime"
    plausible = EARLIEST_PLAUSIBLE <= value <= now + timedelta(days=1)
    return PhotoMetadata(CaptureTime(value, source, plausible), make, model)
