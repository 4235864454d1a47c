"""Camera health from the photos themselves (issue 19): cheap measures of each decoded frame, and
the checks that compare a camera's newest frames with its own history.

Stations stop or go blind silently: a spider web or fog over the lens, a strap that slipped, an
infrared lamp that died, a clock reset by a flat battery. Every check here compares a camera
with itself, never with a fixed standard, so a dark forest camera is not "blocked" for being
dark; and every check abstains until it has enough history to say what normal is.

Measures are taken on a 160 x 120 grey thumbnail of the frame birdtrap decodes anyway (about
1 ms a photo; bench/README.md). Pure: the daemon stores the measures and runs the checks.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from birdtrap.identify.preprocess import MONOCHROME_SPREAD, Photo, colour_spread, resample

SIDE = (160, 120)  # the thumbnail the measures are taken on
SCENE = (32, 24)  # the structure map a moved camera is found by

SILENCE, BLOCKED, MOVED, NIGHT_BLACK, CLOCK = "silence", "lens_blocked", "moved", "night_black", "clock_drift"
CHECKS = (SILENCE, BLOCKED, MOVED, NIGHT_BLACK, CLOCK)
WHAT = {
    SILENCE: "no photo for longer than this camera's history says is normal",
    BLOCKED: "the lens looks blocked or fogged (sharpness and contrast far below its recent frames)",
    MOVED: "the camera looks moved (the scene no longer matches its earlier frames)",
    NIGHT_BLACK: "night frames are black (infrared failure?)",
    CLOCK: "the camera's clock looks wrong",
}


@dataclass(frozen=True)
class FrameMeasure:
    """What one frame looks like, in numbers small enough to keep for every photo."""

    brightness: float  # mean grey, 0-255
    contrast: float  # standard deviation of grey
    sharpness: float  # mean absolute Laplacian of grey
    colour: float  # mean of max - min channel: about 0 for an infrared (night) frame
    scene: bytes  # SCENE grey-gradient map, uint8, for `moved`

    @property
    def night(self) -> bool:
        """An infrared frame: cameras switch to monochrome IR at night."""
        return self.colour < MONOCHROME_SPREAD


@dataclass(frozen=True)
class HealthSettings:
    """Thresholds of the checks; see config.yaml's `health` section."""

    enabled: bool = True
    history: int = 60  # frames of the camera's own past a check compares with
    min_history: int = 8  # no verdict with fewer reference frames than this
    confirm: int = 3  # consecutive frames that must agree before a problem opens (or closes)
    blocked_fraction: float = 0.3  # sharpness and contrast below this fraction of the reference median
    moved_similarity: float = 0.35  # scene similarity to the reference below this is "moved"
    stable_similarity: float = 0.6  # the reference frames must agree with each other at least this much
    night_black_brightness: float = 12.0  # a night frame darker than this (mean grey) is black
    silence_min_hours: float = 6.0  # never "silent" sooner than this
    silence_factor: float = 3.0  # silent after this many times the longest usual gap at that hour
    clock_drift_hours: float = 2.0  # EXIF time and file time further apart than this


def measure(photo: Photo) -> FrameMeasure:
    """The measures of one decoded frame (info bars already cropped)."""
    bgr = photo.bgr
    # Every n-th pixel first: an area shrink of the whole decode cost 10-25 ms a photo. The
    # aliasing this lets in is the same in every frame of a camera, and checks compare a camera
    # with itself.
    step = max(1, min(bgr.shape[0] // (2 * SIDE[1]), bgr.shape[1] // (2 * SIDE[0])))
    small = resample(np.ascontiguousarray(bgr[::step, ::step]), *SIDE).astype(np.float32)
    grey = small.mean(axis=2)
    laplacian = np.abs(4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:])
    colour = colour_spread(small)
    return FrameMeasure(float(grey.mean()), float(grey.std()), float(laplacian.mean()), colour, scene_map(grey))


def scene_map(grey: np.ndarray) -> bytes:
    """The frame's structure: gradient magnitude on a SCENE grid, scaled to its own maximum.

    Gradients, not grey levels, so the sun going in or a frame's exposure does not look like a
    moved camera; a camera that moved shows its edges (trunks, horizon) elsewhere.
    """
    gy, gx = np.gradient(grey)
    magnitude = np.hypot(gx, gy).astype(np.float32)
    small = resample(magnitude[..., None].repeat(3, axis=2), *SCENE, kind="area")[..., 0].astype(np.float32)
    top = float(small.max()) or 1.0
    return (np.clip(small / top, 0, 1) * 255).astype(np.uint8).tobytes()


def similarity(a: bytes, b: bytes) -> float:
    """Correlation of two scene maps, -1..1 (1: the same structure in the same places)."""
    x = np.frombuffer(a, np.uint8).astype(np.float64)
    y = np.frombuffer(b, np.uint8).astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    norm = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / norm) if norm else 0.0


def lens_blocked(recent: Sequence[FrameMeasure], reference: Sequence[FrameMeasure], settings: HealthSettings) -> bool | None:
    """Whether each of the newest `confirm` frames is far less sharp and contrasted than the
    reference frames of the same light (day or night); None: not enough history to tell."""
    return _all_recent(recent, reference, settings, _blocked)


def _blocked(frame: FrameMeasure, same_light: Sequence[FrameMeasure], settings: HealthSettings) -> bool:
    sharp = statistics.median(f.sharpness for f in same_light)
    contrast = statistics.median(f.contrast for f in same_light)
    return frame.sharpness < settings.blocked_fraction * sharp and frame.contrast < max(0.5, settings.blocked_fraction * 1.5) * contrast


