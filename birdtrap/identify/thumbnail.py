"""One thumbnail maker for every small image birdtrap makes of a photo: the web's list and photo
views, and the thumbnails sync sends to the central database.

It decodes with the daemon's bounded decoder (what the daemon refuses is never decoded here),
hides the people boxes (identify/privacy.py) and, when asked, crops around the region that
decided with the box drawn, so a small bird is visible in a list.
"""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
from PIL import Image, ImageDraw

from birdtrap.identify.preprocess import PreprocessSettings, decode, resample
from birdtrap.identify.privacy import redact
from birdtrap.identify.regions import Box

BOX_COLOUR = (255, 196, 0)  # amber: visible on foliage, sky and snow


def whole_frame(box: Box) -> bool:
    """A box covering (nearly) all of the frame says nothing about where: no crop, no box drawn."""
    x0, y0, x1, y1 = box
    return (x1 - x0) * (y1 - y0) >= 0.8


def around(rgb: np.ndarray, box: Box) -> tuple[np.ndarray, Box]:
    """The part of `rgb` around `box` (the box and 30 % of it again on each side, 4:3 where the frame
    allows) and the box's place in that crop, 0-1."""
    height, width = rgb.shape[:2]
    x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in box)
    bw, bh = max(x1 - x0, 1e-3) * width, max(y1 - y0, 1e-3) * height
    side_w = max(1.6 * bw, 4 / 3 * 1.6 * bh, 48.0)
    side_h = max(side_w * 3 / 4, 1.6 * bh)
    side_w, side_h = min(side_w, width), min(side_h, height)
    cx, cy = (x0 + x1) / 2 * width, (y0 + y1) / 2 * height
    left = int(min(max(cx - side_w / 2, 0), width - side_w))
    top = int(min(max(cy - side_h / 2, 0), height - side_h))
    right, bottom = int(left + side_w), int(top + side_h)
    crop = rgb[top:bottom, left:right]
    cw, ch = max(right - left, 1), max(bottom - top, 1)
    inside = ((x0 * width - left) / cw, (y0 * height - top) / ch, (x1 * width - left) / cw, (y1 * height - top) / ch)
    return crop, tuple(min(max(v, 0.0), 1.0) for v in inside)  # type: ignore[return-value]


def make_thumbnail(
    data: bytes, name: str, side: int, settings: PreprocessSettings, hide: tuple[Box, ...] = (), box: Box | None = None,
    quality: int = 80,
) -> tuple[bytes, int, int]:
    """A JPEG at most `side` pixels on its long side, upright, people hidden: (bytes, width, height).

    `box` (0-1 of the frame the models saw, so without the info bars when the configuration crops
    them) crops around that region and draws it. People are hidden on the whole frame before any
    crop, or on the thumbnail itself, where the fill's edges stay sharp (privacy.margin covers the
    info bars' few rows). Raises PhotoError for a file the daemon would refuse.
    """
    box = box if box is not None and not whole_frame(box) else None
    settings = replace(
        settings,
        reduced_decode=True,
        decode_min_side=side if box is None else 4 * side,
        crop_info_bars=box is not None and settings.crop_info_bars,
        denoise=False,
        auto_contrast=False,
    )
    rgb = decode(data, name, settings).bgr[..., ::-1]  # the decoder's BGR view of Pillow's RGB rows
    drawn = None
    if box is not None:
        if hide:
            rgb = redact(np.ascontiguousarray(rgb), hide)
        rgb, drawn = around(rgb, box)
    height, width = rgb.shape[:2]
    scale = side / max(height, width)
    if scale < 1:
        rgb = resample(rgb, max(1, round(width * scale)), max(1, round(height * scale)))
    if hide and box is None:
        rgb = redact(np.ascontiguousarray(rgb), hide)
    image = Image.fromarray(np.ascontiguousarray(rgb))
    if drawn is not None:
        w, h = image.size
        x0, y0, x1, y1 = (round(v * s) for v, s in zip(drawn, (w - 1, h - 1, w - 1, h - 1), strict=True))
        ImageDraw.Draw(image).rectangle((x0, y0, x1, y1), outline=BOX_COLOUR, width=max(2, round(max(w, h) / 100)))
    encoded = io.BytesIO()
    image.save(encoded, "JPEG", quality=quality)
    return encoded.getvalue(), image.width, image.height
