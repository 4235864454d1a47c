"""Learn this camera (issue 23): which embedding separates a camera's classes, and what learning costs.

For each embedding source (the species model's penultimate layer; Coral's embedding extractor)
the labelled camera-trap frames are turned into examples the way `birdtrap learn` does, then:
- leave-one-frame-out over the burrowing-owl project's frames (9 owls, 1 shadow-only frame), with
  only that project's frames as negatives, and with camtrap_nonbird's visible frames added;
- a head learnt from those frames judges every other labelled camera-trap frame (other projects):
  how many no-bird frames it turns into birds, how many birds it renames;
- timings: one region embedding, and fitting + cross-validating 200 examples;
- what the head costs when identifying: every labelled camera-trap frame identified without a head
  and with the one learnt from the owl project and camtrap_nonbird, invokes per photo of each model
  (species, gate, detector, embedder) and milliseconds per photo. A frame of a scene the head's
  birds were never seen in costs one embedding (the whole frame's); one of a known scene, the
  frame and each proposal.

    python -m bench.camera_head          # about 4 minutes on 2 busy cores
"""

from __future__ import annotations

import argparse
import csv
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
from birdtrap.identify import camera_head as heads
from birdtrap.identify.embedding import Embedder
from birdtrap.identify.photos import decode_photo
from birdtrap.identify.preprocess import read_photo_bytes

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODELS = SHARED / "models"
EXTRACTOR = MODELS / "mobilenet_v1_embedding_extractor" / "model.tflite"
SPECIES = MODELS / "inat_birds" / "model.tflite"


def identifier_for(folder: Path):
    (folder / "inbox").mkdir(exist_ok=True)
    data = {
        "watch": {"folder": str(folder / "inbox")},
        "model": {"path": str(SPECIES), "delegate": "cpu"},
        "gate": {"path": str(MODELS / "imagenet_mobilenet_v2" / "model.tflite")},
        "detector": {"path": str(MODELS / "coco_ssd_mobilenet_v1" / "model.tflite")},
        "database": {"url": f"sqlite:///{folder / 'b.db'}"},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(data))
    return build_identifier(config_module.load(folder / "config.yaml"))


def labelled_frames() -> list[dict]:
    rows = []
    for name in ("labels.csv", "labels-more.csv"):
        with open(SHARED / "data" / name, newline="", encoding="utf-8") as handle:
            rows += [row for row in csv.DictReader(handle) if "camtrap" in row["path"]]
    return rows


def label_of(row: dict) -> str:
    truth = row["truth"].strip()
    if truth.lower() != "none":
        return truth
    return {"mammal": "animal", "human": "person", "vehicle": "person"}.get(row["kind"], "blank")


def other_frames_judged(head: heads.CameraHead, examples: list[heads.FrameExample]) -> dict:
    nobird = [e for e in examples if not heads.is_bird_label(e.label)]
    birds = [e for e in examples if heads.is_bird_label(e.label)]
    added = sum(heads.combined_answer(head, e)[0] == "bird" and e.general_kind != "bird" for e in nobird)
    renamed = sum(heads.combined_answer(head, e) != (e.general_kind, e.general_taxon) for e in birds)
    lost = sum(
        heads.named_right(e.label, e.general_kind, e.general_taxon) and not heads.named_right(e.label, *heads.combined_answer(head, e))
        for e in birds
    )
    return {
        "no_bird_frames": len(nobird),
        "false_birds_added": added,
        "bird_frames": len(birds),
        "birds_renamed": renamed,
        "birds_named_right_lost": lost,
    }


