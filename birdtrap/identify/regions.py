"""Geometry of region proposals: tiles that cover a frame, boxes grown and squared, overlaps merged.

Boxes are (x0, y0, x1, y1) in 0-1 of the frame, so they survive any resize of the photo and can
be stored and drawn on the original.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Box = tuple[float, float, float, float]
WHOLE: Box = (0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class Region:
    """A part of the frame worth classifying, where it came from and how promising it looked."""

    box: Box
    source: str  # frame, detector, tile, motion
    prior: float = 0.0
    label: str | None = None
    score: float | None = None  # the detector's score, for a detector's box


def tiles(width: int, height: int, scale: float, overlap: float = 0.25) -> list[Box]:
    """Square tiles whose side is `scale` x the frame's short side, overlapping, covering the frame.

    Squares, because the models take square inputs: a squashed tile distorts a bird's shape.
    """
    side = max(1.0, scale * min(width, height))
    boxes: list[Box] = []
    for y in _starts(height, side, overlap):
        for x in _starts(width, side, overlap):
            boxes.append((x / width, y / height, min(x + side, width) / width, min(y + side, height) / height))
    return boxes


def _starts(length: int, side: float, overlap: float) -> list[float]:
    if side >= length:
        return [0.0]
    count = int(np.ceil((length - side) / (side * (1 - overlap)))) + 1
    return [float(v) for v in np.linspace(0, length - side, count)]


def grow_to_square(box: Box, width: int, height: int, margin: float = 0.3, min_side: float = 0.0) -> Box:
    """Grow a box by `margin` on each side and to a square (in pixels), kept inside the frame.

    Context around an animal helps a classifier; a square keeps its proportions at the model input.
    """
    x0, y0, x1, y1 = box[0] * width, box[1] * height, box[2] * width, box[3] * height
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    side = min(max(side, min_side * min(width, height)), min(width, height))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = min(max(cx - side / 2, 0.0), width - side)
    top = min(max(cy - side / 2, 0.0), height - side)
    return (left / width, top / height, (left + side) / width, (top + side) / height)


def area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def iou(a: Box, b: Box) -> float:
    inter = area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def suppress(
    regions: list[Region], threshold: float = 0.5, reading: Callable[[Region], bool] | None = None, same_crop: float = 0.8
) -> list[Region]:
    """Keep the most promising of overlapping regions (non-maximum suppression on `prior`).

    Regions for which `reading` is true (a detector's sure bird boxes) are each a reading of its
    own: one of them gives way to another only where their squares nearly coincide (IoU >=
    `same_crop`). Two bird boxes on one bird, a loose one and a tight one, are two crops, and the
    gate can read them differently (a feeder robin: 0.11 on the loose square, 0.42 on the tight).
    """
    def is_reading(region: Region) -> bool:
        return reading is not None and reading(region)

    kept: list[Region] = []
    for region in sorted(regions, key=lambda r: r.prior, reverse=True):
        own = is_reading(region)
        limits = [same_crop if own and is_reading(other) else threshold for other in kept]
        if all(iou(region.box, other.box) < limit for other, limit in zip(kept, limits, strict=True)):
            kept.append(region)
    return kept


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, min_score: float, iou_threshold: float) -> list[int]:
    """Indices of the boxes (N x 4, x0 y0 x1 y1) kept by greedy NMS, best score first.

    OpenCV's `dnn.NMSBoxes` rules, so a YOLO detector decodes as before without OpenCV in the
    install: scores must exceed `min_score`, ties keep file order, and a box goes when its IoU
    with a kept one is above `iou_threshold` (two empty boxes count as overlapping).
    """
    order = [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] > min_score]
    x0, y0, x1, y1 = (boxes[:, k].astype(np.float64) for k in range(4))
    areas = (x1 - x0) * (y1 - y0)
    kept: list[int] = []
    for i in order:
        if kept:
            others = np.array(kept)
            width = np.clip(np.minimum(x1[i], x1[others]) - np.maximum(x0[i], x0[others]), 0, None)
            height = np.clip(np.minimum(y1[i], y1[others]) - np.maximum(y0[i], y0[others]), 0, None)
            inter = width * height
            union = areas[i] + areas[others] - inter
            overlap = np.where(areas[i] + areas[others] > 1e-12, inter / np.where(union > 0, union, 1), 1.0)
            if (overlap > iou_threshold).any():
                continue
        kept.append(i)
    return kept


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    """The pixels of `box` (0-1 coordinates); never empty, always inside the image."""
    height, width = image.shape[:2]
    x0 = int(np.clip(np.floor(box[0] * width), 0, width - 1))
    y0 = int(np.clip(np.floor(box[1] * height), 0, height - 1))
    x1 = int(np.clip(np.ceil(box[2] * width), x0 + 1, width))
    y1 = int(np.clip(np.ceil(box[3] * height), y0 + 1, height))
    return image[y0:y1, x0:x1]
