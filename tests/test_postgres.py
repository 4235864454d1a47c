"""PostgreSQL: the daemon and the queries on it, devices syncing to a central one, the network export.

A real PostgreSQL server is started for the session on a loopback port in a temporary folder
(initdb + pg_ctl from Debian's `postgresql` package; as root they run as the `postgres` user), and
each test gets its own database. The tests skip, saying why, only where the server binaries are
not installed. Two simulated devices are SQLite databases filled by the real daemon from
overlapping and different real photos; a cut link is a TCP relay the test pulls like a cable.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select, text
from test_export import problems, read_csv

from birdtrap import config as config_module
from birdtrap import store
from birdtrap.cli import cli
from birdtrap.daemon.ingest import Ingestor
from birdtrap.daemon.wiring import build_identifier
from birdtrap.errors import ExportError
from birdtrap.scale.sync import SyncError, push, renew_device_id

from conftest import HERON, DaemonProcess, copy_photo, photo, rows, wait_for, write_config

pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'birdtrap[scale]'")

CONTRIBUTOR = ["--contributor", "Jane Doe <jane@example.org>"]


# --- the server ------------------------------------------------------------------------------


def _server_binaries() -> Path | None:
    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.parent.name))

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """A throwaway cluster: initdb into a temporary folder, pg_ctl start on a free loopback port."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.folder = Path(tempfile.mkdtemp(prefix="birdtrap-pg-"))
        self.port = _free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            # initdb refuses to run as root.
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no 'postgres' user to run initdb as (apt-get install postgresql makes one)")
            os.chown(self.folder, account.pw_uid, account.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]

    def _run(self, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix, *command], capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        data = self.folder / "data"
        initdb = self._run(str(self.binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "birdtrap", "-E", "UTF8", "--no-sync")
        if initdb.returncode != 0:
            pytest.fail(f"initdb failed:\n{initdb.stdout}{initdb.stderr}")
        # Durability off: a test server, not the data.
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        log = self.folder / "log"
        started = self._run(str(self.binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        if started.returncode != 0:
            details = log.read_text(errors="replace") if log.exists() else ""
            pytest.fail(f"pg_ctl start failed:\n{started.stdout}{started.stderr}\n{details}")

    def stop(self) -> None:
        self._run(str(self.binaries / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres", port: int | None = None) -> str:
        return f"postgresql+psycopg://birdtrap@127.0.0.1:{port or self.port}/{database}"

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
        engine.dispose()
        return name


@pytest.fixture(scope="session")
def postgres():
    binaries = _server_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql): /usr/lib/postgresql/*/bin/initdb")
    server = PostgresServer(binaries)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres) -> str:
    """A new, empty database on the session's server."""
    return postgres.url(postgres.create_database())


def query(url: str, sql: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql))]
    finally:
        engine.dispose()


class Cable:
    """A TCP relay to the server that a test can pull out (and plug back in) like a network cable.

    `cut_after(n)` lets n more client messages through, then closes every connection, in the
    middle of whatever transaction is open; while pulled, new connections are closed at once.
    """

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.plugged = True
        self.budget: int | None = None
        self.forwarded_after_arming = 0
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.plugged:
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if from_client and self.budget is not None:
                    if self.budget <= 0:
                        self.pull()
                        return
                    self.budget -= 1
                    self.forwarded_after_arming += 1
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut_after(self, messages: int) -> None:
        self.budget = messages

    def pull(self) -> None:
        self.plugged = False
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()

    def plug(self) -> None:
        self.budget = None
        self.plugged = True

    def close(self) -> None:
        self.pull()
        self.listener.close()


# --- the store and the daemon on PostgreSQL -------------------------------------------------------


def test_migrations_create_the_schema_on_an_empty_postgresql_database(pg_url):
    sessions = store.open_store(pg_url)
    indexes = dict(query(pg_url, "select indexname, indexdef from pg_indexes where tablename = 'images'"))
    assert "WHERE" in indexes["uq_images_original_sha256"]  # the partial unique index, as on SQLite
    with sessions() as session:
        assert store.revision_state(session.connection()).state == "current"
    store.open_store(pg_url, create=False)  # a current schema opens without migrating


def test_the_store_registers_duplicates_failures_and_answers_queries_on_postgresql(pg_url):
    sessions = store.open_store(pg_url)
    with sessions.begin() as session:
        first = store.register_photo(session, "/in/a.jpg", "a" * 64, 10, 1.5, "cam")
        copy = store.register_photo(session, "/in/b.jpg", "a" * 64, 10, 1.5, "cam")
        store.record_failure(session, "/in/c.jpg", "truncated", "cam")
        store.record_failure(session, "/in/c.jpg", "still truncated", "cam")
    assert (first.outcome, copy.outcome) == ("new", "duplicate")
    with sessions() as session:
        assert store.counts_by_status(session) == {"pending": 1, "duplicate": 1, "failed": 1}
        assert store.known_files(session)["/in/a.jpg"] == {(10, 1.5)}
        assert [p.path for p in store.pending_photos(session)] == ["/in/a.jpg"]
        assert store.find_sightings(session, species="egretta", camera="cam", min_confidence=0.5) == []
        assert store.find_events(session) == [] and store.species_stats(session) == [] and store.activity(session, "hour") == []


@pytest.fixture(scope="module")
def identifier():
    """The models, loaded once for the in-process ingest tests (gate and detector off: speed)."""
    config = config_module.load(write_config(Path(tempfile.mkdtemp()), gate={"path": None}, detector={"path": None}))
    return build_identifier(config)


def test_a_photo_with_an_overlong_exif_make_is_stored_on_postgresql(pg_url, tmp_path, identifier):
    """PostgreSQL refuses a string longer than its column; SQLite stores it. A camera that writes
    a 150-character Make must not stop the daemon's batch."""
    from PIL import Image

    config = config_module.load(write_config(tmp_path, gate={"path": None}, detector={"path": None}, database={"url": pg_url}))
    picture = Image.open(photo("kite_and_cold.jpg"))
    exif = picture.getexif()
    exif[271] = "M" * 150
    target = tmp_path / "inbox" / "long-make.jpg"
    picture.save(target, exif=exif)
    sessions = store.open_store(pg_url)
    ingestor = Ingestor(config, identifier, sessions, tmp_path / "inbox", ThreadPoolExecutor(1), after_actions=False)
    outcome = ingestor.handle([str(target)])  # birdtrap.identify.exif bounds EXIF strings to the column
    assert outcome["done"] == 1


def test_the_daemon_and_every_query_and_export_work_unchanged_on_postgresql(pg_url, tmp_path, daemon_factory):
    config = write_config(
        tmp_path,
        database={"url": pg_url},
        gate={"path": None},
        detector={"path": None},
        camera={"id": "pond-cam", "deployment_id": "pond-2021", "latitude": 51.0543, "longitude": 3.7174, "utc_offset": "+02:00"},
    )
    for source in HERON[:5]:
        copy_photo(source.name, tmp_path / "inbox")
    copy_photo("bird.bmp", tmp_path / "inbox")
    (tmp_path / "inbox" / "truncated.jpg").write_bytes(HERON[0].read_bytes()[:4000])
    daemon = daemon_factory(config)
    wait_for(
        lambda: (
            len(query(pg_url, "select 1 from images where status in ('done', 'failed')")) >= 7
            if query(pg_url, "select 1 from pg_tables where tablename = 'images'")
            else False
        ),
        timeout=90,
        what="the daemon to store 7 photos in PostgreSQL",
    )
    assert daemon.stop() == 0, daemon.output()
    assert dict(query(pg_url, "select status, count(*) from images group by status")) == {"done": 6, "failed": 1}
    ((events,),) = query(pg_url, "select count(distinct event_id) from images where status = 'done'")
    assert events == 2  # the heron burst and the chickadee
    runner = CliRunner()
    for command in (["sightings"], ["events"], ["stats"], ["sightings", "--camera", "pond-cam", "--format", "csv"]):
        result = runner.invoke(cli, [*command, "-c", str(config)])
        assert result.exit_code == 0, (command, result.output)
        assert "Poecile atricapillus" in result.output or "Black-capped Chickadee" in result.output, (command, result.output)
    result = runner.invoke(cli, ["export", "camtrap-dp", str(tmp_path / "package"), *CONTRIBUTOR, "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert problems(tmp_path / "package") == []


# --- devices syncing to a central database ----------------------------------------------------

DEVICE_A = [p.name for p in HERON[:6]] + ["bird.bmp", "IMG_0708.JPG"]
DEVICE_B = [p.name for p in HERON[3:]] + ["kite_and_cold.jpg", "2021-05-28_SYFR0041_deer.JPG"]
OVERLAP = {p.name for p in HERON[3:6]}


def _device(folder: Path, camera: dict, names: list[str]) -> Path:
    config = write_config(folder, gate={"path": None}, detector={"path": None}, camera=camera)
    for name in names:
        copy_photo(name, folder / "inbox")
    return config


def _device_rows(folder: Path) -> int:
    try:
        return len([r for r in rows(folder) if r[1] in ("done", "failed")])
    except Exception:  # the daemon has created the file but not yet the tables
        return 0


@pytest.fixture(scope="module")
def devices(tmp_path_factory) -> dict[str, Path]:
    """Two traps, each a SQLite database filled by `birdtrap run`; three heron frames on both."""
    pond = _device(
        tmp_path_factory.mktemp("pond"),
        {"id": "pond-cam", "deployment_id": "pond-2021", "latitude": 51.0543, "longitude": 3.7174, "utc_offset": "+02:00",
         "location_name": "Pond, north bank"},
        DEVICE_A,
    )  # fmt: skip
    marsh = _device(
        tmp_path_factory.mktemp("marsh"),
        {"id": "marsh-cam", "deployment_id": "marsh-2021", "latitude": 51.0611, "longitude": 3.7402, "utc_offset": "+02:00"},
        DEVICE_B,
    )
    daemons = [DaemonProcess(pond), DaemonProcess(marsh)]
    try:
        wait_for(lambda: _device_rows(pond.parent) >= len(DEVICE_A), timeout=90, what="device A to finish")
        wait_for(lambda: _device_rows(marsh.parent) >= len(DEVICE_B), timeout=90, what="device B to finish")
        for daemon in daemons:
            assert daemon.stop() == 0, daemon.output()
    finally:
        for daemon in daemons:
            if daemon.alive():
                daemon.process.kill()
                daemon.process.wait()
            daemon.handle.close()
    return {"pond-cam": pond, "marsh-cam": marsh}


def _local(config: Path, sql: str) -> list[tuple]:
    return query(f"sqlite:///{config.parent / 'birdtrap.db'}", sql)


PHOTO_ROWS = (
    "select i.camera_id, i.sha256, i.kind, i.label, i.confidence, i.captured_at, "
    "(select count(*) from predictions p where p.image_id = i.id) from images i where i.status = 'done'"
)
EVENT_ROWS = "select camera_id, sha256, event_id from images where status = 'done'"


def _photos(rows: list[tuple]) -> list[tuple]:
    """Comparable across SQLite (times as text) and PostgreSQL (datetimes)."""
    normal = []
    for camera, sha256, kind, label, confidence, when, predictions in rows:
        when = datetime.fromisoformat(when) if isinstance(when, str) else when
        normal.append((camera, sha256, kind, label, round(confidence, 6), when, predictions))
    return sorted(normal)


def _events(rows: list[tuple]) -> set[frozenset]:
    groups: dict[tuple, set] = {}
    for camera, sha256, event_id in rows:
        groups.setdefault((camera, event_id), set()).add((camera, sha256))
    return {frozenset(group) for group in groups.values()}


def assert_central_matches(url: str, *configs: Path) -> None:
    """Every device photo is in the central database once, with its answer, predictions and burst."""
    central = _photos(query(url, PHOTO_ROWS))
    keys = [(camera, sha256) for camera, sha256, *_ in central]
    assert len(keys) == len(set(keys)), "a photo is in the central database twice"
    assert central == _photos([row for config in configs for row in _local(config, PHOTO_ROWS)])
    assert _events(query(url, EVENT_ROWS)) == set().union(*(_events(_local(config, EVENT_ROWS)) for config in configs))
    ((orphans,),) = query(url, "select count(*) from events e where not exists (select 1 from images i where i.event_id = e.id)")
    assert orphans == 0


def test_two_devices_sync_the_same_and_different_photos_without_duplicates_or_losses(devices, pg_url):
    pond, marsh = devices["pond-cam"], devices["marsh-cam"]
    first = push(config_module.load(pond), pg_url, batch_size=3)
    push(config_module.load(marsh), pg_url, batch_size=4)
    again = push(config_module.load(pond), pg_url, batch_size=3)  # nothing new: idempotent
    result = CliRunner().invoke(cli, ["sync", "--to", pg_url, "--batch", "5", "-c", str(marsh)])
    assert result.exit_code == 0, result.output
    assert re.search(r"pushed \d+ photos, \d+ predictions, \d+ events to postgresql\+psycopg://birdtrap@127\.0\.0\.1:\d+/t_", result.output)
    assert first.images == len(DEVICE_A) and first.batches == 3
    assert again.resumed_from is not None
    assert_central_matches(pg_url, pond, marsh)
    shared = query(pg_url, "select sha256, count(distinct camera_id) from images group by sha256 having count(*) > 1")
    assert len(shared) == len(OVERLAP) and {n for _, n in shared} == {2}  # the same frames, once per camera
    deployments = query(pg_url, "select deployment_id, camera_id, latitude, location_name, camera_model from deployments order by 1")
    assert deployments == [
        ("marsh-2021", "marsh-cam", 51.0611, None, "RECONYX-HYPERFIRE 2 COVERT"),
        ("pond-2021", "pond-cam", 51.0543, "Pond, north bank", "RECONYX-HYPERFIRE 2 COVERT"),
    ]


def test_the_same_file_at_the_same_path_on_two_devices_is_kept_for_each(devices, pg_url, tmp_path):
    """Two Pis with the same folder layout and the same test photo: one row per camera."""
    clone = tmp_path / "clone"
    clone.mkdir()
    with sqlite3.connect(devices["pond-cam"].parent / "birdtrap.db") as source, sqlite3.connect(clone / "birdtrap.db") as copy:
        source.backup(copy)  # the WAL included
    engine = create_engine(f"sqlite:///{clone / 'birdtrap.db'}")
    with engine.begin() as connection:
        connection.execute(text("update images set camera_id = 'pond-cam-2'"))
        connection.execute(text("update events set camera_id = 'pond-cam-2'"))
    engine.dispose()
    config = write_config(clone, camera={"id": "pond-cam-2", "deployment_id": "pond-2021-b"})
    renew_device_id(config_module.load(config))  # a copied database is another device
    push(config_module.load(devices["pond-cam"]), pg_url)
    push(config_module.load(config), pg_url)
    assert_central_matches(pg_url, devices["pond-cam"], config)


def test_a_sync_cut_off_mid_batch_resumes_where_it_stopped(devices, postgres, pg_url):
    pond = config_module.load(devices["pond-cam"])
    cable = Cable(postgres.port)
    through_cable = postgres.url(pg_url.rsplit("/", 1)[1], port=cable.port)
    batches = []

    def pull_during_the_next_batch(totals: Counter) -> None:
        batches.append(totals["images"])
        if len(batches) == 1:
            cable.cut_after(3)  # the pre-ping, BEGIN and the first upsert of batch 2; then the cable goes

    try:
        with pytest.raises(SyncError) as stopped:
            push(pond, through_cable, batch_size=3, retries=2, backoff=0.05, on_batch=pull_during_the_next_batch)
        assert "is unreachable" in str(stopped.value) and "3 photos were pushed" in str(stopped.value)
        assert "Run `birdtrap sync` again to resume" in str(stopped.value)
        assert cable.forwarded_after_arming >= 2  # batch 2 had begun when the link went
        assert query(pg_url, "select count(*) from images") == [(3,)]  # batch 1 whole, nothing of batch 2
        marks = dict(_local(devices["pond-cam"], "select url, pushed from sync_state"))
        assert marks[through_cable] == 3  # the progress stayed at batch 1
        cable.plug()
        resumed = push(pond, through_cable, batch_size=3)
        assert resumed.resumed_from is not None
        assert_central_matches(pg_url, devices["pond-cam"])
    finally:
        cable.close()


def test_a_link_back_within_the_retries_finishes_the_same_run(devices, postgres, pg_url):
    cable = Cable(postgres.port)
    through_cable = postgres.url(pg_url.rsplit("/", 1)[1], port=cable.port)

    def flap(totals: Counter) -> None:
        if totals["batches"] == 1:
            cable.pull()
            threading.Timer(0.5, cable.plug).start()

    try:
        summary = push(config_module.load(devices["marsh-cam"]), through_cable, batch_size=4, retries=6, backoff=0.2, on_batch=flap)
    finally:
        cable.close()
    assert summary.retries >= 1
    assert_central_matches(pg_url, devices["marsh-cam"])


def test_a_late_frame_that_merges_two_bursts_leaves_one_event_centrally(tmp_path, pg_url, identifier):
    """Frames 1 and 10 of the heron burst are two events; frames 2-9 arrive later and join them."""
    config = config_module.load(
        write_config(tmp_path, gate={"path": None}, detector={"path": None}, events={"gap_seconds": 1.5}, camera={"id": "heron-cam"})
    )
    frames = [copy_photo(p.name, tmp_path / "inbox") for p in HERON]
    sessions = store.open_store(config.database.url)
    ingestor = Ingestor(config, identifier, sessions, tmp_path / "inbox", ThreadPoolExecutor(1), after_actions=False)
    ingestor.handle([str(frames[0])])
    ingestor.handle([str(frames[-1])])
    push(config, pg_url)
    assert query(pg_url, "select count(*) from events") == [(2,)]
    ingestor.handle([str(f) for f in frames[1:-1]])
    push(config, pg_url)
    assert query(pg_url, "select count(*), max(photo_count) from events") == [(1, 10)]
    assert_central_matches(pg_url, tmp_path / "config.yaml")


def test_thumbnails_travel_only_when_asked_and_are_small_jpegs(devices, pg_url):
    pond = config_module.load(devices["pond-cam"])
    push(pond, pg_url)
    assert query(pg_url, "select count(*) from thumbnails") == [(0,)]
    summary = push(pond, pg_url, with_thumbnails=True, full=True)
    assert summary.thumbnails == len(DEVICE_A)
    for jpeg, width, height in query(pg_url, "select jpeg, width, height from thumbnails"):
        assert bytes(jpeg[:2]) == b"\xff\xd8" and max(width, height) == 320 and len(jpeg) < 40_000
    again = push(pond, pg_url, with_thumbnails=True, full=True)
    assert again.thumbnails == 0  # already there: not read or sent again


def test_sync_says_when_the_central_database_cannot_be_reached(devices):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens there
    url = f"postgresql+psycopg://birdtrap@127.0.0.1:{port}/central"
    result = CliRunner().invoke(cli, ["sync", "--to", url, "--retries", "0", "-c", str(devices["pond-cam"])])
    assert result.exit_code == 1
    assert f"Error: cannot reach the central database {url} (" in result.output
    assert "check --to, the network and the password file (~/.pgpass or PGPASSFILE). Nothing was pushed" in result.output


def test_fleet_status_of_a_traps_own_database_names_the_flag(devices):
    result = CliRunner().invoke(cli, ["fleet", "status", "-c", str(devices["pond-cam"])])
    assert result.exit_code == 1
    assert "is not a central PostgreSQL database; give the URL the traps sync to, e.g. --from postgresql+psycopg://" in result.output


def test_sync_refuses_a_database_that_is_not_postgresql(devices, tmp_path):
    result = CliRunner().invoke(cli, ["sync", "--to", f"sqlite:///{tmp_path / 'central.db'}", "-c", str(devices["pond-cam"])])
    assert result.exit_code == 1
    assert "Error: --to must be a PostgreSQL URL (postgresql+psycopg://user@host/birdtrap), not sqlite" in result.output


# --- the network export -------------------------------------------------------------------


def test_the_camtrap_dp_export_of_the_network_is_valid_with_every_deployment(devices, pg_url, tmp_path):
    for config in devices.values():
        push(config_module.load(config), pg_url)
    ((heron_event,),) = query(pg_url, "select min(event_id) from images where camera_id = 'marsh-cam' and path like '%RCNX0040%'")
    with store.open_store(pg_url, create=False).begin() as session:  # a person reviews it on the central web pages
        store.add_correction(session, heron_event, "corrected", scientific_name="Ardea herodias", reviewer="Jane")
    out = tmp_path / "network"
    result = CliRunner().invoke(cli, ["export", "network", str(out), "--from", pg_url, *CONTRIBUTOR, "-c", str(devices["pond-cam"])])
    assert result.exit_code == 0, result.output
    assert problems(out) == []
    deployments = read_csv(out / "deployments.csv")
    assert [(d["deploymentID"], d["cameraID"], d["latitude"]) for d in deployments] == [
        ("marsh-2021", "marsh-cam", "51.0611"),
        ("pond-2021", "pond-cam", "51.0543"),
    ]
    media = read_csv(out / "media.csv")
    ((done,),) = query(pg_url, "select count(*) from images where status = 'done'")
    assert len(media) == done == len(DEVICE_A) + len(DEVICE_B)
    assert len({m["mediaID"] for m in media}) == len(media)  # the shared frames get distinct ids
    assert "deployments 2: marsh-2021, pond-2021" in result.output
    reviewed = [o for o in read_csv(out / "observations.csv") if o["eventID"] == f"event-{heron_event}"]
    assert reviewed and {(o["classificationMethod"], o["scientificName"], o["classifiedBy"]) for o in reviewed} == {
        ("human", "Ardea herodias", "Jane")
    }


def test_the_network_export_names_a_deployment_without_coordinates_and_the_fix(devices, pg_url, tmp_path):
    from birdtrap.export.camtrapdp import Contributor, PackageInfo
    from birdtrap.export.network import write_network_package

    # The pond device, its config without the camera's place.
    database = {"url": f"sqlite:///{devices['pond-cam'].parent / 'birdtrap.db'}"}
    nowhere = write_config(tmp_path, camera={"id": "pond-cam", "deployment_id": "pond-2021"}, database=database)
    push(config_module.load(nowhere), pg_url)
    sessions = store.open_store(pg_url, create=False)

    with sessions() as session, pytest.raises(ExportError) as refused:
        write_network_package(session, tmp_path / "out", PackageInfo(contributors=(Contributor("Jane Doe"),)))
    assert "deployment 'pond-2021' (camera 'pond-cam') has no latitude, longitude, utc_offset" in str(refused.value)
    assert "set camera.latitude, camera.longitude, camera.utc_offset" in str(refused.value)
    assert "run `birdtrap sync` there again" in str(refused.value)


# --- archive mode into PostgreSQL -------------------------------------------------------------


def test_archive_mode_writes_to_postgresql_from_two_workers(pg_url, tmp_path):
    from test_archive import archive_config, make_archive

    from birdtrap.scale.archive import run_archive

    photos = make_archive(tmp_path / "cards", 24, seed=1)
    config = config_module.load(archive_config(tmp_path, database={"url": pg_url}))
    summary = run_archive(config, [tmp_path / "cards"], workers=2, batch_size=4, progress=False)
    assert (summary.done, summary.failed, summary.unfinished) == (len(photos), 0, 0)
    assert query(pg_url, "select count(*), count(distinct event_id) from images where status = 'done'") == [(24, 8)]
    assert query(pg_url, "select count(*) from events") == [(8,)]


# --- a fleet: identity, progress by the device's sequence, reviews both ways (issue 21) ------------


def _clone(config: Path, folder: Path, camera: dict) -> Path:
    """A copy of a device's database in `folder`, as another trap with its own identity."""
    folder.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(config.parent / "birdtrap.db") as source, sqlite3.connect(folder / "birdtrap.db") as copy:
        source.backup(copy)
    engine = create_engine(f"sqlite:///{folder / 'birdtrap.db'}")
    with engine.begin() as connection:
        connection.execute(text("update images set camera_id = :c"), {"c": camera["id"]})
        connection.execute(text("update events set camera_id = :c"), {"c": camera["id"]})
    engine.dispose()
    copy_config = write_config(folder, gate={"path": None}, detector={"path": None}, camera=camera)
    renew_device_id(config_module.load(copy_config))
    return copy_config


def _device_events(config: Path) -> int:
    ((count,),) = _local(config, "select count(distinct event_id) from images where status = 'done'")
    return count


def test_two_spellings_of_the_central_url_are_one_central_database_and_nothing_is_duplicated(devices, postgres, pg_url):
    pond = devices["pond-cam"]
    name = pg_url.rsplit("/", 1)[1]
    by_ip, by_name = postgres.url(name), postgres.url(name).replace("@127.0.0.1:", "@localhost:")
    first = push(config_module.load(pond), by_ip, batch_size=3)
    second = push(config_module.load(pond), by_name, batch_size=3)
    assert first.images == len(DEVICE_A) and (second.images, second.batches) == (0, 0)
    assert second.central == first.central and second.device == first.device
    assert_central_matches(pg_url, pond)
    ((events,),) = query(pg_url, "select count(*) from events")
    assert events == _device_events(pond)  # no empty events left behind
    assert query(pg_url, "select distinct source from sync_events") == [(first.device,)]
    result = CliRunner().invoke(cli, ["sync", "--status", "-c", str(pond)])
    assert result.exit_code == 0, result.output
    assert f"device {first.device} (camera pond-cam)" in result.output
    assert f"central {first.central} at {by_name}" in result.output and ", 0 waiting" in result.output


def test_a_device_copied_from_another_trap_is_told_to_take_its_own_id(devices, pg_url, tmp_path):
    pond = devices["pond-cam"]
    push(config_module.load(pond), pg_url)
    folder = tmp_path / "copy"
    folder.mkdir()
    with sqlite3.connect(pond.parent / "birdtrap.db") as source, sqlite3.connect(folder / "birdtrap.db") as copy:
        source.backup(copy)
    config = write_config(folder, gate={"path": None}, detector={"path": None}, camera={"id": "pond-cam-b"})
    result = CliRunner().invoke(cli, ["sync", "--to", pg_url, "-c", str(config)])
    assert result.exit_code == 1
    assert "belongs to camera 'pond-cam' in the central database" in result.output
    assert "`birdtrap sync --new-device-id`" in result.output
    assert query(pg_url, "select count(*) from images where camera_id <> 'pond-cam'") == [(0,)]


@pytest.fixture
def trap(tmp_path, identifier):
    """A trap whose photos the test feeds one by one through the daemon's ingest path."""
    config = config_module.load(write_config(tmp_path, gate={"path": None}, detector={"path": None}, camera={"id": "heron-cam"}))
    sessions = store.open_store(config.database.url)
    ingestor = Ingestor(config, identifier, sessions, tmp_path / "inbox", ThreadPoolExecutor(1), after_actions=False)

    def ingest(name: str) -> Path:
        path = copy_photo(name, tmp_path / "inbox")
        assert ingestor.handle([str(path)])["done"] == 1
        return path

    return config, sessions, ingest


def test_a_backdated_and_a_reprocessed_photo_arrive_and_a_run_with_nothing_new_sends_nothing(trap, pg_url):
    config, sessions, ingest = trap
    ingest(HERON[0].name)
    assert push(config, pg_url).images == 1
    idle = push(config, pg_url)
    assert (idle.images, idle.batches, idle.predictions) == (0, 0, 0)
    # The Pi lost its clock: the next photo is processed (and captured) two hours "before" the first.
    late = ingest("kite_and_cold.jpg")
    with sessions.begin() as session:
        session.execute(
            text("update images set processed_at = datetime(processed_at, '-2 hours'), captured_at = datetime(captured_at, '-2 hours') "
                 "where path = :p"),
            {"p": str(late)},
        )  # fmt: skip
    assert push(config, pg_url).images == 1
    # Processed again (a new model): the photo's new answer travels.
    with sessions.begin() as session:
        image = session.scalar(select(store.ImageRecord).where(store.ImageRecord.path == str(late)))
        names = ("Milvus milvus (Red Kite)", "Milvus milvus", "Red Kite")
        result = store.Result("bird", *names, "species", 0.91, (), image.captured_at, "exif", True)
        store.record_result(session, image.id, result, image.model_id)
    again = push(config, pg_url)
    assert again.images == 1
    assert query(pg_url, f"select scientific_name, confidence from images where path = '{late}'") == [("Milvus milvus", 0.91)]
    assert_central_matches(pg_url, Path(config.source))


def test_reviews_travel_both_ways_and_the_latest_wins_with_both_kept(trap, pg_url):
    config, sessions, ingest = trap
    for frame in HERON[:3]:
        ingest(frame.name)
    with sessions() as session:
        (event_id,) = session.scalars(select(store.EventRecord.id)).all()
    with sessions.begin() as session:  # a person on the trap's own web page
        store.add_correction(session, event_id, "corrected", scientific_name="Ardea cinerea", reviewer="on the trap")
    first = push(config, pg_url)
    assert first.reviews_pushed == 1
    ((central_event,),) = query(pg_url, "select distinct event_id from images")
    assert query(pg_url, f"select scientific_name, reviewer from corrections where event_id = {central_event}") == [
        ("Ardea cinerea", "on the trap")
    ]
    central = store.open_store(pg_url, create=False)
    with central.begin() as session:  # `birdtrap serve` on the central database
        store.add_correction(session, central_event, "corrected", scientific_name="Ardea herodias", reviewer="at the office")
    with sessions.begin() as session:  # then, before the next sync, on the trap again: the latest
        store.add_correction(session, event_id, "corrected", scientific_name="Ardea alba", reviewer="on the trap, later")
    second = push(config, pg_url)
    assert (second.reviews_pushed, second.reviews_pulled) == (1, 1)
    assert push(config, pg_url).reviews_pulled == 0  # once each
    with sessions() as session:
        local_history = [(c.scientific_name, c.reviewer) for c in store.review_history(session, event_id)]
        assert store.latest_reviews(session, [event_id])[event_id].scientific_name == "Ardea alba"
    with central() as session:
        central_history = [(c.scientific_name, c.reviewer) for c in store.review_history(session, central_event)]
        assert store.latest_reviews(session, [central_event])[central_event].scientific_name == "Ardea alba"
    assert (
        local_history
        == central_history
        == [
            ("Ardea alba", "on the trap, later"),
            ("Ardea herodias", "at the office"),
            ("Ardea cinerea", "on the trap"),
        ]
    )
    result = CliRunner().invoke(cli, ["events", "-c", str(config.source)])
    assert "Ardea alba" in result.output, result.output
    # The pull taught the camera's head (issue 23): the event's frames are examples of its latest review.
    from birdtrap.store.examples import examples_of

    with sessions() as session:
        camera = session.get(store.EventRecord, event_id).camera_id
        assert sorted(e.label for e in examples_of(session, camera)) == ["Ardea alba"] * 3
    with central.begin() as session:  # the office has the last word
        store.add_correction(session, central_event, "corrected", scientific_name="Ardea herodias", reviewer="at the office, later")
    assert push(config, pg_url).reviews_pulled == 1
    with sessions() as session:
        assert sorted(e.label for e in examples_of(session, camera)) == ["Ardea herodias"] * 3
    # ... and the examples travel to the centre with the same sync, relabelled in place.
    assert query(pg_url, f"select label from camera_examples where camera_id = '{camera}'") == [("Ardea herodias",)] * 3
    assert push(config, pg_url).examples_pushed == 0, "only what changed is written"


def _fleet_rows(pg_url: str) -> dict[str, dict]:
    import json

    result = CliRunner().invoke(cli, ["fleet", "status", "--from", pg_url, "--format", "json"])
    assert result.exit_code == 0, result.output
    return {row["camera"]: row for row in json.loads(result.output)}


def test_a_cameras_learnt_heads_travel_with_sync_and_which_is_in_use_follows_the_trap(trap, pg_url):
    import numpy as np

    from birdtrap.identify.camera_head import CameraHead
    from birdtrap.store import examples as examples_store

    config, sessions, ingest = trap
    ingest(HERON[0].name)
    camera = config.camera.id

    def head(margin: float) -> CameraHead:
        means = np.eye(2, 4, dtype=np.float32)
        return CameraHead(("Athene cunicularia", "blank"), means, np.zeros(4, np.float32), margin, "species-penultimate", (3, 5))

    with sessions.begin() as session:
        first = examples_store.save_head(session, camera, head(0.1), {"head_right": 7}, in_use=True)
        first_bytes = first.head
    assert push(config, pg_url).heads_pushed == 1
    assert query(pg_url, "select in_use from camera_heads") == [(True,)]
    assert query(pg_url, "select head from camera_heads")[0][0] == first_bytes
    assert push(config, pg_url).heads_pushed == 0, "a head already there is not sent again"
    with sessions.begin() as session:  # relearnt: the new head is put in use, the old one retired
        examples_store.save_head(session, camera, head(0.2), {"head_right": 8}, in_use=True)
    assert push(config, pg_url).heads_pushed == 2  # the new row, and the old one's in_use
    assert query(pg_url, f"select in_use from camera_heads where camera_id = '{camera}' order by created_at") == [(False,), (True,)]


def test_fleet_status_shows_each_trap_as_its_device_counts_it_in_the_cli_and_on_the_web(devices, pg_url, tmp_path):
    for config in devices.values():
        push(config_module.load(config), pg_url)
    result = CliRunner().invoke(cli, ["fleet", "status", "--from", pg_url, "--format", "json"])
    assert result.exit_code == 0, result.output
    import json

    rows = {row["camera"]: row for row in json.loads(result.output)}
    assert set(rows) == set(devices)
    for camera, config in devices.items():
        counts = dict(_local(config, "select status, count(*) from images group by status"))
        ((newest,),) = _local(config, "select max(captured_at) from images where status = 'done'")
        row = rows[camera]
        assert (row["photos"], row["failed"], row["pending"]) == (counts.get("done", 0), counts.get("failed", 0), counts.get("pending", 0))
        assert datetime.fromisoformat(row["last_photo"]) == datetime.fromisoformat(newest)
        assert row["version"] and row["schema"] == store.HEAD_REVISION and row["last_sync"]
        assert row["health"] == "ok"
    # A camera-health problem open on a trap travels with its next sync, and goes when resolved.
    from birdtrap.store import health as health_store

    camera, config = next(iter(devices.items()))
    loaded = config_module.load(config)
    with store.open_store(loaded.database.url, create=False).begin() as session:
        health_store.open_problem(session, camera, "lens", "lens blocked or fogged since 2026-06-01 04:10")
    push(loaded, pg_url)
    rows = _fleet_rows(pg_url)
    assert rows[camera]["health"] == "lens: lens blocked or fogged since 2026-06-01 04:10"
    with store.open_store(loaded.database.url, create=False).begin() as session:
        health_store.resolve_problem(session, camera, "lens")
    push(loaded, pg_url)
    rows = _fleet_rows(pg_url)
    assert rows[camera]["health"] == "ok"
    from fastapi.testclient import TestClient

    from birdtrap.web.app import create_app

    central = config_module.load(write_config(tmp_path, database={"url": pg_url}, gate={"path": None}, detector={"path": None}))
    page = TestClient(create_app(central)).get("/fleet")
    assert page.status_code == 200
    cells = re.findall(r"<td>([^<]*)</td>", page.text)
    for camera in devices:
        row = rows[camera]
        at = cells.index(camera)
        assert cells[at + 3 : at + 7] == [str(row["photos"]), str(row["failed"]), str(row["pending"]), "ok"]


# --- the central schema: migrations and the compatibility rule; a role per trap --------------------


def test_a_centre_one_revision_ahead_accepts_the_trap_and_one_too_far_ahead_says_to_upgrade_it(devices, pg_url):
    from birdtrap.store.central import COMPATIBLE_VERSIONS

    pond = config_module.load(devices["pond-cam"])
    push(pond, pg_url)
    ((central_id,),) = query(pg_url, "select value from central_meta where key = 'central_id'")
    engine = create_engine(pg_url)

    def centre_at(revision: str) -> None:  # the centre as a newer birdtrap would have left it
        with engine.begin() as connection:
            connection.execute(text("update alembic_version set version_num = :r"), {"r": revision})

    try:
        centre_at(f"{int(store.HEAD_REVISION) + 1:04d}")
        ahead = push(pond, pg_url, full=True)
        assert ahead.images == len(DEVICE_A) and ahead.central == central_id
        too_far = f"{int(store.HEAD_REVISION) + COMPATIBLE_VERSIONS + 1:04d}"
        centre_at(too_far)
        with pytest.raises(SyncError) as refused:
            push(pond, pg_url)
        assert f"has device schema {too_far}, {COMPATIBLE_VERSIONS + 1} revisions newer than this trap's {store.HEAD_REVISION}" in str(
            refused.value
        )
        assert "Upgrade birdtrap on this trap." in str(refused.value)
    finally:
        engine.dispose()
    assert_central_matches(pg_url, devices["pond-cam"])


def test_a_trap_newer_than_the_centre_changes_nothing_unless_told_to_upgrade_it(devices, postgres, pg_url):
    from alembic import command

    from birdtrap.store import central

    engine = create_engine(pg_url)
    with engine.begin() as connection:  # a centre made by the release before this one
        command.upgrade(store._alembic(connection), "0003")
    engine.dispose()
    marsh = devices["marsh-cam"]
    result = CliRunner().invoke(cli, ["sync", "--to", pg_url, "-c", str(marsh)])
    assert result.exit_code == 1
    expected = f"device schema 0003 (this trap: {store.HEAD_REVISION}); central schema none (this trap: {central.CENTRAL_HEAD})"
    assert f"is older than this trap: {expected}" in result.output
    assert "Upgrade it once with `birdtrap sync --upgrade-central`" in result.output
    assert query(pg_url, "select version_num from alembic_version") == [("0003",)]
    assert query(pg_url, "select count(*) from images") == [(0,)]
    result = CliRunner().invoke(cli, ["sync", "--to", pg_url, "--upgrade-central", "-c", str(marsh)])
    assert result.exit_code == 0, result.output
    assert query(pg_url, "select version_num from alembic_version") == [(store.HEAD_REVISION,)]
    assert query(pg_url, "select version_num from central_version") == [(central.CENTRAL_HEAD,)]
    assert_central_matches(pg_url, marsh)
    fresh = postgres.url(postgres.create_database())
    push(config_module.load(marsh), fresh)
    assert _schema(pg_url) == _schema(fresh)  # upgraded by the migrations = made new


def _schema(url: str) -> dict:
    from sqlalchemy import inspect

    engine = create_engine(url)
    try:
        inspector = inspect(engine)
        return {
            table: (
                sorted((c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)),
                sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)),
                sorted(c["name"] for c in inspector.get_unique_constraints(table)),
            )
            for table in inspector.get_table_names()
        }
    finally:
        engine.dispose()


def test_the_central_head_constant_is_the_central_migrations_head():
    from birdtrap.store import central

    assert central.CENTRAL_HEAD == central.central_migrations_head()


def _documented_sql(title: str) -> str:
    """The SQL block of docs/SCALE.md that starts with `-- birdtrap: <title>`."""
    text_ = (Path(__file__).parents[1] / "docs" / "SCALE.md").read_text()
    (block,) = re.findall(rf"```sql\n-- birdtrap: {re.escape(title)}\n(.*?)```", text_, re.S)
    return block


def test_a_trap_role_writes_its_own_camera_and_is_refused_another_cameras_rows(devices, postgres, pg_url):
    pond, marsh = devices["pond-cam"], devices["marsh-cam"]
    push(config_module.load(marsh), pg_url)  # as the owner: makes the schema and marsh's rows
    engine = create_engine(pg_url)
    with engine.begin() as connection:  # the two blocks of docs/SCALE.md, as written
        exists = connection.execute(text("select 1 from pg_roles where rolname = 'birdtrap_trap'")).first()
        group = _documented_sql("group role for traps")
        if exists:  # roles are the server's, shared by the session's databases: only the grants again
            group = group.replace("CREATE ROLE birdtrap_trap NOLOGIN;", "")
        connection.execute(text(group))
        one_trap = _documented_sql("one trap")
        if connection.execute(text("select 1 from pg_roles where rolname = 'trap_pond'")).first():
            one_trap = one_trap.split(";", 1)[1]
        connection.execute(text(one_trap))
    engine.dispose()
    as_pond = pg_url.replace("birdtrap@", "trap_pond@")
    summary = push(config_module.load(pond), as_pond)  # its own camera: allowed
    assert summary.images == len(DEVICE_A)
    with pytest.raises(SyncError) as refused:  # pond's credentials, marsh's rows
        push(config_module.load(marsh), as_pond, full=True, retries=0)
    assert "refused" in str(refused.value) and "row-level security" in str(refused.value)
    marsh_rows = query(pg_url, "select id, path, label, event_id from images where camera_id = 'marsh-cam' order by id")
    with pytest.raises(Exception, match="row-level security"):
        columns = "(path, sha256, camera_id, status, discovered_at)"
        query(as_pond, f"insert into images {columns} values ('/x.jpg', 'x', 'marsh-cam', 'done', now())")
    engine = create_engine(as_pond)
    with engine.begin() as connection:
        assert connection.execute(text("update images set label = 'overwritten' where camera_id = 'marsh-cam'")).rowcount == 0
        assert connection.execute(text("delete from events where camera_id = 'marsh-cam'")).rowcount == 0
        assert connection.execute(text("select count(*) from images where camera_id = 'marsh-cam'")).scalar() == 0
    engine.dispose()
    with pytest.raises(Exception, match="row-level security"):  # nor teach another camera (central c003)
        columns = "(camera_id, sha256, path, label, source, created_at)"
        query(as_pond, f"insert into camera_examples {columns} values ('marsh-cam', 'x', '/x.jpg', 'Ardea alba', 'review', now())")
    assert query(pg_url, "select id, path, label, event_id from images where camera_id = 'marsh-cam' order by id") == marsh_rows
    assert_central_matches(pg_url, pond, marsh)


def test_archive_takes_each_photos_camera_from_its_folder_and_no_event_spans_two_cameras(pg_url, tmp_path):
    """Two SD cards whose bursts were taken at the same minutes: one run, two cameras, their own events."""
    from test_archive import archive_config, make_archive

    cards = tmp_path / "cards"
    made = {camera: make_archive(cards / camera, 9, seed=seed) for seed, camera in enumerate(("cam-a", "cam-b"), start=3)}
    config = archive_config(tmp_path, database={"url": pg_url})
    result = CliRunner().invoke(cli, ["archive", str(cards), "--workers", "1", "--batch", "4", "--no-progress", "--camera-from-folders",
                                      "-c", str(config)])  # fmt: skip
    assert result.exit_code == 0, result.output
    stored = dict(query(pg_url, "select path, camera_id from images where status = 'done'"))
    assert stored == {str(path.resolve()): camera for camera, paths in made.items() for path in paths}
    assert query(pg_url, "select event_id from images group by event_id having count(distinct camera_id) > 1") == []
    per_camera = dict(query(pg_url, "select camera_id, count(*) from events group by camera_id"))
    assert per_camera == {"cam-a": 3, "cam-b": 3}  # bursts of three, 2 minutes apart, per card
    assert query(pg_url, "select camera_id, sum(photo_count) from events group by camera_id order by 1") == [("cam-a", 9), ("cam-b", 9)]


def test_the_duplicate_events_of_a_second_url_spelling_are_folded_into_the_device_id(trap, pg_url):
    """A central database as the old per-URL sync left it: every event twice, the photos on the second copy."""
    config, sessions, ingest = trap
    for frame in HERON[:4]:
        ingest(frame.name)
    first = push(config, pg_url)
    legacy = str(uuid.uuid4())
    engine = create_engine(pg_url)
    with engine.begin() as connection:
        for local, event in connection.execute(text("select source_event_id, event_id from sync_events")).all():
            (copy,) = connection.execute(
                text(
                    'insert into events (camera_id, deployment_id, start, "end", photo_count, bird_photo_count, kind, label, '
                    'scientific_name, common_name, taxon_rank, confidence) select camera_id, deployment_id, start, "end", '
                    "photo_count, bird_photo_count, kind, label, scientific_name, common_name, taxon_rank, confidence "
                    "from events where id = :e returning id"
                ),
                {"e": event},
            ).one()
            connection.execute(text("insert into sync_events values (:s, :l, :c)"), {"s": legacy, "l": local, "c": copy})
            connection.execute(text("update images set event_id = :c where event_id = :e"), {"c": copy, "e": event})
    engine.dispose()
    ((events_before,),) = query(pg_url, "select count(*) from events")
    assert events_before == 2 * _device_events(Path(config.source))
    with sessions.begin() as session:  # what migration 0006 leaves for a device that synced under two URLs
        session.add(store.Meta(key="sync_legacy_sources", value=legacy))
    summary = push(config, pg_url)
    assert summary.duplicates_removed == events_before // 2 and summary.device == first.device
    assert query(pg_url, "select count(*) from events") == [(_device_events(Path(config.source)),)]
    assert query(pg_url, "select distinct source from sync_events") == [(first.device,)]
    assert_central_matches(pg_url, Path(config.source))
