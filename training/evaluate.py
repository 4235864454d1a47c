"""Scores for the float model and every exported `.tflite`, side by side, on the same photos.

The float model is scored through the training pipeline; each `.tflite` bundle through the
daemon's own code (`birdtrap.identify.classifier.Classifier`, its interpreter, its input quantization and
the card's preprocessing), so the int8 numbers here are the numbers the field will see.
Writes per-class precision/recall CSVs, confusion-matrix PNGs and one comparison table.
"""

from __future__ import annotations

import csv
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from birdtrap.errors import PhotoError
from birdtrap.identify.classifier import Classifier
from birdtrap.identify.preprocess import InputSpec, PreprocessSettings, load, to_model_input
from training.data import Example

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Predictions:
    """Probabilities (N, labels) for the photos that could be read, with their paths and truth."""

    paths: tuple[str, ...]
    probabilities: np.ndarray
    truth: np.ndarray

    @property
    def top1(self) -> np.ndarray:
        return np.argmax(self.probabilities, axis=1) if len(self.paths) else np.zeros(0, int)


@dataclass(frozen=True, eq=False)
class Scores:
    top1: float
    top5: float | None  # None with 5 labels or fewer: every label is in the top 5, so it says nothing
    macro_f1: float
    images: int
    per_class: tuple[dict[str, Any], ...]
    confusion: np.ndarray

    def headline(self) -> dict[str, float | None]:
        top5 = round(self.top5, 4) if self.top5 is not None else None
        return {"top1": round(self.top1, 4), "top5": top5, "macro_f1": round(self.macro_f1, 4), "images": self.images}


