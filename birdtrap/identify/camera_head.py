"""A small classifier per camera, learnt on the device from a person's reviews (issue 23).

The general models do not know this camera's scene: its small grey owls at night, its fence
post. The head is a nearest-class-mean classifier (weight imprinting) over region embeddings
(`birdtrap.identify.embedding`), in numpy: learning from 200 examples is a mean per class.

How an example frame becomes vectors (`FrameExample`):
- a bird frame gives ONE positive vector, its bird's own region (the box the reviewer or the finder
  chose; for a labelled folder without boxes, the region the general models named a bird in, else
  the proposal most like the other examples of that taxon, else the one the gate liked most), and
  its proposals that do not touch that region as this camera's `blank` background;
- a frame with no bird gives every region (frame and proposals) with its label: `blank`,
  `animal`, `person` or a site class the owner named ("fence post").
Whole-frame and plain-tile vectors alone separate nothing (the issue's trial), hence the regions.

The rule that joins it to the general models (`CameraHead.judge`):
- the head speaks only in its own classes, so it never invents a taxon it has no example of;
- a region's margin is its nearest bird class score minus its best no-bird class score. Two
  margins are learnt by leave-one-out over the examples (each frame held out from the means):
  `margin`, just above the best any held-out no-bird frame reached (never below MIN_MARGIN), and
  `sure_margin`, the least a held-out bird's own region reached above `margin`;
- where the general models found a bird, the head names it when a region clears `margin`: it
  renames a bird, it adds none;
- where they found none, the head makes the frame a bird only when a region clears `sure_margin`,
  i.e. stands as far from the no-bird classes as every one of this camera's own birds did. The
  means know only this camera's classes, so a frame of a scene they never saw (another project's
  mammals at night) can fall on the bird's side by chance; it falls short of the birds' own
  distance (measured: 6 false birds on other projects' no-bird frames with `margin` alone, 0 now);
- in either case the frame must look like a scene the head's birds were seen in (`knows_scene`:
  its whole-frame vector at least as like one bird frame as the least alike bird frame was to
  the others). On a frame of another scene the head says nothing at all, not even a no-bird
  answer (below): its no-bird classes are this camera's scene as little as its birds are. This
  also bounds its cost: a frame of another scene costs one embedding, the whole frame's;
- where the general models name a bird of a taxon the head knows and the head puts that region
  in a no-bird class by `margin`, the head's no-bird answer stands; anything else is left to the
  general models.
A head is installed only when cross-validation over the camera's frames says the combination
names more right and calls no more no-bird frames birds than the general models alone.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from birdtrap.errors import BirdtrapError
from birdtrap.identify.kinds import Kind
from birdtrap.identify.regions import Box

BLANK, ANIMAL, PERSON = "blank", "animal", "person"
NOT_BIRD_KINDS = (BLANK, ANIMAL, PERSON)
MIN_MARGIN = 0.02
LEAVE_ONE_OUT_UP_TO = 60  # frames; above it, 10-fold


class LearnError(BirdtrapError):
    """The examples cannot make a head (one class only, nothing labelled, ...)."""


def is_bird_label(label: str) -> bool:
    """A taxon (capitalised scientific name: 'Athene cunicularia', 'Strigidae') rather than a no-bird class."""
    return label[:1].isupper() and label.lower() not in NOT_BIRD_KINDS


@dataclass(frozen=True, eq=False)
class FrameExample:
    """One labelled frame as the head sees it: its region vectors and which is which."""

    key: str  # the photo (path or sha256): cross-validation holds out whole frames
    label: str
    vectors: np.ndarray  # (R, D) L2-normalised; row 0 is the whole frame
    boxes: tuple[Box, ...]  # (R,) the regions, 0-1 coordinates
    positive: int | None = None  # row of the bird's region (bird frames), None until chosen
    gates: tuple[float, ...] = ()  # the bird gate per region, when known (chooses a positive)
    general_kind: str = ""  # what the general models decided on this frame (for the comparison)
    general_taxon: str | None = None

    @property
    def background(self) -> tuple[int, ...]:
        """Rows of a bird frame that do not touch its bird: this camera's empty scene."""
        if self.positive is None:
            return ()
        bird = self.boxes[self.positive]
        return tuple(i for i, box in enumerate(self.boxes) if not _touches(box, bird))

    def samples(self) -> tuple[np.ndarray, list[str]]:
        """The (vectors, labels) this frame teaches."""
        if is_bird_label(self.label):
            if self.positive is None:
                return self.vectors[:0], []
            rows = [self.positive, *self.background]
            return self.vectors[rows], [self.label] + [BLANK] * (len(rows) - 1)
        return self.vectors, [self.label] * len(self.vectors)


