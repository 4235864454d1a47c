"""The model bundle: `model.tflite`, `labels.txt` and the `model.json` card, checked before use.

This is the contract between `training/` (which writes bundles) and the daemon (which refuses a
bad one and keeps the model it had). It imports no TensorFlow and no runtime, so training and
`birdtrap doctor` can both use it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from birdtrap.errors import ModelError
from birdtrap.identify.preprocess import PreprocessSettings

MODEL_FILE = "model.tflite"
LABELS_FILE = "labels.txt"
CARD_FILE = "model.json"
CARD_SCHEMA = 1

_SCIENTIFIC_COMMON = re.compile(r"^\s*(?P<scientific>[^()]+?)\s*\((?P<common>[^()]*)\)\s*$")


@dataclass(frozen=True)
class Label:
    """One output of a species model: `Cyanocitta cristata (Blue Jay)` split into its names."""

    index: int
    text: str
    scientific: str
    common: str | None

    @property
    def genus(self) -> str:
        return self.scientific.split()[0] if self.scientific else ""


def parse_label(index: int, text: str) -> Label:
    text = text.strip()
    match = _SCIENTIFIC_COMMON.match(text)
    if match:
        return Label(index, text, match["scientific"], match["common"].strip() or None)
    return Label(index, text, text, None)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_labels(path: Path) -> tuple[Label, ...]:
    """Line N of the file is output N. Raises ModelError for a missing or empty file."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ModelError(f"labels file {path} not found; put labels.txt beside the model or set model.labels.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"labels file {path} cannot be read ({e}).") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ModelError(f"labels file {path} is empty; it needs one label a line, line N for output N.")
    return tuple(parse_label(i, line) for i, line in enumerate(lines))


@dataclass(frozen=True)
class ModelBundle:
    """A validated model on disk: paths, labels, checksums and the card (None for a bare model)."""

    model_path: Path
    labels_path: Path
    labels: tuple[Label, ...]
    model_sha256: str
    labels_sha256: str
    card: dict | None

    @property
    def name(self) -> str:
        if self.card and self.card.get("name"):
            return str(self.card["name"])
        return self.model_path.parent.name if self.model_path.name == MODEL_FILE else self.model_path.stem

    @property
    def version(self) -> str:
        return str(self.card.get("version", "")) if self.card else ""


def _resolve(model: Path, labels: Path | None) -> tuple[Path, Path, Path]:
    model = Path(model)
    if model.is_dir():
        folder, model_file = model, model / MODEL_FILE
    else:
        folder, model_file = model.parent, model
    if not model_file.exists():
        raise ModelError(
            f"model file {model_file} not found. Run `birdtrap model fetch inat-birds` or set model.path "
            "to a .tflite file or a bundle folder."
        )
    if model_file.suffix != ".tflite":
        raise ModelError(f"expected a .tflite file, got '{model_file.name}'; export one with `python -m training export`.")
    return model_file, Path(labels) if labels else folder / LABELS_FILE, folder / CARD_FILE


def load_bundle(model: Path, labels: Path | None = None) -> ModelBundle:
    """Find and validate a model: a bundle folder or a bare `.tflite` with its labels beside it.

    When a `model.json` card is present, its label count and sha256s must match the files, so a
    half-copied or mismatched bundle is refused instead of naming birds wrongly.
    """
    model_file, labels_file, card_file = _resolve(model, labels)
    label_list = read_labels(labels_file)
    model_sha, labels_sha = sha256_file(model_file), sha256_file(labels_file)
    card = None
    if card_file.exists():
        try:
            card = json.loads(card_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelError(f"model card {card_file} is not valid JSON ({e}); re-export the bundle.") from None
        _check_card(card, card_file, len(label_list), model_sha, labels_sha)
    return ModelBundle(model_file, labels_file, label_list, model_sha, labels_sha, card)


def _check_card(card: dict, path: Path, label_count: int, model_sha: str, labels_sha: str) -> None:
    if not isinstance(card, dict):
        raise ModelError(f"model card {path} must hold a JSON object; re-export the bundle.")
    labels = card.get("labels") or {}
    files = card.get("files") or {}
    want_count = labels.get("count")
    if want_count is not None and want_count != label_count:
        raise ModelError(
            f"model card {path} says {want_count} labels but {LABELS_FILE} has {label_count}; "
            "the bundle is mixed up. Copy all three files of one export together."
        )
    want_labels = labels.get("sha256") or files.get(LABELS_FILE)
    if want_labels and want_labels != labels_sha:
        raise ModelError(
            f"{path.parent / LABELS_FILE} does not match the sha256 in its model card {path}; "
            "the labels were edited or belong to another export. Copy the bundle again."
        )
    want_model = files.get(MODEL_FILE)
    if want_model and want_model != model_sha:
        raise ModelError(
            f"{path.parent / MODEL_FILE} does not match the sha256 in its model card {path}; "
            "the copy is incomplete or from another export. Copy the bundle again."
        )


def write_card(folder: Path, card: dict) -> Path:
    """Write `model.json` with the files' sha256s filled in (used by training's export)."""
    folder = Path(folder)
    labels = read_labels(folder / LABELS_FILE)
    card = dict(card)
    card.setdefault("schema", CARD_SCHEMA)
    card["labels"] = {**card.get("labels", {}), "count": len(labels), "sha256": sha256_file(folder / LABELS_FILE)}
    card["files"] = {MODEL_FILE: sha256_file(folder / MODEL_FILE), LABELS_FILE: card["labels"]["sha256"]}
    path = folder / CARD_FILE
    path.write_text(json.dumps(card, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path


@dataclass(frozen=True)
class ResolvedInput:
    """What a model is fed, and where each choice came from ("config", "model card", "default")."""

    mean: float
    std: float
    channels: str
    preprocessing: PreprocessSettings
    sources: dict[str, str]


def resolve_input(
    bundle: ModelBundle, mean: float | None = None, std: float | None = None, preprocessing: PreprocessSettings | None = None
) -> ResolvedInput:
    """The one place that decides a model's input scaling and preprocessing (timm's
    resolve_data_config plays this part there).

    Precedence: the input scaling a user sets (model.input_mean/std) wins over the card, because
    a card written by another tool can be wrong and the user can measure it; the preprocessing
    recorded in the card wins over the config, because the field must see what training saw.
    Without a card: the config, else MobileNet's (pixel - 127.5) / 127.5 and default steps.
    """
    card = bundle.card or {}
    card_input = card.get("input", {})
    sources: dict[str, str] = {}

    def pick(name: str, configured: float | None) -> float:
        if configured is not None:
            sources[name] = "config"
            return float(configured)
        if name in card_input:
            sources[name] = "model card"
            return float(card_input[name])
        sources[name] = "default"
        return 127.5

    chosen_mean, chosen_std = pick("mean", mean), pick("std", std)
    if card.get("preprocessing"):
        sources["preprocessing"] = "model card"
        steps = PreprocessSettings.from_dict(card["preprocessing"])
    else:
        sources["preprocessing"] = "config" if preprocessing is not None else "default"
        steps = preprocessing or PreprocessSettings()
    return ResolvedInput(chosen_mean, chosen_std, card_input.get("channels", "RGB"), steps, sources)
