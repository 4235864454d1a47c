"""Object detectors that propose where an animal is: boxes, classes and scores from a TFLite model.

The default is Google's COCO SSD MobileNet v1 (class 15 bird, 16-24 other animals, 0 person,
1-8 vehicles),
whose outputs come from the TFLite detection post-process op. Another detector plugs in through
`DetectorSettings`: its class ids, box order and output decoding are configuration. A YOLO export
(MegaDetector v5 is a YOLOv5: 0 animal, 1 person, 2 vehicle) has one raw output of candidate
boxes that is decoded here: centre and size, objectness times class score, then non-maximum
suppression per class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from birdtrap.errors import ModelError
from birdtrap.identify.kinds import Kind
from birdtrap.identify.preprocess import InputSpec, PreprocessSettings, to_model_input
from birdtrap.identify.regions import Box, non_max_suppression
from birdtrap.identify.tflite import TFLiteModel

BIRD, ANIMAL, PERSON, VEHICLE = Kind.BIRD, Kind.ANIMAL, Kind.PERSON, Kind.VEHICLE
OTHER = "other"  # a class that names no kind (a chair, a kite): not a kind of photo, yet not nothing either
YOLO_DECODINGS = ("yolov5", "yolov8")


@dataclass(frozen=True)
class Detection:
    box: Box  # x0, y0, x1, y1 in 0-1 of the image it ran on
    kind: str  # Kind.BIRD, ANIMAL, PERSON, VEHICLE, or OTHER
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
    # postprocess: boxes, classes, scores outputs. yolov5: one output (N, 5 + classes) of centre x,
    # centre y, width, height, objectness, class scores. yolov8: (4 + classes, N), no objectness.
    decoding: str = "postprocess"
    iou_threshold: float = 0.45  # YOLO: overlapping boxes of one class above this are one
    vehicle_classes: tuple[int, ...] = tuple(range(1, 9))  # bicycle, car, motorcycle, airplane, bus, train, truck, boat


class Detector:
    def __init__(
        self, model: TFLiteModel, layout: DetectorLayout | None = None, mean: float = 127.5, std: float = 127.5, channels: str = "RGB"
    ) -> None:
        self.model = model
        self.layout = layout or DetectorLayout()
        if self.layout.decoding in YOLO_DECODINGS:
            shape = tuple(model.output_details[0]["shape"])
            if len(model.output_details) != 1 or len(shape) != 3 or max(shape[1:]) < 5:
                raise ModelError(
                    f"{model.path} has outputs of shapes {[tuple(d['shape']) for d in model.output_details]}; "
                    f"detector.decoding {self.layout.decoding} needs one output of candidate boxes (1, N, 5 + classes)."
                )
        elif len(model.output_details) < 3:
            raise ModelError(
                f"{model.path} has {len(model.output_details)} outputs; a detector needs boxes, classes and scores "
                "(a TFLite detection post-process op)."
            )
        height, width, _ = model.input_shape
        scale, zero_point = model.input_quantization
        self.spec = InputSpec(
            height, width, channels=channels, mean=mean, std=std, dtype=model.input_dtype, scale=scale, zero_point=zero_point
        )
        self._plain = PreprocessSettings(denoise=False, auto_contrast=False)
        # Vehicles first, so a bird, animal or person id wins where a detector with other class ids
        # (MegaDetector: 0 animal, 1 person, 2 vehicle) is configured without vehicle_classes.
        self._kinds = {
            **{c: VEHICLE for c in self.layout.vehicle_classes},
            **{c: BIRD for c in self.layout.bird_classes},
            **{c: ANIMAL for c in self.layout.animal_classes},
            **{c: PERSON for c in self.layout.person_classes},
        }

    def detect(self, images: list[np.ndarray], min_score: float = 0.2) -> list[list[Detection]]:
        """Detections above `min_score` for each BGR image (one invoke each: the op has batch 1)."""
        results = []
        for image in images:
            outputs = self.model.invoke(to_model_input(image, self.spec, self._plain)[None])
            if self.layout.decoding in YOLO_DECODINGS:
                results.append(self._decode_yolo(outputs[0][0], min_score))
                continue
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

    def _decode_yolo(self, raw: np.ndarray, min_score: float) -> list[Detection]:
        """Candidate boxes (one row each) to detections: score, threshold, per-class NMS."""
        yolov8 = self.layout.decoding == "yolov8"
        rows = raw.T if yolov8 else raw
        rows = rows.astype(np.float32)
        first_class = 4 if yolov8 else 5
        class_scores = rows[:, first_class:]
        if not yolov8:
            class_scores = class_scores * rows[:, 4:5]
        classes = class_scores.argmax(axis=1)
        scores = class_scores[np.arange(len(rows)), classes]
        keep = scores >= min_score
        if not keep.any():
            return []
        centre_size = rows[keep, :4]
        classes, scores = classes[keep], scores[keep]
        if centre_size.max() > 2.0:  # pixels of the model input, not 0-1
            centre_size = centre_size / np.array([self.spec.width, self.spec.height, self.spec.width, self.spec.height], np.float32)
        x0 = np.clip(centre_size[:, 0] - centre_size[:, 2] / 2, 0.0, 1.0)
        y0 = np.clip(centre_size[:, 1] - centre_size[:, 3] / 2, 0.0, 1.0)
        x1 = np.clip(centre_size[:, 0] + centre_size[:, 2] / 2, 0.0, 1.0)
        y1 = np.clip(centre_size[:, 1] + centre_size[:, 3] / 2, 0.0, 1.0)
        found = []
        corners = np.stack([x0, y0, x1, y1], axis=1)
        for class_id in np.unique(classes):
            mine = np.flatnonzero(classes == class_id)
            for k in non_max_suppression(corners[mine], scores[mine], min_score, self.layout.iou_threshold):
                i = mine[k]
                if x1[i] > x0[i] and y1[i] > y0[i]:
                    box = (float(x0[i]), float(y0[i]), float(x1[i]), float(y1[i]))
                    found.append(Detection(box, self._kinds.get(int(class_id), OTHER), int(class_id), float(scores[i])))
        return sorted(found, key=lambda d: d.score, reverse=True)
