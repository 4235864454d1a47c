"""People hidden at the source (issue 19): which parts of a frame to hide, and hiding them.

Camera traps photograph people (walkers, owners, poachers); whoever looks at birdtrap's web pages
or exports should see the birds, not who walked past. The detector's person boxes (on the frame
and on its tiles) are kept with the photo's result, so every image birdtrap makes later (web
thumbnails and photo views, training-set copies) is redacted without running a model again. The
original file is never changed.

Err on the side of hiding: a person box weaker than the one that names a frame `person` is still
hidden (people far away score 0.5-0.6), and a frame said to hold a person with no box sure enough
to place it is hidden whole. Only what the detector looked at can be hidden: a frame the species
model decides at once (a confident close-up bird) is never shown to the detector.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from birdtrap.errors import PhotoError
from birdtrap.identify.detector import Detection
from birdtrap.identify.kinds import Kind
from birdtrap.identify.preprocess import Photo
from birdtrap.identify.regions import WHOLE, Box


@dataclass(frozen=True)
class PrivacySettings:
    """Which person boxes are hidden and how much room is left around them; see config.yaml's `privacy`."""

    redact_people: bool = True
    min_box_score: float = 0.5
    margin: float = 0.15


def boxes_to_hide(
    kind: str, detections: Iterable[Detection], settings: PrivacySettings, photo: Photo | None = None, bird: Box | None = None
) -> tuple[Box, ...]:
    """The boxes (0-1 of the whole decoded frame) to hide in every image made from it; () when none.

    Detections are in 0-1 of `photo.bgr`, which lost its burnt-in info bars; with `photo` they are
    mapped back onto the whole frame, the frame that thumbnails and copies are made from.

    Each person box at or above `min_box_score`, grown by `margin` of its size on every side (a
    detector's box cuts off hair, elbows and feet). A frame decided `person` with no such box is
    hidden whole: its person is likely but cannot be placed. On a frame decided `bird` in a
    region (`bird`), a person box holding that region is the bird seen wrong, and stays visible:
    COCO's detector calls a heron standing in reeds a person at 0.5-0.6 (bench/README.md).
    """
    if not settings.redact_people:
        return ()
    people = [d.box for d in detections if d.kind == Kind.PERSON and d.score >= settings.min_box_score]
    if kind == Kind.BIRD and bird is not None and bird != WHOLE:
        people = [box for box in people if not _holds(box, bird)]
    boxes = [_grow(box, settings.margin) for box in people]
    if not boxes and kind == Kind.PERSON:
        return (WHOLE,)
    boxes = _merged(boxes)
    if photo is not None and any(photo.crop) and photo.bgr.shape[0]:  # pixels or not (Photo.without_pixels)
        kept = photo.bgr.shape[0]
        top, whole = photo.crop[0], kept + photo.crop[0] + photo.crop[1]
        boxes = [(b[0], (top + b[1] * kept) / whole, b[2], (top + b[3] * kept) / whole) for b in boxes]
    return tuple(boxes)


def redact(rgb: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """A copy of the H x W x 3 image with every box filled with its mean colour; the rest unchanged.

    A fill, not a blur: pixelated or blurred people stay recognisable by build, clothes and
    gait (and small boxes in a thumbnail keep as much detail as a blur leaves), a fill hides the
    whole body at any size and costs almost nothing.
    """
    if not boxes:
        return rgb
    out = np.array(rgb, copy=True)
    height, width = out.shape[:2]
    for box in boxes:
        x0, y0 = int(np.floor(box[0] * width)), int(np.floor(box[1] * height))
        x1, y1 = int(np.ceil(box[2] * width)), int(np.ceil(box[3] * height))
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
        if x1 <= x0 or y1 <= y0:
            continue
        out[y0:y1, x0:x1] = _obscure(np.ascontiguousarray(out[y0:y1, x0:x1]))
    return out


def write_redacted(source: Path, target: Path, boxes: Sequence[Box]) -> None:
    """Write `source` (oriented as the daemon saw it) to `target` with `boxes` filled.

    Re-encoded in the target's format and without EXIF: a copy must not carry what the boxes hid.
    Raises PhotoError naming the photo when it cannot be read.
    """
    try:
        with Image.open(source) as image:
            rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (OSError, ValueError) as e:
        raise PhotoError(f"{source} cannot be read to hide the people in it ({e}); move it away and export again.") from None
    options = {"quality": 92} if target.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(redact(rgb, boxes)).save(target, **options)


def _obscure(patch: np.ndarray) -> np.ndarray:
    """The patch filled with its own mean colour: no shape, face, pattern or text survives, and the
    frame keeps its overall tone (a black box would draw the eye and hide the scene's light)."""
    return np.broadcast_to(patch.reshape(-1, patch.shape[-1]).mean(axis=0).round().astype(patch.dtype), patch.shape)


def _holds(outer: Box, inner: Box) -> bool:
    """Whether `outer` covers the centre of `inner` and at least half of it."""
    cx, cy = (inner[0] + inner[2]) / 2, (inner[1] + inner[3]) / 2
    if not (outer[0] <= cx <= outer[2] and outer[1] <= cy <= outer[3]):
        return False
    width = max(0.0, min(outer[2], inner[2]) - max(outer[0], inner[0]))
    height = max(0.0, min(outer[3], inner[3]) - max(outer[1], inner[1]))
    inner_area = (inner[2] - inner[0]) * (inner[3] - inner[1])
    return inner_area > 0 and width * height >= 0.5 * inner_area


def _merged(boxes: list[Box]) -> list[Box]:
    """Overlapping boxes joined into their union: one person found on the frame and on three
    tiles is one region to hide, and the union hides at least what each box did."""
    merged = list(boxes)
    joined = True
    while joined:
        joined = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                a, b = merged[i], merged[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    merged[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del merged[j]
                    joined = True
                    break
            if joined:
                break
    return merged


def _grow(box: Box, margin: float) -> Box:
    dx, dy = (box[2] - box[0]) * margin, (box[3] - box[1]) * margin
    return (max(0.0, box[0] - dx), max(0.0, box[1] - dy), min(1.0, box[2] + dx), min(1.0, box[3] + dy))


def boxes_to_text(boxes: Sequence[Box]) -> str | None:
    """How boxes are stored (a JSON list of [x0, y0, x1, y1]); None when there is nothing to hide."""
    return json.dumps([[round(v, 5) for v in box] for box in boxes]) if boxes else None


def boxes_from_text(text: str | None) -> tuple[Box, ...]:
    """The boxes stored by `boxes_to_text`; () for none. A damaged value hides the whole frame."""
    if not text:
        return ()
    try:
        return tuple((float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in json.loads(text))
    except (ValueError, TypeError, IndexError, KeyError):
        return (WHOLE,)
