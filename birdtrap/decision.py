"""From ranked probabilities to what is stored: a bird (species or genus), background, or unsure.

When no species is confident enough but the species of one genus together are, the photo is
recorded at genus rank with their summed probability, as SpeciesNet and other camera-trap
classifiers do: "a chickadee, species unsure" is worth more to an ecologist than "unknown".

A deployment's checklist (the species that occur where the camera is) keeps impossible answers
out (a flamingo in Germany): an unlisted species is never reported. The decision falls to its
genus when a congener is on the list, else to the best listed species (the model's probabilities
renormalised over the list, a prior that says "only these occur here"), else to an unnamed bird.
The raw model answer is still stored in the predictions table for review.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from birdtrap.bundle import Label
from birdtrap.errors import ConfigError
from birdtrap.kinds import Kind

SPECIES, GENUS, CLASS = "species", "genus", "class"
# The species model alone never earns `blank`: its "background" is one of several pieces of
# evidence the Identifier weighs (issue 22). A background answer here is a candidate blank.
BIRD, BLANK, UNSURE = Kind.BIRD, Kind.BLANK, Kind.UNSURE
UNNAMED_BIRD = "Aves"


@dataclass(frozen=True)
class Decision:
    kind: Kind  # bird, blank (background: a candidate), unsure; from the Identifier also animal, person, vehicle
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
    checklist: frozenset[str] | None = None  # binomials ("Ardea cinerea") that occur at the deployment
    # Renormalising over the checklist is only trusted when the listed species hold at least this
    # much of the model's probability; below it the model is sure of something not on the list.
    checklist_min_mass: float = 0.1


def binomial(scientific: str) -> str:
    """'Ardea herodias occidentalis' -> 'Ardea herodias' (checklists list species)."""
    return " ".join(scientific.split()[:2])


def read_checklist(path: Path) -> frozenset[str]:
    """One scientific name a line (extra columns after a comma or tab are ignored; # comments)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"decision.checklist {path} cannot be read ({e.strerror}); fix the path or remove the key.") from None
    names = set()
    for line in lines:
        name = line.split("#", 1)[0].replace("\t", ",").split(",", 1)[0].strip()
        if name and name.lower() not in ("scientific_name", "scientificname", "species"):
            names.add(binomial(name))
    if not names:
        raise ConfigError(f"decision.checklist {path} lists no species; put one scientific name a line.")
    return frozenset(names)


def genus_totals(probabilities: np.ndarray, labels: tuple[Label, ...], background: set[str], allowed=None) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for label in labels:
        if label.text in background or not label.genus:
            continue
        if allowed is not None and binomial(label.scientific) not in allowed:
            continue
        totals[label.genus] += float(probabilities[label.index])
    return totals


def _best_genus(totals: dict[str, float]) -> tuple[str, float]:
    return max(totals.items(), key=lambda item: item[1], default=("", 0.0))


def decide(probabilities: np.ndarray, labels: tuple[Label, ...], rules: DecisionRules) -> Decision:
    """The decision for one probability vector (species model output)."""
    background = set(rules.background_labels)
    best = int(np.argmax(probabilities))
    label = labels[best]
    confidence = float(probabilities[best])
    if label.text in background:
        return Decision(BLANK, label.text, None, None, None, confidence)
    checklist = rules.checklist
    if checklist is None or binomial(label.scientific) in checklist:
        if confidence >= rules.threshold:
            return Decision(BIRD, label.text, label.scientific, label.common, SPECIES, confidence)
        if rules.genus_rollup:
            genus, total = _best_genus(genus_totals(probabilities, labels, background))
            if total >= rules.threshold:
                return Decision(BIRD, genus, genus, None, GENUS, min(total, 1.0))
        return Decision(UNSURE, label.text, label.scientific, label.common, None, confidence)
    return _decide_with_checklist(probabilities, labels, rules, background, label, confidence)


def _decide_with_checklist(
    probabilities: np.ndarray, labels: tuple[Label, ...], rules: DecisionRules, background: set[str], top: Label, confidence: float
) -> Decision:
    checklist = rules.checklist or frozenset()
    listed_genera = {name.split()[0] for name in checklist}
    totals = genus_totals(probabilities, labels, background)
    # The model's species is not here, but its genus is: trust the genus.
    if top.genus in listed_genera and totals[top.genus] >= rules.threshold:
        return Decision(BIRD, top.genus, top.genus, None, GENUS, min(totals[top.genus], 1.0))
    allowed = np.array([binomial(lab.scientific) in checklist for lab in labels])
    mass = float(probabilities[allowed].sum())
    if mass >= rules.checklist_min_mass:
        renormalised = np.where(allowed, probabilities, 0.0) / mass
        index = int(np.argmax(renormalised))
        listed = labels[index]
        if renormalised[index] >= rules.threshold:
            return Decision(BIRD, listed.text, listed.scientific, listed.common, SPECIES, float(renormalised[index]))
        genus, total = _best_genus(genus_totals(renormalised, labels, background, checklist))
        if rules.genus_rollup and total >= rules.threshold:
            return Decision(BIRD, genus, genus, None, GENUS, min(total, 1.0))
    if confidence >= rules.threshold:
        return Decision(BIRD, UNNAMED_BIRD, UNNAMED_BIRD, "bird", CLASS, confidence)
    return Decision(UNSURE, top.text, top.scientific, top.common, None, confidence)
