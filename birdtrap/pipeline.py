"""Decoded photos in, identifications out: the models and decision rules, with no I/O.

The daemon, `birdtrap classify` and `birdtrap evaluate` all go through `Identifier`, so the
numbers `evaluate` prints are the daemon's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from birdtrap.classifier import Classifier, Prediction
from birdtrap.decision import Decision, DecisionRules, decide
from birdtrap.preprocess import Photo, PreprocessSettings, to_model_input

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in 0-1 of the (cropped) frame


@dataclass(frozen=True, eq=False)
class Identification:
    decision: Decision
    prediction: Prediction
    box: Box | None
    invokes: int


class Identifier:
    """Names what is in each photo with the species model (whole frame)."""

    def __init__(self, species: Classifier, preprocess: PreprocessSettings, rules: DecisionRules) -> None:
        self.species = species
        self.preprocess = preprocess
        self.rules = rules

    def identify(self, photos: list[Photo]) -> list[Identification]:
        if not photos:
            return []
        before = self.species.model.invokes
        inputs = [to_model_input(photo.bgr, self.species.spec, self.preprocess) for photo in photos]
        predictions = self.species.predict_batch(inputs)
        per_photo = (self.species.model.invokes - before) // len(photos)
        return [
            Identification(decide(p.probabilities, self.species.labels, self.rules), p, (0.0, 0.0, 1.0, 1.0), per_photo)
            for p in predictions
        ]
