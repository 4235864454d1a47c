"""A trained run in, model bundles the daemon accepts out: float32, float16 and int8 TFLite.

Each bundle folder holds `model.tflite`, `labels.txt` and the `model.json` card (written by
`birdtrap.identify.bundle.write_card`, which fills in the sha256s the daemon checks). The int8 model is
calibrated on real training photos through the real preprocessing. Every exported file is loaded
and run in the daemon's runtime before the export reports success, so a model with an op the edge
runtime lacks fails here, on the workstation, not on the Pi.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

import birdtrap
from birdtrap.errors import ModelError
from birdtrap.identify.bundle import LABELS_FILE, MODEL_FILE, write_card
from birdtrap.identify.classifier import Classifier
from birdtrap.identify.tflite import TFLiteModel
from training import __version__
from training import data as data_module
from training.config import ExportSettings, TrainConfig
from training.errors import ExportError
from training.evaluate import format_table, invoke_ms, predict_bundle, predict_keras, report, write_table
from training.train import LOG_FILE, OPTIMIZATION_FILE, QAT_WEIGHTS_FILE, SUMMARY_FILE, TRAINABLE_FILE, load_network

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    """The bundles written, the comparison table, and where the report files are."""

    folder: Path
    bundles: dict[str, Path] = field(default_factory=dict)
    table: list[dict[str, Any]] = field(default_factory=list)


def convert(
    network: keras.Model, fmt: str, calibration: Callable[[], Iterable[np.ndarray]] | None = None, int8_io: str = "int8"
) -> bytes:
    """Convert the float network to TFLite bytes in `fmt` (float32, float16 or int8).

    int8 is full-integer (every op int8, input and output `int8_io`), as the Coral Edge TPU and
    fast CPU kernels need; `calibration` yields real (1, H, W, 3) float inputs. Only built-in
    TFLite ops are allowed, so a model that would need TensorFlow ops fails here.
    Raises ExportError with the converter's reason.
    """
    size = network.input_shape[1:]
    # Convert a tf.Module holding only the variables and one concrete function: handing the Keras
    # model itself to the converter makes it trace every layer for a SavedModel (4x slower).
    module = tf.Module()
    module.variables_ = list(network.variables)
    module.serve = tf.function(
        lambda image: network(image, training=False), input_signature=[tf.TensorSpec([1, *size], tf.float32, name="image")]
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if fmt == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif fmt == "int8":
        if calibration is None:
            raise ExportError("int8 export needs calibration photos; the run's training split is empty.")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x] for x in calibration())
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8 if int8_io == "int8" else tf.uint8
        converter.inference_output_type = converter.inference_input_type
    elif fmt != "float32":
        raise ExportError(f"unknown export format '{fmt}'; choose float32, float16 or int8.")
    try:
        return converter.convert()
    except Exception as e:  # noqa: BLE001 - the converter raises ConverterError, RuntimeError or ValueError
        raise ExportError(
            f"the {fmt} conversion failed: {str(e).strip().splitlines()[0][:400]}. The model uses an op that TFLite "
            "built-ins (the edge runtime) lack; choose another --backbone or export float32."
        ) from None


def _quantization_aware(network: keras.Model, weights: Path) -> keras.Model:
    """The run's quantization-aware model (its fake-quant ranges guide the int8 conversion)."""
    from training.optimize import quantization_aware

    model = quantization_aware(network)
    model.load_weights(str(weights))
    log.info("int8 from the quantization-aware weights in %s", weights)
    return model


def runtime_check(path: Path) -> list[str]:
    """Load and run a `.tflite` in the daemon's runtime once; return the op names it uses.

    Raises ExportError when the edge runtime cannot load or run it.
    """
    try:
        model = TFLiteModel(path, threads=1, delegate="cpu")
        detail = model.input_detail
        model.invoke(np.zeros([1, *model.input_shape], dtype=detail["dtype"]))
    except ModelError as e:
        raise ExportError(
            f"{path} was converted but the daemon's runtime ({_runtime_name()}) cannot run it: {e} "
            "Export another format or backbone; this model would fail on the Pi too."
        ) from None
    ops = _op_names(path)
    foreign = [op for op in ops if op.startswith("Flex") or op == "CUSTOM"]
    if foreign:
        raise ExportError(f"{path} needs ops the edge runtime lacks ({', '.join(foreign)}); export another backbone.")
    return ops


