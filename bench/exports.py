"""`python -m bench.exports`: the trained bundle's float32, float16 and int8 exports side by side.

    python -m bench.exports                       # EfficientNetB3 + attention at 300x300: ~3.5 minutes on 2 cores
    python -m bench.exports --markdown            # the table as Markdown, for bench/README.md
    python -m bench.exports --backbone mobilenet_v3_small --image-size 64   # ~1 minute; the smoke test

Builds a labelled photo folder of links to the real photos in ../shared/images (owls, herons,
`background`), trains the training default architecture for one step from random weights
(`--weights none`: ImageNet weights cannot be downloaded offline, and accuracy is not the point),
exports it with `training.export.export_run` (the code behind `python -m training export`), then
times every bundle in this process with the daemon's runtime (`birdtrap.identify.tflite.TFLiteModel`, 2
threads, batch 1). Prints file size, median invoke time and top-1 agreement per format, each
against the float32 export of the same run, with the seed's claim beside the int8 rows, and writes
the same as JSON naming the machine (default bench/out/exports.json). The run folder and bundles
live in a temporary folder, deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, get_args

from bench.report import add_output_options
from training.config import DEFAULT_IMAGE_SIZE, Backbone, ModelConfig

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("float32", "float16", "int8")
BASE = "float32"
# labels.csv truth -> the training folder name: species with enough photos for a split, and the
# 'none' frames (empty, mammals, people) as the daemon's background class, as tests/test_training.py.
SPECIES = {
    "Athene cunicularia": "Athene cunicularia (Burrowing Owl)",
    "Ardea cinerea": "Ardea cinerea (Grey Heron)",
    "none": "background",
}
SEED_CLAIM = "seed: int8 3.2x faster than float, 46 -> 12 MB"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options; the backbone and its input size default to the training defaults, so the bare run is the seed's model."""
    default_backbone = ModelConfig.model_fields["backbone"].default
    parser = argparse.ArgumentParser(
        prog="python -m bench.exports",
        description="\n\n".join(__doc__.split("\n\n")[:2]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--backbone", choices=get_args(Backbone), default=default_backbone, help=f"architecture to train and export [{default_backbone}]"
    )
    parser.add_argument("--image-size", type=int, help="square input size in pixels [the backbone's own: 300 for efficientnet_b3]")
    parser.add_argument("--repeats", type=int, default=30, help="timed invokes per format, after 3 warm-up ones [30]")
    parser.add_argument("--threads", type=int, default=2, help="interpreter threads, as the daemon's default [2]")
    parser.add_argument("--calibration-images", type=int, default=30, help="training photos calibrating int8 [30: the whole train split]")
    parser.add_argument(
        "--shared", type=Path, default=ROOT.parent / "shared", help="the shared photos (images/, data/labels.csv) [../shared]"
    )
    parser.add_argument("--workdir", type=Path, help="where to put the photo links, the run and the bundles [a new temporary folder]")
    parser.add_argument("--keep", action="store_true", help="keep the run folder and the bundles")
    add_output_options(parser, "exports")
    args = parser.parse_args(argv)
    if args.image_size is None:
        args.image_size = DEFAULT_IMAGE_SIZE[args.backbone]
    if args.repeats < 1 or args.threads < 1 or args.calibration_images < 1:
        parser.error("--repeats, --threads and --calibration-images must be at least 1")
    if not 32 <= args.image_size <= 1024:
        parser.error("--image-size must be between 32 and 1024 (the training config's range)")
    return args


def say(message: str) -> None:
    print(f"bench.exports: {message}", file=sys.stderr, flush=True)


def link_photos(shared: Path, folder: Path) -> dict[str, int]:
    """A `<label>/*.jpg` training folder of symbolic links to the labelled shared photos; returns photos per label.

    Links, not copies: the photos are read in place, as the training tests do, and nothing is left behind.
    """
    counts: dict[str, int] = {}
    with open(shared / "data" / "labels.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            label = SPECIES.get(row["truth"])
            source = shared / row["path"]
            if label is None or not source.is_file():
                continue
            target = folder / label / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.is_symlink():
                target.symlink_to(source.resolve())
                counts[label] = counts.get(label, 0) + 1
    return counts


def train_and_export(photos: Path, run: Path, bundles: Path, args: argparse.Namespace) -> tuple[Any, dict[str, Any], dict[str, float]]:
    """Train one step of the chosen architecture and export all three formats, through the library the CLI calls.

    Returns the export result, export_run's metrics.json and the seconds each part took. Keras'
    progress printing goes to stderr so that `--json` leaves stdout as pure JSON.
    """
    from training import config as config_module
    from training.export import export_run
    from training.train import train

    flags = {
        "data.root": str(photos),
        "model.backbone": args.backbone,
        "model.image_size": args.image_size,
        "model.weights": "none",
        "data.batch_size": 8,
        "train.head_epochs": 1,
        "train.fine_tune_epochs": 0,
        "train.steps_per_epoch": 1,
        "train.progress": False,
    }
    config = config_module.load(None, config_module.overrides_from_flags(flags))
    seconds: dict[str, float] = {}
    with contextlib.redirect_stdout(sys.stderr):
        start = time.monotonic()
        train(config, run)
        seconds["train_s"] = round(time.monotonic() - start, 1)
        settings = config.export.model_copy(
            update={"formats": FORMATS, "calibration_images": args.calibration_images, "threads": args.threads, "version": "bench"}
        )
        start = time.monotonic()
        result = export_run(run, bundles, settings)
        seconds["export_s"] = round(time.monotonic() - start, 1)
    metrics = json.loads((bundles / "metrics.json").read_text(encoding="utf-8"))
    return result, metrics, seconds


def model_sample(model: Any, photo: Path, size: int, preprocess: Any) -> Any:
    """One real photo as the model's input tensor (batch 1), quantized with the model's own scale for int8.

    A real photo rather than zeros: the daemon feeds photos, and a constant input could take
    kernel shortcuts a photo does not.
    """
    import numpy as np

    from training import data as data_module

    array = data_module.model_input(photo, data_module.model_spec(size), preprocess)[None]
    scale, zero_point = model.input_quantization
    dtype = np.dtype(model.input_dtype)
    if scale == 0 or dtype.kind == "f":
        return np.ascontiguousarray(array.astype(dtype))
    info = np.iinfo(dtype)
    return np.ascontiguousarray(np.clip(np.round(array / scale + zero_point), info.min, info.max).astype(dtype))


def interleaved_invokes(models: dict[str, Any], samples: dict[str, Any], repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median milliseconds of one batch-1 invoke per model, the models taking turns invoke by invoke.

    Taking turns (rather than bench.measure.time_each per model, one after the other) means a burst
    of other work on this shared machine slows every format alike, so the ratios to float32 hold.
    """
    for _ in range(warmup):
        for name, model in models.items():
            model.invoke(samples[name])
    timings: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model.invoke(samples[name])
            timings[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in timings.items()}


def add_figures(
    results: Any, sizes: dict[str, float], invokes: dict[str, float], metrics: dict[str, Any], args: argparse.Namespace
) -> None:
    """Sizes, invoke times and top-1 agreement per format, each against float32, the seed's claim beside int8."""
    arch = f"{args.backbone} {args.image_size}x{args.image_size}"
    base = f"exports.{BASE}"
    for fmt in FORMATS:
        note = f"{arch}, model.tflite"
        if fmt == "int8" and sizes.get(BASE):
            note = f"{SEED_CLAIM} (0.26x); ours {sizes[BASE]:.1f} -> {sizes[fmt]:.1f} MB"
        results.add(
            f"exports.{fmt}.size_mb", f"{fmt} file size", sizes[fmt], "MB", None if fmt == BASE else f"{base}.size_mb", 1, note=note
        )
    for fmt in FORMATS:
        note = f"{arch}, batch 1, {args.threads} threads, {'int8' if fmt == 'int8' else 'float32'} input"
        if fmt == "int8" and invokes.get(fmt):
            speedup = invokes[BASE] / invokes[fmt]
            ours = f"{speedup:.1f}x faster" if speedup >= 1 else f"{1 / speedup:.1f}x slower"
            note = f"{SEED_CLAIM} (0.31x); ours {ours}"
        results.add(
            f"exports.{fmt}.invoke_ms",
            f"{fmt} invoke",
            invokes[fmt],
            "ms",
            None if fmt == BASE else f"{base}.invoke_ms",
            args.repeats,
            note=note,
        )
    models = metrics.get("models", {})
    images = metrics.get("images", 0)
    for fmt in FORMATS:
        value = (models.get(fmt) or {}).get("agreement")
        label = f"{fmt} top-1 agreement with Keras float"
        why = f"export_run: vs the float Keras model on {images} {metrics.get('split', 'held-out')} photos; one-step weights"
        if value is None:
            results.skip(f"exports.{fmt}.top1_agreement", label, "share", "export_run's metrics have no agreement for this format")
            continue
        results.add(
            f"exports.{fmt}.top1_agreement",
            label,
            value,
            "share",
            None if fmt == BASE else f"{base}.top1_agreement",
            images,
            note=why,
        )


def main(argv: list[str] | None = None) -> int:
    """Train, export, measure and report; returns the exit status."""
    args = parse_args(argv)
    if not (args.shared / "data" / "labels.csv").exists():
        say(f"no data/labels.csv under {args.shared}; pass --shared PATH (the folder with images/ and data/)")
        return 2
    # TensorFlow's C++ start-up chatter buries the progress lines; set before it is first imported.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for name in ("tensorflow", "absl", "h5py", "matplotlib"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Imported here so --help answers without TensorFlow.
    from bench.report import OtherLoad, Results, publish, run_settings
    from birdtrap.identify.bundle import MODEL_FILE
    from birdtrap.identify.tflite import TFLiteModel
    from training import config as config_module

    results = Results()
    results.settings = run_settings(args)
    other_load = OtherLoad()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="birdtrap-bench-exports-"))
    # A --workdir that already existed may hold other things: then only what this run made is deleted.
    ours = [workdir / "photos", workdir / "run", workdir / "bundles"]
    made = [workdir] if args.workdir is None or not workdir.exists() else ours
    for folder in ours:  # a kept earlier run in the same --workdir would be resumed or double-counted
        shutil.rmtree(folder, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        photos = workdir / "photos"
        counts = link_photos(args.shared, photos)
        if len(counts) < 2:
            say(f"{args.shared / 'data' / 'labels.csv'} names fewer than 2 usable labels {counts}")
            return 2
        say(f"training {args.backbone} at {args.image_size}x{args.image_size} for one step on {sum(counts.values())} photos in {workdir}")
        run, bundles = workdir / "run", workdir / "bundles"
        export, metrics, seconds = train_and_export(photos, run, bundles, args)
        results.settings.update(seconds)
        say(f"timing {', '.join(FORMATS)}: {args.repeats} invokes each, taking turns")
        sizes = {fmt: (export.bundles[fmt] / MODEL_FILE).stat().st_size / 1e6 for fmt in FORMATS}
        models = {fmt: TFLiteModel(export.bundles[fmt] / MODEL_FILE, threads=args.threads, delegate="cpu") for fmt in FORMATS}
        preprocess = config_module.load(run / "config.yaml").preprocess.settings()
        photo = sorted(photos.glob("*/*"))[0]
        samples = {fmt: model_sample(model, photo, args.image_size, preprocess) for fmt, model in models.items()}
        invokes = interleaved_invokes(models, samples, args.repeats)
        add_figures(results, sizes, invokes, metrics, args)
    finally:
        if args.keep:
            say(f"kept {workdir}")
        else:
            for folder in made:
                shutil.rmtree(folder, ignore_errors=True)
    results.finish()
    other_load.record(results)
    results.notes.append("one training step from random weights (--weights none): sizes and invoke times are the model's, accuracy is not")
    publish(results, args, detail=f": training {seconds['train_s']} s, export and scoring {seconds['export_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
