"""`python -m bench.blank_scores`: what the detector scores on truly empty frames against frames with something.

`finder.blank_max_box_score` is the method's threshold, not a photo's: a frame is blank only when
no detector box of any class (on the frame or its tiles, as the Identifier looks) reaches it. It
must sit below the strongest box of every frame that holds an animal, a person, a vehicle or a
bird, or such a frame can be called blank and moved away; the truly empty frames it then lets
through are the blank frames the detector can vouch for. This prints, per labels kind, the
strongest box of any class on each frame, and the highest threshold that calls nothing there
blank. Run it for any new detector before choosing the setting.

    python -m bench.blank_scores ../shared/data/labels.csv ../shared/data/labels-more.csv --config C.yaml
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

# Label kinds of frames where nothing alive is there: their boxes are the detector's noise.
EMPTY_KINDS = ("empty", "blank")
NOTHING_ALIVE_KINDS = (*EMPTY_KINDS, "plant")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.blank_scores", description=__doc__.split("\n\n")[0])
    parser.add_argument("labels", type=Path, nargs="+", help="labels CSV files (path, truth, kind)")
    parser.add_argument("--config", type=Path, default=Path("config.yaml"), help="birdtrap config with the detector [config.yaml]")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from birdtrap.config import load
    from birdtrap.daemon.wiring import build_identifier
    from birdtrap.errors import BirdtrapError
    from birdtrap.evaluate import read_labels
    from birdtrap.identify.photos import decode_photo
    from birdtrap.identify.regions import crop, tiles

    try:
        identifier = build_identifier(load(args.config))
        photos = [photo for labels in args.labels for photo in read_labels(labels)]
    except BirdtrapError as e:
        print(f"bench.blank_scores: {e}", file=sys.stderr)
        return 2
    if identifier.detector is None:
        print("bench.blank_scores: the config has no detector (detector.path, finder.methods)", file=sys.stderr)
        return 2
    rows = []
    for labelled in photos:
        decoded = decode_photo(labelled.path.read_bytes(), str(labelled.path), labelled.path.stat().st_mtime, identifier.preprocess)
        image = decoded.photo.bgr
        height, width = image.shape[:2]
        boxes = [box for scale in identifier.finder.detector_tiles for box in tiles(width, height, scale, overlap=0.3)]
        views = [image] + [crop(image, box) for box in boxes]
        found = [d for per_view in identifier.detector.detect(views, min_score=0.01) for d in per_view]
        strongest = max(found, key=lambda d: d.score, default=None)
        rows.append({
            "path": labelled.path.name, "kind": labelled.kind or ("bird" if labelled.truth else "none"),
            "max_score": round(strongest.score, 3) if strongest else 0.0, "max_class": str(strongest.kind) if strongest else None,
        })  # fmt: skip
    something = [r["max_score"] for r in rows if r["kind"] not in NOTHING_ALIVE_KINDS]
    empty = sorted(r["max_score"] for r in rows if r["kind"] in EMPTY_KINDS)
    safe = min(something, default=1.0)
    summary = {
        "machine": platform.machine(),
        "detector": str(identifier.detector.model.path),
        "lowest_max_score_with_something_there": safe,
        "empty_frames_max_scores": empty,
        "empty_frames_blank_below_safe": sum(score < safe for score in empty),
        "blank_max_box_score": identifier.finder.blank_max_box_score,
    }
    if args.json:
        print(json.dumps({"summary": summary, "photos": rows}, indent=2))
        return 0
    by_kind: dict[str, list[float]] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], []).append(row["max_score"])
    for kind, scores in sorted(by_kind.items()):
        print(f"{kind:10} {len(scores):3d} frames  strongest box: min {min(scores):.2f}  median {sorted(scores)[len(scores) // 2]:.2f}")
    print(f"a threshold below {safe:.2f} calls no frame with something there blank; "
          f"{summary['empty_frames_blank_below_safe']} of {len(empty)} truly empty frames score below it {empty}")  # fmt: skip
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
