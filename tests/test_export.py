"""Exports: a Camtrap DP package and a training set, from a database the real daemon filled.

The daemon runs once for the module (heron burst, a chickadee, a cat, a deer, two photos of people,
a hawk) and every test exports from that database. The package is validated offline against the
standard's own profile and table schemas in ../shared/data/camtrap-dp/: the schema URLs in
datapackage.json are replaced by those files, the profile's two remote references are served from
local copies, and any network connection attempted during validation fails the test.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shlex
import shutil
import socket
from pathlib import Path

import frictionless
import jsonschema
import pytest
from click.testing import CliRunner
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from birdtrap.cli import cli

from conftest import HERON, SHARED, DaemonProcess, copy_photo, rows, wait_for, write_config

CAMTRAP = SHARED / "data" / "camtrap-dp"
PHOTOS = [p.name for p in HERON] + [
    "IMG_1435.JPG",  # a burrowing owl by day, named at species rank above 0.8 (the heron burst is infrared: a family)
    "bird.bmp",
    "cat.bmp",
    "2021-05-28_SYFR0041_deer.JPG",
    "kite_and_cold.jpg",
    "grace_hopper.bmp",
    "IMG_0708.JPG",
]
DEPLOYMENT = ["--latitude", "51.0543", "--longitude", "3.7174", "--utc-offset", "+02:00"]
CONTRIBUTOR = ["--contributor", "Jane Doe <jane@example.org>", "--location-name", "Pond, north bank"]


@pytest.fixture(scope="module")
def season(tmp_path_factory) -> tuple[Path, Path]:
    """(folder, config) of a database filled by `birdtrap run` from real photos."""
    folder = tmp_path_factory.mktemp("season")
    config = write_config(folder, camera={"id": "pond-cam", "deployment_id": "pond-2021"})
    for name in PHOTOS:
        copy_photo(name, folder / "inbox")
    daemon = DaemonProcess(config)
    try:
        wait_for(lambda: _finished(folder) >= len(PHOTOS), timeout=90, what="the daemon to process every photo")
        assert daemon.stop() == 0, daemon.output()
    finally:
        if daemon.alive():
            daemon.process.kill()
            daemon.process.wait()
        daemon.handle.close()
    return folder, config


def _finished(folder: Path) -> int:
    try:
        return len([r for r in rows(folder) if r[1] in ("done", "failed")])
    except Exception:  # the daemon has created the file but not yet the tables
        return 0


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("this test is offline: validation tried to fetch a URL")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def profile_errors(descriptor: dict) -> list[str]:
    """datapackage.json against camtrap-dp-profile.json, with jsonschema, offline.

    The profile refers to the Data Package profile and to GeoJSON by URL; frictionless ships both
    (its own Data Package profile, and geojson.json), so those local copies answer the references.
    """
    profile = json.loads((CAMTRAP / "camtrap-dp-profile.json").read_text())
    geojson = json.loads((Path(frictionless.__file__).parent / "assets" / "profiles" / "geojson.json").read_text())
    data_package = frictionless.Package.metadata_ensure_profile()
    registry = Registry().with_resources(
        [
            ("https://specs.frictionlessdata.io/schemas/data-package.json", Resource.from_contents(data_package, DRAFT4)),
            ("http://json.schemastore.org/geojson.json", Resource.from_contents(geojson, DRAFT4)),
        ]
    )
    validator = jsonschema.Draft4Validator(profile, registry=registry, format_checker=jsonschema.FormatChecker())
    return [f"{'/'.join(map(str, e.path)) or '(package)'}: {e.message}" for e in validator.iter_errors(descriptor)]


def validate_tables(folder: Path) -> frictionless.Report:
    """The three CSVs against the standard's table schemas (types, formats, enums, keys across tables)."""
    descriptor = json.loads((folder / "datapackage.json").read_text())
    descriptor.pop("profile")  # a URL frictionless would fetch; the profile is checked by profile_errors
    for resource in descriptor["resources"]:
        assert resource["schema"].endswith(f"/1.0.2/{resource['name']}-table-schema.json")
        resource["schema"] = json.loads((CAMTRAP / f"{resource['name']}-table-schema.json").read_text())
    return frictionless.Package(descriptor, basepath=str(folder)).validate()


