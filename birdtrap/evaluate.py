"""`birdtrap evaluate`: the daemon's own pipeline scored on labelled photos, as a user feels it.

A labels file is the format of `../shared/data/labels.csv`: `path` (relative to `--root`, by
default the file's folder's parent), `truth` (a scientific name, or `none` when no bird is in
the frame), optionally `kind` (bird, empty, mammal, human, vehicle, ...) and `source` (where the
photo comes from). Nothing here decides anything: it counts what `Identifier` decided.

What is counted is what an ecologist meets (issue 22): was the bird found at all, was it named
right (species, genus, family, order), was a wrong name given (worse than "a bird, unsure"), was
a photo without a bird called a bird, was an animal or a person called blank (lost data: blank
frames get moved away), were truly empty frames recognised, and how many frames a person must
look at (unsure). Counts are kept per labels file and per source, beside the invokes and time.
"""

from __future__ import annotations

import csv
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from birdtrap.errors import BirdtrapError, ConfigError
from birdtrap.identify import taxonomy
from birdtrap.identify.kinds import Kind

# Label-file kinds for a truly empty frame (the old word and the new), and for frames that hold
# something that is no animal (a plant): calling those blank loses nothing.
BLANK_TRUTHS = ("empty", "blank")
NOTHING_ALIVE_TRUTHS = (*BLANK_TRUTHS, "plant", "")


@dataclass(frozen=True)
class LabelledPhoto:
    path: Path
    truth: str | None  # scientific name (species, genus or family), None for no bird
    kind: str  # the labels file's kind column: bird, empty, mammal, human, vehicle, ...
    source: str = ""  # where the photo comes from: the file's source column, else its folder
    labels_file: str = ""  # the labels file it was read from


@dataclass(frozen=True)
class PhotoOutcome:
    path: str
    truth: str | None
    truth_kind: str  # the labels file's kind column: bird, empty, mammal, human, ...
    decided: str  # a Kind: bird, blank, animal, person, vehicle, unsure, failed
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
    source: str  # where in the frame the answer came from: frame, detector, motion, tile
    box: tuple | None
    found: bool = False  # a bird photo given any bird answer
    family_right: bool = False
    order_right: bool = False
    wrong_name: bool = False  # a species or genus named that is not the truth
    called_blank: bool = False  # a bird, an animal, a person or a vehicle was there and it was called blank
    photo_source: str = ""
    labels_file: str = ""
    embed_invokes: int = 0  # the camera head's embedder (issue 23)


@dataclass(frozen=True)
class Summary:
    photos: int
    bird_photos: int
    species_right: int
    genus_right: int
    named_right: int  # species right, or genus right at genus rank or better
    no_bird_photos: int
    false_birds: int
    blank_photos: int  # truly empty frames (labels kind empty)
    blank_recognised: int  # of those, called blank
    failed: int
    mean_seconds: float
    p95_seconds: float
    mean_invokes: float
    mean_gate_invokes: float
    mean_detector_invokes: float
    birds_found: int = 0  # bird photos given any bird answer
    family_right: int = 0  # answered at family rank, and the family is the truth's
    order_right: int = 0
    unnamed_birds: int = 0  # bird photos answered only "a bird" (Aves, class rank): found, never wrong
    wrong_names: int = 0  # bird photos given a species or genus that is not the truth
    birds_called_blank: int = 0
    animals_people_called_blank: int = 0  # no bird, yet something there (mammal, person, vehicle, ...), called blank
    unsure: int = 0  # photos a person must look at
    total_seconds: float = 0.0
    total_invokes: int = 0  # species, gate, detector and embedder invokes together
    mean_embed_invokes: float = 0.0  # the camera head's embedder, where one is installed

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
        path = root / row["path"]
        photos.append(
            LabelledPhoto(
                path,
                None if truth.lower() in ("", "none") else truth,
                (row.get("kind") or "").strip().lower(),
                _source_name(row.get("source") or "") or path.parent.name,
                labels.name,
            )
        )
    return photos


def _source_name(source: str) -> str:
    """'drivendataorg/zamba@284a...:tests/x.jpg [licence]' -> 'drivendataorg/zamba': one group per project."""
    return source.strip().split("@", 1)[0].split(" ", 1)[0].split(":", 1)[0]


def score(photo: LabelledPhoto, decided: str, scientific: str | None, rank: str | None) -> tuple[bool, bool, bool]:
    """(species right, genus right, false bird) for one decision."""
    if photo.truth is None:
        return False, False, decided == Kind.BIRD
    if decided != Kind.BIRD or not scientific:
        return False, False, False
    truth_genus = photo.truth.split()[0]
    species_right = rank == "species" and " ".join(scientific.split()[:2]) == " ".join(photo.truth.split()[:2])
    genus_right = scientific.split()[0] == truth_genus
    return species_right, genus_right, False


def _higher_ranks(photo: LabelledPhoto, decided: str, scientific: str | None, rank: str | None) -> tuple[bool, bool, bool]:
    """(family right, order right, wrong name) for a bird answer on a bird photo.

    A family or order answer is right when it names the truth's family or order, looked up in
    the package's taxonomy (a truth given as a family, "Columbidae", is its own family). A wrong
    name is an answer at any rank that contradicts the truth: a species that is not the truth's,
    a genus, family or order the truth is not in. A truth above the answer's rank cannot be
    checked at that rank, so it never counts as wrong.
    """
    if photo.truth is None or decided != Kind.BIRD or not scientific:
        return False, False, False
    truth_words, answer = photo.truth.split(), scientific.split()
    truth_family, truth_order = taxonomy.family_and_order(photo.truth)
    family_right = rank == "family" and answer[0] == truth_family
    order_right = rank == "order" and answer[0] == truth_order
    truth_rank = "species" if len(truth_words) >= 2 else taxonomy.rank_of(truth_words[0]) or "genus"
    depth = {"species": 0, "genus": 1, "family": 2, "order": 3}
    wrong = False
    if rank in depth and depth[rank] >= depth.get(truth_rank, 0):
        if rank == "species":
            wrong = answer[:2] != truth_words[:2]
        elif rank == "genus":
            wrong = answer[0] != truth_words[0]
        elif rank == "family":
            wrong = truth_family is not None and answer[0] != truth_family
        elif rank == "order":
            wrong = truth_order is not None and answer[0] != truth_order
    return family_right, order_right, wrong