def _touches(a: Box, b: Box) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def choose_positives(examples: Sequence[FrameExample]) -> list[FrameExample]:
    """Bird frames with no known bird region get one: the region most like the taxon's known ones.

    Known regions are a reviewer's box or one the general models named a bird in. A taxon with
    none known starts from the region the gate liked most in each frame.
    """
    known: dict[str, list[np.ndarray]] = {}
    for example in examples:
        if example.positive is not None and is_bird_label(example.label):
            known.setdefault(example.label, []).append(example.vectors[example.positive])
    chosen = []
    for example in examples:
        if example.positive is not None or not is_bird_label(example.label):
            chosen.append(example)
            continue
        rows = list(range(1, len(example.boxes))) or [0]
        if known.get(example.label):
            prototype = np.mean(known[example.label], axis=0)
            row = max(rows, key=lambda r: float(example.vectors[r] @ prototype))
        elif example.gates:
            row = max(rows, key=lambda r: example.gates[r])
        else:
            row = 0
        chosen.append(replace(example, positive=row))
    return chosen


@dataclass(frozen=True)
class Judgement:
    label: str
    margin: float
    row: int  # which region


@dataclass(frozen=True, eq=False)
class CameraHead:
    """Class means over centred, normalised embeddings, and the margin a bird must clear."""

    classes: tuple[str, ...]
    means: np.ndarray  # (C, D)
    center: np.ndarray  # (D,)
    margin: float
    embedder: str
    counts: tuple[int, ...] = ()
    # The whole-frame vectors of the frames its birds were seen in, and how alike a new frame must
    # be to one of them: the head claims birds only in this camera's own scenes (see fit).
    scenes: np.ndarray | None = None
    scene_min: float = -1.0
    # A frame the general models found no bird in becomes a bird only from this margin up (see judge).
    sure_margin: float = 0.0

    def knows_scene(self, frame_vector: np.ndarray) -> bool:
        """Whether a whole-frame vector looks like a scene the head's birds were seen in."""
        if self.scenes is None or not len(self.scenes):
            return True
        return float((self.scenes @ frame_vector).max()) >= self.scene_min

    @property
    def bird_classes(self) -> tuple[str, ...]:
        return tuple(c for c in self.classes if is_bird_label(c))

    def _scores(self, vectors: np.ndarray) -> np.ndarray:
        centred = vectors - self.center
        centred /= np.linalg.norm(centred, axis=1, keepdims=True) + 1e-9
        return centred @ self.means.T  # (R, C) cosine to each class mean

    def bird_scores(self, vectors: np.ndarray) -> np.ndarray:
        """Per region: best bird class score minus best no-bird class score (ranks proposals)."""
        scores = self._scores(vectors)
        bird = np.array([is_bird_label(c) for c in self.classes])
        if not bird.any() or bird.all():
            return np.zeros(len(vectors))
        return scores[:, bird].max(axis=1) - scores[:, ~bird].max(axis=1)

    def judge(self, vectors: np.ndarray, general_bird: bool = False) -> Judgement | None:
        """The head's bird among regions (best margin), else None: nothing it would claim.

        `general_bird`: the general models found a bird in this frame, so the head only names it
        and `margin` suffices; else only a region clearing `sure_margin` makes the frame a bird.
        """
        scores = self._scores(vectors)
        bird = np.array([is_bird_label(c) for c in self.classes])
        if not bird.any() or bird.all() or not self.knows_scene(vectors[0]):
            return None
        margins = scores[:, bird].max(axis=1) - scores[:, ~bird].max(axis=1)
        row = int(np.argmax(margins))
        if margins[row] < (self.margin if general_bird else max(self.margin, self.sure_margin)):
            return None
        best = np.flatnonzero(bird)[int(np.argmax(scores[row, bird]))]
        return Judgement(self.classes[best], float(margins[row]), row)

    def not_a_bird(self, vector: np.ndarray, taxon: str | None) -> str | None:
        """The no-bird class this region is sure to be, when the head knows `taxon` (else None)."""
        if taxon is None or not any(_same_taxon(taxon, c) for c in self.bird_classes):
            return None
        scores = self._scores(vector[None])[0]
        bird = np.array([is_bird_label(c) for c in self.classes])
        if scores[~bird].max() - scores[bird].max() < self.margin:
            return None
        return self.classes[np.flatnonzero(~bird)[int(np.argmax(scores[~bird]))]]

    # --- storage: a few kB of npz in the database -----------------------------------------

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        meta = json.dumps(
            {"classes": self.classes, "margin": self.margin, "embedder": self.embedder, "counts": self.counts, "scene_min": self.scene_min,
             "sure_margin": self.sure_margin}
        )
        scenes = self.scenes if self.scenes is not None else np.zeros((0, len(self.center)))
        np.savez_compressed(
            buffer, means=self.means.astype(np.float32), center=self.center.astype(np.float32), scenes=scenes.astype(np.float16),
            meta=np.array(meta),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> CameraHead:
        with np.load(io.BytesIO(data)) as arrays:
            meta = json.loads(str(arrays["meta"]))
            return cls(
                tuple(meta["classes"]),
                arrays["means"],
                arrays["center"],
                float(meta["margin"]),
                meta["embedder"],
                tuple(meta.get("counts", ())),
                arrays["scenes"].astype(np.float32),
                float(meta.get("scene_min", -1.0)),
                # A head stored before sure_margin claimed every region past its margin.
                float(meta.get("sure_margin", meta["margin"])),
            )


def _same_taxon(named: str, known: str) -> bool:
    """A named species or genus falls within a known class (same binomial, or the class is its genus)."""
    named_words, known_words = named.split(), known.split()
    return named_words[: len(known_words)] == known_words or known_words[: len(named_words)] == named_words


def _normalise(rows: np.ndarray) -> np.ndarray:
    return rows / (np.linalg.norm(rows, axis=1, keepdims=True) + 1e-9)


def fit(examples: Sequence[FrameExample], embedder: str) -> CameraHead:
    """A head from labelled frames. Raises LearnError when they hold fewer than two classes."""
    examples = choose_positives(examples)
    vectors, labels = _stack(examples)
    classes = tuple(sorted(set(labels)))
    if len(classes) < 2:
        raise LearnError(
            f"the examples hold one class only ({', '.join(classes) or 'none'}); a head needs at least two, e.g. the "
            "bird and this camera's blank frames. Review or label some frames of another kind."
        )
    center = vectors.mean(axis=0)
    centred = _normalise(vectors - center)
    label_array = np.array(labels)
    means = _normalise(np.stack([centred[label_array == c].mean(axis=0) for c in classes]))
    head = CameraHead(classes, means, center, 0.0, embedder, tuple(int((label_array == c).sum()) for c in classes))
    scenes, scene_min = _bird_scenes(examples)
    margin, sure_margin = _learn_margin(examples, head)
    return replace(head, margin=margin, sure_margin=sure_margin, scenes=scenes, scene_min=scene_min)


def _bird_scenes(examples: Sequence[FrameExample]) -> tuple[np.ndarray | None, float]:
    """The whole frames the birds were seen in, and the least alike a held-out one was to the rest.

    A region of a foreign scene can fall on the bird's side of the class means by chance (the
    means know only this camera's classes); a frame unlike every bird frame of this camera is left
    to the general models. With fewer than two bird frames there is nothing to measure: no limit.
    """
    frames = np.stack([e.vectors[0] for e in examples if is_bird_label(e.label)]) if examples else np.zeros((0, 1))
    if len(frames) < 2:
        return None, -1.0
    alike = frames @ frames.T
    np.fill_diagonal(alike, -np.inf)
    return frames, float(alike.max(axis=1).min()) - 1e-3


def _stack(examples: Sequence[FrameExample]) -> tuple[np.ndarray, list[str]]:
    parts, labels = [], []
    for example in examples:
        rows, names = example.samples()
        parts.append(rows)
        labels.extend(names)
    if not parts:
        raise LearnError("there are no examples to learn from; review some events or run `birdtrap learn LABELS.csv`.")
    return np.concatenate(parts), labels


def _learn_margin(examples: Sequence[FrameExample], head: CameraHead) -> tuple[float, float]:
    """(margin, sure_margin): the two edges of the gap leave-one-out saw between this camera's
    no-bird frames and its birds.

    Each frame is held out in turn (its own rows subtracted from the class sums, the centre stays
    the whole set's, so this is linear in the examples: 200 frames take a fraction of a second).
    `margin` is just above the best margin any held-out no-bird frame reached (never below
    MIN_MARGIN); `sure_margin` is the least margin a held-out bird's own region reached above
    it (`margin` when none did). A frame that takes its class's only example is judged by the
    classes left.
    """
    below = MIN_MARGIN
    if not head.bird_classes:
        return below, below
    index = {c: i for i, c in enumerate(head.classes)}
    bird = np.array([is_bird_label(c) for c in head.classes])
    sums = np.zeros_like(head.means)
    counts = np.zeros(len(head.classes))
    per_frame = []
    for example in examples:
        rows, names = example.samples()
        centred = _normalise(rows - head.center) if len(rows) else rows
        own_sums, own_counts = np.zeros_like(head.means), np.zeros(len(head.classes))
        for vector, name in zip(centred, names, strict=True):
            own_sums[index[name]] += vector
            own_counts[index[name]] += 1
        sums += own_sums
        counts += own_counts
        per_frame.append((own_sums, own_counts))
    birds_seen = []
    for example, (own_sums, own_counts) in zip(examples, per_frame, strict=True):
        is_bird = is_bird_label(example.label)
        if is_bird and example.positive is None:
            continue
        left = counts - own_counts
        present = left > 0
        if not (present & bird).any() or not (present & ~bird).any():
            continue
        means = _normalise(sums[present] - own_sums[present])
        vectors = example.vectors[[example.positive]] if is_bird else example.vectors
        scores = _normalise(vectors - head.center) @ means.T
        kept_bird = bird[present]
        margins = scores[:, kept_bird].max(axis=1) - scores[:, ~kept_bird].max(axis=1)
        if is_bird:
            birds_seen.append(float(margins.max()))
        else:
            below = max(below, float(margins.max()) + 1e-3)
    above = [m for m in birds_seen if m > below]
    return below, (min(above) if above else below)


# --- cross-validation: the head against the general models on the camera's own frames ----------


@dataclass(frozen=True)
class Figures:
    """Cross-validated counts over the camera's example frames."""

    frames: int
    bird_frames: int
    folds: int
    general_right: int
    general_false_birds: int
    head_right: int  # the combination (head, then the general models) named right
    head_false_birds: int

    @property
    def better(self) -> bool:
        """The acceptance rule of model updates: more named right and no more false birds."""
        return self.head_right > self.general_right and self.head_false_birds <= self.general_false_birds

    def as_dict(self) -> dict:
        return asdict(self) | {"better": self.better}


def combined_answer(head: CameraHead, example: FrameExample) -> tuple[str, str | None]:
    """(kind, taxon) of the head joined to the general models, on one example frame's vectors."""
    if not head.knows_scene(example.vectors[0]):
        return example.general_kind, example.general_taxon
    judgement = head.judge(example.vectors, example.general_kind == Kind.BIRD)
    if judgement is not None:
        return Kind.BIRD, judgement.label
    if (
        example.general_kind == Kind.BIRD
        and example.positive is not None
        and head.not_a_bird(example.vectors[example.positive], example.general_taxon)
    ):
        return BLANK, None
    return example.general_kind, example.general_taxon


def named_right(label: str, kind: str, taxon: str | None) -> bool:
    return is_bird_label(label) and kind == Kind.BIRD and taxon is not None and _same_taxon(taxon, label)


def cross_validate(examples: Sequence[FrameExample], embedder: str) -> Figures:
    """Leave-one-frame-out (10-fold above LEAVE_ONE_OUT_UP_TO frames), frames held out whole."""
    count = len(examples)
    folds = count if count <= LEAVE_ONE_OUT_UP_TO else 10
    order = np.arange(count)
    general_right = general_false = head_right = head_false = 0
    for fold in range(folds):
        held = [examples[i] for i in order if i % folds == fold]
        training = [examples[i] for i in order if i % folds != fold]
        try:
            head = fit(training, embedder)
        except LearnError:
            head = None
        for example in held:
            bird = is_bird_label(example.label)
            general_right += named_right(example.label, example.general_kind, example.general_taxon)
            general_false += (not bird) and example.general_kind == Kind.BIRD
            kind, taxon = combined_answer(head, example) if head is not None else (example.general_kind, example.general_taxon)
            head_right += named_right(example.label, kind, taxon)
            head_false += (not bird) and kind == Kind.BIRD
    return Figures(count, sum(is_bird_label(e.label) for e in examples), folds, general_right, general_false, head_right, head_false)


__all__ = ["CameraHead", "FrameExample", "choose_positives", "Figures", "Judgement", "LearnError", "fit", "cross_validate", "is_bird_label"]
