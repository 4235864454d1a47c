"""The TFLite runtime: which one is installed, the Edge TPU delegate, and quantized tensors.

`ai_edge_litert` is the first choice (the maintained runtime, small enough for a Pi), then the
older `tflite_runtime`, then full TensorFlow's `tf.lite` on a workstation.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from birdtrap.errors import ModelError

log = logging.getLogger(__name__)

EDGETPU_LIBRARY = "libedgetpu.so.1"


@dataclass(frozen=True)
class Runtime:
    name: str
    interpreter: Callable[..., Any]
    load_delegate: Callable[..., Any]


def find_runtime() -> Runtime:
    """Return the first TFLite runtime that imports. Raises ModelError when none does."""
    try:
        from ai_edge_litert import interpreter as litert

        return Runtime("ai_edge_litert", litert.Interpreter, litert.load_delegate)
    except ImportError:
        pass
    try:
        import tflite_runtime.interpreter as tflite  # type: ignore[import-not-found]

        return Runtime("tflite_runtime", tflite.Interpreter, tflite.load_delegate)
    except ImportError:
        pass
    try:
        import tensorflow as tf  # type: ignore[import-not-found]

        return Runtime("tensorflow.lite", tf.lite.Interpreter, tf.lite.experimental.load_delegate)
    except ImportError:
        pass
    raise ModelError("no TFLite runtime is installed; run `pip install ai-edge-litert`.")


_edgetpu_warned = False


def _warn_no_edgetpu_once() -> None:
    """Say it once per process: every model (species, gate, detector) tries, and the CLI and
    daemon load them again on reload; three identical warnings per command was noise (issue 18)."""
    global _edgetpu_warned
    if _edgetpu_warned:
        log.debug("no Edge TPU found (%s); running on the CPU", EDGETPU_LIBRARY)
        return
    _edgetpu_warned = True
    log.warning("no Edge TPU found (%s); running on the CPU", EDGETPU_LIBRARY)


def open_interpreter(model_path: Path, threads: int, delegate: str) -> tuple[Any, Runtime, str]:
    """Build an interpreter with tensors allocated; returns it, the runtime and the delegate used.

    ``delegate`` is ``cpu``, ``edgetpu`` (fail if the Edge TPU library is absent) or ``auto`` (try
    the Edge TPU, fall back to the CPU with one warning).
    """
    runtime = find_runtime()
    delegates = []
    used = "cpu"
    if delegate in ("edgetpu", "auto"):
        try:
            # Probe the library first: the runtime's Delegate object half-builds and complains in
            # its destructor when the library is missing.
            ctypes.CDLL(EDGETPU_LIBRARY)
            delegates = [runtime.load_delegate(EDGETPU_LIBRARY)]
            used = "edgetpu"
        except (ValueError, OSError, RuntimeError) as e:
            if delegate == "edgetpu":
                raise ModelError(
                    f"model.delegate is 'edgetpu' but {EDGETPU_LIBRARY} could not be loaded ({e}). Install "
                    "libedgetpu1-std and plug in the Coral, or set model.delegate to auto or cpu."
                ) from None
            _warn_no_edgetpu_once()
    try:
        interpreter = runtime.interpreter(
            model_path=str(model_path), num_threads=threads, experimental_delegates=delegates or None
        )
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"{model_path} is not a usable TFLite model ({e}). Fetch or export it again.") from None
    return interpreter, runtime, used


def dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """Real values of an output tensor, from the interpreter's own quantization parameters."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if values.dtype in (np.float32, np.float16, np.float64) or not scale:
        return values.astype(np.float32)
    return (values.astype(np.float32) - zero_point) * scale


class TFLiteModel:
    """One interpreter and its input details; it runs one image per invoke.

    Batches are run image by image. On XNNPACK a batch of 4 saved ~4% of invoke time, but each
    new batch size re-plans the tensor arena (the finder's stages vary in size), batch 4 held
    5 MB more while the daemon drained, and that drain was no faster (bench, issue 10). The Edge
    TPU runs batch 1 only.
    """

    def __init__(self, model_path: Path, threads: int = 2, delegate: str = "auto") -> None:
        self.path = Path(model_path)
        self.interpreter, self.runtime, self.delegate = open_interpreter(self.path, threads, delegate)
        self.input_detail = self.interpreter.get_input_details()[0]
        if int(self.input_detail["shape"][0]) != 1:
            self._batch_of_one()
        self.output_details = self.interpreter.get_output_details()
        self.invokes = 0
        hand_back_file_pages(self.path)

    def _batch_of_one(self) -> None:
        try:
            self.interpreter.resize_tensor_input(self.input_detail["index"], [1, *self.input_shape])
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{self.path} has a fixed batch of {self.input_detail['shape'][0]} and cannot run one image ({e}).") from None
        self.input_detail = self.interpreter.get_input_details()[0]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        _, height, width, channels = (int(v) for v in self.input_detail["shape"])
        return height, width, channels

    @property
    def input_dtype(self) -> str:
        return np.dtype(self.input_detail["dtype"]).name

    @property
    def input_quantization(self) -> tuple[float, int]:
        scale, zero_point = self.input_detail.get("quantization", (0.0, 0))
        return float(scale), int(zero_point)

    def invoke(self, inputs: np.ndarray) -> list[np.ndarray]:
        """Run a batch (N, H, W, C); returns each output dequantized, with the batch axis first."""
        if inputs.ndim == 3:
            inputs = inputs[None]
        rows = [self._run(inputs[i : i + 1]) for i in range(len(inputs))]
        return [np.concatenate([row[k] for row in rows]) for k in range(len(rows[0]))]

    def _run(self, inputs: np.ndarray) -> list[np.ndarray]:
        try:
            self.interpreter.set_tensor(self.input_detail["index"], inputs)
            self.interpreter.invoke()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{self.path} failed to run ({e}); the model file may be broken. Fetch or export it again.") from None
        self.invokes += len(inputs)
        return [dequantize(self.interpreter.get_tensor(d["index"]), d) for d in self.output_details]


def hand_back_file_pages(path: Path) -> int:
    """Drop the process's resident pages of a read-only file mapping (the model the runtime mmapped); returns bytes advised.

    The runtime maps the .tflite file and reads its weights while it builds the interpreter;
    XNNPACK then holds its own packed copy, and the file's pages stay resident in the daemon
    unused: 11 MB of the shipped daemon's RSS for its three models (bench/README.md, "Memory").
    MADV_DONTNEED on a clean, read-only file mapping only forgets them: a page the runtime does
    touch again (an op XNNPACK did not take) is read back from the page cache, as the kernel
    itself would after evicting it under memory pressure. Nothing is done where there is no
    /proc/self/maps or madvise (not Linux): the pages simply stay.
    """
    advice = getattr(mmap, "MADV_DONTNEED", None)
    try:
        target = os.path.realpath(path)
        with open("/proc/self/maps") as maps:
            spans = []
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].rstrip("\n") == target and "w" not in fields[1]:
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    spans.append((start, end - start))
        if advice is None or not spans:
            return 0
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    except (OSError, AttributeError):
        return 0
    advised = 0
    for start, length in spans:
        if libc.madvise(start, length, advice) == 0:
            advised += length
    return advised
