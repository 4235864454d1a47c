"""Build the identifier a configuration describes: species model, bird gate, detector, finder.

Shared by the daemon, `classify` and `evaluate`, so all three run exactly the same models and
rules. Raises ModelError (naming the key and the fix) for a missing or broken model.
"""

from __future__ import annotations

from pathlib import Path

from birdtrap.config import Config, domain_settings
from birdtrap.errors import ModelError
from birdtrap.identify.bundle import CARD_FILE, MODEL_FILE, load_bundle, resolve_input
from birdtrap.identify.burst_sightings import BurstSightings
from birdtrap.identify.camera_head import CameraHead
from birdtrap.identify.classifier import Classifier
from birdtrap.identify.decision import DecisionRules, read_checklist
from birdtrap.identify.detector import Detector, DetectorLayout
from birdtrap.identify.embedding import Embedder
from birdtrap.identify.gate import BirdGate
from birdtrap.identify.identifier import FinderSettings, Identifier
from birdtrap.identify.motion import BurstMemory
from birdtrap.identify.preprocess import PreprocessSettings, opencv
from birdtrap.identify.tflite import TFLiteModel


def load_species_model(config: Config) -> Classifier:
    return Classifier.from_path(
        config.model.path,
        config.model.labels,
        threads=config.model.threads,
        delegate=config.model.delegate,
        top_k=config.model.top_k,
        mean=config.model.input_mean,
        std=config.model.input_std,
        preprocessing=config.preprocess.settings(),
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
        vehicle_classes=settings.vehicle_classes,
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
    return domain_settings(
        FinderSettings,
        config.finder,
        gate_threshold=config.gate.threshold,
        detector_min_score=config.detector.min_score,
        person_min_score=config.detector.person_min_score,
        animal_min_score=config.detector.animal_min_score,
        vehicle_min_score=config.detector.vehicle_min_score,
    )


def preprocess_settings(config: Config, species: Classifier) -> PreprocessSettings:
    """The species model's preprocessing, as bundle.resolve_input chose it (card over config).

    A step that needs OpenCV is checked here, at start-up or model reload, so a missing extra
    stops the daemon with a message before any photo is taken, never fails photos one by one.
    """
    settings = resolve_input(species.bundle, preprocessing=config.preprocess.settings()).preprocessing
    if settings.denoise or settings.auto_contrast:
        source = f"the model card of {species.bundle.model_path.parent}" if species.card_preprocessing else "the config"
        opencv(f"preprocess.denoise / preprocess.auto_contrast (turned on by {source})")
    return settings


def load_embedder(config: Config) -> Embedder:
    """The model that embeds regions for the camera's head (issue 23)."""
    if config.camera.embedding_model is not None:
        return Embedder(config.camera.embedding_model, threads=config.model.threads)
    return Embedder(config.model.path, threads=config.model.threads, penultimate=True)


def load_camera_head(config: Config) -> CameraHead | None:
    """The head installed for config.camera.id, or None (none learnt, turned off, or no database yet)."""
    if not config.camera.head:
        return None
    from birdtrap import store
    from birdtrap.errors import StoreError
    from birdtrap.store import examples as examples_store

    try:
        sessions = store.open_store(config.database.url, config.database.busy_timeout_seconds, create=False)
        with sessions.begin() as session:
            return examples_store.head_in_use(session, config.camera.id)
    except StoreError:
        return None


def build_identifier(config: Config, species: Classifier | None = None, camera_head: bool = True) -> Identifier:
    """Load every model the configuration names and join them into one Identifier.

    With `camera_head`, the head `birdtrap learn` installed for this camera joins it.
    """
    species = species or load_species_model(config)
    head = load_camera_head(config) if camera_head else None
    checklist = read_checklist(config.decision.checklist) if config.decision.checklist else None
    thresholds = tuple(sorted(config.decision.rules_thresholds().items()))
    rules = domain_settings(DecisionRules, config.decision, checklist=checklist, species_thresholds=thresholds)
    bursts = BurstMemory(config.events.gap_seconds) if "motion" in config.finder.methods else None
    return Identifier(
        species,
        preprocess_settings(config, species),
        rules,
        gate=load_gate(config),
        detector=load_detector(config),
        finder=finder_settings(config),
        bursts=bursts,
        camera_head=head,
        embedder=load_embedder(config) if head is not None else None,
        sightings=BurstSightings(config.events.gap_seconds),
    )
