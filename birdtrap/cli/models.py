"""`birdtrap model info` and `birdtrap model fetch`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from birdtrap import config as config_module
from birdtrap.cli.common import config_option, load_config
from birdtrap.cli.output import output_options, print_rows

log = logging.getLogger(__name__)


@click.group()
def model() -> None:
    """Inspect and install models.

    \b
        birdtrap model fetch inat-birds
        birdtrap model info
    """


@model.command("info")
@click.option("--model", "model_path", type=click.Path(exists=True, path_type=Path), help="Override model.path.")
@output_options()
@config_option
def model_info(model_path: Path | None, fmt: str, config_path: Path | None) -> None:
    """Show the runtime, input, labels and checksums of the configured model.

    \b
        birdtrap model info
        birdtrap model info --model ../shared/models/inat_birds
    """
    from birdtrap.identify.classifier import Classifier

    config = load_config(config_path)
    classifier = Classifier.from_path(
        model_path or config.model.path,
        None if model_path else config.model.labels,
        threads=config.model.threads,
        delegate=config.model.delegate,
    )
    bundle, spec = classifier.bundle, classifier.spec
    lines = {
        "model": str(bundle.model_path),
        "name": bundle.name,
        "version": bundle.version or "-",
        "runtime": classifier.model.runtime.name,
        "delegate": classifier.model.delegate,
        "input": f"{spec.height}x{spec.width}x3 {spec.channels} {spec.dtype}",
        "input quantization": f"scale {spec.scale:g}, zero point {spec.zero_point}" if spec.scale else "none (float)",
        "input scaling": f"(pixel - {spec.mean:g}) / {spec.std:g}",
        "labels": f"{len(bundle.labels)} ({bundle.labels_path})",
        "model card": "yes" if bundle.card else "no (third-party model, config settings apply)",
        "sha256": bundle.model_sha256,
        "labels sha256": bundle.labels_sha256,
        **_card_lines(bundle.card or {}),
    }
    if fmt != "table":
        print_rows([{key.replace(" ", "_"): value for key, value in lines.items()}], fmt)
        return
    for key, value in lines.items():
        click.echo(f"{key + ':':20} {value}")


def _card_lines(card: dict) -> dict[str, str]:
    """What a model card says about quality and preparation, for `model info` (empty without a card)."""
    if not card:
        return {}
    lines = {"format": str(card.get("format", "-")), "backbone": str(card.get("backbone", "-"))}
    metrics = card.get("metrics") or {}
    models = metrics.get("models") or {}
    for name, scores in models.items():
        top5 = scores.get("top5")
        lines[f"metrics {name}"] = (
            f"top-1 {scores.get('top1')}, top-5 {top5 if top5 is not None else 'n/a'}, macro-F1 {scores.get('macro_f1')}, "
            f"agreement with float {scores.get('agreement')} on {scores.get('images')} {metrics.get('split', '')} photos"
        )
    if "int8_float32_invoke_ratio" in metrics:
        lines["int8/float32 time"] = str(metrics["int8_float32_invoke_ratio"])
    steps = card.get("preprocessing") or {}
    lines["preprocessing"] = ", ".join(f"{key}={value}" for key, value in steps.items()) or "-"
    trainable = ((card.get("training") or {}).get("trainable") or {}).get("fine_tune") or {}
    if trainable:
        lines["fine-tuned"] = f"{trainable.get('trainable_layers')} layers, {trainable.get('trainable_params')} parameters"
    return lines


@model.command("fetch")
@click.argument("name", type=click.Choice(["inat-birds", "imagenet-mobilenet-v2", "coco-ssd-mobilenet-v1"]))
@click.option("--mirror", help="Folder or URL laid out as <mirror>/<model folder>/<file> [default: $BIRDTRAP_MODEL_MIRROR].")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), help="Install folder [default: where the config looks].")
@config_option
def model_fetch(name: str, mirror: str | None, dest: Path | None, config_path: Path | None) -> None:
    """Download a public model, verify its pinned sha256s and install it.

    \b
        birdtrap model fetch inat-birds
        birdtrap model fetch inat-birds --mirror /media/usb/models
    """
    from birdtrap import fetch

    config = load_config(config_path)
    if dest is None:
        dest = _install_folder(name, config)
    files = fetch.fetch(name, dest, mirror or config_module.model_mirror(), progress=sys.stderr.isatty())
    for file in files:
        click.echo(f"installed {file.path}" if file.downloaded else f"already installed and verified: {file.path}")


def _install_folder(name: str, config: config_module.Config) -> Path:
    """Where the configuration looks for catalogue model `name` (its folder)."""
    configured = {"inat-birds": config.model.path, "imagenet-mobilenet-v2": config.gate.path, "coco-ssd-mobilenet-v1": config.detector.path}
    path = configured[name]
    if path is None:
        return config.model.path.parent.parent / name
    return path if path.suffix != ".tflite" else path.parent
