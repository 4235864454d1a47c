"""How far to trust each species the machine names, from the owner's own reviews (issue 19).

Every review stores the machine's answer beside the person's (CorrectionRecord's machine_*
columns), so the newest verdict on each reviewed event says whether the machine's species was
right, and if not what it really was. Per species (and per camera): how many reviewed, how many
right (precision), what it was corrected into, and a suggested threshold: the confidence that
would have kept the most right sightings net of wrong ones. A suggestion is only that; it is
applied when the owner writes it into `decision.species_thresholds`.

Its figures describe reviewed events, which are not a random sample (people review what looks
wrong): precision here is a floor for what the owner looked at, not the model's overall rate.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from birdtrap.identify.decision import binomial
from birdtrap.identify.kinds import Kind
from birdtrap.store import CorrectionRecord, EventRecord

MIN_REVIEWS = 5  # fewer reviewed events than this suggest no threshold: one mistake is not a pattern
ALL_CAMERAS = "all"


@dataclass(frozen=True)
class Reviewed:
    """One reviewed event as the trust report sees it: what the machine said and whether it was right."""

    species: str
    common_name: str | None
    camera: str
    confidence: float | None
    right: bool
    became: str  # the person's answer: a scientific name, or a kind (blank) when no bird


@dataclass(frozen=True)
class SpeciesTrust:
    """What the reviews say of one species the machine names, on one camera or on all of them."""

    species: str
    common_name: str | None
    camera: str
    reviewed: int
    right: int
    corrected_into: tuple[tuple[str, int], ...]  # most often first
    threshold: float  # the one that applies now
    suggested: float | None  # a higher threshold that keeps more right than wrong sightings; None: keep
    kept_right: int = 0  # at `suggested`: right sightings still kept, of `right`
    dropped_wrong: int = 0  # at `suggested`: wrong sightings no longer made, of `reviewed - right`

    @property
    def precision(self) -> float:
        return self.right / self.reviewed if self.reviewed else 0.0

    def sentence(self) -> str:
        """The suggestion in words, as the species page and `stats --trust` say it."""
        wrong = self.reviewed - self.right
        if self.suggested is None:
            if self.reviewed < MIN_REVIEWS:
                return f"keep {self.threshold:.2f}: too few reviews to suggest one ({self.reviewed} of {MIN_REVIEWS})"
            if wrong == 0:
                return f"keep {self.threshold:.2f}: right in all {self.reviewed} reviews"
            return f"keep {self.threshold:.2f}: no higher threshold drops more wrong sightings than right ones"
        if self.right == 0:
            return (
                f"never right in {self.reviewed} reviews: at {self.suggested:.2f} you would have dropped {self.dropped_wrong} of "
                f"{wrong} wrong sightings; if it does not occur here, a checklist (decision.checklist) leaves it out"
            )
        return (
            f"at {self.suggested:.2f} you would have kept {self.kept_right} of {self.right} right sightings "
            f"and dropped {self.dropped_wrong} of {wrong} wrong"
        )


def reviewed_events(session: Session, species: str | None = None) -> list[Reviewed]:
    """The newest verdict of every reviewed event whose machine answer named a species."""
    newest = select(func.max(CorrectionRecord.id)).group_by(CorrectionRecord.event_id)
    query = (
        select(CorrectionRecord, EventRecord.camera_id)
        .outerjoin(EventRecord, EventRecord.id == CorrectionRecord.event_id)  # a merged-away event keeps its review
        .where(CorrectionRecord.id.in_(newest), CorrectionRecord.machine_kind == Kind.BIRD)
        .where(CorrectionRecord.machine_scientific_name.is_not(None))
        .order_by(CorrectionRecord.id)
    )
    reviewed = []
    for correction, camera in session.execute(query):
        machine = correction.machine_scientific_name
        if species is not None and binomial(machine) != binomial(species):
            continue
        said = correction.scientific_name
        right = correction.kind == Kind.BIRD and said is not None and binomial(said) == binomial(machine)
        became = said if correction.kind == Kind.BIRD and said else str(correction.kind)
        reviewed.append(Reviewed(machine, correction.machine_common_name, camera or "-", correction.machine_confidence, right, became))
    return reviewed


def trust_report(
    session: Session, threshold_for: Callable[[str], float], per_camera: bool = False, species: str | None = None
) -> list[SpeciesTrust]:
    """Per species (and per camera with `per_camera`), most reviewed first.

    `threshold_for(scientific name)` is the threshold in force now (decision.species_thresholds,
    else decision.threshold); a suggestion is made only above it, from MIN_REVIEWS reviews on.
    """
    groups: dict[tuple[str, str], list[Reviewed]] = {}
    for item in reviewed_events(session, species):
        key = (binomial(item.species), item.camera if per_camera else ALL_CAMERAS)
        groups.setdefault(key, []).append(item)
    report = [_trust(name, camera, items, threshold_for(name)) for (name, camera), items in groups.items()]
    return sorted(report, key=lambda t: (-t.reviewed, t.species, t.camera))


def _trust(name: str, camera: str, items: list[Reviewed], threshold: float) -> SpeciesTrust:
    right = sum(item.right for item in items)
    into = Counter(item.became for item in items if not item.right).most_common()
    common = next((item.common_name for item in items if item.common_name), None)
    suggested, kept, dropped = suggest_threshold([(item.confidence, item.right) for item in items], threshold)
    return SpeciesTrust(name, common, camera, len(items), right, tuple(into), threshold, suggested, kept, dropped)


def suggest_threshold(reviews: Iterable[tuple[float | None, bool]], threshold: float) -> tuple[float | None, int, int]:
    """(suggested threshold, right kept, wrong dropped) from (machine confidence, right?) pairs.

    The candidate thresholds are the reviewed confidences above `threshold`; the one that keeps
    the most right sightings minus wrong ones wins (the lowest of equals: drop no more than
    needed). None when there are fewer than MIN_REVIEWS reviews, no wrong one, or no candidate
    beats the threshold in force.
    """
    scored = [(confidence, right) for confidence, right in reviews if confidence is not None]
    wrong_total = sum(not right for _, right in scored)
    if len(scored) < MIN_REVIEWS or wrong_total == 0:
        return None, 0, 0

    def net(cut: float) -> int:
        return sum((1 if right else -1) for confidence, right in scored if confidence >= cut)

    best, best_net = None, net(threshold)
    # Each reviewed confidence, and just above the highest: a species wrong every time keeps none.
    above_all = min(1.0, math.floor(max(confidence for confidence, _ in scored) * 100) / 100 + 0.01)
    for cut in sorted(c for c in {confidence for confidence, _ in scored} | {above_all} if c > threshold):
        if net(cut) > best_net:
            best, best_net = cut, net(cut)
    if best is None:
        return None, 0, 0
    cut = max(math.floor(best * 100) / 100, threshold) if best != above_all else best  # two decimals, as written in a config
    kept = sum(right for confidence, right in scored if confidence >= cut)
    dropped = sum(not right for confidence, right in scored if confidence < cut)
    return cut, kept, dropped
