"""Motion within a burst: where does this frame differ from the burst's background?

A camera trap fires a burst when something moves. The median of the burst's frames is the empty
scene (the animal moves, the background does not), so the difference of one frame to that median
shows where the animal is, however small or grey it is. Only small grey thumbnails are kept.

A frame is `blank` only on evidence that nothing is there (identify/identifier.py). Where the
camera has history, its recent frames called blank are that evidence's reference: a frame that
differs from them where they agree (a fox that triggered one frame, missed by the detector) is
not blank. Only the safe direction: this history can turn blank into unsure, never the reverse.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from birdtrap.identify.preprocess import LUMA_RGB, resample
from birdtrap.identify.regions import Region

THUMB_WIDTH = 192
# A portrait frame's thumbnail is at most this tall (boxes are 0-1, so squashing a very tall
# frame changes no coordinate): a thumbnail, its resampling and the burst's copies stay small
# whatever the frame's shape (issue 16: a 1x5000 PNG asked for a 192x960000 thumbnail).
THUMB_MAX_HEIGHT = 4 * THUMB_WIDTH


@dataclass(frozen=True)
class BurstKey:
    camera: str
    captured_at: datetime


class BurstMemory:
    """Remembers the last few frames of each camera; `observe` returns motion regions for a frame."""

    def __init__(
        self,
        gap_seconds: float = 5.0,
        keep: int = 8,
        min_area: float = 0.002,
        max_regions: int = 2,
        blank_history_seconds: float = 1800.0,
    ) -> None:
        self.gap_seconds = gap_seconds
        self.keep = keep
        self.min_area = min_area
        self.max_regions = max_regions
        # Blank frames older than this are no reference: the light and the shadows have moved.
        self.blank_history_seconds = blank_history_seconds
        self._frames: dict[str, deque[tuple[datetime, np.ndarray]]] = {}
        self._blanks: dict[str, deque[tuple[datetime, np.ndarray]]] = {}

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

    def remember_blank(self, key: object, thumb: np.ndarray | None) -> None:
        """Keep a frame that was called blank as this camera's empty scene (its last few)."""
        if isinstance(key, BurstKey) and thumb is not None:
            self._blanks.setdefault(key.camera, deque(maxlen=4)).append((key.captured_at, thumb))

    def against_blanks(self, key: object, thumb: np.ndarray | None) -> list[Region]:
        """Where `thumb` differs from the camera's recent blank frames; [] without two of them.

        Two at least: the median of them and this frame is the empty scene only when the
        references outnumber the frame under test.
        """
        if not isinstance(key, BurstKey) or thumb is None:
            return []
        recent = [
            frame for when, frame in self._blanks.get(key.camera, ())
            if 0 < (key.captured_at - when).total_seconds() <= self.blank_history_seconds and frame.shape == thumb.shape
        ]  # fmt: skip
        return self.regions(thumb, recent) if len(recent) >= 2 else []

    def regions(self, thumb: np.ndarray, others: list[np.ndarray]) -> list[Region]:
        """Boxes (0-1) around where `thumb` differs from the median of itself and `others`."""
        background = np.median(np.stack([*others, thumb]), axis=0).astype(np.float32)
        difference = np.abs(thumb.astype(np.float32) - background)
        # Noise varies with light (night IR is noisy): threshold well above this frame's typical difference.
        threshold = max(12.0, float(np.percentile(difference, 90)) * 2.5)
        mask = (difference > threshold).astype(np.uint8)
        # Specks of noise go (an opening by 2x2), what is left grows into blobs (a 5x5 dilation).
        mask = _window(_window(mask, range(-1, 1), np.minimum, 1), range(-1, 1), np.maximum, 0)
        mask = _window(mask, range(-2, 3), np.maximum, 0)
        stats = _component_boxes(mask)
        height, width = mask.shape
        found = []
        for x, y, w, h, pixels in stats:
            share = pixels / (width * height)
            if share < self.min_area or share > 0.5:
                continue
            box = (float(x / width), float(y / height), float((x + w) / width), float((y + h) / height))
            found.append(Region(box, "motion", min(1.0, float(share) * 20)))
        found.sort(key=lambda region: region.prior, reverse=True)
        return found[: self.max_regions]


