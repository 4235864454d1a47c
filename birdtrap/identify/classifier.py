"""Model input arrays in, ranked label probabilities out.

A `Classifier` joins a validated bundle (labels, card) to a TFLite interpreter and checks that the
two agree. It knows nothing of files, folders or the database.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from birdtrap.errors import ModelError
from birdtrap.identify.bundle import Label, ModelBundle, load_bundle, resolve_input
from birdtrap.identify.preprocess import InputSpec, PreprocessSettings
from birdtrap.identify.tflite import TFLiteModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Score:
    label: Label
    probability: float


@dataclass(frozen=True, eq=False)
class Prediction:
    """The top-k labels for one input, and the whole probability vector for later decisions."""

    top: tuple[Score, ...]
    probabilities: np.ndarray = field(repr=False)

    @property
    def best(self) -> Score:
        return self.top[0]


_INTEGER_TYPES = {"int8", "uint8"}


def _check_card_matches_tensors(bundle: ModelBundle, input_dtype: str, output_dtype: str) -> None:
    """Refuse a bundle whose card claims a quantization its model file does not have.

    A float model filed as int8 would run far slower than the card promises and a Coral cannot run
    it at all; an int8 card over float tensors means a conversion fell back to float or files were
    mixed up. Raises ModelError naming the file and the fix.
    """
    card = bundle.card or {}
    claimed = card.get("format") or (card.get("quantization") or {}).get("type")
    if claimed is None:
        return
    integer = {str(np.dtype(input_dtype)), str(np.dtype(output_dtype))} <= _INTEGER_TYPES
    if (claimed == "int8") != integer:
        raise ModelError(
            f"{bundle.model_path} has {np.dtype(input_dtype)} input and {np.dtype(output_dtype)} output tensors but its card "
            f"{bundle.model_path.parent / 'model.json'} says {claimed}; the bundle is mislabelled (a failed or mixed-up "
            "export). Export the model again with `python -m training export` and copy the whole folder."
        )


class Classifier:
    """A species (or gate) model ready to run; refuses labels that do not fit its output."""

    def __init__(
        self,
        bundle: ModelBundle,
        threads: int = 2,
        delegate: str = "auto",
        top_k: int = 5,
        mean: float | None = None,
        std: float | None = None,
        preprocessing: PreprocessSettings | None = None,
    ) -> None:
        self.bundle = bundle
        self.model = TFLiteModel(bundle.model_path, threads=threads, delegate=delegate)
        self.top_k = top_k
        outputs = int(np.prod(self.model.output_details[0]["shape"][1:]))
        if outputs != len(bundle.labels):
            raise ModelError(
                f"{bundle.model_path} has {outputs} outputs but {bundle.labels_path} has {len(bundle.labels)} "
                "labels; line N of labels.txt must name output N. Use the labels that came with the model."
            )
        height, width, channels = self.model.input_shape
        if channels != 3:
            raise ModelError(f"{bundle.model_path} expects {channels} input channels; birdtrap feeds 3 (RGB).")
        _check_card_matches_tensors(bundle, self.model.input_dtype, str(np.dtype(self.model.output_details[0]["dtype"])))
        scale, zero_point = self.model.input_quantization
        self.resolved = resolve_input(bundle, mean, std, preprocessing)
        self.spec = InputSpec(
            height=height,
            width=width,
            channels=self.resolved.channels,
            mean=self.resolved.mean,
            std=self.resolved.std,
            dtype=self.model.input_dtype,
            scale=scale,
            zero_point=zero_point,
        )
        log.info(
            "loaded %s (%d labels, %dx%d %s input) with %s on %s",
            bundle.model_path,
            len(bundle.labels),
            width,
            height,
            self.spec.dtype,
            self.model.runtime.name,
            self.model.delegate,
        )

    @classmethod
    def from_path(cls, model: Path, labels: Path | None = None, **options: object) -> Classifier:
        return cls(load_bundle(model, labels), **options)  # type: ignore[arg-type]

    @property
    def labels(self) -> tuple[Label, ...]:
        return self.bundle.labels

    @property
    def card_preprocessing(self) -> PreprocessSettings | None:
        """The preprocessing the model was trained with, when its card records it."""
        return self.resolved.preprocessing if self.resolved.sources["preprocessing"] == "model card" else None

    @property
    def preprocessing(self) -> PreprocessSettings:
        """The preprocessing this model is fed with (see bundle.resolve_input)."""
        return self.resolved.preprocessing

    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """Probabilities (N, labels) for a batch of model inputs."""
        return self.model.invoke(np.ascontiguousarray(inputs))[0].reshape(len(inputs), -1)

    def predict_batch(self, inputs: list[np.ndarray] | np.ndarray) -> list[Prediction]:
        if len(inputs) == 0:
            return []
        probs = self.probabilities(np.stack(list(inputs)))
        return [self._rank(row) for row in probs]

    def _rank(self, row: np.ndarray) -> Prediction:
        k = min(self.top_k, len(row))
        order = np.argsort(-row, kind="stable")[:k]
        return Prediction(tuple(Score(self.labels[i], float(row[i])) for i in order), row)
