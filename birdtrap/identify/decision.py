"""From ranked probabilities to what is stored: a bird (species to order), background, or unsure.

When no species is confident enough but the species of one genus together are, the photo is
recorded at genus rank with their summed probability, as SpeciesNet and other camera-trap
classifiers do: "a chickadee, species unsure" is worth more to an ecologist than "unknown".
When no genus is sure either, the same sum is taken per family, then per order (from the
package's taxonomy table): an infrared heron split between Egretta and Ardea is "Ardeidae", which
is true, rather than a wrong egret or nothing. A sum counts only above the chance level the
taxon's share of the labels gives it (see _sure); docs/TAXONOMY.md says more.

A deployment's checklist (the species that occur where the camera is) keeps impossible answers
out (a flamingo in Germany): an unlisted species is never reported. The decision falls to its
genus when a congener is on the list, else to the best listed species (the model's probabilities
renormalised over the list, a prior that says "only these occur here"), else to an unnamed bird.
The family and order steps follow the genus's: the model's family counts when a listed species
belongs to it.
The raw model answer is still stored in the predictions table for review.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from birdtrap.errors import ConfigError
from birdtrap.identify import taxonomy
from birdtrap.identify.bundle import Label
from birdtrap.identify.kinds import Kind

SPECIES, GENUS, FAMILY, ORDER, CLASS = "species", "genus", "family", "order", "class"
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


# How coarse each rank is: a decision may be made no finer than the evidence allows.
RANK_DEPTH = {SPECIES: 0, GENUS: 1, FAMILY: 2, ORDER: 3, CLASS: 4}


@dataclass(frozen=True)
class DecisionRules:
    threshold: float = 0.5
    background_labels: tuple[str, ...] = ("background",)
    # The ranks an unsure answer may roll up to, in order; () names species only.
    rollup: tuple[str, ...] = (GENUS, FAMILY, ORDER)
    checklist: frozenset[str] | None = None  # binomials ("Ardea cinerea") that occur at the deployment
    # Renormalising over the checklist is only trusted when the listed species hold at least this
    # much of the model's probability; below it the model is sure of something not on the list.
    checklist_min_mass: float = 0.1
    # The finest rank named on a monochrome (infrared) frame: a species model trained on colour
    # photos tells congeners apart by colour, which an infrared frame does not have.
    monochrome_rank: str = FAMILY
    # (binomial, threshold) pairs the owner accepted from the trust report (issue 19): a species
    # the camera's reviews found often wrong must be surer; below its own threshold it rolls up.
    species_thresholds: tuple[tuple[str, float], ...] = ()

    def threshold_for(self, scientific: str | None) -> float:
        """The confidence a species needs: its own accepted threshold, else `threshold`."""
        if self.species_thresholds and scientific:
            return dict(self.species_thresholds).get(binomial(scientific), self.threshold)
        return self.threshold


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


def taxon_of(label: Label, rank: str) -> str:
    """The name of `label`'s taxon at `rank` (genus, family or order); "" where the table lacks it."""
    if rank == GENUS:
        return label.genus
    lineage = taxonomy.lineage_of(label.genus) if label.genus else None
    if lineage is None:
        return ""
    return lineage.family if rank == FAMILY else lineage.order if rank == ORDER else ""


# Per label tuple (by identity: hashing 1,000 labels on every decision cost more than the sum),
# background set and rank: the label tuple, its taxa and each label's taxon index.
_GROUPS: dict[tuple[int, frozenset[str], str], tuple[tuple[Label, ...], tuple[str, ...], np.ndarray]] = {}


def _groups(labels: tuple[Label, ...], background: frozenset[str], rank: str) -> tuple[tuple[str, ...], np.ndarray]:
    """The taxa at `rank` and, per label, the index of its taxon (-1 for background or unknown)."""
    key = (id(labels), background, rank)
    cached = _GROUPS.get(key)
    if cached is not None and cached[0] is labels:
        return cached[1], cached[2]
    names: dict[str, int] = {}
    members = np.full(len(labels), -1, np.int64)
    for position, label in enumerate(labels):
        name = taxon_of(label, rank) if label.text not in background else ""
        if name:
            members[position] = names.setdefault(name, len(names))
    if len(_GROUPS) > 32:  # models reloaded many times: start again rather than grow
        _GROUPS.clear()
    _GROUPS[key] = (labels, tuple(names), members)
    return tuple(names), members


