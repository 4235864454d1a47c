"""Photo files in, identifications out, with nothing stored: what `classify` and `evaluate` run.

The daemon's batch core (birdtrap.daemon.ingest) decodes with the same `decode_photo` and keys
bursts with the same `burst_key`, so a one-off classification and the daemon agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from birdtrap.errors import PhotoError
from birdtrap.identify.exif import PhotoMetadata, read_metadata
from birdtrap.identify.health import FrameMeasure
from birdtrap.identify.identifier import FrameInputs, Identification, Identifier
from birdtrap.identify.motion import BurstKey
from birdtrap.identify.preprocess import Photo, PreprocessSettings, decode, read_photo_bytes


@dataclass(frozen=True, eq=False)
class Decoded:
    photo: Photo
    metadata: PhotoMetadata
    inputs: FrameInputs | None = None
    measure: FrameMeasure | None = None  # camera health (identify/health.py), where asked for


def decode_photo(data: bytes, name: str, mtime: float, settings: PreprocessSettings) -> Decoded:
    """Decode a photo and read its metadata."""
    return Decoded(decode(data, name, settings), read_metadata(data, mtime))


def burst_key(camera: str, metadata: PhotoMetadata) -> BurstKey:
    # Photos from one camera a few seconds apart are one burst (motion proposals, events).
    return BurstKey(f"{camera}/{metadata.camera_make or ''}/{metadata.camera_model or ''}", metadata.captured.value)


def classify_files(paths: Iterable[Path], identifier: Identifier) -> Iterable[tuple[Path, Identification | PhotoError]]:
    """Identify photo files one by one, in order, without storing anything (`classify`, `evaluate`).

    The folder stands in for the camera, so the frames of a burst copied together are one burst.
    Whatever goes wrong with one file (unreadable, undecodable, or an error inside the models on
    its pixels) is that file's PhotoError; the others are still identified.
    """
    for path in paths:
        try:
            data = read_photo_bytes(path, identifier.preprocess.max_bytes)
            decoded = decode_photo(data, str(path), path.stat().st_mtime, identifier.preprocess)
        except PhotoError as e:
            yield path, e
            continue
        except Exception as e:  # noqa: BLE001 - one file's surprise must not stop the others
            yield path, PhotoError(could_not(str(path), "read or decoded", e))
            continue
        try:
            identification = identifier.identify([decoded.photo], [burst_key(str(path.parent), decoded.metadata)])[0]
        except Exception as e:  # noqa: BLE001 - as above
            yield path, PhotoError(could_not(str(path), "identified", e))
            continue
        yield path, identification


def could_not(path: str, what: str, error: BaseException) -> str:
    """The failure reason for an unforeseen error on one photo: the file, the step, the error."""
    return (
        f"{path} could not be {what} ({type(error).__name__}: {error}); the other photos were processed. "
        "If the file opens in an image viewer, report it with the file."
    )
