"""Build the identifier a configuration describes: species model, bird gate, detector, finder.

Shared by the daemon, `classify` and `evaluate`, so all three run exactly the same models and
rules. Raises ModelError (naming the key and the fix) for a missing or broken model.
"""

from __future__ import annotations

from pathlib import Path

from birdtrap.bundle import CARD_FILE, MODEL_FILE, load_bundle
from birdtrap.classifier import Classifier
from birdtrap.config import Config
from birdtrap.decision import DecisionRules, read_checklist
from birdtrap.detector import Detector, DetectorLayout
from birdtrap.errors import ModelError
from birdtrap.gate import BirdGate
from birdtrap.motion import BurstMemory
from birdtrap.pipeline import FinderSettings, Identifier
from birdtrap.preprocess import PreprocessSettings, opencv
from birdtrap.tflite import TFLiteModel


def load_species_model(config: Config) -> Classifier:
    return Classifier.from_path(
        config.model.path,
        config.model.labels,
        threads=config.model.threads,
        delegate=config.model.delegate,
        top_k=config.model.top_k,
        mean=config.model.input_mean,
        std=config.model.input_std,
    )


def _require(path: Path, key: str, fetch_name: str) -> None:
    if not path.exists():
        raise ModelError(
            f"{key} {path} not found. Run `birdtrap model fetch {fetch_name}`, or set {key}: null "
            "to run without it (less accurate on camera-trap frames)."
        )


def load_gate(config: Config) -> BirdGate | None:
    if config.gate.path is None:
        return None
    _require(config.gate.path, "gate.path", "imagenet-mobilenet-v2")
    model = Classifier.from_path(config.gate.path, config.gate.labels, threads=config.model.threads, delegate=config.model.delegate)
    return BirdGate(model)


def load_detector(config: Config) -> Detector | None:
    if config.detector.path is None or "detector" not in config.finder.methods:
        return None
    _require(config.detector.path, "detector.path", "coco-ssd-mobilenet-v1")
    settings = config.detector
    layout = DetectorLayout(
        settings.bird_classes,
        settings.animal_classes,
        settings.person_classes,
        settings.box_order,
        decoding=settings.decoding,
        iou_threshold=settings.iou_threshold,
    )
    model_path = settings.path / MODEL_FILE if settings.path.is_dir() else settings.path
    card_input = (detector_card(model_path) or {}).get("input", {})
    yolo = settings.decoding != "postprocess"
    mean = _first(settings.input_mean, card_input.get("mean"), 0.0 if yolo else 127.5)
    std = _first(settings.input_std, card_input.get("std"), 255.0 if yolo else 127.5)
    channels = str(_first(settings.input_channels, card_input.get("channels"), "RGB"))
    model = TFLiteModel(model_path, threads=config.model.threads, delegate=config.model.delegate)
    return Detector(model, layout, mean=float(mean), std=float(std), channels=channels)


def _first(*values: object) -> object:
    return next(v for v in values if v is not None)


def detector_card(model_path: Path) -> dict | None:
    """The model card beside a detector (as `python -m training.convert` writes), checked like any bundle.

    A converted YOLOX takes BGR 0-255 where other YOLO exports take RGB 0-1: the card says which,
    so the user need not. A bare .tflite without a card has none.
    """
    if not (model_path.parent / CARD_FILE).exists():
        return None
    return load_bundle(model_path).card


def finder_settings(config: Config) -> FinderSettings:
    finder = config.finder
    return FinderSettings(
        methods=finder.methods,
        search=finder.search,
        max_regions=finder.max_regions,
        stage_size=finder.stage_size,
        gate_threshold=config.gate.threshold,
        detector_min_score=config.detector.min_score,
        detector_tiles=finder.detector_tiles,
        tile_scales=finder.tile_scales,
        tile_overlap=finder.tile_overlap,
        box_margin=finder.box_margin,
        min_region_side=finder.min_region_side,
        person_min_score=config.detector.person_min_score,
    )


def preprocess_settings(config: Config, species: Classifier) -> PreprocessSettings:
    """The bundle card's preprocessing if it has one (the field must match training), else the config's.

    A step that needs OpenCV is checked here, at start-up or model reload, so a missing extra
    stops the daemon with a message before any photo is taken, never fails photos one by one.
    """
    settings = species.card_preprocessing or config.preprocess.settings()
    if settings.denoise or settings.auto_contrast:
        source = f"the model card of {species.bundle.model_path.parent}" if species.card_preprocessing else "the config"
        opencv(f"preprocess.denoise / preprocess.auto_contrast (turned on by {source})")
    return settings


def build_identifier(config: Config, species: Classifier | None = None) -> Identifier:
    """Load every model the configuration names and join them into one Identifier."""
    species = species or load_species_model(config)
    checklist = read_checklist(config.decision.checklist) if config.decision.checklist else None
    rules = DecisionRules(
        threshold=config.decision.threshold, background_labels=config.decision.background_labels, checklist=checklist
    )
    bursts = BurstMemory(config.events.gap_seconds) if "motion" in config.finder.methods else None
    return Identifier(
        species,
        preprocess_settings(config, species),
        rules,
        gate=load_gate(config),
        detector=load_detector(config),
        finder=finder_settings(config),
        bursts=bursts,
    )