def rank_totals(probabilities: np.ndarray, labels: tuple[Label, ...], background: set[str], rank: str) -> dict[str, float]:
    """Summed probability per taxon at `rank` (genus, family or order) over the non-background labels."""
    names, members = _groups(labels, frozenset(background), rank)
    weights = np.asarray(probabilities, np.float64)[: len(labels)]
    known = members >= 0
    sums = np.bincount(members[known], weights=weights[known], minlength=len(names))
    return dict(zip(names, sums.tolist(), strict=True))


@functools.lru_cache(maxsize=8)
def _listed_taxa(checklist: frozenset[str], rank: str) -> frozenset[str]:
    """The genera, families or orders that the checklist's species belong to."""
    if rank == GENUS:
        return frozenset(name.split()[0] for name in checklist)
    lineages = (taxonomy.lineage_of(name.split()[0]) for name in checklist)
    return frozenset((lin.family if rank == FAMILY else lin.order) for lin in lineages if lin is not None)


def _chance_shares(labels: tuple[Label, ...], background: set[str], rank: str, eligible: np.ndarray | None = None) -> dict[str, float]:
    """Each taxon's share of the labels that can hold probability: what it sums to by chance."""
    names, members = _groups(labels, frozenset(background), rank)
    known = members >= 0 if eligible is None else (members >= 0) & eligible[: len(labels)]
    counts = np.bincount(members[known], minlength=len(names)).astype(np.float64)
    return dict(zip(names, (counts / max(counts.sum(), 1.0)).tolist(), strict=True))


def _sure(total: float, share: float, threshold: float) -> bool:
    """A summed probability is evidence only above what the taxon's share of the labels gives by chance.

    Passeriformes holds 396 of the iNat model's 964 labels: a model with no idea (a squirrel in a
    crop) spreads its probability and the passerines collect half of it. So the sum must reach the
    threshold after the chance level is taken out, (total - share) / (1 - share), as Cohen's kappa
    does; for a genus or a small family the share is a few hundredths and changes little.
    """
    return share < 1.0 and (total - share) / (1.0 - share) >= threshold


def _taxon_decision(name: str, rank: str, total: float) -> Decision:
    common = taxonomy.family_english(name) if rank == FAMILY else None
    return Decision(BIRD, name, name, common, rank, min(total, 1.0))


def _roll_up(
    probabilities: np.ndarray, labels: tuple[Label, ...], rules: DecisionRules, background: set[str], eligible: np.ndarray | None = None
) -> Decision | None:
    """The lowest rank in `rules.rollup` at which one taxon is sure (see _sure), else None.

    `eligible` marks the labels that can hold probability (the checklist's, after renormalising).
    """
    for rank in rules.rollup:
        totals = rank_totals(probabilities, labels, background, rank)
        shares = _chance_shares(labels, background, rank, eligible)
        sure = [(total, name) for name, total in totals.items() if _sure(total, shares[name], rules.threshold)]
        if sure:
            total, name = max(sure)
            return _taxon_decision(name, rank, total)
    return None


