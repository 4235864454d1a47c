"""Feature vectors for regions of a photo, from a model birdtrap already runs (issue 23).

Two sources, both one extra invoke per region on the CPU:
- the species model's penultimate layer (its global average pool), read from a second interpreter
  of the same file opened with `experimental_preserve_all_tensors` (ai_edge_litert keeps
  intermediate tensors readable only then; the daemon's own interpreter stays lean);
- Coral's MobileNet v1 embedding extractor (1024-d), made for on-device weight imprinting.

Nothing here knows about cameras, examples or the database: images in, vectors out.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from birdtrap.errors import ModelError
from birdtrap.identify.preprocess import InputSpec, PreprocessSettings, to_model_input
from birdtrap.identify.regions import WHOLE, Box, crop
from birdtrap.identify.tflite import dequantize, find_runtime

log = logging.getLogger(__name__)

POOL_NAMES = ("AvgPool", "avg_pool", "global_average_pooling")


class Embedder:
    """One interpreter that turns a BGR image (any size) into an L2-normalised feature vector.

    `name` identifies the vectors it makes (file name and tensor), so examples embedded by one
    model are never mixed with another's.
    """

    def __init__(self, model_path: Path, threads: int = 2, penultimate: bool = False) -> None:
        self.path = Path(model_path)
        if not self.path.exists():
            raise ModelError(f"embedding model {self.path} not found; set camera_head.embedding_model to a .tflite file or null.")
        runtime = find_runtime()
        options: dict[str, Any] = {"model_path": str(self.path), "num_threads": threads}
        if penultimate:
            options["experimental_preserve_all_tensors"] = True
        try:
            with warnings.catch_warnings():
                # "intended for debugging ... can increase memory": the cost is the intermediate
                # tensors of one 224x224 MobileNet (a few MB), paid only while a head is in use.
                warnings.simplefilter("ignore", UserWarning)
                self.interpreter = runtime.interpreter(**options)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError, TypeError) as e:
            raise ModelError(f"{self.path} cannot be opened for embeddings ({e}).") from None
        self.input_detail = self.interpreter.get_input_details()[0]
        self.output_detail = self._pool_tensor() if penultimate else self.interpreter.get_output_details()[0]
        _, height, width, _ = (int(v) for v in self.input_detail["shape"])
        scale, zero_point = self.input_detail.get("quantization", (0.0, 0))
        self.spec = InputSpec(
            height=height,
            width=width,
            channels="RGB",
            mean=127.5,
            std=127.5,
            dtype=np.dtype(self.input_detail["dtype"]).name,
            scale=float(scale),
            zero_point=int(zero_point),
        )
        self.name = f"{self.path.name}:{self.output_detail['name'][:60]}"
        self.invokes = 0

    def _pool_tensor(self) -> dict:
        pools = [d for d in self.interpreter.get_tensor_details() if any(n in d["name"] for n in POOL_NAMES) and len(d["shape"]) >= 2]
        if not pools:
            raise ModelError(
                f"{self.path} has no average-pool tensor to read a penultimate layer from; set camera_head.embedding_model "
                "to an embedding extractor (e.g. Coral's mobilenet_v1_embedding_extractor)."
            )
        return pools[-1]

    def embed(self, image: np.ndarray, preprocess: PreprocessSettings | None = None) -> np.ndarray:
        """The L2-normalised float32 vector of one BGR image."""
        inputs = to_model_input(image, self.spec, preprocess or PreprocessSettings())
        self.interpreter.set_tensor(self.input_detail["index"], inputs[None])
        self.interpreter.invoke()
        self.invokes += 1
        vector = dequantize(self.interpreter.get_tensor(self.output_detail["index"]), self.output_detail).reshape(-1)
        return vector / (float(np.linalg.norm(vector)) or 1.0)

    def embed_regions(self, bgr: np.ndarray, boxes: list[Box], preprocess: PreprocessSettings | None = None) -> np.ndarray:
        """(len(boxes), D) vectors of the regions `boxes` (0-1 coordinates) of one frame."""
        return np.stack([self.embed(bgr if box == WHOLE else crop(bgr, box), preprocess) for box in boxes])
