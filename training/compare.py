"""Compare this season's model with last season's on the same photos before offering it.

`python -m training compare NEW OLD --data photos/` runs every bundle of both exports (float32 and
int8 when present) through the daemon's own classifier on a folder of labelled photos
(`<label>/*.jpg`, best photos neither model trained on) and reports, per species and overall,
top-1 and macro-F1, the species added or dropped, and which species got better or worse. The
numbers come from the same code as the cards' metrics (`training.evaluate.score`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from birdtrap.identify.bundle import MODEL_FILE
from birdtrap.identify.classifier import Classifier
from training import data as data_module
from training.data import Example
from training.errors import DatasetError, TrainingError
from training.evaluate import Predictions, predict_bundle, score

FORMATS = ("float32", "float16", "int8")


@dataclass
class Comparison:
    """Scores of each model on the photos, and what changed from OLD to NEW."""

    species: tuple[str, ...]
    images: int
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # "new int8" -> {top1, macro_f1, per_species}
    added: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    better: tuple[str, ...] = ()
    worse: tuple[str, ...] = ()


def find_bundles(folder: Path) -> dict[str, Path]:
    """format -> bundle folder: `folder` itself when it is a bundle, else its float32/float16/int8 sub-folders."""
    folder = Path(folder)
    if (folder / MODEL_FILE).exists():
        return {_format_of(folder): folder}
    found = {fmt: folder / fmt for fmt in FORMATS if (folder / fmt / MODEL_FILE).exists()}
    if not found:
        raise TrainingError(f"{folder} holds no model bundle (model.tflite) nor float32/ or int8/ bundles; pass an export folder.")
    return found


def _format_of(bundle: Path) -> str:
    import json

    card = bundle / "model.json"
    if card.exists():
        return str(json.loads(card.read_text(encoding="utf-8")).get("format", bundle.name))
    return bundle.name


def labelled_photos(root: Path, extensions: tuple[str, ...] = data_module.PHOTO_EXTENSIONS) -> tuple[tuple[str, ...], list[Example]]:
    """Every photo under `root/<label>/`, with the label folder names. Raises DatasetError for an empty folder."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"--data {root} does not exist; pass a folder of <label>/ sub-folders of photos.")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    labels = tuple(f.name for f in folders)
    suffixes = {e.lower() for e in extensions}
    examples = [
        Example(path, i) for i, folder in enumerate(folders) for path in sorted(folder.rglob("*")) if path.suffix.lower() in suffixes
    ]
    if not examples:
        raise DatasetError(f"--data {root} has no photos in <label>/ sub-folders.")
    return labels, examples


def _scores(classifier: Classifier, examples: list[Example], species: tuple[str, ...]) -> dict[str, Any]:
    """Score one bundle on photos labelled in `species` order (a label the model lacks is always wrong)."""
    predictions = predict_bundle(classifier, examples)
    model_labels = [label.text for label in classifier.labels]
    # Re-express the model's outputs in the photo folders' label order (unknown outputs -> -1).
    columns = [model_labels.index(label) if label in model_labels else -1 for label in species]
    probabilities = np.stack([predictions.probabilities[:, c] if c >= 0 else np.full(len(predictions.paths), -1.0) for c in columns], 1)
    best_is_known = np.isin(predictions.top1, [c for c in columns if c >= 0])
    probabilities[~best_is_known] = -1.0  # the model's best is a species not in the photos: wrong
    remapped = Predictions(predictions.paths, probabilities, predictions.truth)
    scores = score(remapped, species)
    per_species = {row["label"]: row["recall"] for row in scores.per_class if row["support"]}
    return {"top1": round(scores.top1, 4), "macro_f1": round(scores.macro_f1, 4), "images": scores.images, "per_species": per_species}


def compare(new: Path, old: Path, photos: Path, threads: int = 2) -> Comparison:
    """Score NEW's and OLD's bundles on `photos` and say what changed (float32 and int8 each)."""
    species, examples = labelled_photos(photos)
    new_bundles, old_bundles = find_bundles(new), find_bundles(old)
    result = Comparison(species, len(examples))
    labels: dict[str, set[str]] = {}
    for side, bundles in (("old", old_bundles), ("new", new_bundles)):
        for fmt, folder in bundles.items():
            classifier = Classifier.from_path(folder, threads=threads, delegate="cpu")
            labels[side] = {label.text for label in classifier.labels}
            result.models[f"{side} {fmt}"] = _scores(classifier, examples, species)
    result.added = tuple(sorted(labels["new"] - labels["old"]))
    result.dropped = tuple(sorted(labels["old"] - labels["new"]))
    fmt = "int8" if "int8" in new_bundles and "int8" in old_bundles else sorted(set(new_bundles) & set(old_bundles) or {""})[0]
    if fmt:
        before, after = result.models[f"old {fmt}"]["per_species"], result.models[f"new {fmt}"]["per_species"]
        result.better = tuple(s for s in species if after.get(s, 0) > before.get(s, 0))
        result.worse = tuple(s for s in species if after.get(s, 0) < before.get(s, 0))
    return result


def format_comparison(result: Comparison) -> str:
    """Per-species top-1 of each model, then the overall figures and what changed."""
    names = list(result.models)
    width = max([len(s) for s in result.species] + [7])
    lines = [f"{result.images} photos, {len(result.species)} species; per-species top-1:",
             f"  {'species':<{width}}  " + "  ".join(f"{n:>11}" for n in names)]  # fmt: skip
    for species in result.species:
        cells = [result.models[n]["per_species"].get(species) for n in names]
        lines.append(f"  {species:<{width}}  " + "  ".join(f"{c:>11.3f}" if c is not None else f"{'-':>11}" for c in cells))
    lines.append(f"  {'top-1':<{width}}  " + "  ".join(f"{result.models[n]['top1']:>11.3f}" for n in names))
    lines.append(f"  {'macro-F1':<{width}}  " + "  ".join(f"{result.models[n]['macro_f1']:>11.3f}" for n in names))
    lines.append(f"species added: {', '.join(result.added) or 'none'}; dropped: {', '.join(result.dropped) or 'none'}")
    lines.append(f"better: {', '.join(result.better) or 'none'}; worse: {', '.join(result.worse) or 'none'}")
    return "\n".join(lines)