def decide(probabilities: np.ndarray, labels: tuple[Label, ...], rules: DecisionRules, finest: str = SPECIES) -> Decision:
    """The decision for one probability vector (species model output).

    `finest` is the finest rank the evidence allows: on a monochrome (infrared) frame, where the
    colours that tell congeners apart are missing, the caller asks for no finer than a family,
    so the answer is "a heron" rather than a confident wrong species (see DecisionRules.monochrome_rank).
    """
    background = set(rules.background_labels)
    best = int(np.argmax(probabilities))
    label = labels[best]
    confidence = float(probabilities[best])
    if label.text in background:
        return Decision(BLANK, label.text, None, None, None, confidence)
    if RANK_DEPTH.get(finest, 0) > 0:
        return _decide_coarse(probabilities, labels, rules, background, label, confidence, finest)
    checklist = rules.checklist
    if checklist is None or binomial(label.scientific) in checklist:
        if confidence >= rules.threshold_for(label.scientific):
            return Decision(BIRD, label.text, label.scientific, label.common, SPECIES, confidence)
        rolled = _roll_up(probabilities, labels, rules, background)
        if rolled is not None:
            return rolled
        return Decision(UNSURE, label.text, label.scientific, label.common, None, confidence)
    return _decide_with_checklist(probabilities, labels, rules, background, label, confidence)


def unnamed_bird(probabilities: np.ndarray, labels: tuple[Label, ...], rules: DecisionRules) -> Decision:
    """A bird at class rank, for a region other witnesses call a bird where no rank of the model is sure.

    Its confidence is the model's whole bird mass (everything but background): how sure it is
    that some bird is there, the only thing it is asked here.
    """
    background = set(rules.background_labels)
    mass = float(sum(p for p, label in zip(probabilities, labels, strict=True) if label.text not in background))
    return Decision(BIRD, UNNAMED_BIRD, UNNAMED_BIRD, "bird", CLASS, mass)


def _decide_coarse(
    probabilities: np.ndarray, labels: tuple[Label, ...], rules: DecisionRules, background: set[str], top: Label, confidence: float,
    finest: str,
) -> Decision:
    """Roll up from `finest` (genus, family or order) only: no species, however sure the model is.

    A checklist still counts: the model's probabilities are renormalised over the listed species
    first, as for a species answer, when they hold enough of it.
    """
    coarse = replace(rules, rollup=tuple(rank for rank in rules.rollup if RANK_DEPTH[rank] >= RANK_DEPTH[finest]))
    eligible = None
    if rules.checklist is not None:
        allowed = np.array([binomial(lab.scientific) in rules.checklist for lab in labels])
        mass = float(probabilities[allowed].sum())
        if mass >= rules.checklist_min_mass:
            probabilities, eligible = np.where(allowed, probabilities, 0.0) / mass, allowed
    rolled = _roll_up(probabilities, labels, coarse, background, eligible)
    if rolled is not None:
        return rolled
    return Decision(UNSURE, top.text, top.scientific, top.common, None, confidence)


def _decide_with_checklist(
    probabilities: np.ndarray, labels: tuple[Label, ...], rules: DecisionRules, background: set[str], top: Label, confidence: float
) -> Decision:
    checklist = rules.checklist or frozenset()
    # The model's species is not here, but its genus (else its family, else its order) is: trust
    # that taxon, with the model's own probabilities summed over it.
    for rank in rules.rollup:
        taxon = taxon_of(top, rank)
        if not taxon or taxon not in _listed_taxa(checklist, rank):
            continue
        total = rank_totals(probabilities, labels, background, rank).get(taxon, 0.0)
        if _sure(total, _chance_shares(labels, background, rank).get(taxon, 0.0), rules.threshold):
            return _taxon_decision(taxon, rank, total)
    allowed = np.array([binomial(lab.scientific) in checklist for lab in labels])
    mass = float(probabilities[allowed].sum())
    if mass >= rules.checklist_min_mass:
        renormalised = np.where(allowed, probabilities, 0.0) / mass
        index = int(np.argmax(renormalised))
        listed_label = labels[index]
        if renormalised[index] >= rules.threshold_for(listed_label.scientific):
            return Decision(BIRD, listed_label.text, listed_label.scientific, listed_label.common, SPECIES, float(renormalised[index]))
        rolled = _roll_up(renormalised, labels, rules, background, allowed)
        if rolled is not None:
            return rolled
    if confidence >= rules.threshold:
        return Decision(BIRD, UNNAMED_BIRD, UNNAMED_BIRD, "bird", CLASS, confidence)
    return Decision(UNSURE, top.text, top.scientific, top.common, None, confidence)
