"""Motion within a burst: where does this frame differ from the burst's background?

A camera trap fires a burst when something moves. The median of the burst's frames is the empty
scene (the animal moves, the background does not), so the difference of one frame to that median
shows where the animal is, however small or grey it is. Only small grey thumbnails are kept.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import cv2
import numpy as np

from birdtrap.regions import Region

THUMB_WIDTH = 192


@dataclass(frozen=True)
class BurstKey:
    camera: str
    captured_at: datetime


class BurstMemory:
    """Remembers the last few frames of each camera; `observe` returns motion regions for a frame."""

    def __init__(self, gap_seconds: float = 5.0, keep: int = 8, min_area: float = 0.002, max_regions: int = 2) -> None:
        self.gap_seconds = gap_seconds
        self.keep = keep
        self.min_area = min_area
        self.max_regions = max_regions
        self._frames: dict[str, deque[tuple[datetime, np.ndarray]]] = {}

    def observe(self, key: object, thumb: np.ndarray) -> Callable[[], list[Region]]:
        """Remember this frame (its `thumbnail_for_motion`); returns a function that finds its motion regions.

        Every frame must be remembered (it is the next frame's background), but the regions are
        only worth computing when the whole frame did not already decide (bench: 3.9 ms a photo).
        """
        if not isinstance(key, BurstKey):
            return list
        history = self._frames.setdefault(key.camera, deque(maxlen=self.keep))
        burst = [frame for when, frame in history if abs((key.captured_at - when).total_seconds()) <= self.gap_seconds]
        burst = [frame for frame in burst if frame.shape == thumb.shape]
        history.append((key.captured_at, thumb))
        if len(burst) < 2:
            return list
        return lambda: self.regions(thumb, burst)

    def regions(self, thumb: np.ndarray, others: list[np.ndarray]) -> list[Region]:
        """Boxes (0-1) around where `thumb` differs from the median of itself and `others`."""
        background = np.median(np.stack([*others, thumb]), axis=0).astype(np.float32)
        difference = cv2.absdiff(thumb.astype(np.float32), background)
        # Noise varies with light (night IR is noisy): threshold well above this frame's typical difference.
        threshold = max(12.0, float(np.percentile(difference, 90)) * 2.5)
        mask = (difference > threshold).astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
        mask = cv2.dilate(mask, np.ones((5, 5), np.uint8))
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        height, width = mask.shape
        found = []
        for label in range(1, count):
            x, y, w, h, pixels = stats[label]
            share = pixels / (width * height)
            if share < self.min_area or share > 0.5:
                continue
            box = (float(x / width), float(y / height), float((x + w) / width), float((y + h) / height))
            found.append(Region(box, "motion", min(1.0, float(share) * 20)))
        found.sort(key=lambda region: region.prior, reverse=True)
        return found[: self.max_regions]


def thumbnail_for_motion(bgr: np.ndarray) -> np.ndarray:
    """The small, grey, brightness-normalised frame that bursts are compared on."""
    height, width = bgr.shape[:2]
    size = (THUMB_WIDTH, max(1, round(height * THUMB_WIDTH / width)))
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if bgr.ndim == 3 else bgr
    small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    # Exposure changes between frames of a burst: compare brightness-normalised frames. (The
    # median of the uint8 pixels: numpy's float median imports numpy.ma for its NaN check.)
    small = small.astype(np.float32) * (128.0 / max(1.0, float(np.median(small))))
    return cv2.GaussianBlur(np.clip(small, 0, 255).astype(np.uint8), (3, 3), 0)
