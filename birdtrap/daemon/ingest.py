"""One batch of photo files, from bytes on disk to committed rows: the core the daemon and the
archive workers share.

A photo is registered (pending) before its results are written, and marked done in the same
transaction as its results and its event, so a crash at any point loses nothing and counts
nothing twice: a file read or decoded but not yet registered is simply found again. The caller
owns the loop, the retries and the progress; this module owns a batch.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from birdtrap import store
from birdtrap.config import Config
from birdtrap.daemon.commit import commit_results
from birdtrap.errors import PhotoError
from birdtrap.identify.health import measure
from birdtrap.identify.identifier import FrameInputs, Identification, Identifier
from birdtrap.identify.kinds import Kind
from birdtrap.identify.photos import Decoded, burst_key, could_not, decode_photo
from birdtrap.identify.preprocess import Photo, PreprocessSettings, looping_link, read_photo_bytes
from birdtrap.identify.privacy import boxes_to_hide
from birdtrap.identify.regions import Box

log = logging.getLogger(__name__)


def to_result(
    identification: Identification,
    decoded: Decoded,
    archived: str | None,
    person_boxes: tuple[Box, ...] = (),
) -> store.Result:
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
        person_boxes=person_boxes,
        measure=decoded.measure,
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
    decoded: Future[Decoded] | None  # None: not handed to the pool yet (Prepared.waiting), or not needed
    file: FileIdentity | None = None
    image_id: int = 0


@dataclass(frozen=True)
class Failure:
    """A registered photo that failed, why, and whether its bytes are the cause (see `_store`)."""

    candidate: Candidate
    reason: str
    in_the_bytes: bool


# A photo ready to be written: its file, decode, identification, row and after-action folder.
Stored = tuple[Candidate, Decoded, Identification, store.Result, Path | None]


@dataclass
class Prepared:
    """A batch being read and decoded, registered or not yet (see Ingestor.prepare, read_ahead)."""

    paths: list[str]
    totals: Counter[str]
    work: list[Candidate]
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    registered: bool = False
    # Copies of a photo that failed for a reason not in its bytes: each is processed as the
    # original now (see store.release_copies). The caller queues them again.
    retry: list[str] = field(default_factory=list)
    # Files whose read and decode wait for a free slot (Ingestor.start_decodes), and the decode's
    # arguments, fixed when the batch was read ahead (the identifier of that moment).
    waiting: deque[Candidate] = field(default_factory=deque)
    decode_args: tuple = ()


def read_and_decode(
    path: str,
    identity: Future[FileIdentity],
    settings: PreprocessSettings,
    prepare: Callable[[Photo], FrameInputs] | None,
    keep_pixels: bool,
    measure_health: bool = False,
) -> Decoded:
    """The decode task: read the file, publish its identity, decode it, make its model inputs.

    Reading and hashing here, not in the caller, keeps them off the thread that runs the models
    (on a Pi without SHA instructions hashing a 12 MP file takes as long as an invoke) and holds
    a file's bytes only while its decode runs. `keep_pixels=False` keeps only the inputs: a
    decoded 12 MP frame is ~2 MB, its inputs ~0.2 MB, and the daemon holds two batches of them.
    """
    try:
        data = read_photo_bytes(Path(path), settings.max_bytes)
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
    if measure_health:  # camera health (issue 19), here while the pixels are still there
        decoded = replace(decoded, measure=measure(decoded.photo))
    if prepare is None:
        return decoded
    inputs = prepare(decoded.photo)
    photo = decoded.photo if keep_pixels else decoded.photo.without_pixels()
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
        self._register_alone(prepared)
        self._log_unreadable(prepared)
        return prepared

    def read_ahead(self, batch: list[str], start: int | None = None) -> Prepared:
        """Start reading and decoding a batch in the pool; it is registered with the batch before it.

        `finish(current, following=this)` registers it in the transaction that stores the current
        batch's results: one commit (one fsync) a batch instead of two. Until that commit nothing
        of it is on record, so a crash leaves its files to be found again, never half-counted.

        `start`: how many of its files are read and decoded now (None: all); `finish` starts one
        more each time a photo of the current batch has been searched and let its frame go, so
        the two batches together hold about one batch of frames, not two (issue 22 item 5).
        """
        identifier = self.identifier
        settings, frame_inputs, keep = identifier.preprocess, identifier.frame_inputs, identifier.searches_regions
        prepared = Prepared(batch, Counter(), [], decode_args=(settings, frame_inputs, keep, self.config.health.enabled))
        for path in batch:
            try:
                self.check_inside(path)
            except PhotoError as e:
                prepared.unreadable.append((path, str(e)))
                continue
            candidate = Candidate(path, Future(), None)
            prepared.work.append(candidate)
            prepared.waiting.append(candidate)
        self.start_decodes(prepared, start)
        return prepared

    def start_decodes(self, prepared: Prepared, count: int | None = None) -> None:
        """Hand `count` (None: all) more of a read-ahead batch's files to the decode pool."""
        while prepared.waiting and (count is None or count > 0):
            candidate = prepared.waiting.popleft()
            candidate.decoded = self.decode_pool.submit(read_and_decode, candidate.path, candidate.identity, *prepared.decode_args)
            count = None if count is None else count - 1

    def check_inside(self, path: str) -> None:
        """Refuse a symlink (or anything) that resolves outside the watch folder, or loops."""
        try:
            resolved = Path(path).resolve()
        except RuntimeError:  # Python < 3.13 on a symlink loop
            raise looping_link(path) from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise looping_link(path) from None
            raise PhotoError(f"{path} cannot be followed to a file ({e.strerror}).") from None
        if resolved != self.folder and self.folder not in resolved.parents:
            raise PhotoError(
                f"{path} points outside the folder being processed ({resolved}); refused. Copy the photo in instead of linking it."
            )

    def handle(self, batch: list[str]) -> Counter[str]:
        """Process one batch; returns counts (done, birds, failed, duplicate, notifications).

        Copies handed back for another try (Prepared.retry) are processed too, before returning.
        Raises SQLAlchemyError when the database refuses a write: nothing of the batch is then
        committed past registration, and the same paths can simply be handled again.
        """
        totals: Counter[str] = Counter()
        while batch:
            prepared = self.prepare(batch)
            totals.update(self.finish(prepared))
            batch = prepared.retry
        return totals

    def _await_identities(self, prepared: Prepared) -> None:
        """Wait until each file is read (not decoded); files that cannot be read become unreadable."""
        self.start_decodes(prepared)  # a file not handed to the pool yet would never be read
        readable = []
        for candidate in prepared.work:
            try:
                candidate.file = candidate.identity.result()
            except PhotoError as e:
                prepared.unreadable.append((candidate.path, str(e)))
                continue
            except Exception as e:  # noqa: BLE001 - one file's surprise is that file's failure
                prepared.unreadable.append((candidate.path, could_not(candidate.path, "read", e)))
                continue
            readable.append(candidate)
        prepared.work = readable

    def _register_alone(self, prepared: Prepared) -> None:
        """Register a batch in its own transaction, photo by photo if one of them cannot be.

        An error that is about one photo, not the database (SQLAlchemyError goes to the caller),
        rolls the batch's registration back; then each photo is registered in a transaction of
        its own, and the one that fails is recorded failed with the error.
        """
        try:
            with self.sessions.begin() as session:
                self._register(session, prepared)
            return
        except SQLAlchemyError:
            raise
        except Exception as e:  # noqa: BLE001 - isolated below
            log.warning("registering a batch of %d photos failed (%r); registering them one by one", len(prepared.paths), e)
        singles = [Prepared([c.path], prepared.totals, [c]) for c in prepared.work]
        singles += [Prepared([path], prepared.totals, [], [(path, reason)]) for path, reason in prepared.unreadable]
        work: list[Candidate] = []
        unreadable: list[tuple[str, str]] = []
        for one in singles:
            try:
                with self.sessions.begin() as session:
                    self._register(session, one)
            except SQLAlchemyError:
                raise
            except Exception as e:  # noqa: BLE001 - this photo's failure
                path = one.paths[0]
                reason = could_not(path, "registered", e)
                with self.sessions.begin() as session:
                    store.record_failure(session, path, reason, self.config.camera.id)
                unreadable.append((path, reason))
                continue
            work.extend(one.work)
            unreadable.extend(one.unreadable)
        prepared.work, prepared.unreadable, prepared.registered = work, unreadable, True

    def _register(self, session: Session, prepared: Prepared) -> None:
        """Register a batch's photos as pending (duplicates as such, unreadable files as failed).

        `prepared` changes only once every photo is registered, so a registration that raises
        leaves it as it was, to be tried again.
        """
        camera = self.config.camera
        for path, reason in prepared.unreadable:
            # Its size and mtime let the rescan skip it until the file changes.
            size, mtime = file_signature(path)
            store.record_failure(session, path, reason, camera.id, size_bytes=size, file_mtime=mtime)
        work: list[tuple[Candidate, int]] = []
        copies: list[Candidate] = []
        for candidate in prepared.work:
            file = candidate.file
            assert file is not None, "_await_identities comes first"
            registration = store.register_photo(
                session, candidate.path, file.sha256, file.size, file.mtime, camera.id, camera.deployment_id
            )
            if registration.outcome in ("new", "pending"):
                work.append((candidate, registration.image_id))
            elif registration.outcome == "duplicate":
                copies.append(candidate)
        kept = {id(candidate) for candidate, _ in work}
        for candidate in prepared.work:
            if id(candidate) not in kept:
                candidate.decoded = None  # its decode is not needed (a duplicate, or recorded already)
        for candidate, image_id in work:
            candidate.image_id = image_id
        for candidate in copies:
            prepared.totals["duplicate"] += 1
            log.info("%s is a copy of a photo already recorded; stored as a duplicate", candidate.path)
        prepared.work, prepared.registered = [c for c, _ in work], True

    @staticmethod
    def _log_unreadable(prepared: Prepared) -> None:
        for _path, reason in prepared.unreadable:
            prepared.totals["failed"] += 1
            log.warning("failed: %s", reason)

    def finish(self, prepared: Prepared, following: Prepared | None = None) -> Counter[str]:
        """Wait for the decodes, identify, and write results, events and notifications at once.

        `following` (from `read_ahead`) is registered in the same transaction. A photo that
        cannot be decoded, identified or stored is that photo's failed row; the others are
        stored. Only a database error (SQLAlchemyError) reaches the caller.
        """
        assert prepared.registered, "finish() takes a batch from prepare(), or one registered by the finish() before it"
        totals, work = prepared.totals, prepared.work
        if not work:
            if following is not None:
                self._await_identities(following)
                self._register_alone(following)
                self._log_unreadable(following)
            return totals
        decoded: list[tuple[Candidate, Decoded]] = []
        failed: list[Failure] = []
        for candidate in work:
            assert candidate.decoded is not None
            try:
                decoded.append((candidate, candidate.decoded.result()))
            except PhotoError as e:
                failed.append(Failure(candidate, str(e), in_the_bytes=True))
            except Exception as e:  # noqa: BLE001 - one photo's surprise is that photo's failure
                failed.append(Failure(candidate, could_not(candidate.path, "decoded", e), in_the_bytes=False))
            candidate.decoded = None  # the future held the decode too
        identified = self._identify(decoded, failed, following)
        if following is not None:
            self.start_decodes(following)  # photos that failed before their search freed no slot
        stored: list[Stored] = []
        privacy = self.config.privacy.settings()
        for candidate, item, identification in identified:
            # The frame went when its search ended (Identifier.identify_each); its height stayed.
            hidden = boxes_to_hide(
                identification.decision.kind, identification.detections, privacy, item.photo, identification.box
            )
            item = replace(item, inputs=None)
            try:
                destination = self.archive_destination(candidate.path, identification.decision.kind)
                result = to_result(identification, item, str(destination) if destination else None, hidden)
            except Exception as e:  # noqa: BLE001 - as above
                failed.append(Failure(candidate, could_not(candidate.path, "named", e), in_the_bytes=False))
                continue
            stored.append((candidate, item, identification, result, destination))
        if following is not None:
            self._await_identities(following)  # read by now: the pool did it while this batch was identified
        before = Counter(totals)
        try:
            with self.sessions.begin() as session:
                self._store(session, stored, failed, totals, prepared)
                if following is not None:
                    self._register(session, following)
        except SQLAlchemyError:
            raise
        except Exception as e:  # noqa: BLE001 - a read-ahead photo that cannot be registered
            if following is None or following.registered:
                raise
            log.warning("registering the next batch failed (%r); storing this batch alone, then registering it photo by photo", e)
            prepared.retry.clear()
            totals.clear()
            totals.update(before)
            with self.sessions.begin() as session:
                self._store(session, stored, failed, totals, prepared)
            self._register_alone(following)
        if following is not None:
            self._log_unreadable(following)
        for candidate, _, identification, _, _ in stored:
            totals["done"] += 1
            decision = identification.decision
            if decision.kind == Kind.BIRD:
                totals["birds"] += 1
                log.info("%s: %s (%s, %.2f)", Path(candidate.path).name, decision.label, decision.taxon_rank, decision.confidence)
            else:
                # INFO too: a frame that is not a bird must show in the journal, or a missed bird
                # cannot be traced (issue 18); kind and how sure, one line a photo.
                log.info("%s: not a bird: %s (%.2f)", Path(candidate.path).name, decision.kind, decision.confidence)
        for failure in failed:
            totals["failed"] += 1
            log.warning("failed: %s", failure.reason)
        self._after_actions(stored, failed)
        return totals

    def _after_actions(self, stored: list[Stored], failed: list[Failure]) -> None:
        """Once the batch is committed: failed files to quarantine, processed ones to their folders."""
        for failure in failed:
            self.quarantine(failure.candidate.path)
        for candidate, _, _, _, destination in stored:
            if destination is not None:
                self.move(candidate.path, destination)

    def _identify(
        self, decoded: list[tuple[Candidate, Decoded]], failed: list[Failure], following: Prepared | None = None
    ) -> list[tuple[Candidate, Decoded, Identification]]:
        """Identify the batch at once; if that raises, the photos not yet identified one by one,
        so one photo fails alone. Returned decodes hold no pixels (`Photo.without_pixels`).

        The frames are handed over to `Identifier.identify_each`, which lets each go as its search
        ends; each time, one more of `following`'s files starts decoding into the room it left.
        Photo by photo, the burst memory may see a frame that the failed batch call had shown it
        already: motion then compares a frame with itself once, which finds nothing, never a
        false region.
        """
        camera = self.config.camera
        photos = [d.photo for _, d in decoded]  # from here on the only reference to the frames
        decoded = [(c, replace(d, photo=d.photo.without_pixels())) for c, d in decoded]
        keys = [burst_key(camera.id, d.metadata) for _, d in decoded]
        identified: list[tuple[Candidate, Decoded, Identification]] = []
        try:
            each = self.identifier.identify_each(photos, keys, [d.inputs for _, d in decoded])
            for (candidate, item), identification in zip(decoded, each, strict=True):
                identified.append((candidate, item, identification))
                if following is not None:
                    self.start_decodes(following, 1)
            return identified
        except Exception as e:  # noqa: BLE001 - isolated below
            if len(decoded) == 1:
                candidate = decoded[0][0]
                failed.append(Failure(candidate, could_not(candidate.path, "identified", e), in_the_bytes=False))
                return []
            log.warning("identifying a batch of %d photos failed (%r); identifying the rest one by one", len(decoded), e)
        for index in range(len(identified), len(decoded)):
            candidate, item = decoded[index]
            try:
                [identification] = self.identifier.identify_each([photos[index]], [keys[index]], [item.inputs])
            except Exception as e:  # noqa: BLE001 - this photo's failure
                failed.append(Failure(candidate, could_not(candidate.path, "identified", e), in_the_bytes=False))
                continue
            finally:
                photos[index] = photos[index].without_pixels()
            identified.append((candidate, item, identification))
        return identified

    def _store(
        self,
        session: Session,
        stored: list[Stored],
        failed: list[Failure],
        totals: Counter[str],
        prepared: Prepared,
    ) -> None:
        """Write a batch's results, failures (and their copies'), events and notifications."""
        camera = self.config.camera
        for failure in failed:
            candidate, file = failure.candidate, failure.candidate.file
            assert file is not None
            store.record_failure(session, candidate.path, failure.reason, camera.id, candidate.image_id, file.sha256, file.size, file.mtime)
            if failure.in_the_bytes:
                # Identical copies hold the same broken bytes: each fails too, on its own row.
                copies = store.fail_copies(session, candidate.image_id, failure.reason)
                totals["failed"] += len(copies)
                totals["duplicate"] -= len(copies)
            else:
                # A passing failure must not hide a good copy: the first copy becomes the original.
                heir = store.release_copies(session, candidate.image_id)
                if heir is not None:
                    totals["duplicate"] -= 1
                    prepared.retry.append(store.path_from_text(heir))
        results = [(candidate.image_id, result) for candidate, _, _, result, _ in stored]
        totals["notifications"] += commit_results(session, self.config, self.identifier, camera.id, self.model_id, results)

    def archive_destination(self, path: str, kind: str) -> Path | None:
        """Where a processed photo goes (None: it stays). Blank frames may have their own folder; unsure ones never go there."""
        after = self.config.after
        if not self.after_actions:
            return None
        if kind == Kind.BLANK and after.empty_action == "move" and after.empty_folder is not None:
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


def file_signature(path: str) -> tuple[int | None, float | None]:
    """(size, mtime) as registration records them: of the file a symlink points to, else of the link.

    The rescan compares a file with its row by this, so a symlinked photo matches its row and a
    broken link matches its failure, and neither is offered again until it changes.
    """
    for follow in (True, False):
        try:
            info = os.stat(path, follow_symlinks=follow)
        except OSError:
            continue
        return info.st_size, info.st_mtime
    return None, None


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
    texts = [store.path_as_text(name) for name in names]  # names as stored (see store.path_as_text)
    return [found[text] for text in texts if text in found]
