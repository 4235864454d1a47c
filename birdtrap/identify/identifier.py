"""Find the bird, then name it: decoded photos in, identifications out, with no I/O.

The daemon, `birdtrap classify` and `birdtrap evaluate` all go through `Identifier`, so the
numbers `evaluate` prints are the daemon's numbers.

For each photo:
1. the whole frame goes through the species model and the bird gate; a confident bird that the
   gate agrees is a bird decides at once (close-ups stay cheap: two invokes);
2. otherwise regions are proposed (detector boxes on the frame and on tiles of it, burst motion,
   plain tiles), grown to squares with context, merged, ranked and capped (two sure bird boxes of
   one bird are two crops, both looked at, unless their squares nearly coincide);
3. the gate screens the regions and the species model names only those the gate calls birds,
   a few at a time, stopping at the first confident bird;
4. a bird is reported only where species model and gate agree (in a region the detector boxed as
   a bird at `bird_box_witness_score`, the detector is a second witness: the gate needs only half
   its threshold there, and the name is no finer than a family; where the species model is sure of
   no rank there, the two witnesses still make it a bird, unnamed: "Aves"), or where the species
   model names the bird the gate confirmed in an earlier frame of the same burst (`burst_sightings`);
   otherwise the frame is a person, an animal or a vehicle (detector), `blank` only on evidence,
   else `unsure`.

The blank rule (issue 22): a camera-trap user moves or deletes blank frames, so calling a cougar
blank loses data, and calling a blank frame unsure only costs a look. A frame is `blank` only
when the species model names no bird (background, or no species or genus sure), the gate agrees
(no bird), the detector, on the frame and on its tiles, boxes nothing of any class at or above
`blank_max_box_score`, and nothing moved against the burst nor against the camera's blank frames
of the last half hour, where it has two (motion.py). (The iNat model calls only 2 of the 5
truly empty labelled frames "background": its other answers there are birds at 0.08-0.18, so
"background or unsure" is its way of saying no bird; the detector is the strong witness.)
Without a detector there is no such evidence, so nothing is ever blank.
Frames the species model calls background therefore still get the detector's look.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TypeGuard

import numpy as np

from birdtrap.identify.burst_sightings import BurstSightings
from birdtrap.identify.camera_head import ANIMAL, PERSON, CameraHead, FrameExample, is_bird_label
from birdtrap.identify.classifier import Classifier, Prediction
from birdtrap.identify.decision import CLASS, FAMILY, GENUS, RANK_DEPTH, SPECIES, Decision, DecisionRules, decide, unnamed_bird
from birdtrap.identify.detector import Detection, Detector
from birdtrap.identify.embedding import Embedder
from birdtrap.identify.gate import BirdGate
from birdtrap.identify.kinds import Kind
from birdtrap.identify.motion import BurstMemory, thumbnail_for_motion
from birdtrap.identify.preprocess import MONOCHROME_SPREAD, InputSpec, Photo, PreprocessSettings, colour_spread, to_model_input
from birdtrap.identify.regions import WHOLE, Box, Region, crop, grow_to_square, suppress, tiles


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
    animal_min_score: float = 0.6
    vehicle_min_score: float = 0.6
    # Any detector box of any class at or above this score means "something may be there": the
    # frame is not blank. Below the strongest box of every labelled frame with something there
    # (python -m bench.blank_scores; bench/README.md).
    blank_max_box_score: float = 0.2
    # A detector's bird box this sure is a witness of its own: its region passes the gate at half
    # the gate's threshold, and what is named there is named no finer than its family (weaker
    # evidence, a coarser name). None: the gate alone decides.
    bird_box_witness_score: float | None = 0.5


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
    embed_invokes: int = 0  # the camera head's embedder invokes for this photo


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
    monochrome: bool = False  # an infrared (or greyscale) frame: no colour to tell congeners apart


@dataclass
class _Work:
    photo: Photo
    whole: Prediction
    whole_gate: float | None
    invokes: int = 1
    finest: str = SPECIES  # the finest rank the frame's evidence allows (FAMILY on a monochrome frame)
    gate_invokes: int = 0
    detector_invokes: int = 0
    detections: list[Detection] = field(default_factory=list)
    detected: bool = False  # the detector looked at the frame (and its tiles where no bird was boxed)
    motion: list[Region] | None = None  # motion against the burst, once asked for
    regions: list[Region] | None = None  # the proposals, once made
    vectors: dict[Box, np.ndarray] = field(default_factory=dict)  # camera-head embeddings by box
    embed_invokes: int = 0
    burst_key: object = None  # the camera and capture time (motion, burst sightings)
    thumbnail: np.ndarray | None = None  # the motion thumbnail, where motion is looked for


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
        sightings: BurstSightings | None = None,
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
        self.sightings = sightings

    def decide_combined(self, probabilities: np.ndarray, finest: str = SPECIES) -> Decision:
        """The decision rules applied to combined probabilities (an event's mean over its frames)."""
        return decide(probabilities, self.species.labels, self.rules, finest)

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
        return FrameInputs(species, self.species.spec, gate, gate_spec, thumbnail, is_monochrome(photo.bgr))

    @property
    def searches_regions(self) -> bool:
        """Whether `identify` may look at the frame's pixels past `frame_inputs`: to crop regions
        (a gate and a search), or for the detector's look that a frame needs before it is called
        anything but a bird (even with no gate, or with `finder.search: never`).

        Otherwise a caller holding many decoded frames (the daemon's batches in flight) can keep
        only their `frame_inputs` and let the pixels go.
        """
        return self.detector is not None or (self.gate is not None and self.finder.search != "never")

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
        return list(self.identify_each(list(photos), burst_keys, inputs))

    def identify_each(
        self, photos: list[Photo], burst_keys: list[object] | None = None, inputs: list[FrameInputs | None] | None = None
    ) -> Iterator[Identification]:
        """`identify`, one photo's identification at a time, taking the frames over as it goes.

        The batch's whole frames go through the models at once; then each photo is searched and
        yielded in order. Once a photo's search has ended its item in `photos` becomes
        `Photo.without_pixels()`: a caller that keeps no other reference to the frames frees each
        one then, not when the whole batch is done (issue 22 item 5), and if a later photo raises,
        the photos not yet yielded still have their pixels for another try.
        """
        if not photos:
            return
        given = inputs or [None] * len(photos)
        frames = [self._inputs_for(photo, item) for photo, item in zip(photos, given, strict=True)]
        wholes = self.species.predict_batch([frame.species for frame in frames])
        if self.gate is not None:
            gates = self.gate.bird_probability(np.stack([frame.gate for frame in frames]))
        else:
            gates = [None] * len(photos)
        for index, (frame, whole, gate) in enumerate(zip(frames, wholes, gates, strict=True)):
            work = _Work(photos[index], whole, None if gate is None else float(gate), gate_invokes=1 if self.gate else 0,
                         finest=self.rules.monochrome_rank if frame.monochrome else SPECIES)
            key = burst_keys[index] if burst_keys else None
            identification = self._identify_one(work, key, frame.thumbnail)
            photos[index] = photos[index].without_pixels()
            del work  # it held the frame too; nothing here may hold it while the caller has the answer
            yield identification

    def _inputs_for(self, photo: Photo, given: FrameInputs | None) -> FrameInputs:
        if self._usable(given):
            return given
        if photo.bgr.size == 0:
            # Only inputs were kept (see searches_regions) and they were made for other models:
            # a caller must finish frames prepared for one Identifier with that Identifier.
            raise ValueError("frame inputs made for another model were given without the frame's pixels to make new ones")
        return self.frame_inputs(photo)

    def _identify_one(self, work: _Work, burst_key: object, thumbnail: np.ndarray | None) -> Identification:
        work.burst_key = burst_key
        if self.bursts is not None and "motion" in self.finder.methods:
            work.thumbnail = thumbnail if thumbnail is not None else thumbnail_for_motion(work.photo.bgr)
        general = self._identify_general(work, burst_key, work.thumbnail)
        if general.decision.kind == Kind.BLANK and self.bursts is not None:
            self.bursts.remember_blank(burst_key, work.thumbnail)  # the next frames' empty scene
        if (self.sightings is not None and self.gate is not None and general.decision.kind == Kind.BIRD and general.source != "burst"
                and general.decision.taxon_rank != CLASS):  # an unnamed bird names nothing to vouch for
            self.sightings.confirm(burst_key, general.decision.scientific_name)  # the gate agreed: a witness for the burst
        if self.camera_head is None:
            return general
        return self._with_head(work, general)

    def _identify_general(self, work: _Work, burst_key: object, thumbnail: np.ndarray | None) -> Identification:
        motion_regions = self._motion_regions(work.photo, burst_key, thumbnail)
        whole_decision = decide(work.whole.probabilities, self.species.labels, self.rules, work.finest)
        if self._accept(whole_decision, work.whole_gate) and self.finder.search != "always":
            return self._result(work, whole_decision, work.whole, WHOLE, "frame", work.whole_gate)
        if self.finder.search == "never" or self.gate is None:
            if whole_decision.kind == Kind.BIRD and self.gate is None:
                return self._result(work, whole_decision, work.whole, WHOLE, "frame", work.whole_gate)
            # No region search, but a frame earns blank (or animal, person) only by the detector's look.
            self._detect(work)
            return self._no_bird(work, whole_decision, motion_regions)
        regions = self._propose(work, motion_regions)
        best: tuple[Decision, Prediction, Region, float] | None = None
        unnamed: tuple[Decision, Prediction, Region, float] | None = None  # a bird no rank of the model is sure of
        if self._accept(whole_decision, work.whole_gate):  # search: always; a region must beat the frame
            best = (whole_decision, work.whole, Region(WHOLE, "frame"), work.whole_gate or 0.0)
        for start in range(0, len(regions), self.finder.stage_size):
            stage = regions[start : start + self.finder.stage_size]
            crops = [crop(work.photo.bgr, region.box) for region in stage]
            gates = self._gate(crops)
            work.gate_invokes += len(crops)
            birdlike = [i for i, g in enumerate(gates) if g >= self._gate_bar(stage[i])]
            if not birdlike:
                continue
            predictions = self._species([crops[i] for i in birdlike])
            work.invokes += len(birdlike)
            for i, prediction in zip(birdlike, predictions, strict=True):
                # Passed on the detector's word as well as the gate's: a family at the finest.
                finest = work.finest if gates[i] >= self.finder.gate_threshold else _coarser(work.finest, FAMILY)
                decision = decide(prediction.probabilities, self.species.labels, self.rules, finest)
                if decision.kind == Kind.BIRD and (best is None or decision.confidence > best[0].confidence):
                    best = (decision, prediction, stage[i], float(gates[i]))
                elif decision.kind == Kind.UNSURE and unnamed is None and self._sure_bird_box(stage[i]):
                    # The detector and the gate call it a bird; the species model only cannot say which.
                    named = unnamed_bird(prediction.probabilities, self.species.labels, self.rules)
                    unnamed = (named, prediction, stage[i], float(gates[i]))
            if best is not None and best[2].source != "frame":
                break  # the first confident bird in a region ends the search
        best = best or unnamed  # a named bird anywhere wins over an unnamed one
        if best is not None:
            decision, prediction, region, gate = best
            return self._result(work, decision, prediction, region.box, region.source, gate)
        return self._no_bird(work, whole_decision, motion_regions)

    def _gate_bar(self, region: Region) -> float:
        """The gate probability a region needs: half the threshold where the detector boxed a bird surely."""
        return self.finder.gate_threshold / 2 if self._sure_bird_box(region) else self.finder.gate_threshold

    def _sure_bird_box(self, region: Region) -> bool:
        """Whether the detector boxed a bird here at `bird_box_witness_score`: a witness of its own."""
        witness = self.finder.bird_box_witness_score
        return region.label == Kind.BIRD and region.score is not None and witness is not None and region.score >= witness

    def _accept(self, decision: Decision, gate: float | None) -> bool:
        if decision.kind != Kind.BIRD:
            return False
        return gate is None or gate >= self.finder.gate_threshold

    def _no_bird(self, work: _Work, whole_decision: Decision, motion_regions: Callable[[], list[Region]]) -> Identification:
        """No bird: a person, an animal or a vehicle the detector is sure of, else blank on evidence, else unsure."""
        finder = self.finder
        # People first: exports can leave people out, so a person beside a dog is a person.
        for kind, min_score in ((Kind.PERSON, finder.person_min_score), (Kind.ANIMAL, finder.animal_min_score),
                                (Kind.VEHICLE, finder.vehicle_min_score)):
            seen = [d for d in work.detections if d.kind == kind and d.score >= min_score]
            if seen:
                strongest = max(seen, key=lambda d: d.score)
                decision = Decision(kind, kind.value, None, None, None, strongest.score)
                return self._result(work, decision, work.whole, strongest.box, "frame", work.whole_gate)
        if self._blank_on_evidence(work, whole_decision, motion_regions):
            background = whole_decision.kind == Kind.BLANK
            confidence = whole_decision.confidence if background else 1.0 - (work.whole_gate or 0.0)
            decision = Decision(Kind.BLANK, whole_decision.label if background else None, None, None, None, confidence)
        elif whole_decision.kind == Kind.BIRD:
            if self.sightings is not None and self.sightings.witness(work.burst_key, whole_decision.scientific_name):
                return self._result(work, whole_decision, work.whole, WHOLE, "burst", work.whole_gate)
            decision = _not_a_bird(whole_decision)  # the gate disagreed; the species guess stays for review
        elif whole_decision.kind == Kind.UNSURE:
            decision = whole_decision  # the species model's best guess stays, for a person to review
        else:
            decision = Decision(Kind.UNSURE, whole_decision.label, None, None, None, whole_decision.confidence)
        return self._result(work, decision, work.whole, WHOLE, "frame", work.whole_gate)

    def _blank_on_evidence(self, work: _Work, whole_decision: Decision, motion_regions: Callable[[], list[Region]]) -> bool:
        """Whether every witness says nothing is there (the module docstring's blank rule)."""
        if whole_decision.kind not in (Kind.BLANK, Kind.UNSURE) or not work.detected:
            return False
        if work.whole_gate is not None and work.whole_gate >= self.finder.gate_threshold:
            return False
        if any(d.score >= self.finder.blank_max_box_score for d in work.detections):
            return False
        if self._motion(work, motion_regions):
            return False
        # Something in the frame that the camera's recent blank frames lack (motion.py).
        return self.bursts is None or not self.bursts.against_blanks(work.burst_key, work.thumbnail)

    def _motion(self, work: _Work, motion_regions: Callable[[], list[Region]]) -> list[Region]:
        if work.motion is None:
            work.motion = motion_regions()
        return work.motion

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
            work.embed_invokes,
        )

    # --- proposals -----------------------------------------------------------------------

    def _motion_regions(self, photo: Photo, burst_key: object, thumbnail: np.ndarray | None) -> Callable[[], list[Region]]:
        if self.bursts is None or "motion" not in self.finder.methods or burst_key is None:
            return list
        return self.bursts.observe(burst_key, thumbnail if thumbnail is not None else thumbnail_for_motion(photo.bgr))

    def _detect(self, work: _Work) -> list[tuple[Box, list[Detection]]]:
        """Run the detector on the frame, and on its tiles unless the frame shows a bird; once per photo.

        Every box down to `blank_max_box_score` is kept in `work.detections` (frame coordinates):
        a weak box of any class is what keeps a frame from being called blank.
        """
        if self.detector is None or work.detected:
            return []
        photo, finder = work.photo, self.finder
        height, width = photo.bgr.shape[:2]
        min_score = min(finder.detector_min_score, finder.blank_max_box_score)
        [on_frame] = self.detector.detect([photo.bgr], min_score=min_score)
        views: list[Box] = [WHOLE]
        found_per_view = [on_frame]
        if not any(d.kind == Kind.BIRD and d.score >= finder.detector_min_score for d in on_frame):
            tile_views = [box for scale in finder.detector_tiles for box in tiles(width, height, scale, overlap=0.3)]
            views.extend(tile_views)
            found_per_view.extend(self.detector.detect([crop(photo.bgr, view) for view in tile_views], min_score=min_score))
        work.detector_invokes += len(views)
        work.detected = True
        for view, found in zip(views, found_per_view, strict=True):
            work.detections.extend(Detection(_inside(view, d.box), d.kind, d.class_id, d.score) for d in found)
        return list(zip(views, found_per_view, strict=True))

    def _propose(self, work: _Work, motion_regions: Callable[[], list[Region]]) -> list[Region]:
        photo = work.photo
        height, width = photo.bgr.shape[:2]
        finder = self.finder
        regions: list[Region] = []
        if "detector" in finder.methods:
            for view, found in self._detect(work):
                for detection in found:
                    if detection.kind in (Kind.BIRD, Kind.ANIMAL) and detection.score >= finder.detector_min_score:
                        box = _inside(view, detection.box)
                        grown = grow_to_square(box, width, height, finder.box_margin, finder.min_region_side)
                        # Birds first: an animal box is worth a look (detectors confuse them) but ranks lower.
                        prior = detection.score + (1.0 if detection.kind == Kind.BIRD else 0.0)
                        regions.append(Region(grown, "detector", prior, detection.kind, detection.score))
        for region in self._motion(work, motion_regions):
            grown = grow_to_square(region.box, width, height, finder.box_margin, finder.min_region_side)
            regions.append(Region(grown, "motion", 1.5 + region.prior, "motion"))
        ranked = suppress(regions, 0.5, reading=self._sure_bird_box)
        if "tiles" in finder.methods and len(ranked) < finder.max_regions:
            ranked.extend(Region(box, "tile", 0.0) for box in self._plain_tiles(photo))
        ranked = ranked[: finder.max_regions]
        head = self.camera_head
        if head is not None and self._head_knows_scene(work):
            # The regions this camera's head takes for its bird are searched first.
            scores = head.bird_scores(self._vectors(work, [region.box for region in ranked])) if ranked else []
            ranked = [region for _, region in sorted(zip(scores, ranked, strict=True), key=lambda pair: -pair[0])]
        work.regions = ranked
        return ranked

    # --- this camera's head (issue 23) -----------------------------------------------------

    def _vectors(self, work: _Work, boxes: list[Box]) -> np.ndarray:
        """The regions' embeddings; each region of a photo is embedded once, however often asked for."""
        assert self.embedder is not None
        for box in boxes:
            if box not in work.vectors:
                work.vectors[box] = self.embedder.embed(work.photo.bgr if box == WHOLE else crop(work.photo.bgr, box), self.preprocess)
                work.embed_invokes += 1
        return np.stack([work.vectors[box] for box in boxes])

    def _head_knows_scene(self, work: _Work) -> bool:
        """Whether the camera's head may speak on this frame: one embedding, the whole frame's.

        A frame unlike every scene the head's birds were seen in is the general models' alone
        (`CameraHead.knows_scene`): the head neither reorders its proposals, nor names, nor unnames
        a bird there, so nothing more is embedded.
        """
        return self.camera_head is not None and self.camera_head.knows_scene(self._vectors(work, [WHOLE])[0])

    def _head_boxes(self, work: _Work) -> list[Box]:
        """What the head judges on a scene it knows: the frame, the proposals, and every plain tile.

        The proposals are capped (`finder.max_regions`) and led by the general detector, which
        misses this camera's own birds where they sit (an owl at the frame's bottom edge); every
        plain tile of `finder.tile_scales` covers them. Only on the head's own scenes, so the cost
        (9-14 ms an embedding here; ~15-20 a frame instead of ~7) is paid only where the head speaks.
        Leave-one-out over the owl camera: 7 -> 8 of 9 named right, still 0 false birds.
        """
        regions = work.regions if work.regions is not None else self._propose(work, list)
        return list(dict.fromkeys([WHOLE, *(region.box for region in regions), *self._plain_tiles(work.photo)]))

    def _plain_tiles(self, photo: Photo) -> list[Box]:
        """The plain tiles of `finder.tile_scales` over the frame: the search's last proposals, and the head's cover."""
        height, width = photo.bgr.shape[:2]
        return [box for scale in self.finder.tile_scales for box in tiles(width, height, scale, self.finder.tile_overlap)]

    def _with_head(self, work: _Work, general: Identification) -> Identification:
        """The general answer joined to the camera's head by the rule in birdtrap.identify.camera_head."""
        head = self.camera_head
        assert head is not None
        if not self._head_knows_scene(work):
            return self._costed(work, general)
        boxes = self._head_boxes(work)
        judgement = head.judge(self._vectors(work, boxes), general.decision.kind == Kind.BIRD)
        if judgement is not None:
            rank = SPECIES if len(judgement.label.split()) >= 2 else GENUS
            confidence = max(self.rules.threshold, min(1.0, 0.5 + judgement.margin))
            decision = Decision(Kind.BIRD, judgement.label, judgement.label, None, rank, confidence)
            return self._result(work, decision, general.prediction, boxes[judgement.row], "camera-head", general.gate_probability)
        decided = general.decision
        if decided.kind == Kind.BIRD and general.box is not None:
            named = head.not_a_bird(self._vectors(work, [general.box])[0], decided.scientific_name)
            if named is not None:
                kind = {ANIMAL: Kind.ANIMAL, PERSON: Kind.PERSON}.get(named, Kind.BLANK)  # a site class the owner named is no bird
                decision = Decision(kind, named, None, None, None, decided.confidence)
                return self._result(work, decision, general.prediction, general.box, "camera-head", general.gate_probability)
        return self._costed(work, general)

    @staticmethod
    def _costed(work: _Work, general: Identification) -> Identification:
        """The general answer, with what the head spent on top of it counted (its embeddings, and the
        detector where the head needed proposals the general models did not make)."""
        return replace(general, detector_invokes=work.detector_invokes, embed_invokes=work.embed_invokes)

    def example(self, photo: Photo, key: str, label: str, box: Box | None = None) -> FrameExample:
        """One labelled frame as the camera's head learns it: its regions embedded, its bird's region marked.

        `box` is the bird's region when a person or the finder chose it; otherwise the region the
        general models named a bird in (an unnamed bird, "Aves", stands on weaker evidence: its region is
        no named bird's), or one chosen later (`camera_head.choose_positives`).
        """
        if self.embedder is None:
            raise ValueError("an Identifier without an embedder cannot make examples")
        inputs = self.frame_inputs(photo)
        [whole] = self.species.predict_batch([inputs.species])
        gate = float(self.gate.bird_probability(inputs.gate[None])[0]) if self.gate is not None and inputs.gate is not None else None
        work = _Work(photo, whole, gate, gate_invokes=1 if self.gate else 0,
                     finest=self.rules.monochrome_rank if inputs.monochrome else SPECIES)
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
            elif general.decision.kind == Kind.BIRD and general.decision.taxon_rank != CLASS and general.box not in (None, WHOLE):
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
        taxon = decided.scientific_name if decided.kind == Kind.BIRD else None
        return FrameExample(key, label, vectors, tuple(boxes), positive, gates, decided.kind, taxon)


def _inside(view: Box, box: Box) -> Box:
    """A box found in a crop (`view`), in the coordinates of the whole frame."""
    width, height = view[2] - view[0], view[3] - view[1]
    return (view[0] + box[0] * width, view[1] + box[1] * height, view[0] + box[2] * width, view[1] + box[3] * height)


def _coarser(rank: str, other: str) -> str:
    return rank if RANK_DEPTH[rank] >= RANK_DEPTH[other] else other


def _not_a_bird(decision: Decision) -> Decision:
    # The species model named a bird but the gate disagrees: a mammal or a scene, not a sighting.
    return Decision(Kind.UNSURE, decision.label, decision.scientific_name, decision.common_name, None, decision.confidence)


__all__ = ["Identifier", "Identification", "FinderSettings", "FrameInputs"]


def is_monochrome(pixels: np.ndarray) -> bool:
    """Whether a frame carries no colour (a camera trap's infrared night frame, a greyscale photo)."""
    if pixels.ndim == 2:
        return True
    step = max(1, int(np.sqrt(pixels.shape[0] * pixels.shape[1] / 40_000)))  # ~40k pixels: cheap at any size
    return colour_spread(pixels[::step, ::step]) < MONOCHROME_SPREAD
