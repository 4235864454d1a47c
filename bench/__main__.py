"""`python -m bench`: measure the pipeline stage by stage, the real daemon, and a naive pipeline.

    python -m bench                 # a few minutes: 200-photo backlog, 3 daemon runs, a quiet minute
    python -m bench --photos 1000   # the issue's 1,000-photo backlog
    python -m bench --quick         # under a minute: the smoke test runs this

Prints a table (figure, median, baseline, ratio) and writes the same as JSON naming the machine
(default bench/out/latest.json). Photos are generated in a temporary folder from ../shared/images
and deleted afterwards (--keep keeps them).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from bench.report import add_output_options

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options; --quick changes only the defaults, so an explicit --photos still wins."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small everything: under a minute (for the smoke test)")
    parser.add_argument("--photos", type=int, help="12 MP photos in the daemon's backlog [200; quick 8]")
    parser.add_argument("--daemon-runs", type=int, help="times the daemon drains the backlog; figures are medians [3; quick 1]")
    parser.add_argument("--idle-seconds", type=float, help="quiet window after the drain for idle CPU and wake-ups [60; quick 3]")
    parser.add_argument("--sources", type=int, help="real photos each size is made from (stage costs) [6; quick 2]")
    parser.add_argument("--repeats", type=int, help="repeats of every in-process timing [3; quick 2]")
    parser.add_argument("--naive-photos", type=int, help="photos the naive pipeline processes [2; quick 1]")
    parser.add_argument(
        "--accuracy-photos", type=int, help="labelled photos scored with the reduced and the full decode [all of labels.csv; quick 4]"
    )
    parser.add_argument(
        "--accuracy-naive", action="store_true", help="score them with the naive pipeline's NLM pixels too (about 4 s a photo)"
    )
    parser.add_argument(
        "--naive-tile-mp", type=float, help="denoise a tile of this many MP and scale (naive is slow) [whole photo; quick 0.25]"
    )
    parser.add_argument(
        "--daemon-env", action="append", default=[], metavar="NAME=VALUE", help="extra environment for the daemon (e.g. MALLOC_ARENA_MAX=2)"
    )
    parser.add_argument("--batch-size", type=int, default=4, help="the daemon's batch.size [4, the default config]")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="the shared photos and models [../shared]")
    parser.add_argument("--workdir", type=Path, help="where to generate photos [a new temporary folder]")
    parser.add_argument("--keep", action="store_true", help="keep the generated photos and databases")
    add_output_options(parser, "latest")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "photos": 8 if quick else 200,
        "daemon_runs": 1 if quick else 3,
        "idle_seconds": 3.0 if quick else 60.0,
        "sources": 2 if quick else 6,
        "repeats": 2 if quick else 3,
        "naive_photos": 1 if quick else 2,
        "naive_tile_mp": 0.25 if quick else None,
        "accuracy_photos": 4 if quick else None,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None and value is not None:
            setattr(args, name, value)
    if args.photos < 1 or args.sources < 1 or args.repeats < 1 or args.daemon_runs < 1:
        parser.error("--photos, --sources, --repeats and --daemon-runs must be at least 1")
    if any("=" not in item for item in args.daemon_env):
        parser.error("--daemon-env takes NAME=VALUE")
    args.naive_photos = max(1, min(args.naive_photos, args.photos))
    return args


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run every measurement in order; returns the exit status."""
    args = parse_args(argv)
    if not (args.shared / "models" / "inat_birds" / "model.tflite").exists():
        print(f"bench: no models under {args.shared}; pass --shared PATH (the folder with images/ and models/)", file=sys.stderr)
        return 2
    # Imported here so --help works without OpenCV or the runtime.
    from bench import accuracy, endtoend, install, photos, shipped, stages
    from bench.report import OtherLoad, Results, publish, run_settings
    from birdtrap.config import load
    from birdtrap.daemon.wiring import build_identifier

    results = Results()
    results.settings = run_settings(args)
    other_load = OtherLoad()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="birdtrap-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        sources = photos.source_photos(args.shared, args.sources)
        say(f"rendering {len(sources)} photos at {', '.join(photos.SIZES)} in {workdir}")
        rendered = {size: [photos.render(src, size) for src in sources] for size in photos.SIZES}
        daemon_folder = workdir / "daemon"
        config_path = endtoend.write_config(daemon_folder, args.shared.resolve(), args.batch_size)
        backlog = photos.write_backlog(daemon_folder / "inbox", rendered["12mp"], args.photos)
        identifier = build_identifier(load(config_path))

        for size, bench_photos in rendered.items():
            say(f"stage costs and decoders, {size}")
            stages.stage_costs(results, size, bench_photos, workdir / "stages", identifier, args.repeats)
            stages.decoders(results, size, bench_photos, args.repeats, identifier.preprocess.decode_min_side)
        bound = stages.Bound(photos.bound_sample(backlog, len(sources), 2 * args.batch_size), identifier)
        say("database writes")
        stages.db_writes(results, workdir, identifier, rendered["12mp"][0], args.batch_size, max(4, 2 * args.repeats))
        say("models")
        stages.model_invokes(results, args.shared, max(5, 5 * args.repeats))
        install.install_size(results)

        import_repeats = 2 if args.quick else 3
        import_s = endtoend.import_time(import_repeats)
        runs = []
        for index in range(args.daemon_runs):
            last = index == args.daemon_runs - 1
            say(
                f"daemon run {index + 1}/{args.daemon_runs}: {args.photos} photos"
                + (f", then {args.idle_seconds:.0f} s idle" if last else "")
            )
            bound.measure(max(args.repeats, 3))
            runs.append(
                endtoend.run_daemon(
                    config_path,
                    args.photos,
                    args.batch_size,
                    args.idle_seconds if last else 0,
                    3 if args.quick else 6,
                    dict(item.split("=", 1) for item in args.daemon_env),
                )
            )
        bound.add_figures(results)
        endtoend.daemon_figures(results, runs, endtoend.empty_store_bytes(workdir), import_s, import_repeats)
        say(f"naive pipeline on {args.naive_photos} photo(s)")
        endtoend.naive(
            results, backlog[:: photos.BURST][: args.naive_photos], identifier, workdir, daemon_folder / "birdtrap.db", args.naive_tile_mp
        )
        distinct = backlog[:: photos.BURST][: len(sources)]
        endtoend.full_decode_agreement(results, distinct, identifier)
        finder_config = endtoend.write_config(daemon_folder, args.shared.resolve(), args.batch_size, finder=True)
        say("accuracy: the labelled photos with the reduced decode and with the full one")
        accuracy.reduced_against_full(
            results, load(finder_config), args.shared / "data" / "labels.csv", args.shared, args.accuracy_photos, args.accuracy_naive
        )
        # Last: these runs replace the one-invoke drain's database that naive compares with.
        say("shipped default configuration: counting its invokes per photo")
        shipped_bound = shipped.ShippedBound(backlog[: len(sources) * photos.BURST], build_identifier(load(finder_config)))
        shipped_bound.count()
        extra_env = dict(item.split("=", 1) for item in args.daemon_env)
        shipped_runs = []
        for index in range(args.daemon_runs):
            say(f"daemon with the shipped defaults, run {index + 1}/{args.daemon_runs}: {args.photos} photos")
            shipped_bound.measure(max(args.repeats, 3))
            shipped_runs.append(endtoend.run_daemon(finder_config, args.photos, args.batch_size, 0, 1, extra_env))
        shipped_bound.add_figures(results)
        shipped.pi4_figures(results, shipped_bound.counts or shipped_bound.count())
        endtoend.finder_figures(results, shipped_runs)
        shipped.shipped_figures(results, shipped_runs, shipped.stored_species_invokes(daemon_folder / "birdtrap.db"))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results.finish()
    other_load.record(results)
    publish(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
