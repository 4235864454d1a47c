"""A bird the gate confirmed a moment ago is a witness for the next frames of the same burst.

The bird gate guards against the species model, which names a bird in every frame (a cougar
included). But the gate fails on some frames of a bird it confirmed a second earlier: the heron
turns, half leaves the frame, or the infrared light changes. Such a frame, where the species model
still names the same bird (the same taxon or one on its line of descent, e.g. Ardeidae after
Ardeidae), is that bird, not "unsure": two witnesses agree (the species model on this frame, the
gate on a frame of the same burst). Only gate-confirmed sightings are remembered, so one lenient
call cannot carry itself through a burst. The witness only looks back in time: frames are
identified in the order they arrive, and an earlier frame's stored answer is not rewritten.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime

from birdtrap.identify import taxonomy
from birdtrap.identify.motion import BurstKey


class BurstSightings:
    """The gate-confirmed birds of each camera's last few frames, by capture time."""

    def __init__(self, gap_seconds: float = 5.0, keep: int = 16) -> None:
        self.gap_seconds = gap_seconds
        self._seen: dict[str, deque[tuple[datetime, str]]] = {}
        self.keep = keep

    def confirm(self, key: object, scientific_name: str | None) -> None:
        """Remember that the gate and the species model agreed on a bird in this frame."""
        if isinstance(key, BurstKey) and scientific_name:
            self._seen.setdefault(key.camera, deque(maxlen=self.keep)).append((key.captured_at, scientific_name))

    def witness(self, key: object, scientific_name: str | None) -> str | None:
        """The confirmed bird of this frame's burst that `scientific_name` agrees with, else None."""
        if not isinstance(key, BurstKey) or not scientific_name:
            return None
        for when, seen in reversed(self._seen.get(key.camera, ())):
            if abs((key.captured_at - when).total_seconds()) <= self.gap_seconds and same_line(seen, scientific_name):
                return seen
        return None


def same_line(a: str, b: str) -> bool:
    """Whether two taxa lie on one line of descent (Ardea cinerea and Ardeidae; not Ardea and Egretta)."""
    return a in lineage(b) or b in lineage(a)


def lineage(name: str) -> tuple[str, ...]:
    """The taxon and every rank above it that the package's taxonomy knows, finest first.

    "Ardea cinerea" -> (Ardea cinerea, Ardea, Ardeidae, Pelecaniformes, Aves); a family or an order
    starts at itself. A name the taxonomy does not know is only itself (and Aves).
    """
    words = name.split()
    if not words:
        return ()
    if words[0] == taxonomy.CLASS_NAME:
        return (taxonomy.CLASS_NAME,)
    own = (" ".join(words[:2]), words[0]) if len(words) >= 2 else (words[0],)
    return tuple(dict.fromkeys(n for n in (*own, *taxonomy.family_and_order(name), taxonomy.CLASS_NAME) if n))
