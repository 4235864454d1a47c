"""Export for retraining: a season's confident sightings seed next season's model.

The output is the layout `training/` reads, `<root>/<label>/<photo>`. A label folder is named by
the scientific name with its space ("Egretta thula", not "Egretta_thula"): training turns folder
names into labels.txt, and `birdtrap.identify.bundle.parse_label` reads the genus as the first word, so the
retrained model keeps the genus roll-up and checklists working. Only species-rank decisions are
exported; a genus-rank photo has no species folder to go in.

The labels are the machine's own, so only confident ones are exported, and `review_candidates`
lists the frames a person should label by hand first: the ones the model was least sure of, which
are also the ones a retrained model learns most from.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, selectinload

from birdtrap.errors import ExportError
from birdtrap.identify.bundle import sha256_file
from birdtrap.identify.privacy import boxes_from_text, write_redacted
from birdtrap.store import DONE, KIND_BIRD, KIND_UNSURE, ImageRecord, as_reviewed, join_review

log = logging.getLogger(__name__)

SPECIES = "species"


@dataclass(frozen=True)
class TrainingSetSummary:
    out_dir: Path
    written: int  # links or copies made by this run
    already_there: int  # the same photo was already in its folder (an earlier run)
    per_label: tuple[tuple[str, int], ...]  # label folder, photos in it from the database
    renamed: tuple[tuple[Path, Path], ...] = field(default=())  # (photo, where it went): its name was taken
    missing: tuple[Path, ...] = field(default=())  # on record but no longer on disk
    redacted: int = 0  # of `written`, copies with people hidden (never links)


@dataclass(frozen=True)
class ReviewCandidate:
    path: Path
    captured_at: datetime | None
    kind: str
    label: str | None
    taxon_rank: str | None
    confidence: float | None
    alternatives: tuple[tuple[str, float], ...]  # the model's best labels, most likely first


def label_folder(scientific_name: str) -> str:
    """The folder name for a species: its scientific name as it is ("Egretta thula")."""
    # A label from a custom model could hold a path separator; it must not leave the folder.
    name = scientific_name.strip().replace(os.sep, "-").replace("\0", "")
    return name.lstrip(".") or "unnamed"


def export_training_set(
    session: Session, out_dir: Path, min_confidence: float, copy: bool = False, hide_people: bool = True
) -> TrainingSetSummary:
    """Link (or copy) each done bird photo decided at species rank with confidence >= `min_confidence`
    into `out_dir/<scientific name>/`.

    Symlinks by default: a season of photos fits twice on no SD card. A file already in place is
    never replaced: the same photo is left as it is (so a second run adds only new photos), and a
    different file with the photo's name makes the photo go in as `<name>-<sha256[:8]><suffix>`,
    listed in `renamed`. Photos no longer on disk are listed in `missing`. With `hide_people`
    (privacy.redact_people, issue 19) a photo with person boxes is never linked: a copy with the
    people filled is written instead, counted in `redacted`. Returns the summary.
    """
    if not 0 <= min_confidence <= 1:
        raise ExportError(f"minimum confidence {min_confidence} is outside 0..1; pass --min-confidence between 0 and 1, e.g. 0.9.")
    out_dir = Path(out_dir)
    # A person's review (birdtrap serve) wins: a corrected photo goes under the corrected species
    # whatever the machine's confidence, and one marked empty is left out.
    query, review = join_review(select(ImageRecord).where(ImageRecord.status == DONE), ImageRecord)
    query = query.where(
        review.kind == KIND_BIRD,
        review.taxon_rank == SPECIES,
        review.scientific_name.is_not(None),
        review.at_least(min_confidence),
    ).order_by(review.scientific_name, ImageRecord.captured_at, ImageRecord.id)
    written = already = redacted = 0
    per_label: dict[str, int] = {}
    renamed: list[tuple[Path, Path]] = []
    missing: list[Path] = []
    for image in as_reviewed(session.execute(query)):
        source = Path(image.archived_path or image.path)
        if not source.is_file():
            missing.append(source)
            continue
        folder = out_dir / label_folder(image.scientific_name or "")
        folder.mkdir(parents=True, exist_ok=True)
        per_label[folder.name] = per_label.get(folder.name, 0) + 1
        hide = boxes_from_text(image.person_boxes) if hide_people else ()
        # A redacted copy differs from the photo's bytes: the sha256-suffixed name says it is this photo's.
        target = folder / (f"{source.stem}-{(image.sha256 or '')[:8]}{source.suffix}" if hide else source.name)
        taken = not hide and os.path.lexists(target) and not _same_photo(target, source, image.sha256)
        if taken:
            target = folder / f"{source.stem}-{(image.sha256 or '')[:8]}{source.suffix}"
        if os.path.lexists(target):
            if not hide and not _same_photo(target, source, image.sha256):
                raise ExportError(f"{target} exists and is not {source}; move it away and export again.")
            already += 1
            continue
        if hide:
            write_redacted(source, target, hide)
            redacted += 1
        elif copy:
            shutil.copy2(source, target)
        else:
            target.symlink_to(source.resolve())
        written += 1
        if taken:
            renamed.append((source, target))
    log.debug("training set %s: %d photos written, %d already there, %d missing", out_dir, written, already, len(missing))
    return TrainingSetSummary(
        out_dir, written, already, tuple(sorted(per_label.items())), tuple(renamed), tuple(missing), redacted
    )


def _same_photo(target: Path, source: Path, sha256: str | None) -> bool:
    """Whether `target` is already this photo: a link to it, or a file with its content."""
    if target.is_symlink() and target.resolve() == source.resolve():
        return True
    return target.is_file() and sha256 is not None and sha256_file(target) == sha256


def review_candidates(session: Session, limit: int, below: float | None = None) -> list[ReviewCandidate]:
    """Bird and unsure photos, least confident first: what a person should label first.

    With `below`, only those a training-set export at that confidence leaves out (confidence
    below it, or not decided at species rank). Returns at most `limit`.
    """
    query = (
        select(ImageRecord)
        .where(ImageRecord.status == DONE, ImageRecord.kind.in_((KIND_BIRD, KIND_UNSURE)))
        .options(selectinload(ImageRecord.predictions))
        .order_by(ImageRecord.confidence.asc().nulls_first(), ImageRecord.id)
        .limit(limit)
    )
    if below is not None:
        query = query.where(
            or_(
                ImageRecord.confidence < below,
                ImageRecord.confidence.is_(None),
                ImageRecord.taxon_rank.is_(None),
                ImageRecord.taxon_rank != SPECIES,
            )
        )
    return [
        ReviewCandidate(
            path=Path(image.archived_path or image.path),
            captured_at=image.captured_at,
            kind=image.kind or "",
            label=image.label,
            taxon_rank=image.taxon_rank,
            confidence=image.confidence,
            alternatives=tuple((p.label, p.confidence) for p in image.predictions[:3]),
        )
        for image in session.scalars(query)
    ]