def problems(folder: Path) -> list[str]:
    report = validate_tables(folder)
    found = profile_errors(json.loads((folder / "datapackage.json").read_text()))
    found += [f"{task.name}: {error.message}" for task in report.tasks for error in task.errors]
    return found + [error.message for error in report.errors]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_package(season: tuple[Path, Path], out: Path, *extra: str):
    folder, config = season
    return CliRunner().invoke(cli, ["export", "camtrap-dp", str(out), *DEPLOYMENT, *CONTRIBUTOR, *extra, "-c", str(config)])


def test_the_camtrap_dp_package_of_a_real_season_passes_offline_validation(season, tmp_path, no_network):
    folder, _ = season
    result = write_package(season, tmp_path / "package")
    assert result.exit_code == 0, result.output
    package = tmp_path / "package"
    assert problems(package) == []
    report = validate_tables(package)
    done = rows(folder, "select count(*) from images where status = 'done'")[0][0]
    events = rows(folder, "select count(distinct event_id) from images where status = 'done' and event_id is not null")[0][0]
    # The validation really read every row (not an empty or skipped table).
    assert {task.name: task.stats["rows"] for task in report.tasks} == {"deployments": 1, "media": done, "observations": events + done}
    assert f"photos {done}, event observations {events}, photo observations {done}" in result.output


def test_the_heron_burst_is_one_machine_classified_event_with_local_times_and_offset(season, tmp_path):
    folder, _ = season
    assert write_package(season, tmp_path / "package").exit_code == 0
    observations = read_csv(tmp_path / "package" / "observations.csv")
    ((event_id,),) = rows(folder, "select distinct event_id from images where path like '%RCNX0031.JPG'")
    (heron,) = [o for o in observations if o["observationLevel"] == "event" and o["eventID"] == f"event-{event_id}"]
    assert (heron["eventStart"], heron["eventEnd"]) == ("2021-04-11T20:43:09+02:00", "2021-04-11T20:43:15+02:00")
    ((name, rank, confidence),) = rows(folder, f"select scientific_name, taxon_rank, confidence from events where id = {event_id}")
    assert heron["observationType"] == "animal" and heron["scientificName"] == name
    assert heron["classificationMethod"] == "machine"
    assert float(heron["classificationProbability"]) == pytest.approx(confidence, abs=1e-4)
    ((model_name, model_version),) = rows(folder, "select name, version from models")
    assert heron["classifiedBy"] == f"{model_name} {model_version}".strip()
    frames = [o for o in observations if o["observationLevel"] == "media" and o["eventID"] == heron["eventID"]]
    assert len(frames) == len(HERON)

    descriptor = json.loads((tmp_path / "package" / "datapackage.json").read_text())
    assert {"scientificName": name, "taxonRank": rank} in [
        {k: t[k] for k in ("scientificName", "taxonRank")} for t in descriptor["taxonomic"]
    ]
    named = {o["scientificName"] for o in observations if o["scientificName"]}
    assert {t["scientificName"] for t in descriptor["taxonomic"]} == named
    assert descriptor["contributors"] == [{"title": "Jane Doe", "email": "jane@example.org", "role": "contact"}]
    (deployment,) = read_csv(tmp_path / "package" / "deployments.csv")
    assert deployment["deploymentID"] == "pond-2021" and deployment["cameraID"] == "pond-cam"
    assert deployment["locationName"] == "Pond, north bank"


def test_a_detected_box_becomes_the_standards_corner_width_and_height(season, tmp_path):
    folder, _ = season
    assert write_package(season, tmp_path / "package").exit_code == 0
    observations = {o["mediaID"]: o for o in read_csv(tmp_path / "package" / "observations.csv") if o["mediaID"]}
    boxed = rows(
        folder,
        "select sha256, box_x0, box_y0, box_x1, box_y1 from images where status = 'done' and kind = 'bird' "
        "and box_x0 is not null and not (box_x0 = 0 and box_y0 = 0 and box_x1 = 1 and box_y1 = 1)",
    )
    assert boxed, "no bird photo of the season was decided on a region; the test needs one"
    for sha256, x0, y0, x1, y1 in boxed:
        row = observations[sha256[:16]]
        box = [float(row[k]) for k in ("bboxX", "bboxY", "bboxWidth", "bboxHeight")]
        assert box == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=2e-6)
    # Nothing seen, or nothing sure: no box (at the default no frame is blank: see test_kinds).
    unboxed = [o for o in observations.values() if o["observationType"] in ("blank", "unknown")]
    assert unboxed and all(o["bboxX"] == "" for o in unboxed)


