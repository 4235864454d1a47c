"""The bird gate: does this region hold a bird at all?

A species model trained only on birds names a bird in every photo, a cougar included. A general
ImageNet model knows mammals, people and scenes too; the summed probability of its bird classes
(listed in `data/imagenet_bird_classes.txt` as ImageNet-1k ids with their names, so nothing is
hard-coded here) separates birds from everything else.

Classes are found by id and checked by name: ImageNet names two classes "crane" (the bird and the
machine), and a lookup by name alone summed the machine, so an infrared heron scored as no bird.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from birdtrap.errors import ModelError
from birdtrap.identify.classifier import Classifier

IMAGENET_CLASSES = 1000


def bird_classes() -> list[tuple[int, str]]:
    """(ImageNet-1k id, name) of each bird class, from the package's data file."""
    text = resources.files("birdtrap").joinpath("data/imagenet_bird_classes.txt").read_text(encoding="utf-8")
    classes = []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            number, name = line.split("\t", 1)
            classes.append((int(number), name.strip()))
    return classes


def bird_class_names() -> list[str]:
    return [name for _, name in bird_classes()]


def bird_label_indices(texts: list[str]) -> tuple[list[int], list[str]]:
    """Indices into a model's label list for each bird class, and the names not found.

    A 1001-label file (background first, as Coral's) is shifted by one from ImageNet-1k's ids. A
    name that is not where its id says is looked up by name, but only where the name is unique.
    """
    offset = len(texts) - IMAGENET_CLASSES if len(texts) in (IMAGENET_CLASSES, IMAGENET_CLASSES + 1) else None
    counts: dict[str, int] = {}
    for text in texts:
        counts[text] = counts.get(text, 0) + 1
    found, missing = [], []
    for number, name in bird_classes():
        if offset is not None and texts[number + offset] == name:
            found.append(number + offset)
        elif counts.get(name) == 1:
            found.append(texts.index(name))
        else:
            missing.append(name)
    return sorted(found), missing


class BirdGate:
    """Wraps a general classifier and reports, per input, the probability that it shows a bird."""

    def __init__(self, model: Classifier) -> None:
        self.model = model
        indices, missing = bird_label_indices([label.text for label in model.labels])
        if len(missing) > len(bird_classes()) // 2:
            raise ModelError(
                f"{model.bundle.labels_path} does not look like ImageNet labels (it lacks {missing[:3]}...); "
                "gate.path must be an ImageNet classifier such as `birdtrap model fetch imagenet-mobilenet-v2`."
            )
        self.bird_indices = np.array(indices)

    @property
    def spec(self):
        return self.model.spec

    def bird_probability(self, inputs: np.ndarray) -> np.ndarray:
        """Summed bird-class probability (N,) for a batch of gate inputs."""
        probabilities = self.model.probabilities(inputs)
        return probabilities[:, self.bird_indices].sum(axis=1)
