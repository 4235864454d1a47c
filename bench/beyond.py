"""People hidden and camera health (issue 19): what each costs, and how they behave on ../shared.

- redaction: per person frame, the boxes found by the real detector, the fill of those boxes on
  the decoded frame, and a 320 px thumbnail with and without them (the web's path); how much
  high-frequency energy is left inside the boxes;
- which shared photos get something hidden (the detector's false person boxes are the cost of
  erring on the side of hiding);
- health: the measures per photo (the only per-photo cost; the checks run on stored numbers),
  and the checks' verdicts per folder played as one camera.

    python -m bench.beyond            # about a minute on 2 busy cores
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from birdtrap import config as config_module
from birdtrap.daemon.wiring import build_identifier
from birdtrap.identify import health
from birdtrap.identify.preprocess import PreprocessSettings, load
from birdtrap.identify.privacy import boxes_to_hide, redact

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODELS = SHARED / "models"
PEOPLE = ("real/grace_hopper.bmp", "camtrap_nonbird/S012_2022-08-25_human_vehicle.jpg", "camtrap_more/speciesnet_testdata/human.jpg")
SUFFIXES = (".jpg", ".jpeg", ".bmp", ".png")


def energy(rgb: np.ndarray) -> float:
    grey = rgb.astype(np.float64).mean(axis=2)
    return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())


def timed(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times), 2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.beyond", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench-beyond-"))
    (folder / "inbox").mkdir()
    data = {
        "watch": {"folder": str(folder / "inbox")},
        "model": {"path": str(MODELS / "inat_birds" / "model.tflite"), "delegate": "cpu"},
        "gate": {"path": str(MODELS / "imagenet_mobilenet_v2" / "model.tflite")},
        "detector": {"path": str(MODELS / "coco_ssd_mobilenet_v1" / "model.tflite")},
        "database": {"url": f"sqlite:///{folder / 'b.db'}"},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(data))
    config = config_module.load(folder / "config.yaml")
    identifier = build_identifier(config)
    privacy = config.privacy.settings()
    results: dict = {"machine": platform.machine(), "processor": platform.processor(), "redaction": {}, "hidden_on": [], "health": {}}

    for name in PEOPLE:
        photo = load(SHARED / "images" / name, config.preprocess.settings())
        [found] = identifier.identify([photo])
        boxes = boxes_to_hide(found.decision.kind, found.detections, privacy, photo, found.box)
        rgb = np.ascontiguousarray(photo.bgr[..., ::-1])
        hidden = redact(rgb, boxes)
        left = []
        for box in boxes:
            h, w = rgb.shape[:2]
            x0, y0, x1, y1 = int(box[0] * w), int(box[1] * h), int(np.ceil(box[2] * w)), int(np.ceil(box[3] * h))
            left.append(round(energy(hidden[y0:y1, x0:x1]) / max(energy(rgb[y0:y1, x0:x1]), 1e-9), 4))
        results["redaction"][name] = {
            "frame": f"{rgb.shape[1]}x{rgb.shape[0]}",
            "boxes": len(boxes),
            "hidden_fraction_of_frame": round(sum((b[2] - b[0]) * (b[3] - b[1]) for b in boxes), 3),
            "fill_ms": timed(lambda rgb=rgb, boxes=boxes: redact(rgb, boxes), args.repeats),
            "energy_left_in_boxes": left,
        }
        print(json.dumps({name: results["redaction"][name]}), flush=True)

    photos = sorted(p for p in (SHARED / "images").rglob("*") if p.suffix.lower() in SUFFIXES)
    for path in photos:
        photo = load(path, config.preprocess.settings())
        [found] = identifier.identify([photo])
        boxes = boxes_to_hide(found.decision.kind, found.detections, privacy, photo, found.box)
        if boxes:
            share = min(1.0, sum((b[2] - b[0]) * (b[3] - b[1]) for b in boxes))
            results["hidden_on"].append([str(path.relative_to(SHARED / "images")), str(found.decision.kind), round(share, 2)])
    results["hidden_summary"] = {"photos": len(photos), "with_something_hidden": len(results["hidden_on"])}
    print(json.dumps(results["hidden_summary"]), flush=True)

    measure_ms = []
    for folder_path in sorted({p.parent for p in photos}):
        frames = [load(p, PreprocessSettings()) for p in sorted(folder_path.iterdir()) if p.suffix.lower() in SUFFIXES]
        for frame in frames:
            health.measure(frame)  # the resampling taps are made once per frame size
            measure_ms.append(timed(lambda frame=frame: health.measure(frame), args.repeats))
        measures = [health.measure(frame) for frame in frames]
        rules = health.HealthSettings(min_history=4)
        verdicts = {"blocked": [], "moved": [], "night_black": []}
        for end in range(1, len(measures) + 1):
            seen = measures[:end]
            recent, reference = seen[-rules.confirm :], seen[: -rules.confirm]
            verdicts["blocked"].append(health.lens_blocked(recent, reference, rules))
            verdicts["moved"].append(health.moved(recent, reference, rules))
            verdicts["night_black"].append(health.night_black(seen, rules))
        results["health"][folder_path.name] = {
            check: {"alarms": sum(v is True for v in values), "judged": sum(v is not None for v in values)}
            for check, values in verdicts.items()
        }
    results["health_measure_ms_per_photo"] = {"median": statistics.median(measure_ms), "max": max(measure_ms)}
    print(json.dumps({"health": results["health"], "measure_ms": results["health_measure_ms_per_photo"]}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
