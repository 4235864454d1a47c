"""Learn this camera (issue 23): labelled frames -> examples -> a cross-validated head, installed
only when it beats the general models. Called by `birdtrap learn` and after reviews.

The steps that need photos (embedding a frame's regions) run once per example: the vectors are
cached with it, so relearning after another review costs only numpy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from birdtrap.errors import BirdtrapError, PhotoError
from birdtrap.evaluate import LabelledPhoto
from birdtrap.identify.bundle import sha256_file as sha256_of
from birdtrap.identify.camera_head import NOT_BIRD_KINDS, CameraHead, Figures, FrameExample, LearnError, cross_validate, fit, is_bird_label
from birdtrap.identify.identifier import Identifier
from birdtrap.identify.photos import decode_photo
from birdtrap.identify.preprocess import read_photo_bytes
from birdtrap.store import examples as examples_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    figures: Figures
    installed: bool
    counts: dict[str, int]


def label_for(photo: LabelledPhoto, species: set[str]) -> str:
    """The example label of a labels.csv row: its taxon, else its kind as a no-bird class.

    Raises LearnError for a species the species model does not know (a typo, usually). A genus or
    family (one word) is taken as given: the model's labels cannot check a family.
    """
    if photo.truth is None:
        return {"mammal": "animal", "animal": "animal", "human": "person", "person": "person", "vehicle": "person"}.get(photo.kind, "blank")
    if photo.truth[:1].islower() and photo.truth in NOT_BIRD_KINDS:
        return photo.truth
    binomial = " ".join(photo.truth.split()[:2])
    if len(photo.truth.split()) >= 2 and binomial not in species:
        raise LearnError(
            f"{photo.path}: label {photo.truth!r} is not a species the species model knows; write a scientific name from "
            "its labels.txt (e.g. 'Athene cunicularia'), its genus or family alone, or none."
        )
    return photo.truth


def add_labelled(session: Session, photos: list[LabelledPhoto], camera_id: str, species: set[str]) -> int:
    """Store every row of a labels file as an example; raises before storing anything when one is bad."""
    rows = []
    for photo in photos:
        if not photo.path.is_file():
            raise LearnError(f"{photo.path} does not exist; fix the path column (relative to --root) and run learn again.")
        rows.append((photo, label_for(photo, species), sha256_of(photo.path)))
    for photo, label, digest in rows:
        examples_store.add_example(session, camera_id, digest, str(photo.path), label, None, examples_store.LABELS)
    return len(rows)


def relearn(
    sessions: sessionmaker[Session], identifier: Identifier, camera_id: str, progress: Callable[[int], None] | None = None
) -> Outcome:
    """Embed the camera's new examples, cross-validate, fit, and install the head if it is better.

    Raises LearnError when the examples cannot make a head (fewer than two classes, no bird).
    """
    embedder = identifier.embedder
    if embedder is None:
        raise LearnError("no embedding model is loaded; set camera.embedding_model or leave it null for the species model's.")
    with sessions.begin() as session:
        records = examples_store.examples_of(session, camera_id)
        counts = examples_store.example_counts(session, camera_id)
        examples: list[FrameExample] = []
        for record in records:
            example = examples_store.cached_example(record, embedder.name)
            if example is None:
                example = _embed(identifier, record)
                if example is None:
                    continue
                examples_store.cache_vectors(record, example, embedder.name)
            examples.append(example)
            if progress is not None:
                progress(1)
    if not any(is_bird_label(e.label) for e in examples):
        raise LearnError(f"camera {camera_id} has no bird examples; review a bird event or label bird frames, then learn again.")
    head = fit(examples, embedder.name)
    figures = cross_validate(examples, embedder.name)
    with sessions.begin() as session:
        shown = figures.as_dict() | {"counts": counts, "margin": head.margin, "sure_margin": head.sure_margin}
        examples_store.save_head(session, camera_id, head, shown, figures.better)
    log.info("camera %s head: %s (%s)", camera_id, "installed" if figures.better else "refused", figures.as_dict())
    return Outcome(figures, figures.better, counts)


def _embed(identifier: Identifier, record) -> FrameExample | None:
    path = Path(record.path)
    try:
        settings = identifier.preprocess
        photo = decode_photo(read_photo_bytes(path, settings.max_bytes), str(path), path.stat().st_mtime, settings).photo
    except (PhotoError, OSError) as e:
        log.warning("example %s cannot be read (%s); left out of learning", path, e)
        return None
    return identifier.example(photo, record.sha256, record.label, examples_store.example_box(record))


__all__ = ["relearn", "add_labelled", "label_for", "Outcome", "CameraHead", "BirdtrapError"]
