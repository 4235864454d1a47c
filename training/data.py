"""A folder of labelled photos in, seeded splits and `tf.data` pipelines out.

The deterministic part of every pipeline (decode, orientation, info-bar crop, resize, channel
order, scaling) is `birdtrap.identify.preprocess`, the code the daemon runs in the field, so there is no
train/serve skew: `model_input()` here returns the very array the daemon builds for the same photo
(a test checks it). Only the training split is augmented, and only after that shared step.

TensorFlow is imported inside the functions that build pipelines, so scanning a dataset, the split
and the summary stay usable (and quick) without it.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from birdtrap.errors import PhotoError
from birdtrap.identify.preprocess import InputSpec, PreprocessSettings, load, read_header, read_photo_bytes, to_model_input
from training.config import AugmentSettings
from training.errors import DatasetError

if TYPE_CHECKING:
    import tensorflow as tf

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_FILE = "split.csv"
# What the daemon's watcher accepts, so a photo the field classifies can also be trained on.
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# The model's float input, defined once: RGB, (pixel - 127.5) / 127.5, i.e. [-1, 1]. The backbone
# adapts it to its own convention inside the model (training/model.py); the card records it and
# the daemon feeds it from the card's `input` section.
INPUT_MEAN = 127.5
INPUT_STD = 127.5
INPUT_CHANNELS = "RGB"


def model_spec(size: int) -> InputSpec:
    """The float input contract of a model trained here, at `size` x `size` pixels."""
    return InputSpec(height=size, width=size, channels=INPUT_CHANNELS, mean=INPUT_MEAN, std=INPUT_STD, dtype="float32")


@dataclass(frozen=True)
class Example:
    path: Path
    label: int


@dataclass(frozen=True)
class Dataset:
    """Labels (index N is output N) and the examples of each split, plus what could not be read."""

    labels: tuple[str, ...]
    train: tuple[Example, ...]
    val: tuple[Example, ...]
    test: tuple[Example, ...]
    source: Path | None = None
    presplit: bool = False
    unreadable: tuple[tuple[Path, str], ...] = field(default=())

    def split(self, name: str) -> tuple[Example, ...]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    @property
    def held_out(self) -> tuple[Example, ...]:
        """The split final metrics are measured on: test, or val when there is no test split."""
        return self.test or self.val

    @property
    def held_out_name(self) -> str:
        return "test" if self.test else "val"

    def summary(self) -> dict[str, Any]:
        """Species, images per split and species, imbalance, and the photos skipped as unreadable."""
        per_split = {name: Counter(e.label for e in self.split(name)) for name in SPLITS}
        species = [
            {"label": label, **{name: per_split[name].get(i, 0) for name in SPLITS}} for i, label in enumerate(self.labels)
        ]
        train_counts = [per_split["train"].get(i, 0) for i in range(len(self.labels))]
        smallest = min(train_counts) if train_counts else 0
        return {
            "source": str(self.source) if self.source else None,
            "layout": "train/val/test folders" if self.presplit else "one folder, seeded stratified split",
            "species": len(self.labels),
            "images": {name: len(self.split(name)) for name in SPLITS},
            "per_species": species,
            "imbalance": round(max(train_counts) / smallest, 2) if smallest else None,
            "unreadable": [{"path": str(p), "reason": r} for p, r in self.unreadable],
        }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as the table printed at the start of training."""
    width = max([len(s["label"]) for s in summary["per_species"]] + [7])
    lines = [
        f"dataset {summary['source']} ({summary['layout']}): {summary['species']} species, "
        + ", ".join(f"{n} {name}" for name, n in summary["images"].items()),
        f"  {'species':<{width}}  train    val   test",
    ]
    for s in summary["per_species"]:
        lines.append(f"  {s['label']:<{width}}  {s['train']:>5}  {s['val']:>5}  {s['test']:>5}")
    if summary["imbalance"] is not None:
        lines.append(f"  class imbalance (largest / smallest training count): {summary['imbalance']}")
    for bad in summary["unreadable"]:
        lines.append(f"  skipped {bad['path']}: {bad['reason']}")
    return "\n".join(lines)


def _photos(folder: Path, extensions: Sequence[str]) -> list[Path]:
    suffixes = {e.lower() for e in extensions}
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and not p.name.startswith("."))


def _label_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_photo(path: Path, settings: PreprocessSettings) -> str | None:
    """Why a photo cannot be used (empty, not an image, oversized, unreadable), or None.

    Only the header is parsed, so scanning thousands of photos takes seconds; a photo whose pixel
    data turns out broken is skipped (and logged) later by the pipeline instead.
    """
    try:
        # The daemon's bounds (issue 16): what it refuses in the field is not trained on either.
        data = read_photo_bytes(path, settings.max_bytes)
        read_header(data, str(path), settings.max_pixels, settings.max_aspect_ratio, settings.min_side)
    except PhotoError as e:
        return str(e)
    return None


