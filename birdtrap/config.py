"""The configuration: read once at start, validated into frozen typed settings.

Errors name the file, the key and the fix; unknown keys get a did-you-mean. Relative paths in a
config file are taken relative to that file's folder, so a config works wherever it is started
from (systemd starts in /).
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from birdtrap.errors import ConfigError
from birdtrap.identify.health import HealthSettings
from birdtrap.identify.preprocess import PreprocessSettings
from birdtrap.identify.privacy import PrivacySettings

T = TypeVar("T")

ENV_CONFIG = "BIRDTRAP_CONFIG"
ENV_MIRROR = "BIRDTRAP_MODEL_MIRROR"
SEARCH_PATHS = (Path("config.yaml"), Path("/etc/birdtrap/config.yaml"))


def domain_settings(kind: type[T], section: BaseModel, **overrides: Any) -> T:
    """The frozen dataclass `kind` (the settings a pure module takes) from a config section:
    fields of the same name are copied, the rest come from `overrides` or the dataclass's
    defaults, so a field is written once in each place instead of copied by hand in a third."""
    names = {f.name for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    values = {name: getattr(section, name) for name in type(section).model_fields if name in names}
    return kind(**{**values, **overrides})


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WatchSettings(Settings):
    folder: Path = Field(Path("inbox"), description="Folder the camera writes photos into")
    recursive: bool = Field(True, description="Also watch sub-folders (cameras often write DCIM/100MEDIA/...)")
    patterns: tuple[str, ...] = Field(
        ("*.jpg", "*.jpeg", "*.png", "*.bmp", "*.webp", "*.tif", "*.tiff"),
        description="File name patterns to process, case-insensitive",
    )
    settle_seconds: float = Field(2.0, ge=0, description="A file counts once its size and mtime are unchanged this long")
    rescan_seconds: float = Field(300.0, gt=0, description="Reconcile the folder against the database this often")


class ModelSettings(Settings):
    path: Path = Field(Path("models/inat-birds/model.tflite"), description="A .tflite file or a bundle folder")
    labels: Path | None = Field(None, description="labels.txt; default: beside the model")
    threads: int = Field(2, ge=1, le=64, description="CPU threads for the interpreter")
    delegate: Literal["auto", "cpu", "edgetpu"] = Field("auto", description="auto tries the Coral Edge TPU, then the CPU")
    top_k: int = Field(5, ge=1, le=50, description="Predictions stored per photo")
    input_mean: float | None = Field(None, description="(pixel - mean) / std is the model's real input; default 127.5 or the card")
    input_std: float | None = Field(None, gt=0, description="See input_mean")
    acceptance_labels: Path | None = Field(
        None, description="A labels CSV (as for `birdtrap evaluate`); a new model scoring worse on it is refused"
    )
    accept_worse: bool = Field(False, description="Load a new model even when it scores worse on acceptance_labels")

    @field_validator("path")
    @classmethod
    def _tflite(cls, value: Path) -> Path:
        if value.suffix and value.suffix != ".tflite":
            raise ValueError(f"expected a .tflite file or a bundle folder, got '{value.name}'; run python -m training export")
        return value


class GateSettings(Settings):
    path: Path | None = Field(
        Path("models/imagenet-mobilenet-v2/model.tflite"),
        description="ImageNet classifier that decides whether a region holds a bird; null disables the gate",
    )
    labels: Path | None = Field(None, description="Its labels.txt; default: beside the model")
    threshold: float = Field(0.5, ge=0, le=1, description="Summed bird-class probability needed to call a region a bird")


# What a `detector.preset` sets, unless the same key is also given: a YOLO file's decoding, class
# ids and input. YOLOX (converted by `python -m training.convert yolox-nano`, grid decode in the
# graph) takes BGR 0-255; MegaDetector v5 is a YOLOv5, v6 a YOLOv9/v10 (the yolov8 layout), both
# RGB 0-1 with classes 0 animal, 1 person, 2 vehicle.
DETECTOR_PRESETS: dict[str, dict[str, object]] = {
    "yolox-nano": {
        "decoding": "yolov5",
        "bird_classes": (14,),
        "animal_classes": tuple(range(15, 24)),
        "person_classes": (0,),
        "vehicle_classes": tuple(range(1, 9)),
        "input_mean": 0.0,
        "input_std": 1.0,
        "input_channels": "BGR",
    },
    "megadetector-v5": {"decoding": "yolov5", "bird_classes": (), "animal_classes": (0,), "person_classes": (1,), "vehicle_classes": (2,)},
    "megadetector-v6": {"decoding": "yolov8", "bird_classes": (), "animal_classes": (0,), "person_classes": (1,), "vehicle_classes": (2,)},
}


class DetectorSettings(Settings):
    preset: Literal["yolox-nano", "megadetector-v5", "megadetector-v6"] | None = Field(
        None, description="Sets decoding, class ids and input for a known detector file; keys given as well win"
    )
    path: Path | None = Field(
        Path("models/coco-ssd-mobilenet-v1/model.tflite"),
        description="TFLite detector (boxes, classes, scores) that proposes where animals are; null disables it",
    )
    min_score: float = Field(0.3, ge=0, le=1, description="Detections below this score are ignored")
    bird_classes: tuple[int, ...] = Field((15,), description="Class ids that are birds")
    animal_classes: tuple[int, ...] = Field(tuple(range(16, 25)), description="Class ids that are other animals")
    person_classes: tuple[int, ...] = Field((0,), description="Class ids that are people")
    vehicle_classes: tuple[int, ...] = Field(
        tuple(range(1, 9)), description="Class ids that are vehicles (COCO: bicycle, car, motorcycle, airplane, bus, train, truck, boat)"
    )
    box_order: Literal["yxyx", "xyxy"] = Field("yxyx", description="Order of the box coordinates in the boxes output")
    decoding: Literal["postprocess", "yolov5", "yolov8"] = Field(
        "postprocess", description="postprocess: boxes, classes, scores outputs; yolov5/yolov8: one raw output of candidate boxes"
    )
    iou_threshold: float = Field(0.45, gt=0, le=1, description="YOLO decoding: boxes of one class overlapping more than this are one")
    input_mean: float | None = Field(None, description="(pixel - mean) / std is the detector's input; null: 127.5, or 0 for YOLO")
    input_std: float | None = Field(None, gt=0, description="See input_mean; null: 127.5, or 255 for YOLO")
    input_channels: Literal["RGB", "BGR"] | None = Field(None, description="Detector input channel order; null: the card's, else RGB")
    person_min_score: float = Field(0.6, ge=0, le=1, description="A frame with no bird and a person this sure is marked 'person'")
    animal_min_score: float = Field(0.6, ge=0, le=1, description="A frame with no bird and an animal this sure is marked 'animal'")
    vehicle_min_score: float = Field(0.6, ge=0, le=1, description="A frame with no bird and a vehicle this sure is marked 'vehicle'")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("preset"), str) and data["preset"] in DETECTOR_PRESETS:
            return {**DETECTOR_PRESETS[data["preset"]], **data}
        return data


class FinderConfig(Settings):
    methods: tuple[Literal["detector", "motion", "tiles"], ...] = Field(
        ("detector", "motion", "tiles"), description="Region proposals tried after the whole frame"
    )
    search: Literal["uncertain", "always", "never"] = Field(
        "uncertain", description="uncertain: search regions only when the whole frame is not a confident bird"
    )
    max_regions: int = Field(6, ge=1, le=64, description="Most regions classified per photo")
    stage_size: int = Field(3, ge=1, le=64, description="Regions classified together before checking for a confident bird")
    detector_tiles: tuple[float, ...] = Field((0.6,), description="The detector also runs on square tiles of these sizes (x short side)")
    tile_scales: tuple[float, ...] = Field((0.5,), description="Plain tiles of these sizes (x short side) fill remaining slots")
    tile_overlap: float = Field(0.25, ge=0, lt=1, description="Overlap of neighbouring plain tiles")
    box_margin: float = Field(0.25, ge=0, le=2, description="Context added around a proposed box, per side, as a fraction of its size")
    min_region_side: float = Field(0.1, ge=0, le=1, description="Smallest region side, as a fraction of the frame's short side")
    blank_max_box_score: float = Field(
        0.2, ge=0, le=1,
        description="A detector box of any class at or above this score (frame or tiles) keeps a frame from being called blank",
    )
    bird_box_witness_score: float | None = Field(
        0.5, ge=0, le=1,
        description="A detector bird box this sure lets its region pass the gate at half its threshold, named no finer than "
        "family (Aves where the species model is sure of no rank)",
    )


class EventSettings(Settings):
    gap_seconds: float = Field(5.0, ge=0, le=3600, description="Photos of one camera this close in time are one event (a burst)")


class MqttSettings(Settings):
    host: str | None = Field(None, description="MQTT broker host; null: no MQTT")
    port: int = Field(1883, ge=1, le=65535, description="Broker port")
    username: str | None = Field(None, description="Broker user name")
    password: str | None = Field(None, description="Broker password")
    tls: bool = Field(False, description="Connect with TLS")
    topic_prefix: str = Field("birdtrap", min_length=1, description="Events go to <prefix>/<camera>/event")
    homeassistant_discovery: bool = Field(True, description="Announce a Home Assistant sensor for the last species seen")


class WebhookSettings(Settings):
    url: str | None = Field(None, description="POST each event as JSON to this URL; null: no webhook")
    timeout_seconds: float = Field(10.0, gt=0, description="Give up on one attempt after this long")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers, e.g. an Authorization token")


class AppriseSettings(Settings):
    urls: tuple[str, ...] = Field(
        (),
        description="Apprise URLs, one per service (tgram://, ntfy://, pover://, mailto://, discord:// ...; "
        "https://github.com/caronc/apprise/wiki); empty: no Apprise. Needs pip install 'birdtrap[notify]'",
    )


class NotifySettings(Settings):
    mqtt: MqttSettings = MqttSettings()
    webhook: WebhookSettings = WebhookSettings()
    apprise: AppriseSettings = AppriseSettings()
    species: tuple[str, ...] = Field((), description="Only these species (scientific or common name prefixes); empty: all")
    exclude_species: tuple[str, ...] = Field(
        (), description="Never these species (scientific or common name prefixes), e.g. the house sparrows"
    )
    min_confidence: float = Field(0.0, ge=0, le=1, description="Only events at least this sure")
    only_first: Literal["none", "day", "season", "ever"] = Field(
        "none",
        description="day: only a species' first event of the day; season: its first of the year; ever: its first event at all",
    )
    not_seen_days: float | None = Field(
        None, gt=0, description="Only when the species had no event in this many days before (a returning species); null: off"
    )
    public_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Where phones reach `birdtrap serve` (e.g. http://birdtrap.local:8080); notifications then carry "
        "event_url and image_url (the event's best photo)",
    )
    max_attempts: int = Field(50, ge=1, description="Give up on a notification after this many failed sends")
    quiet_seconds: float = Field(15.0, ge=0, description="Send an event this long after its first bird photo, with the whole burst")


class ServeSettings(Settings):
    """`birdtrap serve`: where it listens, who may write, how much it accepts."""

    host: str = Field("127.0.0.1", description="Address to listen on; 0.0.0.0 for phones on the same network (set a token)")
    port: int = Field(8080, ge=1, le=65535, description="TCP port")
    token: SecretStr | None = Field(
        None, description="Bearer token (16+ characters) for write endpoints (review, classify with record); none: writes refused"
    )
    upload_limit_mb: float = Field(50.0, gt=0, le=2048, description="Largest POST /classify body, all images together, in MB")
    max_files: int = Field(16, ge=1, le=256, description="Most images in one POST /classify")
    thumbnail_cache: Path | None = Field(None, description="Folder for cached thumbnails; default: 'thumbnails' beside the SQLite file")
    thumbnail_cache_mb: float = Field(256.0, gt=0, description="The thumbnail cache is pruned (oldest first) above this size")
    upload_folder: Path | None = Field(
        None, description="Where POST /classify?record=true keeps the photos it records; default: 'uploads' in watch.folder"
    )
    classify_cache_entries: int = Field(1024, ge=0, description="Answers kept in memory (the database keeps every one)")
    refresh_seconds: float = Field(10.0, ge=1, le=3600, description="How often an open page checks for new sightings")

    @field_validator("host")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if value != "localhost":
                raise ValueError(f"expected an IP address such as 127.0.0.1 or 0.0.0.0, got {value!r}") from None
        return value

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("a token needs at least 16 characters; make one with: openssl rand -hex 16")
        return value

    @property
    def upload_limit_bytes(self) -> int:
        return int(self.upload_limit_mb * 1024 * 1024)

    @property
    def loopback(self) -> bool:
        """Only this machine can connect: the host is 127.0.0.0/8, ::1 or localhost."""
        return self.host == "localhost" or ipaddress.ip_address(self.host).is_loopback

    def token_value(self) -> str | None:
        return self.token.get_secret_value() if self.token is not None else None


class PreprocessConfig(Settings):
    reduced_decode: bool = Field(True, description="Let the JPEG decoder shrink large photos (much faster)")
    decode_min_side: int = Field(672, ge=64, description="Shortest side kept by the reduced decode, in pixels")
    crop_info_bars: bool = Field(True, description="Remove the black text bars camera traps burn into the frame")
    max_bar_fraction: float = Field(0.05, ge=0, le=0.2, description="Most rows the info-bar search may remove at each edge")
    denoise: bool = Field(False, description="Bilateral noise reduction on the downscaled image")
    auto_contrast: bool = Field(False, description="CLAHE on lightness, on the downscaled image")
    max_pixels: int = Field(100_000_000, ge=1, description="Refuse photos whose header claims more pixels")
    max_aspect_ratio: float = Field(
        20.0, ge=1, le=1000, description="Refuse photos whose long side is more than this many times the short side"
    )
    min_side: int = Field(16, ge=1, le=4096, description="Refuse photos with a side shorter than this, in pixels")
    max_file_mb: float = Field(200.0, gt=0, description="Refuse photo files larger than this, in MB, before reading them")
    max_full_decode_pixels: int = Field(
        12_200_000, ge=1, description="Refuse photos that must be decoded at full size (not a shrinkable JPEG) above this many pixels"
    )

    def settings(self) -> PreprocessSettings:
        return domain_settings(PreprocessSettings, self)


class DecisionSettings(Settings):
    threshold: float = Field(0.5, ge=0, le=1, description="Minimum confidence for a sighting")
    background_labels: tuple[str, ...] = Field(("background",), description="Labels that mean an empty frame")
    checklist: Path | None = Field(None, description="Species that occur at this deployment, one scientific name a line")
    monochrome_rank: Literal["species", "genus", "family", "order"] = Field(
        "family", description="The finest rank named on an infrared (monochrome) frame, where colour cannot tell congeners apart"
    )
    species_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Scientific name -> the confidence that species needs instead of threshold (from `birdtrap stats --trust`)",
    )

    @field_validator("species_thresholds")
    @classmethod
    def _thresholds_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for name, threshold in value.items():
            if not 0 <= threshold <= 1:
                raise ValueError(f"{name}: {threshold} is outside 0..1; give a confidence between 0 and 1, e.g. {name}: 0.8")
            if len(name.split()) < 2:
                raise ValueError(f"{name!r} is not a scientific name; use genus and species, e.g. 'Ardea herodias: 0.8'")
        return value

    def threshold_for(self, scientific: str) -> float:
        """The confidence `scientific` needs now: its accepted threshold, else `threshold`."""
        return self.rules_thresholds().get(" ".join(scientific.split()[:2]), self.threshold)

    def rules_thresholds(self) -> dict[str, float]:
        """species_thresholds keyed by binomial, as decide() reads them."""
        return {" ".join(name.split()[:2]): value for name, value in self.species_thresholds.items()}


class PrivacyConfig(Settings):
    """People hidden in every image birdtrap makes or sends (issue 19); originals are never changed."""

    redact_people: bool = Field(True, description="Blur every person box in thumbnails, photo views and copied exports")
    min_box_score: float = Field(
        0.5, ge=0, le=1, description="Person boxes at or above this detector score are hidden (below the score that names a frame person)"
    )
    margin: float = Field(0.15, ge=0, le=1, description="Room added around each person box, as a fraction of its size")
    keep_originals_visible: bool = Field(
        False, description="Serve original files on the web; false serves a re-encoded copy with people hidden instead"
    )

    def settings(self) -> PrivacySettings:
        return domain_settings(PrivacySettings, self)


class HealthConfig(Settings):
    """Camera health from the photos (issue 19); each check compares a camera with its own past."""

    enabled: bool = Field(True, description="Run the camera health checks after every batch and report problems")
    history: int = Field(60, ge=4, le=1000, description="Earlier frames of the camera a check compares the newest with")
    min_history: int = Field(8, ge=2, description="No verdict with fewer earlier frames (of the same light, day or night) than this")
    confirm: int = Field(3, ge=1, le=50, description="Consecutive frames that must agree before a problem opens or resolves")
    blocked_fraction: float = Field(0.3, gt=0, lt=1, description="Lens blocked: sharpness below this fraction of the camera's usual")
    moved_similarity: float = Field(0.35, ge=-1, le=1, description="Moved: scene similarity to the usual scene below this")
    stable_similarity: float = Field(0.6, ge=-1, le=1, description="Moved is judged only when the usual frames agree this much")
    night_black_brightness: float = Field(12.0, ge=0, le=255, description="Night frames darker than this (mean grey) are black")
    silence_min_hours: float = Field(6.0, gt=0, description="Never call a camera silent sooner than this")
    silence_factor: float = Field(3.0, ge=1, description="Silent after this many times the longest usual gap at that hour of day")
    clock_drift_hours: float = Field(2.0, gt=0, description="Photo time (EXIF) and file time further apart than this: a wrong clock")

    def settings(self) -> HealthSettings:
        return domain_settings(HealthSettings, self)


class BatchSettings(Settings):
    size: int = Field(4, ge=1, le=256, description="Photos per batch (one transaction each)")
    max_wait_seconds: float = Field(2.0, ge=0, description="Start a partial batch after this wait")


class DatabaseSettings(Settings):
    url: str = Field("sqlite:///birdtrap.db", description="SQLAlchemy URL; relative SQLite paths are relative to this file")
    busy_timeout_seconds: float = Field(10.0, gt=0, description="How long a writer waits for a lock")
    backup_every_hours: float = Field(
        24.0, ge=0, le=8760, description="How often the daemon backs up a SQLite database beside it; 0 turns backups off"
    )
    backup_keep: int = Field(2, ge=1, le=100, description="How many verified backups of the SQLite file are kept (the newest)")


class AfterSettings(Settings):
    action: Literal["keep", "move"] = Field("keep", description="What to do with a processed photo")
    archive_folder: Path | None = Field(None, description="Where 'move' puts processed photos")
    quarantine_folder: Path | None = Field(None, description="Where unreadable photos are moved; none keeps them")
    empty_action: Literal["keep", "move"] = Field(
        "keep", description="What to do with a blank photo (nothing there on evidence; unsure photos always stay)"
    )
    empty_folder: Path | None = Field(None, description="Where 'move' puts blank photos")


class CameraSettings(Settings):
    id: str = Field("camera-1", min_length=1, description="Camera id stored with every photo")
    deployment_id: str | None = Field(None, description="Deployment id (Camtrap DP)")
    latitude: float | None = Field(None, ge=-90, le=90, description="Where the camera stands, decimal degrees WGS84")
    longitude: float | None = Field(None, ge=-180, le=180, description="Where the camera stands, decimal degrees WGS84")
    coordinate_uncertainty: int | None = Field(None, ge=1, description="Uncertainty of latitude/longitude, in metres")
    location_name: str | None = Field(None, description="Name of the place (Camtrap DP locationName)")
    utc_offset: str | None = Field(
        None, pattern=r"^(Z|[+-](0\d|1[0-4]):?[0-5]\d)$", description="Offset of the camera's clock from UTC, e.g. +02:00"
    )
    head: bool = Field(True, description="Use the head `birdtrap learn` installed for this camera, if any (issue 23)")
    embedding_model: Path | None = Field(
        None, description="Model whose output embeds regions for the camera's head; null: the species model's penultimate layer"
    )


class LoggingSettings(Settings):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level")
    progress_seconds: float = Field(10.0, gt=0, description="Log a progress line this often while a backlog drains")


class Config(Settings):
    watch: WatchSettings = WatchSettings()
    model: ModelSettings = ModelSettings()
    preprocess: PreprocessConfig = PreprocessConfig()
    gate: GateSettings = GateSettings()
    detector: DetectorSettings = DetectorSettings()
    finder: FinderConfig = FinderConfig()
    events: EventSettings = EventSettings()
    notify: NotifySettings = NotifySettings()
    serve: ServeSettings = ServeSettings()
    decision: DecisionSettings = DecisionSettings()
    privacy: PrivacyConfig = PrivacyConfig()
    health: HealthConfig = HealthConfig()
    batch: BatchSettings = BatchSettings()
    database: DatabaseSettings = DatabaseSettings()
    after: AfterSettings = AfterSettings()
    camera: CameraSettings = CameraSettings()
    logging: LoggingSettings = LoggingSettings()
    source: Path | None = Field(None, exclude=True, description="The file this was read from")


def _known_keys(model: type[BaseModel], location: tuple) -> list[str]:
    for part in location[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return [name for name in model.model_fields if name != "source"]


def _suggest(location: tuple) -> str:
    """'; did you mean ...' for an unknown key: the closest key name, in any section.

    Keys put in the wrong section (model.threshold) are common, so every section is searched;
    a key of the same section wins a near tie.
    """
    leaf, parent = str(location[-1]), tuple(map(str, location[:-1]))
    if not parent:
        candidates = [((), name) for name in _known_keys(Config, ("x",))]
    else:
        candidates = [((section,), name) for section in _known_keys(Config, ("x",)) for name in _known_keys(Config, (section, "x"))]
    best, best_score = None, 0.0
    for section, name in candidates:
        score = difflib.SequenceMatcher(None, leaf, name).ratio() + (0.02 if section == parent else 0.0)
        if score > best_score:
            best, best_score = ".".join([*section, name]), score
    return f"; did you mean '{best}'?" if best and best_score >= 0.6 else ""


def _explain(error: dict) -> str:
    location = tuple(error["loc"])
    key = ".".join(map(str, location)) or "(top level)"
    if error["type"] == "extra_forbidden":
        hint = _suggest(location)
        return f"{key}: unknown key{hint}"
    return f"{key}: {error['msg']}"


def _resolve_paths(config: Config, base: Path) -> Config:
    def absolute(path: Path | None) -> Path | None:
        if path is None:
            return None
        # normpath: `watch.folder: ../photos` is stored in every photo's path, and a path with
        # `..` in it fails Camtrap DP's filePath constraint (issue 18).
        return Path(os.path.normpath(base / path.expanduser()))

    url = config.database.url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        url = "sqlite:///" + str(absolute(Path(url[len("sqlite:///") :])))
    return config.model_copy(
        update={
            "watch": config.watch.model_copy(update={"folder": absolute(config.watch.folder)}),
            "model": config.model.model_copy(
                update={
                    "path": absolute(config.model.path),
                    "labels": absolute(config.model.labels),
                    "acceptance_labels": absolute(config.model.acceptance_labels),
                }
            ),
            "gate": config.gate.model_copy(update={"path": absolute(config.gate.path), "labels": absolute(config.gate.labels)}),
            "detector": config.detector.model_copy(update={"path": absolute(config.detector.path)}),
            "decision": config.decision.model_copy(update={"checklist": absolute(config.decision.checklist)}),
            "database": config.database.model_copy(update={"url": url}),
            "camera": config.camera.model_copy(update={"embedding_model": absolute(config.camera.embedding_model)}),
            "serve": config.serve.model_copy(
                update={"thumbnail_cache": absolute(config.serve.thumbnail_cache), "upload_folder": absolute(config.serve.upload_folder)}
            ),
            "after": config.after.model_copy(
                update={
                    "archive_folder": absolute(config.after.archive_folder),
                    "quarantine_folder": absolute(config.after.quarantine_folder),
                    "empty_folder": absolute(config.after.empty_folder),
                }
            ),
        }
    )


def parse(text: str, source: Path) -> Config:
    """Validate YAML text; raises ConfigError with one line per problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source} is not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping of sections (watch:, model:, ...), not {type(data).__name__}.")
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        problems = "\n".join("  " + _explain(err) for err in e.errors())
        raise ConfigError(
            f"{source} is not valid:\n{problems}\nFix these keys (config.yaml in the repository documents each one)."
        ) from None
    config = _resolve_paths(config, source.parent.resolve())
    return config.model_copy(update={"source": source})


