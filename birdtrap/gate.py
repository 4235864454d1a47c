"""The bird gate: does this region hold a bird at all?

A species model trained only on birds names a bird in every photo, a cougar included. A general
ImageNet model knows mammals, people and scenes too; the summed probability of its bird classes
(listed in `data/imagenet_bird_classes.txt`, by name, so no index is hard-coded) separates birds
from everything else.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from birdtrap.classifier import Classifier
from birdtrap.errors import ModelError


def bird_class_names() -> list[str]:
    text = resources.files("birdtrap").joinpath("data/imagenet_bird_classes.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


class BirdGate:
    """Wraps a general classifier and reports, per input, the probability that it shows a bird."""

    def __init__(self, model: Classifier) -> None:
        self.model = model
        by_text = {label.text: label.index for label in model.labels}
        names = bird_class_names()
        missing = [name for name in names if name not in by_text]
        if len(missing) > len(names) // 2:
            raise ModelError(
                f"{model.bundle.labels_path} does not look like ImageNet labels (it lacks {missing[:3]}...); "
                "gate.path must be an ImageNet classifier such as `birdtrap model fetch imagenet-mobilenet-v2`."
            )
        self.bird_indices = np.array(sorted(by_text[name] for name in names if name in by_text))

    @property
    def spec(self):
        return self.model.spec

    def bird_probability(self, inputs: np.ndarray) -> np.ndarray:
        """Summed bird-class probability (N,) for a batch of gate inputs."""
        probabilities = self.model.probabilities(inputs)
        return probabilities[:, self.bird_indices].sum(axis=1)