def moved(recent: Sequence[FrameMeasure], reference: Sequence[FrameMeasure], settings: HealthSettings) -> bool | None:
    """Whether each of the newest `confirm` frames has lost the reference scene's structure;
    None when the reference itself is not one steady scene (a camera on a moving branch)."""
    return _all_recent(recent, reference, settings, _moved)


def _moved(frame: FrameMeasure, same_light: Sequence[FrameMeasure], settings: HealthSettings) -> bool | None:
    scene = _median_scene(same_light)
    steady = statistics.median(similarity(f.scene, scene) for f in same_light)
    if steady < settings.stable_similarity:
        return None
    return similarity(frame.scene, scene) < settings.moved_similarity


def _median_scene(frames: Sequence[FrameMeasure]) -> bytes:
    stack = np.stack([np.frombuffer(f.scene, np.uint8) for f in frames])
    return np.median(stack, axis=0).astype(np.uint8).tobytes()


def _all_recent(recent: Sequence[FrameMeasure], reference: Sequence[FrameMeasure], settings: HealthSettings, judge) -> bool | None:
    if len(recent) < settings.confirm:
        return None
    verdicts = []
    for frame in recent[-settings.confirm :]:
        same_light = [f for f in reference if f.night == frame.night]
        if len(same_light) < settings.min_history:
            return None
        verdicts.append(judge(frame, same_light, settings))
    if any(v is None for v in verdicts):
        return None
    return all(verdicts)


def night_black(recent: Sequence[FrameMeasure], settings: HealthSettings) -> bool | None:
    """Whether the newest `confirm` night frames are all black; None with fewer night frames.

    A frame is judged night by its lack of colour, and a black frame has none: so a run of black
    frames at night is the IR lamp gone, while a dark colour frame (dusk) is never counted.
    """
    night = [f for f in recent if f.night]
    if len(night) < settings.confirm:
        return None
    black = settings.night_black_brightness
    return all(f.brightness < black and f.contrast < black for f in night[-settings.confirm :])


def silent(arrivals: Sequence[datetime], now: datetime, settings: HealthSettings) -> tuple[bool, timedelta] | None:
    """(silent?, the longest silence that is normal now) from when photos arrived (sorted).

    Normal is this camera's longest gap that began within an hour of the current gap's start
    hour of day, times `silence_factor`, and never under `silence_min_hours`: a feeder camera
    that is busy all day is silent after a quiet few hours, a camera at a badger sett that only
    fires at dusk is not silent all day. None until there are `min_history` arrivals.
    """
    if len(arrivals) < settings.min_history:
        return None
    last = arrivals[-1]
    hour = last.hour
    usual = timedelta(0)
    for before, after in zip(arrivals, arrivals[1:], strict=False):
        distance = min((before.hour - hour) % 24, (hour - before.hour) % 24)
        if distance <= 1:
            usual = max(usual, after - before)
    allowed = max(timedelta(hours=settings.silence_min_hours), usual * settings.silence_factor)
    return now - last > allowed, allowed


def clock_drift(
    captured: datetime | None,
    file_time: datetime | None,
    night_frame: bool,
    settings: HealthSettings,
    latitude: float | None = None,
    longitude: float | None = None,
    utc_offset: timedelta | None = None,
) -> str | None:
    """Why the camera's clock looks wrong for this frame, or None.

    Two witnesses that copying cannot fool: a photo stamped (EXIF) hours after its file was
    written was not taken then (a copy makes a file newer, never older, so only this direction
    counts); and, with the camera's position and UTC offset, an infrared (night) frame stamped
    at a time the sun is well up. (Not a colour frame at night: white-flash cameras take those.)
    """
    if captured is None:
        return None
    if file_time is not None and captured - file_time > timedelta(hours=settings.clock_drift_hours):
        hours = (captured - file_time).total_seconds() / 3600
        return f"photos are stamped {hours:.1f} h after their files were written"
    if night_frame and latitude is not None and longitude is not None and utc_offset is not None:
        elevation = sun_elevation(captured - utc_offset, latitude, longitude)
        if elevation > 15:
            return f"an infrared (night) frame is stamped {captured:%H:%M}, when the sun is {elevation:.0f} degrees up"
    return None


def sun_elevation(utc: datetime, latitude: float, longitude: float) -> float:
    """The sun's elevation in degrees at `utc` (naive UTC), within about a degree (NOAA's approximation)."""
    day = utc.timetuple().tm_yday
    hours = utc.hour + utc.minute / 60 + utc.second / 3600
    gamma = 2 * math.pi / 365 * (day - 1 + (hours - 12) / 24)
    declination = (
        0.006918 - 0.399912 * math.cos(gamma) + 0.070257 * math.sin(gamma) - 0.006758 * math.cos(2 * gamma)
        + 0.000907 * math.sin(2 * gamma) - 0.002697 * math.cos(3 * gamma) + 0.00148 * math.sin(3 * gamma)
    )
    equation = 229.18 * (
        0.000075 + 0.001868 * math.cos(gamma) - 0.032077 * math.sin(gamma) - 0.014615 * math.cos(2 * gamma) - 0.040849 * math.sin(2 * gamma)
    )
    solar_minutes = hours * 60 + equation + 4 * longitude
    hour_angle = math.radians(solar_minutes / 4 - 180)
    lat = math.radians(latitude)
    cos_zenith = math.sin(lat) * math.sin(declination) + math.cos(lat) * math.cos(declination) * math.cos(hour_angle)
    return 90 - math.degrees(math.acos(max(-1.0, min(1.0, cos_zenith))))
