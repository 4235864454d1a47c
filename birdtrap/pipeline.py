"""Find the bird, then name it: decoded photos in, identifications out, with no I/O.

The daemon, `birdtrap classify` and `birdtrap evaluate` all go through `Identifier`, so the
numbers `evaluate` prints are the daemon's numbers.

For each photo:
1. the whole frame goes through the species model and the bird gate; a confident bird that the
   gate agrees is a bird decides at once (close-ups stay cheap: two invokes);
2. otherwise regions are proposed (detector boxes on the frame and on tiles of it, burst motion,
   plain tiles), grown to squares with context, merged, ranked and capped;
3. the gate screens the regions and the species model names only those the gate calls birds,
   a few at a time, stopping at the first confident bird;
4. a bird is reported only where species model and gate agree; otherwise the frame is empty
   (background), an animal or a person (detector), or unknown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeGuard

import numpy as np

from birdtrap.camera_head import BLANK, CameraHead, FrameExample, is_bird_label
from birdtrap.classifier import Classifier, Prediction
from birdtrap.decision import BIRD, EMPTY, GENUS, SPECIES, UNKNOWN, Decision, DecisionRules, decide
from birdtrap.detector import ANIMAL, PERSON, Detection, Detector
from birdtrap.embedding import Embedder
from birdtrap.gate import BirdGate
from birdtrap.motion import BurstMemory, thumbnail_for_motion
from birdtrap.preprocess import InputSpec, Photo, PreprocessSettings, to_model_input
from birdtrap.regions import WHOLE, Box, Region, crop, grow_to_square, suppress, tiles

KIND_ANIMAL, KIND_PERSON = "animal", "person"


@dataclass(frozen=True)
class FinderSettings:
    """How hard to look for a small bird; see config.yaml's `finder` section."""

    methods: tuple[str, ...] = ("detector", "motion", "tiles")
    search: str = "uncertain"  # uncertain: only when the whole frame is not a confident bird; always; never
    max_regions: int = 6
    stage_size: int = 3
    gate_threshold: float = 0.5
    detector_min_score: float = 0.3
    detector_tiles: tuple[float, ...] = (0.6,)
    tile_scales: tuple[float, ...] = (0.5,)
    tile_overlap: float = 0.25
    box_margin: float = 0.25
    min_region_side: float = 0.1
    person_min_score: float = 0.6


@dataclass(frozen=True, eq=False)
class Identification:
    decision: Decision
    prediction: Prediction
    box: Box | None
    invokes: int  # species-model invokes for this photo
    gate_invokes: int = 0
    detector_invokes: int = 0
    source: str = "frame"
    gate_probability: float | None = None
    detections: tuple[Detection, ...] = field(default=(), repr=False)


@dataclass(frozen=True, eq=False)
class FrameInputs:
    """The model-free work on a whole frame: its model inputs and its motion thumbnail.

    Made by `Identifier.frame_inputs`, which the daemon calls in its decode threads, so resizing
    runs beside inference instead of before it (bench: the main thread spent 9 ms a photo here).
    """

    species: np.ndarray
    species_spec: InputSpec
    gate: np.ndarray | None
    gate_spec: InputSpec | None
    thumbnail: np.ndarray | None


@dataclass
class _Work:
    photo: Photo
    whole: Prediction
    whole_gate: float | None
    invokes: int = 1
    gate_invokes: int = 0
    detector_invokes: int = 0
    detections: list[Detection] = field(default_factory=list)
    regions: list[Region] | None = None  # the proposals, once made
    vectors: dict[Box, np.ndarray] = field(default_factory=dict)  # camera-head embeddings by box