def score(predictions: Predictions, labels: Sequence[str]) -> Scores:
    """Top-1, top-5 (None, shown n/a, with 5 labels or fewer), macro-F1 and per-class precision/recall."""
    n = len(labels)
    truth, guess = predictions.truth.astype(int), predictions.top1.astype(int)
    confusion = np.zeros((n, n), dtype=int)
    for t, g in zip(truth, guess, strict=True):
        confusion[t, g] += 1
    count = len(truth)
    if count == 0:
        return Scores(0.0, None, 0.0, 0, (), confusion)
    top5 = None
    if n > 5:
        top_k = np.argsort(-predictions.probabilities, axis=1)[:, :5]
        top5 = float(np.mean([t in row for t, row in zip(truth, top_k, strict=True)]))
    per_class = []
    f1s = []
    for i, label in enumerate(labels):
        tp = confusion[i, i]
        predicted, actual = confusion[:, i].sum(), confusion[i, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if predicted or actual:
            f1s.append(f1)
        per_class.append(
            {"label": label, "precision": round(float(precision), 4), "recall": round(float(recall), 4),
             "f1": round(float(f1), 4), "support": int(actual)}
        )
    return Scores(float(np.mean(truth == guess)), top5, float(np.mean(f1s)) if f1s else 0.0, count, tuple(per_class), confusion)


def agreement(a: Predictions, b: Predictions) -> float:
    """Share of the photos both scored on which the two models' top-1 labels agree."""
    index = dict(zip(b.paths, b.top1, strict=True))
    pairs = [(x, index[p]) for p, x in zip(a.paths, a.top1, strict=True) if p in index]
    return float(np.mean([x == y for x, y in pairs])) if pairs else 0.0


def predict_keras(
    network: Any, examples: Sequence[Example], labels: Sequence[str], spec: InputSpec, settings: PreprocessSettings, batch: int
) -> Predictions:
    """The float Keras model on `examples`, through the training pipeline (no augmentation)."""
    from training.data import model_input

    return _predict(
        examples,
        batch,
        len(labels),
        lambda example: model_input(example.path, spec, settings),
        lambda inputs: np.asarray(network(np.stack(inputs).astype(np.float32), training=False)),
    )


def predict_bundle(classifier: Classifier, examples: Sequence[Example], batch: int = 8) -> Predictions:
    """A bundle on `examples`, exactly as the daemon runs it (its spec, the card's preprocessing)."""
    settings = classifier.card_preprocessing or PreprocessSettings()
    return _predict(
        examples,
        batch,
        len(classifier.labels),
        lambda example: to_model_input(load(example.path, settings).bgr, classifier.spec, settings),
        lambda inputs: np.stack([p.probabilities for p in classifier.predict_batch(inputs)]),
    )


def _predict(
    examples: Sequence[Example],
    batch: int,
    label_count: int,
    model_input: Callable[[Example], np.ndarray],
    run: Callable[[list[np.ndarray]], np.ndarray],
) -> Predictions:
    """`run` over `examples` in batches; a photo that cannot be read is logged and left out."""
    paths, rows, truth = [], [], []
    for start in range(0, len(examples), batch):
        chunk, inputs = [], []
        for example in examples[start : start + batch]:
            try:
                inputs.append(model_input(example))
            except PhotoError as e:
                log.warning("not scored: %s", e)
                continue
            chunk.append(example)
        if not chunk:
            continue
        rows.append(run(inputs))
        paths += [str(e.path) for e in chunk]
        truth += [e.label for e in chunk]
    probabilities = np.concatenate(rows) if rows else np.zeros((0, label_count), np.float32)
    return Predictions(tuple(paths), probabilities, np.array(truth, dtype=int))


def invoke_ms(classifier: Classifier, example: np.ndarray, repeat: int = 20) -> float:
    """Median milliseconds of one single-photo invoke in the daemon's runtime (after a warm-up)."""
    batch = np.ascontiguousarray(example[None])
    classifier.model.invoke(batch)
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        classifier.model.invoke(batch)
        timings.append(time.perf_counter() - start)
    return 1000 * statistics.median(timings)


def write_per_class(scores: Scores, path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["label", "precision", "recall", "f1", "support"])
        writer.writeheader()
        writer.writerows(scores.per_class)
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: a workstation over SSH has no display
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(scores: Scores, labels: Sequence[str], title: str, path: Path) -> Path:
    """A confusion-matrix PNG (rows: truth, columns: prediction), counts in each cell."""
    plt = _pyplot()
    n = len(labels)
    # Long "Scientific (Common)" labels need room under and beside the square, and the title above.
    longest = max((len(label) for label in labels), default=8)
    side = max(4.0, 0.45 * n + 2)
    margin = min(6.0, 0.07 * longest + 0.5)
    fig, ax = plt.subplots(figsize=(side + margin, side + margin + 0.6))
    ax.imshow(scores.confusion, cmap="Blues", aspect="equal")
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\ntop-1 {scores.top1:.3f}, macro-F1 {scores.macro_f1:.3f}, {scores.images} photos", fontsize=9)
    limit = scores.confusion.max() if scores.confusion.size else 0
    for (row, col), value in np.ndenumerate(scores.confusion):
        if value:
            ax.text(col, row, str(value), ha="center", va="center", fontsize=7, color="white" if value > limit / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_curves(log_csv: Path, path: Path) -> Path:
    """Loss and accuracy per epoch (train and validation) from a run's log.csv, phases marked."""
    with open(log_csv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{log_csv} has no epochs")
    plt = _pyplot()
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, (left, right, rate) = plt.subplots(1, 3, figsize=(15, 4))
    if "lr" in rows[0]:
        rate.plot(epochs, [float(r["lr"]) for r in rows], "-o", markersize=3)
    rate.set_xlabel("epoch")
    rate.set_title("learning rate (end of epoch)")
    for axis, metric in ((left, "loss"), (right, "accuracy")):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            if key in rows[0]:
                axis.plot(epochs, [float(r[key]) for r in rows], style, label=key)
        phases = [r.get("phase") for r in rows]
        for i in range(1, len(rows)):
            if phases[i] != phases[i - 1]:
                axis.axvline(epochs[i] - 0.5, color="grey", linewidth=0.8)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


COLUMNS = ("model", "images", "top1", "top5", "macro_f1", "agreement", "size_mb", "invoke_ms")


def write_table(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """The side-by-side comparison as CSV (one row per model)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison as an aligned text table for the terminal."""

    def cell(value: Any, column: str = "") -> str:
        if value is None and column == "top5":
            return "n/a"  # 5 labels or fewer: every label is in the top 5
        if value is None or value == "":
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    table = [list(COLUMNS)] + [[cell(row.get(c), c) for c in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))) for r in table)


def report(
    name: str, predictions: Predictions, labels: Sequence[str], folder: Path, reference: Predictions | None = None
) -> tuple[Scores, dict[str, Any]]:
    """Score one model, write its per-class CSV and confusion PNG into `folder`, return its table row."""
    folder.mkdir(parents=True, exist_ok=True)
    scores = score(predictions, labels)
    write_per_class(scores, folder / f"per_class_{name}.csv")
    plot_confusion(scores, labels, name, folder / f"confusion_{name}.png")
    row: dict[str, Any] = {"model": name, **scores.headline()}
    if reference is not None:
        row["agreement"] = round(agreement(predictions, reference), 4)
    return scores, row
