"""Start TensorFlow without its CUDA-probe lines on a machine that has no GPU.

TensorFlow 2.21 writes `cudart_stub` / `cuInit` / oneDNN lines straight to file descriptor 2
while it imports and when it first looks for devices, before its own logging is set up, so
`TF_CPP_MIN_LOG_LEVEL` cannot hide them. An ecologist training on a laptop reads "failed call
to cuInit: CUDA error" as a failure. Here both steps run with descriptor 2 sent to a temporary
file; what was written is then passed on except the lines known to be harmless start-up chatter.
Anything else (a real error) still reaches the terminal, and all of it does if the start fails.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The start-up lines of a CPU-only machine, matched by the source file TensorFlow names in them.
HARMLESS = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|\s(cudart_stub|cuda_platform|cuda_driver|cuda_executor|cuda_dnn|cuda_fft|cuda_blas|port)\.cc:\d+\]"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning"
)


def harmless(line: str) -> bool:
    """Whether `line` is TensorFlow's CPU-machine start-up chatter (not worth an ecologist's worry)."""
    return bool(HARMLESS.search(line))


def start_tensorflow() -> Any:
    """The `tensorflow` module, imported and its devices listed, without the harmless start-up lines.

    A second call costs nothing: the module is already imported and its devices already found.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        failed = True
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = lines if failed else [line for line in lines if not harmless(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
    return tf
