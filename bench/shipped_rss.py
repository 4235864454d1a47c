"""`python -m bench.shipped_rss`: the shipped daemon's peak RSS alone, quickly and repeatably (issue 22 item 5).

The same measurement as `python -m bench`'s `shipped.daemon.peak_rss_mb` (the real `birdtrap run`
on the shipped default configuration: species model, bird gate, COCO detector, region search,
draining a backlog of 12 MP copies of the shared camera-trap photos; VmHWM of the process) without
the stage costs, the one-invoke drains and the accuracy runs around it: a couple of minutes instead
of ten. Runs alternate between the settings compared (`--env NAME=VALUE` adds a run variant with
that environment), so the box's load falls on each alike; prints medians and writes JSON.

    python -m bench.shipped_rss                       # 60 photos, 3 drains
    python -m bench.shipped_rss --env MALLOC_ARENA_MAX=2 --runs 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shipped_rss", description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=60, help="12 MP photos in the backlog [60]")
    parser.add_argument("--runs", type=int, default=3, help="drains per variant; figures are medians [3]")
    parser.add_argument("--sources", type=int, default=6, help="real photos the backlog is made from [6]")
    parser.add_argument("--batch-size", type=int, default=4, help="batch.size [4, the default]")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE[,NAME=VALUE]", help="a variant's extra environment")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="the shared photos and models [../shared]")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    from bench import endtoend, photos

    variants: list[dict[str, str]] = [{}] + [dict(item.split("=", 1) for item in spec.split(",")) for spec in args.env]
    workdir = Path(tempfile.mkdtemp(prefix="birdtrap-rss-"))
    try:
        sources = photos.source_photos(args.shared, args.sources)
        rendered = [photos.render(src, "12mp") for src in sources]
        folder = workdir / "daemon"
        config = endtoend.write_config(folder, args.shared.resolve(), args.batch_size, finder=True)
        photos.write_backlog(folder / "inbox", rendered, args.photos)
        runs: dict[int, list] = {i: [] for i in range(len(variants))}
        for round_ in range(args.runs):
            for index, env in enumerate(variants):
                run = endtoend.run_daemon(config, args.photos, args.batch_size, 0, 1, env)
                runs[index].append(run)
                print(
                    f"round {round_ + 1} {env or 'default'}: ready {run.rss_ready_mb:.1f} MB, peak {run.peak_rss_mb:.1f} MB, "
                    f"{1000 * run.drain_s / run.photos:.0f} ms a photo, {1000 * run.drain_cpu_s / run.photos:.0f} ms CPU",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    figures = []
    for index, env in enumerate(variants):
        done = runs[index]
        figures.append(
            {
                "env": env,
                "runs": len(done),
                "rss_ready_mb": statistics.median(r.rss_ready_mb for r in done),
                "peak_rss_mb": statistics.median(r.peak_rss_mb for r in done),
                "drain_ms_per_photo": 1000 * statistics.median(r.drain_s / r.photos for r in done),
                "cpu_ms_per_photo": 1000 * statistics.median(r.drain_cpu_s / r.photos for r in done),
            }
        )
    for figure in figures:
        print(json.dumps(figure))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
