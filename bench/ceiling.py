"""`python -m bench.ceiling`: how many bird frames could any choice of region name right?

Region search can only pick among the answers the species model gives. This scores every
region of a dense search (the whole frame; overlapping square tiles at four scales; every
detector and motion box at four margins) with the daemon's decision rules and counts a bird
frame as reachable when at least one region is named right at species or genus rank. An oracle
that knows the truth picks that region; a real finder can at most match it. The result bounds
what any proposal, ranking or gating change can reach with the models in the config.

    python -m bench.ceiling                          # ../shared/data/labels.csv, ./config.yaml
    python -m bench.ceiling --labels L.csv --config C.yaml --json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

SCALES = (1.0, 0.6, 0.4, 0.25)
MARGINS = (0.05, 0.15, 0.3, 0.6)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, default=Path("../shared/data/labels.csv"), help="labels CSV [../shared/data/labels.csv]")
    parser.add_argument("--root", type=Path, help="folder the label paths are relative to [the labels file's parent's parent]")
    parser.add_argument("--config", type=Path, default=Path("config.yaml"), help="birdtrap config with the models [config.yaml]")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np

    from birdtrap.config import load
    from birdtrap.daemon.wiring import build_identifier
    from birdtrap.errors import BirdtrapError
    from birdtrap.evaluate import read_labels, score
    from birdtrap.identify.decision import decide
    from birdtrap.identify.identifier import _Work
    from birdtrap.identify.photos import burst_key, decode_photo
    from birdtrap.identify.regions import crop, grow_to_square, tiles

    try:
        identifier = build_identifier(load(args.config))
        photos = read_labels(args.labels, args.root)
    except BirdtrapError as e:
        print(f"bench.ceiling: {e}", file=sys.stderr)
        return 2
    # Raw proposal boxes (no margin): the margins are tried below.
    raw = replace(identifier.finder, box_margin=0.0, min_region_side=0.0, max_regions=1000, methods=("detector", "motion"))
    rows = []
    for labelled in photos:
        decoded = decode_photo(labelled.path.read_bytes(), str(labelled.path), labelled.path.stat().st_mtime, identifier.preprocess)
        image = decoded.photo.bgr
        height, width = image.shape[:2]
        frame = identifier.frame_inputs(decoded.photo)
        motion = identifier._motion_regions(decoded.photo, burst_key(str(labelled.path.parent), decoded.metadata), frame.thumbnail)
        if labelled.truth is None:
            continue
        boxes = [box for scale in SCALES for box in tiles(width, height, scale, overlap=0.5)]
        finder, identifier.finder = identifier.finder, raw
        try:
            proposals = identifier._propose(_Work(decoded.photo, None, None), motion)  # type: ignore[arg-type]
        finally:
            identifier.finder = finder
        boxes += [grow_to_square(region.box, width, height, margin) for region in proposals for margin in MARGINS]
        crops = [crop(image, box) for box in boxes]
        predictions = [p for start in range(0, len(crops), 8) for p in identifier._species(crops[start : start + 8])]
        gates = np.concatenate([identifier._gate(crops[s : s + 8]) for s in range(0, len(crops), 8)]) if identifier.gate else None
        right, right_gated = [], []
        for index, prediction in enumerate(predictions):
            decision = decide(prediction.probabilities, identifier.species.labels, identifier.rules)
            species_right, genus_right, _ = score(labelled, decision.kind, decision.scientific_name, decision.taxon_rank)
            if species_right or genus_right:
                right.append(index)
                if gates is None or gates[index] >= identifier.finder.gate_threshold:
                    right_gated.append(index)
        rows.append(
            {
                "photo": labelled.path.name,
                "truth": labelled.truth,
                "regions": len(boxes),
                "named_right": len(right),
                "named_right_gate_passed": len(right_gated),
            }
        )
    reachable = sum(row["named_right"] > 0 for row in rows)
    reachable_gated = sum(row["named_right_gate_passed"] > 0 for row in rows)
    if args.json:
        summary = {"bird_photos": len(rows), "reachable": reachable, "reachable_gate_passed": reachable_gated, "photos": rows}
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{'photo':34s} {'truth':22s} {'regions':>7s} {'right':>6s} {'right, gate passed':>19s}")
    for row in rows:
        print(f"{row['photo']:34s} {row['truth']:22s} {row['regions']:7d} {row['named_right']:6d} {row['named_right_gate_passed']:19d}")
    print(f"bird photos some region names right:                 {reachable}/{len(rows)}")
    print(f"... where that region also passes the bird gate:     {reachable_gated}/{len(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