def _window(mask: np.ndarray, offsets: range, reduce: np.ufunc, outside: int) -> np.ndarray:
    """Min or max over a square window of `offsets` (OpenCV's erode/dilate with a ones kernel)."""
    height, width = mask.shape
    pad = max(abs(offsets.start), abs(offsets.stop - 1))
    padded = np.pad(mask, pad, constant_values=outside)
    out = mask.copy()
    for dy in offsets:
        for dx in offsets:
            reduce(out, padded[pad + dy : pad + dy + height, pad + dx : pad + dx + width], out=out)
    return out


def _component_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """(x, y, width, height, pixels) of each 8-connected blob, in raster order of its first pixel.

    Each pixel takes the smallest pixel index among its neighbours until nothing changes, with
    pointer jumping to cut the rounds; on a motion thumbnail (192 px wide) that is a few ms,
    and it keeps OpenCV out of the daemon (see `birdtrap.identify.preprocess.opencv`).
    """
    height, width = mask.shape
    outside = height * width
    inside = mask > 0
    labels = np.where(inside, np.arange(outside).reshape(height, width), outside)
    while True:
        padded = np.pad(labels, 1, constant_values=outside)
        smallest = labels.copy()
        for dy in range(3):
            for dx in range(3):
                np.minimum(smallest, padded[dy : dy + height, dx : dx + width], out=smallest)
        flat = np.append(smallest.ravel(), outside)
        smallest = np.where(inside, flat[smallest], outside)  # a label is a pixel: take that pixel's label
        if np.array_equal(smallest, labels):
            break
        labels = smallest
    ids, inverse, pixels = np.unique(labels[inside], return_inverse=True, return_counts=True)
    ys, xs = np.nonzero(inside)
    boxes = []
    for index in range(len(ids)):
        mine = inverse == index
        x0, x1, y0, y1 = xs[mine].min(), xs[mine].max(), ys[mine].min(), ys[mine].max()
        boxes.append((int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1), int(pixels[index])))
    return boxes


def thumbnail_for_motion(bgr: np.ndarray) -> np.ndarray:
    """The small, grey, brightness-normalised frame that bursts are compared on.

    Made for every frame in the decode threads, so it is numpy, not OpenCV (see
    `birdtrap.identify.preprocess.opencv`): an area shrink, ITU-R 601 grey, a 3x3 Gaussian.
    """
    height, width = bgr.shape[:2]
    size = (THUMB_WIDTH, min(THUMB_MAX_HEIGHT, max(1, round(height * THUMB_WIDTH / width))))
    if bgr.ndim == 3:
        # Shrink first, then grey: the grey of 26,000 pixels, not of the whole decode.
        small_rgb = resample(np.ascontiguousarray(bgr[..., ::-1]), size[0], size[1])
        small = np.rint(small_rgb @ LUMA_RGB).astype(np.uint8)
    else:
        small = resample(bgr[..., None], size[0], size[1])[..., 0]
    # Exposure changes between frames of a burst: compare brightness-normalised frames. (The
    # median of the uint8 pixels: numpy's float median imports numpy.ma for its NaN check.)
    small = small.astype(np.float32) * (128.0 / max(1.0, float(np.median(small))))
    return _blur_3x3(np.clip(small, 0, 255).astype(np.uint8))


def _blur_3x3(gray: np.ndarray) -> np.ndarray:
    """OpenCV's 3x3 Gaussian ([1, 2, 1] / 4 each way, mirrored edges) on a uint8 image."""
    padded = np.pad(gray.astype(np.float32), 1, mode="reflect")
    columns = padded[:-2] + 2 * padded[1:-1] + padded[2:]
    both = columns[:, :-2] + 2 * columns[:, 1:-1] + columns[:, 2:]
    return np.clip(np.rint(both / 16), 0, 255).astype(np.uint8)
