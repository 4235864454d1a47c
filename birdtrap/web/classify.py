"""`POST /classify`: uploaded photos through the daemon's own pipeline, answers cached by content.

The model is loaded in a background thread so the server answers (health, pages, 503 for
classify) while it loads. Photos go through the same `decode` and `Identifier.identify` as the
daemon's, in one batch per request, under one lock (a TFLite interpreter is not thread-safe).
An answer is remembered by the photo's sha256 and a fingerprint of the pipeline, in memory (LRU)
and in the database, so the same photo is never invoked twice, even across restarts.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from birdtrap import store
from birdtrap.config import Config
from birdtrap.daemon.commit import commit_results
from birdtrap.daemon.wiring import build_identifier
from birdtrap.errors import BirdtrapError, PhotoError
from birdtrap.identify.answer import answer
from birdtrap.identify.exif import read_metadata
from birdtrap.identify.identifier import Identification, Identifier
from birdtrap.identify.preprocess import Photo, check_shape, decode, read_header
from birdtrap.identify.privacy import boxes_to_hide
from birdtrap.web.metrics import Metrics
from birdtrap.web.problems import Problem, problem_body
from birdtrap.web.settings import ServeSettings

log = logging.getLogger(__name__)

TOP_LABELS = 20  # labels kept per answer; the API's top_k is at most this
LOADING, READY, FAILED = "loading", "ready", "failed"
SUFFIXES = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

Loader = Callable[[Config], Identifier]


@dataclass
class Upload:
    """One file of a multipart request."""

    filename: str
    data: bytes


HIDDEN = "person_boxes"  # the answer's key for the boxes privacy hides (identify/privacy.py)


@dataclass
class _Item:
    index: int
    filename: str
    data: bytes
    sha256: str
    format: str | None = None
    size: tuple[int, int] | None = None
    answer: dict[str, Any] | None = None
    cached: bool = False
    error: dict[str, Any] | None = None
    photo: Photo | None = field(default=None, repr=False)


class ClassifyService:
    """Holds the identifier (or why there is none yet), the answer cache, and the record path."""

    def __init__(
        self,
        config: Config,
        settings: ServeSettings,
        sessions: sessionmaker[Session],
        metrics: Metrics | None = None,
        loader: Loader = build_identifier,
    ) -> None:
        self.config = config
        self.settings = settings
        self.sessions = sessions
        self.metrics = metrics
        self.loader = loader
        self.state = LOADING
        self.error: str | None = None
        self.identifier: Identifier | None = None
        self.pipeline = ""
        self.model_id: int | None = None
        self.upload_folder = (settings.upload_folder or config.watch.folder / "uploads").resolve()
        self._infer = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # --- the model -----------------------------------------------------------------------

    def start(self) -> None:
        """Load the models in the background; classify answers 503 until they are ready."""
        self._thread = threading.Thread(target=self._load, name="model-load", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state == READY

    def _load(self) -> None:
        started = time.monotonic()
        try:
            identifier = self.loader(self.config)
        except BirdtrapError as e:
            self.state, self.error = FAILED, str(e)
            log.error("the model could not be loaded: %s; POST /classify answers 503 until it is fixed and the server restarted", e)
            return
        self.pipeline = pipeline_fingerprint(self.config, identifier)
        self.identifier = identifier
        self.state = READY
        log.info("model ready in %.1f s (pipeline %s)", time.monotonic() - started, self.pipeline[:12])

    def require_ready(self) -> Identifier:
        """The identifier, or a 503 problem saying why there is none (loading, or failed to load)."""
        if self.state == READY and self.identifier is not None:
            return self.identifier
        if self.state == FAILED:
            raise Problem(503, "model-unavailable", f"the model could not be loaded: {self.error}", {"Retry-After": "60"})
        raise Problem(503, "model-loading", "the model is still loading; try again in a few seconds.", {"Retry-After": "5"})

    def info(self) -> dict[str, Any]:
        """Model facts for health and metrics (state, names, checksums, invoke counts)."""
        info: dict[str, Any] = {"state": self.state, "error": self.error, "path": str(self.config.model.path)}
        identifier = self.identifier
        if identifier is None:
            return info
        bundle = identifier.species.bundle
        info.update(
            name=bundle.name,
            version=bundle.version,
            sha256=bundle.model_sha256,
            labels=len(bundle.labels),
            runtime=identifier.species.model.runtime.name,
            delegate=identifier.species.model.delegate,
            pipeline=self.pipeline,
            invokes={"species": identifier.species.model.invokes},
        )
        if identifier.gate is not None:
            info["invokes"]["gate"] = identifier.gate.model.model.invokes
        if identifier.detector is not None:
            info["invokes"]["detector"] = identifier.detector.model.invokes
        return info

    # --- the cache -----------------------------------------------------------------------

    def _remembered(self, sha256: str) -> dict[str, Any] | None:
        key = (sha256, self.pipeline)
        with self._cache_lock:
            answer = self._cache.get(key)
            if answer is not None:
                self._cache.move_to_end(key)
                return answer
        try:
            with self.sessions() as session:
                text = store.cached_classification(session, sha256, self.pipeline)
        except SQLAlchemyError as e:
            log.warning("classify cache: the database cannot be read (%s); classifying again", e)
            return None
        if text is None:
            return None
        answer = json.loads(text)
        self._remember(sha256, answer)
        return answer

    def _remember(self, sha256: str, answer: dict[str, Any]) -> None:
        if self.settings.classify_cache_entries == 0:
            return
        with self._cache_lock:
            self._cache[(sha256, self.pipeline)] = answer
            self._cache.move_to_end((sha256, self.pipeline))
            while len(self._cache) > self.settings.classify_cache_entries:
                self._cache.popitem(last=False)

    # --- classify ------------------------------------------------------------------------

    def classify(self, uploads: list[Upload], top_k: int, record: bool, camera: str) -> list[dict[str, Any]]:
        """Answer each upload: top-k labels and the decision, or a per-item problem.

        A corrupt or non-image file fails its own item only. New photos are identified in one
        batch; photos answered before (same bytes, same pipeline) are not invoked again.
        """
        identifier = self.require_ready()
        items = [_Item(i, u.filename, u.data, hashlib.sha256(u.data).hexdigest()) for i, u in enumerate(uploads)]
        for item in items:
            self._sniff(item)
        for item in items:
            if item.error is None:
                item.answer = self._remembered(item.sha256)
                item.cached = item.answer is not None
        work = _first_of_each(i for i in items if i.error is None and i.answer is None)
        for item in work:
            try:
                item.photo = decode(item.data, item.filename, identifier.preprocess)
            except PhotoError as e:
                item.error = problem_body(422, str(e), "unreadable-image")
            except Exception as e:  # noqa: BLE001 - one hostile upload fails its own item, never the server
                log.warning("POST /classify: %s could not be decoded (%s: %s)", item.filename, type(e).__name__, e)
                item.error = problem_body(
                    422, f"{item.filename} could not be decoded ({type(e).__name__}); send it as a JPEG.", "unreadable-image"
                )
        self._identify(identifier, [i for i in work if i.error is None])
        by_sha = {i.sha256: i for i in work if i.answer is not None}
        for item in items:  # a photo sent twice in one request is invoked once
            if item.error is None and item.answer is None and item.sha256 in by_sha:
                item.answer, item.cached = by_sha[item.sha256].answer, True
        recorded = self._record(identifier, [i for i in items if i.answer is not None], camera) if record else {}
        if self.metrics is not None:
            for item in items:
                outcome = "failed" if item.error else "cached" if item.cached else "invoked"
                self.metrics.images.labels(outcome).inc()
        return [_response(item, top_k, recorded.get(item.index)) for item in items]

    def _sniff(self, item: _Item) -> None:
        # 415 for what is no image at all; 422 (at decode) for an image that is broken.
        if not item.data:
            item.error = problem_body(
                415, f"{item.filename} is empty (0 bytes); send a JPEG, PNG, BMP, WebP or TIFF photo.", "not-an-image"
            )
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(io.BytesIO(item.data)) as image:
                    item.format = image.format
        except (UnidentifiedImageError, OSError, ValueError):
            item.error = problem_body(
                415, f"{item.filename} is not an image birdtrap can read; send a JPEG, PNG, BMP, WebP or TIFF photo.", "not-an-image"
            )
            return
        except Exception as e:  # noqa: BLE001 - Pillow raises many types for hostile headers
            item.error = problem_body(422, f"{item.filename} has a broken image header ({type(e).__name__}).", "unreadable-image")
            return
        bounds = self.config.preprocess
        if len(item.data) > bounds.settings().max_bytes:
            item.error = problem_body(
                413,
                f"{item.filename} is {len(item.data) / 2**20:.0f} MB, more than preprocess.max_file_mb ({bounds.max_file_mb:g}).",
                "image-out-of-bounds",
            )
            return
        try:
            _, width, height = read_header(item.data, item.filename, 2**62, float("inf"), 1)
        except PhotoError as e:
            item.error = problem_body(422, str(e), "unreadable-image")
            return
        try:
            # The daemon's own bounds, on the header: what it would refuse is never decoded here.
            check_shape(item.filename, width, height, bounds.max_pixels, bounds.max_aspect_ratio, bounds.min_side)
        except PhotoError as e:
            item.error = problem_body(422, str(e), "image-out-of-bounds")
            return
        item.size = (width, height)

    def _identify(self, identifier: Identifier, work: list[_Item]) -> None:
        if not work:
            return
        with self._infer:
            # Another request may have answered the same photo while this one decoded.
            todo = []
            for item in work:
                item.answer = self._remembered(item.sha256)
                if item.answer is None:
                    todo.append(item)
                else:
                    item.cached = True
            if not todo:
                return
            started = time.monotonic()
            try:
                identifications = identifier.identify([item.photo for item in todo])  # type: ignore[misc]
            except Exception as e:  # noqa: BLE001 - find the photo that failed; the others are answered
                log.warning("POST /classify: a batch of %d failed (%s: %s); identifying one by one", len(todo), type(e).__name__, e)
                todo, identifications = self._identify_alone(identifier, todo)
            if self.metrics is not None:
                self.metrics.invoke_seconds.observe(time.monotonic() - started)
        labels = identifier.species.labels
        privacy = self.config.privacy.settings()
        for item, identification in zip(todo, identifications, strict=True):
            item.answer = answer(identification, labels, TOP_LABELS)
            # Kept with the cached answer for a later record=true (issue 19); never in a response.
            hidden = boxes_to_hide(
                identification.decision.kind, identification.detections, privacy, item.photo, identification.box
            )
            item.answer[HIDDEN] = [list(box) for box in hidden]
            item.photo = None
            self._remember(item.sha256, item.answer)
        try:
            with self.sessions.begin() as session:
                for item in todo:
                    store.save_classification(session, item.sha256, self.pipeline, json.dumps(item.answer))
        except SQLAlchemyError as e:
            log.warning("classify cache: answers could not be stored (%s); they stay in memory", e)

    @staticmethod
    def _identify_alone(identifier: Identifier, todo: list[_Item]) -> tuple[list[_Item], list[Identification]]:
        """Identify each photo by itself; one that still fails gets its own problem (per-photo isolation)."""
        done, identifications = [], []
        for item in todo:
            try:
                identifications.extend(identifier.identify([item.photo]))  # type: ignore[list-item]
            except Exception as e:  # noqa: BLE001 - one photo's failure is its own 422, never a 500
                log.error("POST /classify: %s could not be identified (%s: %s)", item.filename, type(e).__name__, e)
                item.photo = None
                item.error = problem_body(
                    422,
                    f"{item.filename} could not be identified ({type(e).__name__}); the server log has the details.",
                    "identify-failed",
                )
                continue
            done.append(item)
        return done, identifications

    # --- record --------------------------------------------------------------------------

    def _record(self, identifier: Identifier, items: list[_Item], camera: str) -> dict[int, dict[str, Any]]:
        """Keep the photos and store their results like the daemon's; returns index -> outcome.

        The row is committed before the file appears under its real name, so a daemon watching
        the same folder finds it already done and does not process it again.
        """
        if not items:
            return {}
        self.upload_folder.mkdir(parents=True, exist_ok=True)
        bundle = identifier.species.bundle
        placed: list[tuple[Path, Path]] = []
        outcomes: dict[int, dict[str, Any]] = {}
        deployment = self.config.camera.deployment_id if camera == self.config.camera.id else None
        try:
            with self.sessions.begin() as session:
                model_id = store.record_model(session, bundle.model_sha256, bundle.name, bundle.version, str(bundle.model_path))
                first: dict[str, int] = {}
                results: list[tuple[int, store.Result]] = []
                for item in items:
                    if item.sha256 in first:  # the same photo twice in one request is kept once
                        outcomes[item.index] = outcomes[first[item.sha256]]
                        continue
                    first[item.sha256] = item.index
                    destination = self.upload_folder / _file_name(item)
                    source = destination
                    if not destination.exists():
                        source = destination.with_name(f".{destination.name}.part")
                        _write(source, item.data)
                        placed.append((source, destination))
                    info = source.stat()
                    registration = store.register_photo(
                        session, str(destination), item.sha256, info.st_size, info.st_mtime, camera, deployment
                    )
                    if registration.outcome in ("new", "pending"):
                        results.append((registration.image_id, _to_result(item, info.st_mtime, self.config.model.top_k)))
                    outcomes[item.index] = {"image_id": registration.image_id, "outcome": registration.outcome, "path": str(destination)}
                commit_results(session, self.config, identifier, camera, model_id, results)
        except BaseException:
            for source, _ in placed:
                source.unlink(missing_ok=True)
            raise
        for source, destination in placed:
            os.replace(source, destination)
        return outcomes


def _first_of_each(items: Any) -> list[_Item]:
    seen: set[str] = set()
    first = []
    for item in items:
        if item.sha256 not in seen:
            seen.add(item.sha256)
            first.append(item)
    return first


def _response(item: _Item, top_k: int, recorded: dict[str, Any] | None) -> dict[str, Any]:
    answer = None
    if item.answer is not None and item.error is None:
        answer = {key: value for key, value in item.answer.items() if key != HIDDEN}
        answer["top"] = item.answer["top"][:top_k]
    return {
        "index": item.index,
        "filename": item.filename,
        "sha256": item.sha256,
        "cached": item.cached,
        "result": answer,
        "recorded": recorded,
        "error": item.error,
    }


def _file_name(item: _Item) -> str:
    stem = _UNSAFE.sub("_", Path(item.filename).stem).strip("._")[:60] or "photo"
    return f"{item.sha256[:16]}-{stem}{SUFFIXES.get(item.format or '', '.jpg')}"


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _to_result(item: _Item, mtime: float, top_k: int) -> store.Result:
    answer = item.answer or {}
    metadata = read_metadata(item.data, mtime)
    width, height = item.size or (None, None)
    ranked = tuple(
        store.RankedLabel(t["label_index"], t["label"], t["scientific_name"], t["common_name"], t["probability"])
        for t in answer["top"][:top_k]
    )
    box = answer.get("box")
    return store.Result(
        kind=answer["kind"],
        label=answer["label"],
        scientific_name=answer["scientific_name"],
        common_name=answer["common_name"],
        taxon_rank=answer["taxon_rank"],
        confidence=answer["confidence"],
        ranked=ranked,
        captured_at=metadata.captured.value,
        captured_at_source=metadata.captured.source,
        captured_at_plausible=metadata.captured.plausible,
        camera_make=metadata.camera_make,
        camera_model=metadata.camera_model,
        width=width,
        height=height,
        box=tuple(box) if box else None,  # type: ignore[arg-type]
        invokes=answer.get("invokes"),
        person_boxes=tuple(tuple(box) for box in answer.get(HIDDEN, ())),  # type: ignore[misc]
    )


def pipeline_fingerprint(config: Config, identifier: Identifier) -> str:
    """sha256 of everything that shapes an answer: the models' checksums and the settings used."""
    parts: dict[str, Any] = {
        "species": identifier.species.bundle.model_sha256,
        "labels": identifier.species.bundle.labels_sha256,
        "gate": identifier.gate.model.bundle.model_sha256 if identifier.gate is not None else None,
        "detector": _file_signature(config.detector.path) if identifier.detector is not None else None,
        "preprocess": identifier.preprocess.as_dict(),
        "settings": {
            key: getattr(config, key).model_dump(mode="json") for key in ("model", "gate", "detector", "finder", "decision", "privacy")
        },
        "checklist": _file_signature(config.decision.checklist),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _file_signature(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    return f"{path}:{info.st_size}:{info.st_mtime_ns}"