@pytest.mark.parametrize(
    "breakage",
    ["media timestamp without offset", "observation of a missing photo", "descriptor without contributors"],
)
def test_a_broken_package_fails_validation(season, tmp_path, no_network, breakage):
    package = tmp_path / "package"
    assert write_package(season, package).exit_code == 0
    if breakage == "media timestamp without offset":
        media = package / "media.csv"
        media.write_text(media.read_text().replace("2021-04-11T20:43:09+02:00", "2021-04-11 20:43:09", 1))
        expected = '"2021-04-11 20:43:09"'
    elif breakage == "observation of a missing photo":
        observations = read_csv(package / "observations.csv")
        photo = next(o for o in observations if o["mediaID"])
        text = (package / "observations.csv").read_text()
        (package / "observations.csv").write_text(text.replace(f",{photo['mediaID']},", ",0000000000000000,", 1))
        expected = '"0000000000000000" not found in the lookup table "media"'
    else:
        descriptor = json.loads((package / "datapackage.json").read_text())
        del descriptor["contributors"]
        (package / "datapackage.json").write_text(json.dumps(descriptor))
        expected = "'contributors' is a required property"
    found = problems(package)
    assert len(found) == 1 and expected in found[0], found


def test_people_can_be_left_out_of_the_package(season, tmp_path, no_network):
    folder, _ = season
    people = rows(folder, "select count(*) from images where status = 'done' and kind = 'person'")[0][0]
    assert people >= 1, "the photos of people were not decided as 'person'; the test needs one"
    done = rows(folder, "select count(*) from images where status = 'done'")[0][0]
    result = write_package(season, tmp_path / "package", "--exclude-people")
    assert result.exit_code == 0, result.output
    assert f"left out {people} photos of people (--exclude-people)" in result.output
    assert len(read_csv(tmp_path / "package" / "media.csv")) == done - people
    assert all(o["observationType"] != "human" for o in read_csv(tmp_path / "package" / "observations.csv"))
    assert problems(tmp_path / "package") == []


def test_start_and_end_pick_one_burst_and_become_the_deployment_times(season, tmp_path):
    result = write_package(season, tmp_path / "package", "--start", "2021-04-11", "--end", "2021-04-11T23:59:59")
    assert result.exit_code == 0, result.output
    # By content: a frame with a person box is a copy with the person hidden, named by its mediaID (issue 19).
    assert {m["mediaID"] for m in read_csv(tmp_path / "package" / "media.csv")} == {
        hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in HERON
    }
    (deployment,) = read_csv(tmp_path / "package" / "deployments.csv")
    assert (deployment["deploymentStart"], deployment["deploymentEnd"]) == ("2021-04-11T00:00:00+02:00", "2021-04-11T23:59:59+02:00")


def test_missing_deployment_metadata_is_named_by_flag(season, tmp_path):
    _, config = season
    result = CliRunner().invoke(cli, ["export", "camtrap-dp", str(tmp_path / "package"), "--latitude", "51", "-c", str(config)])
    assert result.exit_code == 2
    needs = "Error: Camtrap DP needs --longitude (or camera.longitude), --utc-offset (or camera.utc_offset), --contributor, e.g."
    assert needs in result.output
    assert not (tmp_path / "package").exists()