class Identifier:
    """Names what is in each photo: species model, optional bird gate, detector and region search."""

    def __init__(
        self,
        species: Classifier,
        preprocess: PreprocessSettings,
        rules: DecisionRules,
        gate: BirdGate | None = None,
        detector: Detector | None = None,
        finder: FinderSettings | None = None,
        bursts: BurstMemory | None = None,
        camera_head: CameraHead | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.species = species
        self.preprocess = preprocess
        self.rules = rules
        self.gate = gate
        self.detector = detector
        self.finder = finder or FinderSettings(search="never")
        self.bursts = bursts
        # This camera's learnt head (issue 23) and the model that embeds regions for it.
        usable = embedder is not None and camera_head is not None and camera_head.embedder == embedder.name
        self.camera_head = camera_head if usable else None
        self.embedder = embedder

    def decide_combined(self, probabilities: np.ndarray) -> Decision:
        """The decision rules applied to combined probabilities (an event's mean over its frames)."""
        return decide(probabilities, self.species.labels, self.rules)

    # --- model calls ---------------------------------------------------------------------

    def _species(self, images: list[np.ndarray]) -> list[Prediction]:
        return self.species.predict_batch([to_model_input(image, self.species.spec, self.preprocess) for image in images])

    def _gate(self, images: list[np.ndarray]) -> np.ndarray:
        assert self.gate is not None
        return self.gate.bird_probability(np.stack([to_model_input(image, self.gate.spec, self.preprocess) for image in images]))

    # --- the steps -----------------------------------------------------------------------

    def frame_inputs(self, photo: Photo) -> FrameInputs:
        """Everything about a whole frame that needs no model; safe to call from any thread."""
        species = to_model_input(photo.bgr, self.species.spec, self.preprocess)
        gate = gate_spec = None
        if self.gate is not None:
            gate_spec = self.gate.spec
            # The Coral models share one input contract: one resize serves both.
            gate = species if gate_spec == self.species.spec else to_model_input(photo.bgr, gate_spec, self.preprocess)
        thumbnail = thumbnail_for_motion(photo.bgr) if self.bursts is not None and "motion" in self.finder.methods else None
        return FrameInputs(species, self.species.spec, gate, gate_spec, thumbnail)

    @property
    def searches_regions(self) -> bool:
        """Whether `identify` may crop the frame (region search), so needs its pixels past `frame_inputs`.

        Without a gate nothing is searched: a caller holding many decoded frames (the daemon's
        batches in flight) can keep only their `frame_inputs` and let the pixels go.
        """
        return self.gate is not None and self.finder.search != "never"

    def _usable(self, inputs: FrameInputs | None) -> TypeGuard[FrameInputs]:
        # Inputs made before a model reload may be for another input size.
        return (
            inputs is not None
            and inputs.species_spec == self.species.spec
            and (self.gate is None or inputs.gate_spec == self.gate.spec)
        )

    def identify(
        self, photos: list[Photo], burst_keys: list[object] | None = None, inputs: list[FrameInputs | None] | None = None
    ) -> list[Identification]:
        """Identify a batch of photos. `burst_keys` (e.g. camera and capture time) enable motion.

        `inputs` are the photos' `frame_inputs` where the caller made them already.
        """
        if not photos:
            return []
        given = inputs or [None] * len(photos)
        frames = [self._inputs_for(photo, item) for photo, item in zip(photos, given, strict=True)]
        wholes = self.species.predict_batch([frame.species for frame in frames])
        if self.gate is not None:
            gates = self.gate.bird_probability(np.stack([frame.gate for frame in frames]))
        else:
            gates = [None] * len(photos)
        results = []
        for index, (photo, frame, whole, gate) in enumerate(zip(photos, frames, wholes, gates, strict=True)):
            work = _Work(photo, whole, None if gate is None else float(gate), gate_invokes=1 if self.gate else 0)
            key = burst_keys[index] if burst_keys else None
            results.append(self._identify_one(work, key, frame.thumbnail))
        return results

    def _inputs_for(self, photo: Photo, given: FrameInputs | None) -> FrameInputs:
        if self._usable(given):
            return given
        if photo.bgr.size == 0:
            # Only inputs were kept (see searches_regions) and they were made for other models:
            # a caller must finish frames prepared for one Identifier with that Identifier.
            raise ValueError("frame inputs made for another model were given without the frame's pixels to make new ones")
        return self.frame_inputs(photo)

    def _identify_one(self, work: _Work, burst_key: object, thumbnail: np.ndarray | None) -> Identification:
        general = self._identify_general(work, burst_key, thumbnail)
        if self.camera_head is None:
            return general
        return self._with_head(work, general)

    def _identify_general(self, work: _Work, burst_key: object, thumbnail: np.ndarray | None) -> Identification:
        motion_regions = self._motion_regions(work.photo, burst_key, thumbnail)
        whole_decision = decide(work.whole.probabilities, self.species.labels, self.rules)
        if self._accept(whole_decision, work.whole_gate) and self.finder.search != "always":
            return self._result(work, whole_decision, work.whole, WHOLE, "frame", work.whole_gate)
        if self.finder.search == "never" or self.gate is None:
            if self.gate is not None and whole_decision.kind == BIRD:
                whole_decision = _not_a_bird(whole_decision)
            return self._result(work, whole_decision, work.whole, WHOLE, "frame", work.whole_gate)
        regions = self._propose(work, motion_regions)
        best: tuple[Decision, Prediction, Region, float] | None = None
        if self._accept(whole_decision, work.whole_gate):  # search: always; a region must beat the frame
            best = (whole_decision, work.whole, Region(WHOLE, "frame"), work.whole_gate or 0.0)
        for start in range(0, len(regions), self.finder.stage_size):
            stage = regions[start : start + self.finder.stage_size]
            crops = [crop(work.photo.bgr, region.box) for region in stage]
            gates = self._gate(crops)
            work.gate_invokes += len(crops)
            birdlike = [i for i, g in enumerate(gates) if g >= self.finder.gate_threshold]
            if not birdlike:
                continue
            predictions = self._species([crops[i] for i in birdlike])
            work.invokes += len(birdlike)
            for i, prediction in zip(birdlike, predictions, strict=True):
                decision = decide(prediction.probabilities, self.species.labels, self.rules)
                if decision.kind == BIRD and (best is None or decision.confidence > best[0].confidence):
                    best = (decision, prediction, stage[i], float(gates[i]))
            if best is not None and best[2].source != "frame":
                break  # the first confident bird in a region ends the search
        if best is not None:
            decision, prediction, region, gate = best
            return self._result(work, decision, prediction, region.box, region.source, gate)
        return self._no_bird(work, whole_decision)

    def _accept(self, decision: Decision, gate: float | None) -> bool:
        if decision.kind != BIRD:
            return False
        return gate is None or gate >= self.finder.gate_threshold

    def _no_bird(self, work: _Work, whole_decision: Decision) -> Identification:
        people = [d for d in work.detections if d.kind == PERSON and d.score >= self.finder.person_min_score]
        animals = [d for d in work.detections if d.kind == ANIMAL and d.score >= self.finder.person_min_score]
        if people:
            decision = Decision(KIND_PERSON, "person", None, None, None, max(d.score for d in people))
            box = max(people, key=lambda d: d.score).box
        elif animals:
            decision = Decision(KIND_ANIMAL, "animal", None, None, None, max(d.score for d in animals))
            box = max(animals, key=lambda d: d.score).box
        elif whole_decision.kind == EMPTY or self.gate is not None:
            # Nothing the detector trusts and no region the gate calls a bird: an empty frame
            # as far as a camera trap is concerned (wind, sun, an insect, a plant).
            decision = Decision(EMPTY, whole_decision.label if whole_decision.kind == EMPTY else None, None, None, None,
                                whole_decision.confidence if whole_decision.kind == EMPTY else 1.0 - (work.whole_gate or 0.0))
            box = WHOLE
        else:
            decision, box = whole_decision, WHOLE
        return self._result(work, decision, work.whole, box, "frame", work.whole_gate)

    def _result(self, work: _Work, decision: Decision, prediction: Prediction, box: Box, source: str, gate: float | None) -> Identification:
        return Identification(
            decision,
            prediction,
            box,
            work.invokes,
            work.gate_invokes,
            work.detector_invokes,
            source,
            gate,
            tuple(work.detections),
        )

    # --- proposals -----------------------------------------------------------------------

    def _motion_regions(self, photo: Photo, burst_key: object, thumbnail: np.ndarray | None) -> Callable[[], list[Region]]:
        if self.bursts is None or "motion" not in self.finder.methods or burst_key is None:
            return list
        return self.bursts.observe(burst_key, thumbnail if thumbnail is not None else thumbnail_for_motion(photo.bgr))

    def _propose(self, work: _Work, motion_regions: Callable[[], list[Region]]) -> list[Region]:
        photo = work.photo
        height, width = photo.bgr.shape[:2]
        finder = self.finder
        regions: list[Region] = []
        if "detector" in finder.methods and self.detector is not None:
            min_score = min(finder.detector_min_score, 0.3)
            [on_frame] = self.detector.detect([photo.bgr], min_score=min_score)
            views: list[Box] = [WHOLE]
            found_per_view = [on_frame]
            if not any(d.kind == "bird" and d.score >= finder.detector_min_score for d in on_frame):
                tile_views = [box for scale in finder.detector_tiles for box in tiles(width, height, scale, overlap=0.3)]
                views.extend(tile_views)
                found_per_view.extend(self.detector.detect([crop(photo.bgr, view) for view in tile_views], min_score=min_score))
            work.detector_invokes += len(views)
            for view, found in zip(views, found_per_view, strict=True):
                for detection in found:
                    box = _inside(view, detection.box)
                    work.detections.append(Detection(box, detection.kind, detection.class_id, detection.score))
                    if detection.kind in ("bird", ANIMAL) and detection.score >= finder.detector_min_score:
                        grown = grow_to_square(box, width, height, finder.box_margin, finder.min_region_side)
                        # Birds first: an animal box is worth a look (detectors confuse them) but ranks lower.
                        prior = detection.score + (1.0 if detection.kind == "bird" else 0.0)
                        regions.append(Region(grown, "detector", prior, detection.kind))
        for region in motion_regions():
            grown = grow_to_square(region.box, width, height, finder.box_margin, finder.min_region_side)
            regions.append(Region(grown, "motion", 1.5 + region.prior, "motion"))
        ranked = suppress(regions, 0.5)
        if "tiles" in finder.methods and len(ranked) < finder.max_regions:
            plain = [Region(box, "tile", 0.0) for scale in finder.tile_scales for box in tiles(width, height, scale, finder.tile_overlap)]
            ranked.extend(plain)
        ranked = ranked[: finder.max_regions]
        if self.camera_head is not None:
            # The regions this camera's head takes for its bird are searched first.
            scores = self.camera_head.bird_scores(self._vectors(work, [region.box for region in ranked])) if ranked else []
            ranked = [region for _, region in sorted(zip(scores, ranked, strict=True), key=lambda pair: -pair[0])]
        work.regions = ranked
        return ranked

    # --- this camera's head (issue 23) -----------------------------------------------------

    def _vectors(self, work: _Work, boxes: list[Box]) -> np.ndarray:
        assert self.embedder is not None
        for box in boxes:
            if box not in work.vectors:
                work.vectors[box] = self.embedder.embed(work.photo.bgr if box == WHOLE else crop(work.photo.bgr, box), self.preprocess)
        return np.stack([work.vectors[box] for box in boxes])

    def _head_boxes(self, work: _Work) -> list[Box]:
        regions = work.regions if work.regions is not None else self._propose(work, list)
        return list(dict.fromkeys([WHOLE, *(region.box for region in regions)]))

    def _with_head(self, work: _Work, general: Identification) -> Identification:
        """The general answer joined to the camera's head by the rule in birdtrap.camera_head."""
        head = self.camera_head
        assert head is not None
        boxes = self._head_boxes(work)
        judgement = head.judge(self._vectors(work, boxes))
        if judgement is not None:
            rank = SPECIES if len(judgement.label.split()) >= 2 else GENUS
            confidence = max(self.rules.threshold, min(1.0, 0.5 + judgement.margin))
            decision = Decision(BIRD, judgement.label, judgement.label, None, rank, confidence)
            return self._result(work, decision, general.prediction, boxes[judgement.row], "camera-head", general.gate_probability)
        decided = general.decision
        if decided.kind == BIRD and general.box is not None:
            named = head.not_a_bird(self._vectors(work, [general.box])[0], decided.scientific_name)
            if named is not None:
                kind = {BLANK: EMPTY, KIND_ANIMAL: KIND_ANIMAL, KIND_PERSON: KIND_PERSON}.get(named, EMPTY)
                decision = Decision(kind, named, None, None, None, decided.confidence)
                return self._result(work, decision, general.prediction, general.box, "camera-head", general.gate_probability)
        return general

    def example(self, photo: Photo, key: str, label: str, box: Box | None = None) -> FrameExample:
        """One labelled frame as the camera's head learns it: its regions embedded, its bird's region marked.

        `box` is the bird's region when a person or the finder chose it; otherwise the region the
        general models named a bird in, or one chosen later (`camera_head.choose_positives`).
        """
        if self.embedder is None:
            raise ValueError("an Identifier without an embedder cannot make examples")
        inputs = self.frame_inputs(photo)
        [whole] = self.species.predict_batch([inputs.species])
        gate = float(self.gate.bird_probability(inputs.gate[None])[0]) if self.gate is not None and inputs.gate is not None else None
        work = _Work(photo, whole, gate, gate_invokes=1 if self.gate else 0)
        head, self.camera_head = self.camera_head, None
        try:
            general = self._identify_general(work, None, None)
            boxes = self._head_boxes(work)
        finally:
            self.camera_head = head
        positive = None
        if is_bird_label(label):
            if box is not None and box != WHOLE:
                chosen = box
            elif general.decision.kind == BIRD and general.box is not None and general.box != WHOLE:
                chosen = general.box
            else:
                chosen = None
            if chosen is not None:
                boxes = list(dict.fromkeys([*boxes, chosen]))
                positive = boxes.index(chosen)
        vectors = self._vectors(work, boxes)
        gates: tuple[float, ...] = ()
        if self.gate is not None:
            gates = tuple(float(g) for g in self._gate([work.photo.bgr if b == WHOLE else crop(work.photo.bgr, b) for b in boxes]))
        decided = general.decision
        taxon = decided.scientific_name if decided.kind == BIRD else None
        return FrameExample(key, label, vectors, tuple(boxes), positive, gates, decided.kind, taxon)


def _inside(view: Box, box: Box) -> Box:
    """A box found in a crop (`view`), in the coordinates of the whole frame."""
    width, height = view[2] - view[0], view[3] - view[1]
    return (view[0] + box[0] * width, view[1] + box[1] * height, view[0] + box[2] * width, view[1] + box[3] * height)


def _not_a_bird(decision: Decision) -> Decision:
    # The species model named a bird but the gate disagrees: a mammal or a scene, not a sighting.
    return Decision(UNKNOWN, decision.label, decision.scientific_name, decision.common_name, None, decision.confidence)


__all__ = ["Identifier", "Identification", "FinderSettings", "FrameInputs", "EMPTY"]
