"""Archive mode: a folder tree classified on a Dask LocalCluster, as the daemon would classify it.

The archive is ~200 photos generated from the real camera-trap photos of ../shared/images (each
cropped and re-encoded differently, so each has its own content and sha256), in bursts of three
frames two seconds apart, plus a truncated file, an empty file and an exact copy. One run is
stopped part-way (Ctrl-C), a second resumes it, a third finds nothing to do; every test reads
the database those runs left.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from birdtrap import config as config_module
from birdtrap.cli import cli
from birdtrap.daemon.events import split_bursts
from birdtrap.scale.archive import run_archive

from conftest import IMAGES, rows, write_config

PHOTOS = 198
BURST = 3
START = 1_650_000_000  # file times: the photos have no EXIF, so the file time is the capture time


def make_archive(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` distinct JPEGs (1024 px) from the shared camera-trap photos, in three card folders.

    Frames of a burst are 2 s apart and bursts 2 min apart, so events are known in advance.
    """
    sources = sorted(p for p in IMAGES.glob("camtrap_*/*") if p.suffix.lower() in (".jpg", ".jpeg"))
    images = []
    for source in sources:
        image = cv2.imread(str(source), cv2.IMREAD_REDUCED_COLOR_2)
        if image is not None:
            images.append(image)
    rng = np.random.default_rng(seed)
    made = []
    for i in range(count):
        image = images[i % len(images)]
        height, width = image.shape[:2]
        keep = rng.uniform(0.8, 1.0)
        h, w = int(height * keep), int(width * keep)
        y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        photo = cv2.resize(image[y : y + h, x : x + w], (1024, int(1024 * h / w)), interpolation=cv2.INTER_AREA)
        path = folder / f"card-{i // 66 + 1}" / f"IMG_{i:04d}.JPG"
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), photo, [cv2.IMWRITE_JPEG_QUALITY, 88])
        when = START + (i // BURST) * 120 + (i % BURST) * 2
        os.utime(path, (when, when))
        made.append(path)
    return made


def archive_config(tmp_path: Path, **sections: dict) -> Path:
    """The test config, without gate and detector (speed: one species invoke per photo)."""
    return write_config(
        tmp_path,
        gate={"path": None},
        detector={"path": None},
        model={"threads": 1},
        batch={"size": 8},
        logging={"level": "WARNING"},
        **sections,
    )


@pytest.fixture(scope="module")
def archived(tmp_path_factory):
    """Run 1 stopped after ~60 photos, run 2 resumes, run 3 finds nothing: what each left behind."""
    base = tmp_path_factory.mktemp("archive")
    folder = base / "sdcards"
    photos = make_archive(folder, PHOTOS)
    (folder / "card-1" / "truncated.JPG").write_bytes(photos[0].read_bytes()[:5000])
    (folder / "card-2" / "empty.jpg").write_bytes(b"")
    (folder / "card-3" / "copy-of-IMG_0001.JPG").write_bytes(photos[1].read_bytes())
    config = config_module.load(archive_config(base))

    def stop_part_way(totals: Counter) -> None:
        if totals["done"] >= 60:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_archive(config, [folder], workers=2, batch_size=16, progress=False, on_batch=stop_part_way)
    first = {path: (status, processed) for path, status, processed in rows(base, "select path, status, processed_at from images")}
    second = run_archive(config, [folder], workers=2, batch_size=16, progress=False)
    third = run_archive(config, [folder], workers=2, batch_size=16, progress=False)
    return base, folder, photos, first, second, third


def test_a_stopped_archive_run_resumes_and_no_photo_is_done_twice(archived):
    base, folder, photos, first, second, third = archived
    finished_first = {path: processed for path, (status, processed) in first.items() if status != "pending"}
    assert 60 <= len(finished_first) < len(photos)
    now = {path: (status, processed) for path, status, processed in rows(base, "select path, status, processed_at from images")}
    # Finished in run 1, untouched by run 2: the same processed_at.
    assert {path: now[path][1] for path in finished_first} == finished_first
    assert second.skipped == len(finished_first)
    assert second.done + second.failed + second.duplicate + second.skipped == second.found == len(photos) + 3
    assert second.unfinished == 0
    # One row per file, every one finished.
    paths = [path for (path,) in rows(base, "select path from images")]
    assert sorted(paths) == sorted(set(paths)) and len(paths) == len(photos) + 3
    assert {status for status, _ in now.values()} == {"done", "failed", "duplicate"}
    assert (third.found, third.skipped, third.done, third.workers) == (len(photos) + 3, len(photos) + 3, 0, 0)


def test_archive_mode_gives_the_same_answers_as_classify(archived):
    base, folder, photos, *_ = archived
    result = CliRunner().invoke(cli, ["classify", "--json", *map(str, photos), "-c", str(base / "config.yaml")])
    assert result.exit_code == 0, result.output
    expected = {}
    for line in result.output.splitlines():
        if line.startswith("{"):
            answer = json.loads(line)
            expected[answer["path"]] = answer
    assert len(expected) == len(photos)
    stored = {path: (kind, label, confidence) for path, _status, kind, label, confidence, _error in rows(base)}
    mismatches = []
    for path, answer in expected.items():
        kind, label, confidence = stored[str(Path(path).resolve())]
        if (kind, label) != (answer["kind"], answer["label"]) or abs(confidence - answer["confidence"]) > 1e-4:
            mismatches.append((Path(path).name, answer["kind"], answer["label"], answer["confidence"], kind, label, confidence))
    assert mismatches == []


def test_a_corrupt_file_is_recorded_as_failed_and_the_run_goes_on(archived):
    base, folder, *_ = archived
    by_name = {Path(path).name: (status, error) for path, status, _k, _l, _c, error in rows(base)}
    assert by_name["truncated.JPG"][0] == "failed"
    assert "truncated JPEG" in by_name["truncated.JPG"][1]
    assert by_name["empty.jpg"][0] == "failed" and "empty" in by_name["empty.jpg"][1]
    assert by_name["copy-of-IMG_0001.JPG"] == ("duplicate", None)
    assert by_name["IMG_0197.JPG"][0] == "done"


def test_bursts_split_between_workers_still_make_one_event_each(archived):
    """Batches of one burst ran on both workers at once; events are still exactly the bursts."""
    base, *_ = archived
    done = rows(base, "select id, captured_at, event_id from images where status = 'done'")
    from datetime import datetime

    times = [(datetime.fromisoformat(when), image_id) for image_id, when, _ in done]
    expected = sorted(sorted(group) for group in split_bursts(times, timedelta(seconds=5)))
    by_event: dict[int, list[int]] = {}
    for image_id, _, event_id in done:
        by_event.setdefault(event_id, []).append(image_id)
    assert sorted(sorted(group) for group in by_event.values()) == expected
    assert len(expected) == PHOTOS // BURST
    ((events,),) = rows(base, "select count(*) from events")
    assert events == len(expected)


def test_the_archive_command_reports_what_it_skipped(archived):
    base, folder, photos, *_ = archived
    result = CliRunner().invoke(cli, ["archive", str(folder), "--workers", "2", "-c", str(base / "config.yaml")])
    assert result.exit_code == 0, result.output
    assert f"done 0 (birds 0), failed 0, duplicates 0, already on record {len(photos) + 3}" in result.output


def test_the_archive_command_names_a_folder_that_is_not_there(tmp_path):
    result = CliRunner().invoke(cli, ["archive", str(tmp_path / "nowhere"), "-c", str(archive_config(tmp_path))])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_a_camera_mapping_file_places_each_card_and_a_bad_line_is_named(tmp_path):
    from birdtrap.scale.archive import ArchiveError, Cameras, load_camera_map, plan

    cards = tmp_path / "cards"
    for card in ("card-07", "card-08/DCIM", "stray"):
        (cards / card).mkdir(parents=True)
        for i in range(3):
            (cards / card / f"IMG_{i}.JPG").write_bytes(b"not decoded by plan")
    mapping = tmp_path / "cameras.csv"
    mapping.write_text(f"folder,camera_id,deployment_id\ncard-07,pond-cam,pond-2024\n{cards / 'card-08'},marsh-cam,\n")
    config = config_module.load(archive_config(tmp_path))
    cameras = Cameras((config.camera.id, None), mapping=load_camera_map(mapping))
    found, skipped, batches = plan(config, [cards], 2, cameras)
    placed = {path: (camera, deployment) for _, paths, camera, deployment in batches for path in paths}
    assert found == len(placed) == 9 and skipped == 0
    for path, (camera, deployment) in placed.items():
        expected = {"card-07": ("pond-cam", "pond-2024"), "card-08": ("marsh-cam", None)}.get(Path(path).relative_to(cards).parts[0])
        assert (camera, deployment) == (expected or (config.camera.id, None))
    assert all(len({placed[p] for p in paths}) == 1 for _, paths, _, _ in batches)  # a batch never mixes cameras
    mapping.write_text("card-07,pond-cam\ncard-08\n")
    with pytest.raises(ArchiveError) as refused:
        load_camera_map(mapping)
    assert f"--cameras {mapping}, line 2: 'card-08' is not folder,camera_id[,deployment_id]; e.g. card07,pond-cam,pond-2024." in str(
        refused.value
    )