def find_config(explicit: Path | None = None) -> Path | None:
    """--config, else $BIRDTRAP_CONFIG, else ./config.yaml, else /etc/birdtrap/config.yaml."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get(ENV_CONFIG)
    if from_env:
        return Path(from_env)
    for candidate in SEARCH_PATHS:
        if candidate.exists():
            return candidate
    return None


def load(path: Path | None = None) -> Config:
    """Load and validate the configuration; with no file anywhere, the defaults (paths from cwd)."""
    path = find_config(path)
    if path is None:
        return _resolve_paths(Config(), Path.cwd())
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; pass --config PATH or set {ENV_CONFIG}.") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read ({e.strerror}).") from None
    return parse(text, Path(path))


def model_mirror() -> str | None:
    return os.environ.get(ENV_MIRROR) or None


def check_folders(config: Config) -> None:
    """Folders the daemon needs must exist; raises ConfigError naming the key and the fix."""
    source = config.source or "the default configuration"
    folder = config.watch.folder
    if not folder.is_dir():
        raise ConfigError(f"watch.folder {folder} (in {source}) does not exist; create it or point watch.folder at the camera's folder.")
    if config.after.action == "move" and config.after.archive_folder is None:
        raise ConfigError(f"after.action is 'move' but after.archive_folder is not set (in {source}); set it or use action: keep.")
    if config.after.empty_action == "move" and config.after.empty_folder is None:
        raise ConfigError(
            f"after.empty_action is 'move' but after.empty_folder is not set (in {source}); set it or use empty_action: keep."
        )
    folders = (
        ("after.archive_folder", config.after.archive_folder),
        ("after.quarantine_folder", config.after.quarantine_folder),
        ("after.empty_folder", config.after.empty_folder),
    )
    for key, path in folders:
        if path is None:
            continue
        if not path.is_dir():
            raise ConfigError(f"{key} {path} (in {source}) does not exist; create it or remove the key.")
        if config.watch.recursive and (path == folder or folder in path.parents):
            raise ConfigError(f"{key} {path} (in {source}) is inside watch.folder; moved photos would be processed again. Put it outside.")
