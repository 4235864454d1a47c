"""`birdtrap evaluate`: the daemon's own pipeline scored on labelled photos.

The labels file is the format of `../shared/data/labels.csv`: `path` (relative to `--root`, by
default the file's folder's parent) and `truth` (a scientific name, or `none` when no bird is in
the frame). Nothing here decides anything: it counts what `Identifier` decided.
"""

from __future__ import annotations

import csv
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from birdtrap.decision import BIRD
from birdtrap.decision import BLANK as EMPTY
from birdtrap.errors import BirdtrapError, ConfigError


@dataclass(frozen=True)
class LabelledPhoto:
    path: Path
    truth: str | None  # scientific name, None for no bird
    kind: str


@dataclass(frozen=True)
class PhotoOutcome:
    path: str
    truth: str | None
    truth_kind: str  # the labels file's kind column: bird, empty, mammal, human, ...
    decided: str  # bird, empty, animal, person, unknown, failed
    label: str | None
    rank: str | None
    confidence: float
    species_right: bool
    genus_right: bool
    false_bird: bool
    invokes: int
    gate_invokes: int
    detector_invokes: int
    seconds: float
    source: str
    box: tuple | None


@dataclass(frozen=True)
class Summary:
    photos: int
    bird_photos: int
    species_right: int
    genus_right: int
    named_right: int  # species right, or genus right at genus rank or better
    no_bird_photos: int
    false_birds: int
    empty_photos: int
    empty_recognised: int
    failed: int
    mean_seconds: float
    p95_seconds: float
    mean_invokes: float
    mean_gate_invokes: float
    mean_detector_invokes: float

    def as_dict(self) -> dict:
        return asdict(self)


def read_labels(labels: Path, root: Path | None = None) -> list[LabelledPhoto]:
    """Parse a labels CSV; raises ConfigError naming the file and the missing column."""
    root = root or labels.resolve().parent.parent
    try:
        with open(labels, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = {"path", "truth"} - set(reader.fieldnames or [])
            if missing:
                raise ConfigError(
                    f"{labels} has no {', '.join(sorted(missing))} column; it needs path and truth (a scientific name or none)."
                )
            rows = list(reader)
    except OSError as e:
        raise ConfigError(f"labels file {labels} cannot be read ({e.strerror}).") from None
    photos = []
    for row in rows:
        truth = (row["truth"] or "").strip()
        photos.append(LabelledPhoto(root / row["path"], None if truth.lower() in ("", "none") else truth, row.get("kind", "")))
    return photos


def score(photo: LabelledPhoto, decided: str, scientific: str | None, rank: str | None) -> tuple[bool, bool, bool]:
    """(species right, genus right, false bird) for one decision."""
    if photo.truth is None:
        return False, False, decided == BIRD
    if decided != BIRD or not scientific:
        return False, False, False
    truth_genus = photo.truth.split()[0]
    species_right = rank == "species" and " ".join(scientific.split()[:2]) == " ".join(photo.truth.split()[:2])
    genus_right = scientific.split()[0] == truth_genus
    return species_right, genus_right, False


def evaluate(photos: list[LabelledPhoto], identifier, progress=None) -> list[PhotoOutcome]:
    """Run `identifier` (the daemon's) over every photo, in file order, as the daemon would."""
    from birdtrap.ingest import classify_files

    outcomes = []
    started = time.perf_counter()
    by_path = {p.path: p for p in photos}
    for path, result in classify_files([p.path for p in photos], identifier):
        seconds = time.perf_counter() - started
        photo = by_path[path]
        if isinstance(result, BirdtrapError):
            outcomes.append(
                PhotoOutcome(
                    str(path), photo.truth, photo.kind, "failed", str(result), None, 0.0,
                    species_right=False, genus_right=False, false_bird=False,
                    invokes=0, gate_invokes=0, detector_invokes=0, seconds=seconds, source="", box=None,
                )
            )
        else:
            d = result.decision
            species_right, genus_right, false_bird = score(photo, d.kind, d.scientific_name, d.taxon_rank)
            outcomes.append(
                PhotoOutcome(
                    str(path), photo.truth, photo.kind, d.kind, d.label, d.taxon_rank, d.confidence, species_right, genus_right,
                    false_bird, result.invokes, result.gate_invokes, result.detector_invokes, seconds, result.source,
                    tuple(round(v, 3) for v in result.box) if result.box else None,
                )
            )
        if progress is not None:
            progress(1)
        started = time.perf_counter()
    return outcomes


def summarise(outcomes: list[PhotoOutcome]) -> Summary:
    birds = [o for o in outcomes if o.truth is not None]
    others = [o for o in outcomes if o.truth is None]
    timings = sorted(o.seconds for o in outcomes) or [0.0]
    p95 = timings[min(len(timings) - 1, int(round(0.95 * (len(timings) - 1))))]
    done = [o for o in outcomes if o.decided != "failed"] or outcomes
    return Summary(
        photos=len(outcomes),
        bird_photos=len(birds),
        species_right=sum(o.species_right for o in birds),
        genus_right=sum(o.genus_right for o in birds),
        named_right=sum(o.species_right or o.genus_right for o in birds),
        no_bird_photos=len(others),
        false_birds=sum(o.false_bird for o in others),
        empty_photos=sum(o.truth_kind == EMPTY for o in outcomes),
        empty_recognised=sum(o.truth_kind == EMPTY and o.decided == EMPTY for o in outcomes),
        failed=sum(o.decided == "failed" for o in outcomes),
        mean_seconds=statistics.fmean(o.seconds for o in outcomes) if outcomes else 0.0,
        p95_seconds=p95,
        mean_invokes=statistics.fmean(o.invokes for o in done) if done else 0.0,
        mean_gate_invokes=statistics.fmean(o.gate_invokes for o in done) if done else 0.0,
        mean_detector_invokes=statistics.fmean(o.detector_invokes for o in done) if done else 0.0,
    )


__all__ = ["read_labels", "evaluate", "summarise", "Summary", "PhotoOutcome", "EMPTY"]
