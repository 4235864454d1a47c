"""From ranked probabilities to what is stored: a bird (species or genus), an empty frame, or unsure.

When no species is confident enough but the species of one genus together are, the photo is
recorded at genus rank with their summed probability, as SpeciesNet and other camera-trap
classifiers do: "a chickadee, species unsure" is worth more to an ecologist than "unknown".
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from birdtrap.bundle import Label

SPECIES, GENUS = "species", "genus"
BIRD, EMPTY, UNKNOWN = "bird", "empty", "unknown"


@dataclass(frozen=True)
class Decision:
    kind: str  # bird, empty or unknown
    label: str | None
    scientific_name: str | None
    common_name: str | None
    taxon_rank: str | None
    confidence: float


@dataclass(frozen=True)
class DecisionRules:
    threshold: float = 0.5
    background_labels: tuple[str, ...] = ("background",)
    genus_rollup: bool = True


def genus_totals(probabilities: np.ndarray, labels: tuple[Label, ...], background: set[str]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for label in labels:
        if label.text in background or not label.genus:
            continue
        totals[label.genus] += float(probabilities[label.index])
    return totals


def decide(probabilities: np.ndarray, labels: tuple[Label, ...], rules: DecisionRules) -> Decision:
    """The decision for one probability vector (species model output)."""
    background = set(rules.background_labels)
    best = int(np.argmax(probabilities))
    label = labels[best]
    confidence = float(probabilities[best])
    if label.text in background:
        return Decision(EMPTY, label.text, None, None, None, confidence)
    if confidence >= rules.threshold:
        return Decision(BIRD, label.text, label.scientific, label.common, SPECIES, confidence)
    if rules.genus_rollup:
        totals = genus_totals(probabilities, labels, background)
        genus, total = max(totals.items(), key=lambda item: item[1], default=("", 0.0))
        if total >= rules.threshold:
            return Decision(BIRD, genus, genus, None, GENUS, min(total, 1.0))
    return Decision(UNKNOWN, label.text, label.scientific, label.common, None, confidence)