def test_deployment_metadata_can_come_from_the_config(season, tmp_path):
    _, config = season
    import yaml

    data = yaml.safe_load(config.read_text())
    data["camera"] = {**data.get("camera", {}), "latitude": 51.05, "longitude": 3.72, "utc_offset": "+02:00", "location_name": "Pond"}
    configured = config.with_name("config-with-camera.yaml")  # beside the original: same relative paths
    configured.write_text(yaml.safe_dump(data))
    args = ["export", "camtrap-dp", str(tmp_path / "package"), *CONTRIBUTOR, "-c", str(configured)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    deployments = (tmp_path / "package" / "deployments.csv").read_text()
    assert "51.05" in deployments and "3.72" in deployments and "+02:00" in deployments


def test_a_bad_utc_offset_is_rejected_with_the_format(season, tmp_path):
    _, config = season
    result = CliRunner().invoke(cli, ["export", "camtrap-dp", str(tmp_path / "p"), *CONTRIBUTOR, "--utc-offset", "CEST", "-c", str(config)])
    assert result.exit_code == 2
    assert "'CEST' is not a UTC offset; write it as +02:00, -05:30 or Z" in result.output


def test_an_existing_package_is_replaced_only_with_overwrite(season, tmp_path):
    assert write_package(season, tmp_path / "package").exit_code == 0
    again = write_package(season, tmp_path / "package")
    assert again.exit_code == 1
    assert f"Error: {tmp_path / 'package'} already holds datapackage.json, deployments.csv, media.csv, observations.csv" in again.output
    assert "pass --overwrite to replace them" in again.output
    assert write_package(season, tmp_path / "package", "--overwrite").exit_code == 0


def confident_species(folder: Path, min_confidence: float) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for name, path in rows(
        folder,
        "select scientific_name, path from images where status = 'done' and kind = 'bird' "
        f"and taxon_rank = 'species' and confidence >= {min_confidence}",
    ):
        found.setdefault(name, set()).add(Path(path).name)
    return found


def folders(out: Path) -> dict[str, set[str]]:
    return {label.name: {p.name for p in label.iterdir()} for label in out.iterdir() if label.is_dir()}


def test_the_training_set_links_confident_species_photos_into_scientific_name_folders(season, tmp_path):
    folder, config = season
    expected = confident_species(folder, 0.8)
    assert expected, "no photo of the season reached 0.8 at species rank; the test needs one"
    out = tmp_path / "dataset"
    result = CliRunner().invoke(cli, ["export", "training-set", str(out), "--min-confidence", "0.8", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert folders(out) == expected  # "Athene cunicularia", with its space: the label training/ will write to labels.txt
    for link in out.glob("*/*"):
        assert link.is_symlink() and link.resolve() == (folder / "inbox" / link.name).resolve()
    total = sum(map(len, expected.values()))
    assert f"linked {total} photos into {out} (0 already there)" in result.output
    again = CliRunner().invoke(cli, ["export", "training-set", str(out), "--min-confidence", "0.8", "-c", str(config)])
    assert f"linked 0 photos into {out} ({total} already there)" in again.output


def test_a_copied_training_set_never_replaces_another_file_of_the_same_name(season, tmp_path):
    folder, config = season
    expected = confident_species(folder, 0.8)
    label, names = sorted(expected.items())[0]
    name = sorted(names)[0]
    out = tmp_path / "dataset"
    (out / label).mkdir(parents=True)
    shutil.copyfile(copy_photo("cat.bmp", tmp_path / "elsewhere"), out / label / name)  # a different photo, same name
    result = CliRunner().invoke(cli, ["export", "training-set", str(out), "--min-confidence", "0.8", "--copy", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert (out / label / name).read_bytes() == (tmp_path / "elsewhere" / "cat.bmp").read_bytes()
    (renamed,) = [p for p in (out / label).iterdir() if p.name != name and p.stem.startswith(Path(name).stem)]
    assert not renamed.is_symlink() and renamed.read_bytes() == (folder / "inbox" / name).read_bytes()
    assert f"{renamed.name}: {name} was taken by another file in {out / label}" in result.output


def test_review_lists_the_least_confident_frames_first_and_writes_nothing(season, tmp_path):
    folder, config = season
    out = tmp_path / "dataset"
    result = CliRunner().invoke(cli, ["export", "training-set", str(out), "--min-confidence", "0.8", "--review", "-c", str(config)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["confidence", "kind", "taxon_rank", "label", "path"]
    listed = [line for line in lines[1:] if line.strip()[:1].isdigit()]
    confidences = [float(line.split()[0]) for line in listed]
    assert confidences and confidences == sorted(confidences)
    least = rows(folder, "select min(confidence) from images where status = 'done' and kind in ('bird', 'unsure')")[0][0]
    assert confidences[0] == pytest.approx(least, abs=1e-3)
    assert all(c < 0.8 or line.split()[2] != "species" for c, line in zip(confidences, listed, strict=True))
    assert not out.exists()


def test_a_reviewed_event_is_exported_as_a_human_classification_and_trains_under_the_corrected_name(season, tmp_path, no_network):
    import shutil

    from birdtrap import store

    folder, _ = season
    copy = tmp_path / "reviewed"
    shutil.copytree(folder, copy, symlinks=True)  # the module's season stays unreviewed
    config = copy / "config.yaml"
    heron_event = rows(copy, "select event_id from images where path like '%RCNX0031%'")[0][0]
    sessions = store.open_store(f"sqlite:///{copy / 'birdtrap.db'}")
    with sessions.begin() as session:
        store.add_correction(
            session, heron_event, "corrected", scientific_name="Ardea cinerea", common_name="Grey Heron", reviewer="Jane"
        )
    result = CliRunner().invoke(cli, ["export", "camtrap-dp", str(tmp_path / "package"), *DEPLOYMENT, *CONTRIBUTOR, "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert problems(tmp_path / "package") == []
    observations = read_csv(tmp_path / "package" / "observations.csv")
    reviewed = [o for o in observations if o["eventID"] == f"event-{heron_event}"]
    assert len(reviewed) == 11  # the event and its ten photos
    methods = {(o["scientificName"], o["classificationMethod"], o["classifiedBy"]) for o in reviewed}
    assert methods == {("Ardea cinerea", "human", "Jane")}
    descriptor = json.loads((tmp_path / "package" / "datapackage.json").read_text())
    assert "Ardea cinerea" in {taxon["scientificName"] for taxon in descriptor["taxonomic"]}
    out = tmp_path / "training"
    trained = CliRunner().invoke(cli, ["export", "training-set", str(out), "--min-confidence", "0.99", "-c", str(config)])
    assert trained.exit_code == 0, trained.output
    assert len(list((out / "Ardea cinerea").iterdir())) == 10


def test_a_photo_recorded_by_a_path_with_dot_dot_is_stored_normalised_and_its_package_validates(tmp_path, monkeypatch, no_network):
    """`classify --record ../photos/../x.jpg` stored the path as typed; the media row then failed
    the standard's filePath constraint (issue 18)."""
    config = write_config(tmp_path, camera={"id": "pond-cam", "deployment_id": "pond-2021"})
    copy_photo(HERON[0].name, tmp_path / "photos")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    typed = f"../photos/../photos/{HERON[0].name}"
    result = CliRunner().invoke(cli, ["classify", "--record", typed, "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert rows(tmp_path, "select path from images") == [(str(tmp_path / "photos" / HERON[0].name),)]
    out = tmp_path / "package"
    assert CliRunner().invoke(cli, ["export", "camtrap-dp", str(out), *DEPLOYMENT, *CONTRIBUTOR, "-c", str(config)]).exit_code == 0
    assert problems(out) == []


def test_the_camtrap_dp_help_example_works_on_a_config_that_names_no_deployment(tmp_path):
    config = write_config(tmp_path, camera={"id": "pond-cam"})
    photos = [copy_photo(path.name, tmp_path / "photos") for path in HERON[:2]]
    assert CliRunner().invoke(cli, ["classify", "--record", *map(str, photos), "-c", str(config)]).exit_code == 0
    help_text = CliRunner().invoke(cli, ["export", "camtrap-dp", "--help"]).output
    example = help_text.split("\b", 1)[-1] if "\b" in help_text else help_text
    line = " ".join(part.strip().rstrip("\\") for part in example.split("Options:")[0].splitlines() if part.strip())
    args = shlex.split(line[line.index("birdtrap export camtrap-dp") :])[3:]
    args[0] = str(tmp_path / "season-2024")
    result = CliRunner().invoke(cli, ["export", "camtrap-dp", *args, "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert read_csv(tmp_path / "season-2024" / "deployments.csv")[0]["deploymentID"] == "pond-cam"


def test_export_network_on_a_device_database_says_to_give_the_central_one(season, tmp_path):
    _, config = season
    result = CliRunner().invoke(cli, ["export", "network", str(tmp_path / "out"), "--contributor", "Jane Doe", "-c", str(config)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "no such table" not in result.output
    assert "is not a central database" in result.output and "--from URL" in result.output and "birdtrap sync --to URL" in result.output