def scan(
    root: Path,
    settings: PreprocessSettings,
    seed: int,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    extensions: Sequence[str] = PHOTO_EXTENSIONS,
) -> Dataset:
    """Find the photos and labels under `root` and split them.

    `<root>/<label>/*.jpg` is split per species with `seed` (same seed, same split);
    `<root>/train|val|test/<label>/*.jpg` is used as given. Unreadable photos are listed in the
    result and left out. Raises DatasetError for a missing or empty folder, or one with a single
    species.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist; pass --data with a folder of <label>/ sub-folders of photos.")
    presplit = (root / "train").is_dir() and any((root / name).is_dir() for name in ("val", "test"))
    if (root / "train").is_dir() and not presplit:
        raise DatasetError(
            f"{root} has a train/ folder but no val/ or test/ beside it; add {root / 'val'} (and/or test/) with the "
            "same species folders, or pass --data with the species folders themselves to have them split by --seed."
        )
    unreadable: list[tuple[Path, str]] = []

    def usable(paths: list[Path]) -> list[Path]:
        kept = []
        for path in paths:
            reason = check_photo(path, settings)
            if reason is None:
                kept.append(path)
            else:
                unreadable.append((path, reason))
                log.warning("skipping %s", reason)
        return kept

    if presplit:
        labels = tuple(p.name for p in _label_folders(root / "train"))
        index = {label: i for i, label in enumerate(labels)}
        splits: dict[str, list[Example]] = {}
        for name in SPLITS:
            splits[name] = []
            if not (root / name).is_dir():
                continue
            for folder in _label_folders(root / name):
                if folder.name not in index:
                    raise DatasetError(
                        f"{folder} names a species that {root / 'train'} does not have; add training photos of "
                        f"'{folder.name}' or remove the folder."
                    )
                splits[name] += [Example(p, index[folder.name]) for p in usable(_photos(folder, extensions))]
        empty = [root / "train" / label for label in labels if not any(e.label == index[label] for e in splits["train"])]
        if empty:
            raise DatasetError(
                f"species folder(s) {', '.join(map(str, empty))} have no readable training photos; add photos or "
                "remove the folder, else the species would be silently missing from the model."
            )
        dataset = Dataset(labels, *(tuple(splits[n]) for n in SPLITS), root, True, tuple(unreadable))
    else:
        by_label = {folder.name: usable(_photos(folder, extensions)) for folder in _label_folders(root)}
        empty = [label for label, paths in by_label.items() if not paths]
        if empty:
            raise DatasetError(
                f"species folder(s) {', '.join(str(root / label) for label in empty)} have no readable photos "
                f"(looked for {', '.join(extensions)}); add photos or remove the folder, else the species would be "
                "silently missing from the model."
            )
        labels = tuple(sorted(by_label))
        train, val, test = stratified_split([by_label[label] for label in labels], seed, val_fraction, test_fraction)
        dataset = Dataset(labels, train, val, test, root, False, tuple(unreadable))
    if len(dataset.labels) < 2:
        raise DatasetError(
            f"{root} has {len(dataset.labels)} species folder(s) with readable photos; a classifier needs at least 2. "
            "Lay it out as <root>/<label>/*.jpg (add a 'background' folder of empty frames)."
        )
    if not dataset.train:
        raise DatasetError(f"{root} has no readable training photos.")
    return dataset


def stratified_split(
    per_label: Sequence[Sequence[Path]], seed: int, val_fraction: float, test_fraction: float
) -> tuple[tuple[Example, ...], tuple[Example, ...], tuple[Example, ...]]:
    """Split each species' photos into train/val/test with the same shares, reproducibly.

    A species with at least 3 photos gets at least one validation and one test photo (when those
    fractions are non-zero), so every species is scored; training always keeps at least one.
    """
    rng = random.Random(seed)
    train: list[Example] = []
    val: list[Example] = []
    test: list[Example] = []
    for label, paths in enumerate(per_label):
        shuffled = sorted(paths)
        rng.shuffle(shuffled)
        count = len(shuffled)
        n_val = round(count * val_fraction)
        n_test = round(count * test_fraction)
        if count >= 3:
            n_val = max(n_val, 1 if val_fraction > 0 else 0)
            n_test = max(n_test, 1 if test_fraction > 0 else 0)
        while n_val + n_test > count - 1 and (n_val or n_test):
            if n_val >= n_test:
                n_val -= 1
            else:
                n_test -= 1
        val += [Example(p, label) for p in shuffled[:n_val]]
        test += [Example(p, label) for p in shuffled[n_val : n_val + n_test]]
        train += [Example(p, label) for p in shuffled[n_val + n_test :]]
    return tuple(train), tuple(val), tuple(test)


def write_split(dataset: Dataset, folder: Path) -> Path:
    """Record the split (and labels.txt) in the run folder, so evaluate and export score the same photos."""
    path = Path(folder) / SPLIT_FILE
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for name in SPLITS:
            for example in dataset.split(name):
                # Absolute: evaluate and export run from any folder, long after training.
                writer.writerow([str(Path(example.path).absolute()), dataset.labels[example.label], name])
    (Path(folder) / "labels.txt").write_text("".join(f"{label}\n" for label in dataset.labels), encoding="utf-8")
    return path


def read_split(folder: Path) -> Dataset:
    """The split a training run recorded. Raises DatasetError when the run folder has none."""
    folder = Path(folder)
    labels_path, split_path = folder / "labels.txt", folder / SPLIT_FILE
    if not split_path.exists() or not labels_path.exists():
        raise DatasetError(f"{folder} has no {SPLIT_FILE} and labels.txt; pass the folder `python -m training train --out` wrote.")
    labels = tuple(line for line in labels_path.read_text(encoding="utf-8").splitlines() if line.strip())
    index = {label: i for i, label in enumerate(labels)}
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    with open(split_path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            path = Path(row["path"])
            splits[row["split"]].append(Example(path if path.is_absolute() else folder / path, index[row["label"]]))
    return Dataset(labels, *(tuple(splits[n]) for n in SPLITS), source=folder)


def with_labels_first(dataset: Dataset, first: Sequence[str]) -> Dataset:
    """The dataset relabelled so `first` (last season's classes) are outputs 0..N-1 in their order.

    Species folders not among them follow, in the dataset's order; a kept class without photos
    this season stays an output (it keeps what last season learnt).
    """
    labels = tuple(first) + tuple(label for label in dataset.labels if label not in first)
    index = {label: i for i, label in enumerate(labels)}

    def move(examples: tuple[Example, ...]) -> tuple[Example, ...]:
        return tuple(Example(e.path, index[dataset.labels[e.label]]) for e in examples)

    return Dataset(labels, move(dataset.train), move(dataset.val), move(dataset.test), dataset.source, dataset.presplit, dataset.unreadable)


def missing_photos(examples: Sequence[Example]) -> list[Path]:
    """The photos of `examples` that are no longer on disk (moved or deleted since training)."""
    return [e.path for e in examples if not e.path.exists()]


def model_input(path: Path, spec: InputSpec, settings: PreprocessSettings) -> np.ndarray:
    """The model input for one photo file, computed exactly as the daemon computes it.

    Raises PhotoError for a photo that cannot be decoded.
    """
    return to_model_input(load(path, settings).bgr, spec, settings)


def class_weights(dataset: Dataset) -> dict[int, float]:
    """Balanced weights: each species weighs total / (species count * its count)."""
    counts = Counter(e.label for e in dataset.train)
    total = sum(counts.values())
    return {i: total / (len(dataset.labels) * counts[i]) if counts[i] else 0.0 for i in range(len(dataset.labels))}


def cache_target(count: int, size: int, choice: str, folder: Path | None) -> str | None:
    """Where a split's preprocessed photos are cached: "" (memory), a file path, or None.

    auto keeps them in memory when they need under a quarter of the free memory, else on disk.
    """
    if choice == "none":
        return None
    if choice == "auto":
        need = count * size * size * 3 * 4
        try:
            free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            free = 0
        choice = "memory" if free and need < free / 4 else "disk"
    if choice == "memory" or folder is None:
        return ""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return str(Path(folder) / "photos")


def pipeline(
    examples: Sequence[Example],
    num_classes: int,
    spec: InputSpec,
    settings: PreprocessSettings,
    batch_size: int,
    training: bool = False,
    augment: AugmentSettings | None = None,
    seed: int = 0,
    cache: str | None = None,
) -> tf.data.Dataset:
    """A batched `tf.data` pipeline of (model input, one-hot label).

    Photos are prepared by `model_input` (the daemon's code) in a parallel map; a photo that fails
    to decode is logged and dropped, not fatal. Training pipelines are cached (when `cache` is not
    None: "" for memory or a file path), shuffled with `seed`, augmented (if `augment`), and repeat
    forever; others run once in order.
    """
    import tensorflow as tf

    height, width = spec.height, spec.width

    def prepare(path: bytes) -> tuple[np.ndarray, bool]:
        try:
            return model_input(Path(path.decode()), spec, settings).astype(np.float32, copy=False), True
        except PhotoError as e:
            log.warning("skipping %s", e)
            return np.zeros((height, width, 3), np.float32), False

    def read(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        image, ok = tf.numpy_function(prepare, [path], [tf.float32, tf.bool], stateful=False)
        image = tf.ensure_shape(image, (height, width, 3))
        return image, tf.one_hot(label, num_classes), ok

    paths = [str(e.path) for e in examples]
    labels = [e.label for e in examples]
    data = tf.data.Dataset.from_tensor_slices((tf.constant(paths, tf.string), tf.constant(labels, tf.int32)))
    def readable(image: tf.Tensor, label: tf.Tensor, ok: tf.Tensor) -> tf.Tensor:
        return ok

    def drop_flag(image: tf.Tensor, label: tf.Tensor, ok: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return image, label

    data = data.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    data = data.filter(readable).map(drop_flag)
    if not training:
        return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    if cache is not None:
        data = data.cache(cache)
    data = data.shuffle(max(len(examples), 1), seed=seed, reshuffle_each_iteration=True).repeat()
    data = data.batch(batch_size, drop_remainder=False)
    if augment is not None and augment.enabled:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        jitter = augmenter(augment, spec)

        def augmented(batch: tuple[tf.Tensor, tf.Tensor], key: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return jitter(batch[0], key), batch[1]

        data = tf.data.Dataset.zip((data, seeds)).map(augmented, num_parallel_calls=tf.data.AUTOTUNE)
    return data.prefetch(tf.data.AUTOTUNE)


def augmenter(augment: AugmentSettings, spec: InputSpec) -> Any:
    """A function (images, seed) -> images drawing fresh random parameters for every photo.

    Rotation and zoom are one projective transform (reflected borders), then flip, brightness,
    contrast and saturation. It works in pixel units (0-255, from `spec`'s mean and std) and
    returns the same scaling it was given; stateless ops keep it reproducible per seed.
    """
    import tensorflow as tf

    low, high = augment.zoom
    max_angle = math.radians(augment.rotation_degrees)

    def apply(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        keys = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 7)
        count = tf.shape(images)[0]
        height = tf.cast(tf.shape(images)[1], tf.float32)
        width = tf.cast(tf.shape(images)[2], tf.float32)
        pixels = images * spec.std + spec.mean

        def uniform(key: tf.Tensor, lo: float, hi: float) -> tf.Tensor:
            return tf.random.stateless_uniform([count], key, lo, hi)

        angle = uniform(keys[0], -max_angle, max_angle)
        zoom = uniform(keys[1], low, high)
        cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
        cx, cy = (width - 1) / 2, (height - 1) / 2
        # Output pixel (x, y) samples the input at centre + R(-angle) (p - centre) / zoom.
        transforms = tf.stack(
            [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, tf.zeros([count]), tf.zeros([count])],
            axis=1,
        )
        pixels = tf.raw_ops.ImageProjectiveTransformV3(
            images=pixels,
            transforms=transforms,
            output_shape=tf.shape(images)[1:3],
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="REFLECT",
        )
        if augment.horizontal_flip:
            flip = tf.reshape(uniform(keys[2], 0, 1) < 0.5, [-1, 1, 1, 1])
            pixels = tf.where(flip, tf.reverse(pixels, axis=[2]), pixels)

        def per_image(key: tf.Tensor, amount: float) -> tf.Tensor:
            return tf.reshape(uniform(key, -amount, amount), [-1, 1, 1, 1])

        pixels = pixels + per_image(keys[3], augment.brightness) * 255.0
        mean = tf.reduce_mean(pixels, axis=[1, 2, 3], keepdims=True)
        pixels = mean + (pixels - mean) * (1.0 + per_image(keys[4], augment.contrast))
        gray = tf.reduce_mean(pixels, axis=3, keepdims=True)
        pixels = gray + (pixels - gray) * (1.0 + per_image(keys[5], augment.saturation))
        pixels = tf.clip_by_value(pixels, 0.0, 255.0)
        return (pixels - spec.mean) / spec.std

    return apply


def calibration_inputs(
    examples: Sequence[Example], count: int, spec: InputSpec, settings: PreprocessSettings, seed: int
) -> Iterator[np.ndarray]:
    """Up to `count` real training photos through the real preprocessing, one (1, H, W, 3) array each.

    Photos are drawn round-robin across species (seeded), so a rare species still shapes the int8
    ranges; unreadable ones are skipped.
    """
    rng = random.Random(seed)
    by_label: dict[int, list[Example]] = {}
    for example in examples:
        by_label.setdefault(example.label, []).append(example)
    queues = []
    for label in sorted(by_label):
        items = list(by_label[label])
        rng.shuffle(items)
        queues.append(items)
    chosen: list[Example] = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop())
    for example in chosen:
        try:
            yield model_input(example.path, spec, settings)[None].astype(np.float32)
        except PhotoError as e:
            log.warning("calibration skips %s", e)
