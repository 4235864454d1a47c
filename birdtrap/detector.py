"""Object detectors that propose where an animal is: boxes, classes and scores from a TFLite model.

The default is Google's COCO SSD MobileNet v1 (class 15 bird, 16-24 other animals, 0 person),
whose outputs come from the TFLite detection post-process op. Another detector (a MegaDetector
export, say) plugs in through `DetectorSettings`: its class ids and box order are configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from birdtrap.errors import ModelError
from birdtrap.preprocess import InputSpec, PreprocessSettings, to_model_input
from birdtrap.regions import Box
from birdtrap.tflite import TFLiteModel

BIRD, ANIMAL, PERSON, OTHER = "bird", "animal", "person", "other"


@dataclass(frozen=True)
class Detection:
    box: Box  # x0, y0, x1, y1 in 0-1 of the image it ran on
    kind: str  # bird, animal, person or other
    class_id: int
    score: float


@dataclass(frozen=True)
class DetectorLayout:
    """How to read a detector's outputs and what its class ids mean."""

    bird_classes: tuple[int, ...] = (15,)
    animal_classes: tuple[int, ...] = tuple(range(16, 25))
    person_classes: tuple[int, ...] = (0,)
    box_order: str = "yxyx"  # TFLite post-process op: ymin, xmin, ymax, xmax
    outputs: tuple[int, int, int] = (0, 1, 2)  # indices of boxes, classes, scores


class Detector:
    def __init__(self, model: TFLiteModel, layout: DetectorLayout | None = None, mean: float = 127.5, std: float = 127.5) -> None:
        self.model = model
        self.layout = layout or DetectorLayout()
        if len(model.output_details) < 3:
            raise ModelError(
                f"{model.path} has {len(model.output_details)} outputs; a detector needs boxes, classes and scores "
                "(a TFLite detection post-process op)."
            )
        height, width, _ = model.input_shape
        scale, zero_point = model.input_quantization
        self.spec = InputSpec(height, width, mean=mean, std=std, dtype=model.input_dtype, scale=scale, zero_point=zero_point)
        self._plain = PreprocessSettings(denoise=False, auto_contrast=False)
        self._kinds = {
            **{c: BIRD for c in self.layout.bird_classes},
            **{c: ANIMAL for c in self.layout.animal_classes},
            **{c: PERSON for c in self.layout.person_classes},
        }

    def detect(self, images: list[np.ndarray], min_score: float = 0.2) -> list[list[Detection]]:
        """Detections above `min_score` for each BGR image (one invoke each: the op has batch 1)."""
        results = []
        for image in images:
            outputs = self.model.invoke(to_model_input(image, self.spec, self._plain)[None])
            boxes, classes, scores = (outputs[i][0] for i in self.layout.outputs)
            found = []
            for raw, class_id, score in zip(boxes, classes, scores, strict=False):
                if score < min_score:
                    continue
                a, b, c, d = (float(v) for v in np.clip(raw, 0.0, 1.0))
                box = (b, a, d, c) if self.layout.box_order == "yxyx" else (a, b, c, d)
                if box[2] <= box[0] or box[3] <= box[1]:
                    continue
                found.append(Detection(box, self._kinds.get(int(class_id), OTHER), int(class_id), float(score)))
            results.append(found)
        return results
