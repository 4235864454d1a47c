"""One batch of photo files, from bytes on disk to committed rows: the core the daemon and the
archive workers share.

A photo is registered (pending) before its results are written, and marked done in the same
transaction as its results and its event, so a crash at any point loses nothing and counts
nothing twice: a file read or decoded but not yet registered is simply found again. The caller
owns the loop, the retries and the progress; this module owns a batch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from birdtrap import store
from birdtrap.config import Config
from birdtrap.daemon.commit import commit_results
from birdtrap.errors import PhotoError
from birdtrap.identify.identifier import FrameInputs, Identification, Identifier
from birdtrap.identify.photos import Decoded, burst_key, decode_photo
from birdtrap.identify.preprocess import Photo, PreprocessSettings, read_photo_bytes

log = logging.getLogger(__name__)
NO_PIXELS = np.zeros((0, 0, 3), np.uint8)


def to_result(identification: Identification, decoded: Decoded, archived: str | None) -> store.Result:
    decision = identification.decision
    ranked = tuple(
        store.RankedLabel(s.label.index, s.label.text, s.label.scientific, s.label.common, s.probability)
        for s in identification.prediction.top
    )
    captured = decoded.metadata.captured
    width, height = decoded.photo.original_size
    return store.Result(
        kind=decision.kind,
        label=decision.label,
        scientific_name=decision.scientific_name,
        common_name=decision.common_name,
        taxon_rank=decision.taxon_rank,
        confidence=decision.confidence,
        ranked=ranked,
        captured_at=captured.value,
        captured_at_source=captured.source,
        captured_at_plausible=captured.plausible,
        camera_make=decoded.metadata.camera_make,
        camera_model=decoded.metadata.camera_model,
        width=width,
        height=height,
        box=identification.box,
        invokes=identification.invokes,
        archived_path=archived,
    )


@dataclass(frozen=True)
class FileIdentity:
    """What registration needs of a file: its content hash, size and modification time."""

    sha256: str
    size: int
    mtime: float


@dataclass
class Candidate:
    """A file being read and decoded in the pool; `identity` resolves as soon as it is read."""

    path: str
    identity: Future[FileIdentity]
    decoded: Future[Decoded] | None
    file: FileIdentity | None = None
    image_id: int = 0


@dataclass
class Prepared:
    """A batch being read and decoded, registered or not yet (see Ingestor.prepare, read_ahead)."""

    paths: list[str]
    totals: Counter[str]
    work: list[Candidate]
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    registered: bool = False


def read_and_decode(
    path: str,
    identity: Future[FileIdentity],
    settings: PreprocessSettings,
    prepare: Callable[[Photo], FrameInputs] | None,
    keep_pixels: bool,
) -> Decoded:
    """The decode task: read the file, publish its identity, decode it, make its model inputs.

    Reading and hashing here, not in the caller, keeps them off the thread that runs the models
    (on a Pi without SHA instructions hashing a 12 MP file takes as long as an invoke) and holds
    a file's bytes only while its decode runs. `keep_pixels=False` keeps only the inputs: a
    decoded 12 MP frame is ~2 MB, its inputs ~0.2 MB, and the daemon holds two batches of them.
    """
    try:
        data = read_photo_bytes(Path(path))
        mtime = os.stat(path).st_mtime
        identity.set_result(FileIdentity(hashlib.sha256(data).hexdigest(), len(data), mtime))
    except BaseException as e:
        if isinstance(e, OSError):
            e = PhotoError(f"{path} cannot be read ({e.strerror}).")
        if not identity.done():
            identity.set_exception(e)
        raise e from None
    decoded = decode_photo(data, path, mtime, settings)
    del data  # the bytes go before the inputs are made: less memory at the decode threads' peak
    if prepare is None:
        return decoded
    inputs = prepare(decoded.photo)
    photo = decoded.photo if keep_pixels else replace(decoded.photo, bgr=NO_PIXELS)
    return replace(decoded, photo=photo, inputs=inputs)


class Ingestor:
    """Processes batches of photo paths under `root` with one identifier and one database."""

    def __init__(
        self,
        config: Config,
        identifier: Identifier,
        sessions: sessionmaker[Session],
        root: Path,
        decode_pool: Executor,
        after_actions: bool = True,
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.folder = Path(root).resolve()
        self.decode_pool = decode_pool
        self.after_actions = after_actions
        self.use(identifier)

    def use(self, identifier: Identifier) -> None:
        """Switch to another identifier (a reloaded model); its model row is created if new."""
        bundle = identifier.species.bundle
        with self.sessions.begin() as session:
            self.model_id = store.record_model(session, bundle.model_sha256, bundle.name, bundle.version, str(bundle.model_path))
        self.identifier = identifier

    def prepare(self, batch: list[str]) -> Prepared:
        """Start reading and decoding a batch, and register it as soon as its files are read."""
        prepared = self.read_ahead(batch)
        self._await_identities(prepared)
        with self.sessions.begin() as session:
            self._register(session, prepared)
        self._log_unreadable(prepared)
        return prepared

    def read_ahead(self, batch: list[str]) -> Prepared:
        """Start reading and decoding a batch in the pool; it is registered with the batch before it.

        `finish(current, following=this)` registers it in the transaction that stores the current
        batch's results: one commit (one fsync) a batch instead of two. Until that commit nothing
        of it is on record, so a crash leaves its files to be found again, never half-counted.
        """
        identifier = self.identifier
        settings, frame_inputs, keep = identifier.preprocess, identifier.frame_inputs, identifier.searches_regions
        prepared = Prepared(batch, Counter(), [])
        for path in batch:
            try:
                self.check_inside(path)
            except PhotoError as e:
                prepared.unreadable.append((path, str(e)))
                continue
            identity: Future[FileIdentity] = Future()
            decoded = self.decode_pool.submit(read_and_decode, path, identity, settings, frame_inputs, keep)
            prepared.work.append(Candidate(path, identity, decoded))
        return prepared

    def check_inside(self, path: str) -> None:
        """Refuse a symlink (or anything) that resolves outside the watch folder."""
        resolved = Path(path).resolve()
        if resolved != self.folder and self.folder not in resolved.parents:
            raise PhotoError(
                f"{path} points outside the folder being processed ({resolved}); refused. Copy the photo in instead of linking it."
            )

    def handle(self, batch: list[str]) -> Counter[str]:
        """Process one batch; returns counts (done, birds, failed, duplicate, notifications).

        Raises SQLAlchemyError when the database refuses a write: nothing of the batch is then
        committed past registration, and the same paths can simply be handled again.
        """
        return self.finish(self.prepare(batch))

    @staticmethod
    def _await_identities(prepared: Prepared) -> None:
        """Wait until each file is read (not decoded); files that cannot be read become unreadable."""
        readable = []
        for candidate in prepared.work:
            try:
                candidate.file = candidate.identity.result()
            except PhotoError as e:
                prepared.unreadable.append((candidate.path, str(e)))
                continue
            readable.append(candidate)
        prepared.work = readable

    def _register(self, session: Session, prepared: Prepared) -> None:
        """Register a batch's photos as pending (duplicates as such, unreadable files as failed)."""
        camera = self.config.camera
        for path, reason in prepared.unreadable:
            # Its size and mtime let the rescan skip it until the file changes.
            size, mtime = _lstat(path)
            store.record_failure(session, path, reason, camera.id, size_bytes=size, file_mtime=mtime)
        work: list[Candidate] = []
        for candidate in prepared.work:
            file = candidate.file
            assert file is not None, "_await_identities comes first"
            registration = store.register_photo(
                session, candidate.path, file.sha256, file.size, file.mtime, camera.id, camera.deployment_id
            )
            if registration.outcome in ("new", "pending"):
                candidate.image_id = registration.image_id
                work.append(candidate)
            else:
                candidate.decoded = None  # its decode is not needed (a duplicate, or recorded already)
                if registration.outcome == "duplicate":
                    prepared.totals["duplicate"] += 1
                    log.info("%s is a copy of a photo already recorded; stored as a duplicate", candidate.path)
        prepared.work, prepared.registered = work, True

    @staticmethod
    def _log_unreadable(prepared: Prepared) -> None:
        for _path, reason in prepared.unreadable:
            prepared.totals["failed"] += 1
            log.warning("failed: %s", reason)

    def finish(self, prepared: Prepared, following: Prepared | None = None) -> Counter[str]:
        """Wait for the decodes, identify, and write results, events and notifications at once.

        `following` (from `read_ahead`) is registered in the same transaction.
        """
        assert prepared.registered, "finish() takes a batch from prepare(), or one registered by the finish() before it"
        totals, work = prepared.totals, prepared.work
        if not work:
            if following is not None:
                self._await_identities(following)
                with self.sessions.begin() as session:
                    self._register(session, following)
                self._log_unreadable(following)
            return totals
        camera = self.config.camera
        decoded: list[tuple[Candidate, Decoded]] = []
        failed: list[tuple[Candidate, str]] = []
        for candidate in work:
            assert candidate.decoded is not None
            try:
                decoded.append((candidate, candidate.decoded.result()))
            except PhotoError as e:
                failed.append((candidate, str(e)))
            candidate.decoded = None  # the future held the decode too
        identifications = self.identifier.identify(
            [d.photo for _, d in decoded], [burst_key(camera.id, d.metadata) for _, d in decoded], [d.inputs for _, d in decoded]
        )
        # Identified: the pixels go now, so the next batch's decodes reuse their memory while
        # this batch is written (the peak holds one batch of frames less).
        decoded = [(candidate, replace(item, photo=replace(item.photo, bgr=NO_PIXELS), inputs=None)) for candidate, item in decoded]
        moves: list[tuple[str, Path]] = []
        if following is not None:
            self._await_identities(following)  # read by now: the pool did it while this batch was identified
        results: list[tuple[int, store.Result]] = []
        for (candidate, item), identification in zip(decoded, identifications, strict=True):
            destination = self.archive_destination(candidate.path, identification.decision.kind)
            results.append((candidate.image_id, to_result(identification, item, str(destination) if destination else None)))
            if destination is not None:
                moves.append((candidate.path, destination))
        with self.sessions.begin() as session:
            for candidate, reason in failed:
                file = candidate.file
                assert file is not None
                store.record_failure(session, candidate.path, reason, camera.id, candidate.image_id, file.sha256, file.size, file.mtime)
            totals["notifications"] += commit_results(session, self.config, self.identifier, camera.id, self.model_id, results)
            if following is not None:
                self._register(session, following)
        if following is not None:
            self._log_unreadable(following)
        for (candidate, _), identification in zip(decoded, identifications, strict=True):
            totals["done"] += 1
            decision = identification.decision
            if decision.kind == "bird":
                totals["birds"] += 1
                log.info("%s: %s (%s, %.2f)", Path(candidate.path).name, decision.label, decision.taxon_rank, decision.confidence)
            else:
                # INFO too: a frame that is not a bird must show in the journal, or a missed bird
                # cannot be traced (issue 18); kind and how sure, one line a photo.
                log.info("%s: not a bird: %s (%.2f)", Path(candidate.path).name, decision.kind, decision.confidence)
        for candidate, reason in failed:
            totals["failed"] += 1
            log.warning("failed: %s", reason)
            self.quarantine(candidate.path)
        for source, destination in moves:
            self.move(source, destination)
        return totals

    def archive_destination(self, path: str, kind: str) -> Path | None:
        """Where a processed photo goes (None: it stays). Empty frames may have their own folder."""
        after = self.config.after
        if not self.after_actions:
            return None
        if kind == "empty" and after.empty_action == "move" and after.empty_folder is not None:
            folder = after.empty_folder
        elif after.action == "move" and after.archive_folder is not None:
            folder = after.archive_folder
        else:
            return None
        return folder / Path(path).resolve().relative_to(self.folder)

    def quarantine(self, path: str) -> None:
        folder = self.config.after.quarantine_folder
        if folder is None or not self.after_actions or not os.path.isfile(path):
            return
        self.move(path, folder / Path(path).resolve().relative_to(self.folder))

    def move(self, source: str, destination: Path) -> None:
        try:
            destination.parent.mkdir(parents=True, exist_ok=True)
            if destination.exists():
                destination = destination.with_name(f"{destination.stem}-{int(time.time())}{destination.suffix}")
            shutil.move(source, destination)
        except OSError as e:
            log.warning("could not move %s to %s (%s); it stays where it is", source, destination, e.strerror)