def evaluate(photos: list[LabelledPhoto], identifier, progress: Callable[[int], object] | None = None) -> list[PhotoOutcome]:
    """Run `identifier` (the daemon's) over every photo, in file order, as the daemon would."""
    from birdtrap.identify.photos import classify_files

    outcomes = []
    started = time.perf_counter()
    by_path = {p.path: p for p in photos}
    for path, result in classify_files([p.path for p in photos], identifier):
        seconds = time.perf_counter() - started
        photo = by_path[path]
        if isinstance(result, BirdtrapError):
            outcomes.append(
                PhotoOutcome(
                    str(path), photo.truth, photo.kind, Kind.FAILED, str(result), None, 0.0,
                    species_right=False, genus_right=False, false_bird=False,
                    invokes=0, gate_invokes=0, detector_invokes=0, seconds=seconds, source="", box=None,
                    photo_source=photo.source, labels_file=photo.labels_file,
                )
            )
        else:
            d = result.decision
            species_right, genus_right, false_bird = score(photo, d.kind, d.scientific_name, d.taxon_rank)
            family_right, order_right, wrong = _higher_ranks(photo, d.kind, d.scientific_name, d.taxon_rank)
            something_there = photo.truth is not None or photo.kind not in NOTHING_ALIVE_TRUTHS
            outcomes.append(
                PhotoOutcome(
                    str(path), photo.truth, photo.kind, str(d.kind), d.label, d.taxon_rank, d.confidence, species_right, genus_right,
                    false_bird, result.invokes, result.gate_invokes, result.detector_invokes, seconds, result.source,
                    tuple(round(v, 3) for v in result.box) if result.box else None,
                    found=photo.truth is not None and d.kind == Kind.BIRD,
                    family_right=family_right, order_right=order_right, wrong_name=wrong,
                    called_blank=something_there and d.kind == Kind.BLANK,
                    photo_source=photo.source, labels_file=photo.labels_file, embed_invokes=result.embed_invokes,
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
    done = [o for o in outcomes if o.decided != Kind.FAILED] or outcomes
    return Summary(
        photos=len(outcomes),
        bird_photos=len(birds),
        species_right=sum(o.species_right for o in birds),
        genus_right=sum(o.genus_right for o in birds),
        named_right=sum(o.species_right or o.genus_right for o in birds),
        no_bird_photos=len(others),
        false_birds=sum(o.false_bird for o in others),
        blank_photos=sum(o.truth_kind in BLANK_TRUTHS for o in outcomes),
        blank_recognised=sum(o.truth_kind in BLANK_TRUTHS and o.decided == Kind.BLANK for o in outcomes),
        failed=sum(o.decided == Kind.FAILED for o in outcomes),
        mean_seconds=statistics.fmean(o.seconds for o in outcomes) if outcomes else 0.0,
        p95_seconds=p95,
        mean_invokes=statistics.fmean(o.invokes for o in done) if done else 0.0,
        mean_gate_invokes=statistics.fmean(o.gate_invokes for o in done) if done else 0.0,
        mean_detector_invokes=statistics.fmean(o.detector_invokes for o in done) if done else 0.0,
        birds_found=sum(o.found for o in birds),
        family_right=sum(o.family_right for o in birds),
        order_right=sum(o.order_right for o in birds),
        unnamed_birds=sum(o.decided == Kind.BIRD and o.rank == "class" for o in birds),
        wrong_names=sum(o.wrong_name for o in birds),
        birds_called_blank=sum(o.called_blank for o in birds),
        animals_people_called_blank=sum(o.called_blank for o in others),
        unsure=sum(o.decided == Kind.UNSURE for o in outcomes),
        total_seconds=sum(o.seconds for o in outcomes),
        total_invokes=sum(o.invokes + o.gate_invokes + o.detector_invokes + o.embed_invokes for o in outcomes),
        mean_embed_invokes=statistics.fmean(o.embed_invokes for o in done) if done else 0.0,
    )


def summarise_by(outcomes: Iterable[PhotoOutcome], key: Callable[[PhotoOutcome], str]) -> dict[str, Summary]:
    """One Summary per group (labels file, source), in the order the groups first appear."""
    groups: dict[str, list[PhotoOutcome]] = {}
    for outcome in outcomes:
        groups.setdefault(key(outcome), []).append(outcome)
    return {name: summarise(members) for name, members in groups.items()}


def report(outcomes: list[PhotoOutcome]) -> dict[str, dict]:
    """Everything `birdtrap evaluate --json` prints: all photos, per labels file and per source."""
    return {
        "summary": summarise(outcomes).as_dict(),
        "files": {name: s.as_dict() for name, s in summarise_by(outcomes, lambda o: o.labels_file).items()},
        "sources": {name: s.as_dict() for name, s in summarise_by(outcomes, lambda o: o.photo_source).items()},
    }


__all__ = ["read_labels", "evaluate", "summarise", "summarise_by", "report", "Summary", "PhotoOutcome", "LabelledPhoto"]