def identify_cost(identifier, rows: list[dict], head: heads.CameraHead | None, embedder: Embedder | None) -> dict:
    """Invokes per photo of each model, and ms per photo, identifying `rows` with `head` installed (or none)."""
    identifier.camera_head, identifier.embedder = head, embedder
    found, seconds = [], []
    for row in rows:
        path = SHARED / row["path"]
        photo = decode_photo(read_photo_bytes(path), str(path), 0, identifier.preprocess).photo
        started = time.perf_counter()
        [result] = identifier.identify([photo])
        seconds.append(time.perf_counter() - started)
        found.append(result)
    identifier.camera_head = None
    embeds = [r.embed_invokes for r in found]
    return {
        "photos": len(found),
        "species_invokes_per_photo": round(statistics.fmean(r.invokes for r in found), 2),
        "gate_invokes_per_photo": round(statistics.fmean(r.gate_invokes for r in found), 2),
        "detector_invokes_per_photo": round(statistics.fmean(r.detector_invokes for r in found), 2),
        "embed_invokes_per_photo": round(statistics.fmean(embeds), 2),
        "photos_by_embed_invokes": {str(n): embeds.count(n) for n in sorted(set(embeds))},
        "ms_per_photo_mean": round(statistics.fmean(seconds) * 1000),
        "decided_by_head": sum(r.source == "camera-head" for r in found),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.camera_head", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    rows = labelled_frames()
    results: dict = {"machine": platform.machine(), "processor": platform.processor(), "frames": len(rows), "embeddings": {}}
    with tempfile.TemporaryDirectory() as folder:
        identifier = identifier_for(Path(folder))
        results["identify_without_head"] = identify_cost(identifier, rows, None, None)
        print(json.dumps({"identify_without_head": results["identify_without_head"]}, indent=1), flush=True)
        for name, embedder in (("species_penultimate", Embedder(SPECIES, penultimate=True)), ("embedding_extractor", Embedder(EXTRACTOR))):
            identifier.embedder = embedder
            examples, seconds = {}, []
            for row in rows:
                path = SHARED / row["path"]
                photo = decode_photo(read_photo_bytes(path), str(path), 0, identifier.preprocess).photo
                before, started = embedder.invokes, time.perf_counter()
                examples[row["path"]] = identifier.example(photo, row["path"], label_of(row))
                seconds.append((time.perf_counter() - started, embedder.invokes - before))
            owls = [e for p, e in examples.items() if "camtrap_owls" in p]
            nonbird = [e for p, e in examples.items() if "camtrap_nonbird" in p]
            figures = {}
            for negatives, frames in (("owls_project_only", owls), ("plus_camtrap_nonbird", owls + nonbird)):
                loo = heads.cross_validate(frames, embedder.name)
                head = heads.fit(frames, embedder.name)
                if negatives == "plus_camtrap_nonbird":
                    figures["identify_with_head"] = identify_cost(identifier, rows, head, embedder)
                others = [e for e in examples.values() if e not in frames]
                figures[negatives] = {
                    "leave_one_out": loo.as_dict(),
                    "margin": round(head.margin, 3),
                    "other_frames": other_frames_judged(head, others),
                }
            single = [e.vectors[0] for e in examples.values()]
            started = time.perf_counter()
            for _ in range(5):
                embedder.embed(np.zeros((224, 224, 3), np.uint8))
            embed_ms = (time.perf_counter() - started) / 5 * 1000
            pool = list(examples.values())
            two_hundred = [pool[i % len(pool)] for i in range(200)]
            two_hundred = [
                heads.FrameExample(f"{i}", e.label, e.vectors, e.boxes, e.positive, e.gates, e.general_kind, e.general_taxon)
                for i, e in enumerate(two_hundred)
            ]
            started = time.perf_counter()
            heads.fit(two_hundred, embedder.name)
            fit_s = time.perf_counter() - started
            started = time.perf_counter()
            heads.cross_validate(two_hundred, embedder.name)
            cv_s = time.perf_counter() - started
            results["embeddings"][name] = figures | {
                "dimensions": int(single[0].shape[0]),
                "embed_ms_per_region": round(embed_ms, 1),
                "example_seconds_median": round(statistics.median(s for s, _ in seconds), 2),
                "regions_per_frame_median": statistics.median(n for _, n in seconds),
                "fit_200_frames_s": round(fit_s, 3),
                "cross_validate_200_frames_10_fold_s": round(cv_s, 2),
            }
            print(json.dumps({name: results["embeddings"][name]}, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