def _lstat(path: str) -> tuple[int | None, float | None]:
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return None, None
    return info.st_size, info.st_mtime


def record_files(config: Config, identifier: Identifier, paths: list[Path]) -> list[store.ImageRecord]:
    """Process named files exactly as the daemon would and store them (`classify --record`).

    The files stay where they are (no after-action); a file already recorded is not counted
    again. Returns the stored rows, in the order of `paths`.
    """
    from concurrent.futures import ThreadPoolExecutor

    sessions = store.open_store(config.database.url, config.database.busy_timeout_seconds)
    # Absolute and without `..` (abspath, not resolve: a symlinked folder keeps the name the user
    # gave): `classify --record ../photos/../x.jpg` must not store a path Camtrap DP refuses (issue 18).
    names = [os.path.abspath(p) for p in paths]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode") as pool:
        # The user named these files: any folder is allowed, so the root is the filesystem's.
        ingestor = Ingestor(config, identifier, sessions, Path("/"), pool, after_actions=False)
        size = config.batch.size
        for start in range(0, len(names), size):
            ingestor.handle(names[start : start + size])
    with sessions() as session:
        found = {image.path: image for image in store.images_by_path(session, names)}
        for image in found.values():
            _ = image.predictions  # loaded before the session closes
    return [found[name] for name in names if name in found]