def _op_names(path: Path) -> list[str]:
    """The model's op names, read without XNNPACK (which would hide the ops it takes over)."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        interpreter = Interpreter(
            model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        return sorted({op["op_name"] for op in interpreter._get_ops_details()})
    except (ImportError, AttributeError, KeyError, TypeError, ValueError, RuntimeError):
        return []  # a private API: listing is a courtesy, the runtime check above is what matters


def _runtime_name() -> str:
    from birdtrap.identify.tflite import find_runtime

    try:
        return find_runtime().name
    except ModelError:
        return "none installed"


def verify_bundle_file(path: Path, fmt: str, int8_io: str, calibration_count: int) -> None:
    """Refuse a converted file that is not what its folder and card will claim.

    An int8 bundle must have integer input and output tensors (a Coral and the int8 CPU kernels
    need them) and must have been calibrated on at least one photo; a float bundle float ones.
    Raises ExportError naming the file.
    """
    model = TFLiteModel(path, threads=1, delegate="cpu")
    got_in = np.dtype(model.input_detail["dtype"]).name
    got_out = np.dtype(model.output_details[0]["dtype"]).name
    want = int8_io if fmt == "int8" else "float32"
    if fmt == "int8" and calibration_count == 0:
        raise ExportError(
            f"{path}: the int8 conversion saw 0 calibration photos (the run's training photos are missing or unreadable); "
            "check the paths in the run's split.csv exist, then export again. Nothing was written."
        )
    if (got_in, got_out) != (want, want):
        raise ExportError(
            f"{path} has {got_in} input and {got_out} output tensors, not the {want} a {fmt} bundle must have; "
            "the converter fell back to float. Nothing was written; check the calibration photos and export again."
        )


def _time_interleaved(models: dict[str, tuple[Classifier, np.ndarray]], rounds: int = 15) -> dict[str, float]:
    """Median invoke milliseconds per format, measured in alternating rounds.

    Timing each format in one block lets a burst of load on a shared machine land on one format
    only and skew the ratio; alternating spreads it over all of them.
    """
    samples: dict[str, list[float]] = {fmt: [] for fmt in models}
    for _ in range(rounds):
        for fmt, (classifier, example) in models.items():
            samples[fmt].append(invoke_ms(classifier, example, repeat=3))
    return {fmt: round(float(np.median(values)), 2) for fmt, values in samples.items()}


def _learning_rates(run: Path) -> list[dict[str, Any]]:
    """The learning rate at the end of each epoch, from log.csv (the card's learning-rate curve)."""
    import csv

    if not (run / LOG_FILE).exists():
        return []
    with open(run / LOG_FILE, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [{"epoch": int(r["epoch"]) + 1, "phase": r.get("phase"), "lr": float(r["lr"])} for r in rows if r.get("lr")]


def _versions() -> dict[str, str]:
    return {
        "tensorflow": tf.__version__,
        "tf_keras": keras.__version__,
        "converter": f"tf.lite.TFLiteConverter (MLIR), TensorFlow {tf.__version__}",
        "birdtrap": birdtrap.__version__,
        "training": __version__,
    }


def _tensor_info(detail: dict) -> dict[str, Any]:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return {"dtype": np.dtype(detail["dtype"]).name, "scale": float(scale), "zero_point": int(zero_point)}


def export_run(run: Path, out: Path, settings: ExportSettings | None = None) -> ExportResult:
    """Export a finished run into `out/<format>/` bundles and score them against the float model.

    `settings` defaults to the run's own export settings. The comparison (top-1, top-5, macro-F1,
    top-1 agreement with the float model, size, invoke time) is printed, saved to
    `out/metrics.csv` and written into every card. Raises TrainingError for an unfinished run and
    ExportError for a failed conversion or a model the edge runtime cannot run.
    """
    run, out = Path(run).absolute(), Path(out)
    network, config, dataset = load_network(run)
    settings = settings or config.export
    spec = data_module.model_spec(config.model.size)
    preprocess = config.preprocess.settings()
    missing = data_module.missing_photos(dataset.train + dataset.held_out)
    if missing:
        raise ExportError(
            f"{len(missing)} photo(s) of {run / data_module.SPLIT_FILE} are missing, e.g. {missing[0]}; calibration and "
            "scoring need them. Put the photos back where the run saw them (or train again). Nothing was written."
        )
    out.mkdir(parents=True, exist_ok=True)
    # Everything is written into a temporary folder beside `out` and renamed into place at the end,
    # so a failed export leaves no bundle a daemon could load.
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        result = _export_into(run, out, staging, network, config, dataset, settings, spec, preprocess)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _export_into(
    run: Path,
    out: Path,
    staging: Path,
    network: keras.Model,
    config: TrainConfig,
    dataset: Any,
    settings: ExportSettings,
    spec: Any,
    preprocess: Any,
) -> ExportResult:
    result = ExportResult(out)
    calibration_count = 0

    def calibration() -> Iterable[np.ndarray]:
        nonlocal calibration_count
        calibration_count = 0
        for array in data_module.calibration_inputs(dataset.train, settings.calibration_images, spec, preprocess, config.seed):
            calibration_count += 1
            yield array

    sizes: dict[str, int] = {}
    compressed: dict[str, int] = {}  # what pruning shrinks: TFLite stores the zeros, gzip does not
    ops: dict[str, list[str]] = {}
    qat_model = None
    for fmt in settings.formats:
        folder = staging / fmt
        folder.mkdir(parents=True)
        log.info("converting to %s", fmt)
        source = network
        if fmt == "int8" and (run / QAT_WEIGHTS_FILE).exists():
            source = qat_model = _quantization_aware(network, run / QAT_WEIGHTS_FILE)
        content = convert(source, fmt, calibration if fmt == "int8" else None, settings.int8_io)
        (folder / MODEL_FILE).write_bytes(content)
        shutil.copyfile(run / LABELS_FILE, folder / LABELS_FILE)
        ops[fmt] = runtime_check(folder / MODEL_FILE)
        verify_bundle_file(folder / MODEL_FILE, fmt, settings.int8_io, calibration_count)
        sizes[fmt] = len(content)
        compressed[fmt] = len(gzip.compress(content, compresslevel=6))
        # A provisional card so the daemon's loader reads the input range while we score the model.
        write_card(folder, _card(config, settings, fmt, spec, preprocess, {}, {}, {}, [], {}, 0))
        result.bundles[fmt] = folder

    held_out = dataset.held_out
    split = dataset.held_out_name
    log.info("scoring on the %s split (%d photos)", split, len(held_out))
    reference = predict_keras(network, held_out, dataset.labels, spec, preprocess, config.data.batch_size)
    if not len(reference.paths):
        raise ExportError(f"none of the {len(held_out)} {split} photos of {run} could be scored; nothing was written.")
    _, float_row = report("float", reference, dataset.labels, staging)
    float_row["agreement"] = 1.0
    result.table.append(float_row)
    # With QAT the int8 model comes from more training: compare it with that float model, so its
    # agreement measures quantization alone.
    qat_reference = None
    if qat_model is not None:
        qat_reference = predict_keras(qat_model, held_out, dataset.labels, spec, preprocess, config.data.batch_size)
    sample = data_module.model_input(dataset.train[0].path, spec, preprocess) if dataset.train else None
    loaded: dict[str, tuple[Classifier, np.ndarray]] = {}
    for fmt, folder in result.bundles.items():
        classifier = Classifier.from_path(folder, threads=settings.threads, delegate="cpu")
        predictions = predict_bundle(classifier, held_out)
        _, row = report(fmt, predictions, dataset.labels, staging, qat_reference if fmt == "int8" and qat_reference else reference)
        row["size_mb"] = round(sizes[fmt] / 1e6, 2)
        if sample is not None:
            loaded[fmt] = (classifier, _quantize(sample, classifier))
        result.table.append(row)
    timing = _time_interleaved(loaded)
    for row in result.table:
        if row["model"] in timing:
            row["invoke_ms"] = timing[row["model"]]

    metrics = {
        "split": split,
        "images": len(held_out),
        "models": {row["model"]: {k: row.get(k) for k in ("top1", "top5", "macro_f1", "agreement", "images")} for row in result.table},
    }
    if "int8" in metrics["models"]:
        metrics["float"] = metrics["models"]["float"]
        metrics["int8"] = metrics["models"]["int8"]
        metrics["int8_top1_agreement"] = metrics["models"]["int8"]["agreement"]
        metrics["int8_agreement_reference"] = "quantization-aware float model" if qat_reference else "float model"
    if "int8" in timing and "float32" in timing and timing["float32"]:
        metrics["int8_float32_invoke_ratio"] = round(timing["int8"] / timing["float32"], 3)
    summary = json.loads((run / SUMMARY_FILE).read_text(encoding="utf-8")) if (run / SUMMARY_FILE).exists() else {}
    if (run / OPTIMIZATION_FILE).exists():
        metrics["optimization"] = json.loads((run / OPTIMIZATION_FILE).read_text(encoding="utf-8"))
    if (run / TRAINABLE_FILE).exists():
        summary = {**summary, "trainable": json.loads((run / TRAINABLE_FILE).read_text(encoding="utf-8"))}
    summary = {**summary, "learning_rate": _learning_rates(run), "run": str(run)}
    for fmt, folder in result.bundles.items():
        card = _card(config, settings, fmt, spec, preprocess, metrics, sizes, timing, ops[fmt], summary, calibration_count)
        for name, size in compressed.items():
            card["sizes"][name]["gzip_bytes"] = size
        card["input"].update(_tensor_info(TFLiteModel(folder / MODEL_FILE, threads=1, delegate="cpu").input_detail))
        write_card(folder, card)
    write_table(result.table, staging / "metrics.csv")
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    # All verified: move the bundles and reports into place (each rename replaces one old folder whole).
    for entry in sorted(staging.iterdir()):
        target = out / entry.name
        if target.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".old-{entry.name}-", dir=out))
            target.replace(old / entry.name)
            entry.replace(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            entry.replace(target)
    result.bundles = {fmt: out / fmt for fmt in result.bundles}
    log.debug("comparison on %d %s photos:\n%s", len(held_out), split, format_table(result.table))
    return result


def _quantize(array: np.ndarray, classifier: Classifier) -> np.ndarray:
    """A float model input re-expressed in the classifier's input tensor type (for timing)."""
    spec = classifier.spec
    if spec.scale == 0:
        return array.astype(spec.dtype)
    info = np.iinfo(np.dtype(spec.dtype))
    return np.clip(np.round(array / spec.scale + spec.zero_point), info.min, info.max).astype(spec.dtype)


def _card(
    config: TrainConfig,
    settings: ExportSettings,
    fmt: str,
    spec: Any,
    preprocess: Any,
    metrics: dict[str, Any],
    sizes: dict[str, int],
    timing: dict[str, float],
    ops: Sequence[str],
    summary: dict[str, Any],
    calibration_count: int,
) -> dict[str, Any]:
    created = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return {
        "name": settings.name,
        "version": settings.version or created.strftime("%Y.%m.%d"),
        "created": created.isoformat(),
        "format": fmt,
        "backbone": config.model.backbone,
        "input": {"height": spec.height, "width": spec.width, "channels": spec.channels, "mean": spec.mean, "std": spec.std},
        "preprocessing": preprocess.as_dict(),
        "quantization": {
            "type": fmt,
            "io": settings.int8_io if fmt == "int8" else "float32",
            "calibration_images": calibration_count if fmt == "int8" else 0,
            "calibration_source": "training split, through birdtrap.identify.preprocess" if fmt == "int8" else None,
            "quantization_aware": bool(config.train.qat) and fmt == "int8",
        },
        "metrics": metrics,
        "sizes": {name: {"bytes": size, "mb": round(size / 1e6, 2)} for name, size in sizes.items()},
        "invoke_ms": timing,
        "ops": list(ops),
        "training": {
            "data": {k: v for k, v in summary.items() if k not in ("trainable", "learning_rate", "run")},
            "config": config.as_dict(),
            "run": summary.get("run"),
            "trainable": summary.get("trainable", {}),
            "learning_rate": summary.get("learning_rate", []),
        },
        "versions": _versions(),
    }
