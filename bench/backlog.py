"""`python -m bench.backlog`: does the daemon's cost per photo stay constant, and its memory flat, as the backlog grows?

    python -m bench.backlog                  # ~11 minutes on 2 cores: 100, 1,000 and 10,000 photos at 3 MP, 7.2 GB at most
    python -m bench.backlog --size 12mp      # the issue's camera size: 20 GB at most, ~12-15 minutes (see below)
    python -m bench.backlog --backlogs 4,12  # ~10 seconds (the smoke test)

For each backlog size N a fresh inbox is filled with N unique photos (`bench.photos.write_backlog`:
the real ../shared/images photos at --size, bursts of five, each file made unique by a JPEG
comment so each has its own sha256) and drained by the real daemon (`bench.endtoend.run_daemon`:
a `birdtrap run` subprocess, gate and detector off, one invoke a photo), --runs times on a fresh
database each. A backlog that costs more per photo as it grows (a scan, a query or a queue that is
O(N) per photo) or a daemon whose memory follows the backlog would show here, not in `python -m bench`.

Figures per N, each against the same figure at the smallest N (ratio ~1x: constant per photo):
drain time per photo (READY=1 -> last row committed, / N), start-up (which includes the scan of
the N files), CPU and bytes written per photo, and peak RSS (VmHWM). Memory over the drain: a
thread here samples the daemon's VmRSS (and RssAnon: a leak grows anonymous memory, while VmRSS
also counts mapped files the kernel may drop when photos crowd the page cache) from /proc every
--sample-seconds and right after every commit (seen as the SQLite files changing; commits are
also the phase of the batch cycle where samples compare best), with the rows committed so far.
From those: RSS once 10% of the photos are committed, RSS at 90%, and the least-squares slope of
RSS over the committed count between the two, in MB per 1,000 photos (~0 when memory is flat). A
backlog of one batch has no slope (both points are the same commit): it is listed as skipped.

The size: 3 MP (default) keeps 10,000 photos at 7.2 GB, written in ~11 s, and in the page cache of
a 24 GB box. `--size 12mp` is the issue's size: 2.0 MB a photo, 20 GB for 10,000 (~25 s to write
here, and more than the page cache holds, so the drain reads some from disk); 1,000 of them
drained at 55 ms and 71 ms CPU a photo on this 2-core box with other work on it (3 MP: 57 ms and
57 ms CPU), so the default sizes take ~12-15 minutes. The ~11 minutes above were measured with
other processes keeping about one of the two cores busy: a quieter box takes less, and the run
prints how much other load there was.

Prints a table and writes JSON naming the machine (default bench/out/backlog.json), with every
RSS sample. Each daemon imports birdtrap/ afresh: if its files change during the run, a note says
the sizes no longer compare. Photos are generated in a new temporary folder (inside --workdir if
given; keep that path short, the daemon's notify socket goes below it), each inbox deleted once its
size is measured and the folder at the end, unless --keep.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import add_output_options, run_settings

ROOT = Path(__file__).resolve().parents[1]
SOURCES = 6  # real photos the backlog is made from, as `python -m bench` uses by default


def say(message: str) -> None:
    print(f"bench.backlog: {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from bench.photos import SIZES

    parser = argparse.ArgumentParser(
        prog="python -m bench.backlog", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--backlogs", default="100,1000,10000", help="backlog sizes, comma separated [100,1000,10000]")
    parser.add_argument("--size", choices=list(SIZES), default="3mp", help="photo size [3mp; 12mp is the issue's, ~21 GB for 10,000]")
    parser.add_argument("--runs", type=int, default=1, help="drains of each backlog; figures are medians [1]")
    parser.add_argument("--batch-size", type=int, default=4, help="the daemon's batch.size [4, the default config]")
    parser.add_argument("--sample-seconds", type=float, default=0.2, help="VmRSS sampling period, besides a sample per commit [0.2]")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="the shared photos and models [../shared]")
    parser.add_argument("--workdir", type=Path, help="where the temporary folder with the photos goes [the system's temp folder]")
    parser.add_argument("--keep", action="store_true", help="keep the generated photos, databases and daemon logs")
    add_output_options(parser, "backlog")
    args = parser.parse_args(argv)
    try:
        args.backlogs = sorted({int(item) for item in args.backlogs.split(",") if item.strip()})
    except ValueError:
        parser.error("--backlogs takes whole numbers separated by commas, e.g. 100,1000,10000")
    if not args.backlogs or args.backlogs[0] < 1 or args.runs < 1 or args.batch_size < 1 or args.sample_seconds <= 0:
        parser.error("--backlogs, --runs and --batch-size must be at least 1, --sample-seconds above 0")
    return args


# --- memory over the drain ------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One look at the daemon: when (monotonic s), its VmRSS and RssAnon (kB), and the rows committed by then.

    RssAnon (heap, buffers) is what a leak grows; VmRSS also holds mapped files (libraries, the
    model), which the kernel may drop when the photos crowd the page cache.
    """

    t: float
    rss_kb: int
    anon_kb: int
    committed: int


def find_daemon(config: Path, parent: int) -> int | None:
    """The pid of `parent`'s child running `-m birdtrap run --config <config>`, if it has started.

    run_daemon does not hand out its Popen, and bench/endtoend.py is not ours to change; the child
    is found in /proc instead, by parent pid first (cheap) and then by its command line.
    """
    wanted = str(config)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[1]) != parent:
                continue
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        words = [word.decode(errors="replace") for word in argv]
        if "birdtrap" in words and "run" in words and wanted in words:
            return int(entry.name)
    return None


class RssSampler(threading.Thread):
    """Samples the daemon's VmRSS and the committed rows until the daemon exits or stop() is called.

    A sample every `interval` s, and one as soon as the database or its WAL changes (a commit):
    commits are what the slope is measured against, and a backlog of a few batches drains faster
    than any fixed period would see. Watching the files costs two stat() calls every 5 ms; the
    row count (a SQLite read) is only made when a sample is taken.
    """

    POLL_S = 0.005
    RECHECK_S = 0.015

    def __init__(self, config: Path, interval: float) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.config = config
        self.database = config.parent / "birdtrap.db"
        self.interval = interval
        self.samples: list[Sample] = []
        self.pid: int | None = None
        self.finished = threading.Event()

    def _files(self) -> tuple:
        signature = []
        for path in (self.database, Path(f"{self.database}-wal")):
            try:
                info = path.stat()
                signature.append((info.st_size, info.st_mtime_ns))
            except OSError:
                signature.append(None)
        return tuple(signature)

    def run(self) -> None:
        from bench.endtoend import _committed
        from bench.measure import status_kb

        deadline = time.monotonic() + 60
        while self.pid is None and not self.finished.is_set() and time.monotonic() < deadline:
            self.pid = find_daemon(self.config, os.getpid())
            if self.pid is None:
                time.sleep(self.POLL_S)
        if self.pid is None:
            return
        files, last, again = None, -math.inf, math.inf
        while not self.finished.is_set():
            now, seen = time.monotonic(), self._files()
            changed = seen != files
            if changed or now >= again or now - last >= self.interval:
                try:
                    rss, anon = status_kb(self.pid, "VmRSS"), status_kb(self.pid, "RssAnon")
                except (OSError, KeyError, ValueError):  # gone, or a zombie without memory
                    return
                self.samples.append(Sample(now, rss, anon, _committed(self.database)))
                # The WAL grows a moment before its commit is visible to readers: look again shortly after.
                files, last, again = seen, now, now + self.RECHECK_S if changed else math.inf
            self.finished.wait(self.POLL_S)

    def stop(self) -> None:
        self.finished.set()
        self.join(5)


@dataclass
class MemoryCurve:
    """RSS at 10% and 90% of the photos committed and the slope between them (MB per 1,000 photos)."""

    rss_10_mb: float | None
    rss_90_mb: float | None
    anon_10_mb: float | None
    anon_90_mb: float | None
    slope_mb_per_1000: float | None
    committed_10: int | None
    committed_90: int | None
    samples_between: int
    why: str = ""


def memory_curve(samples: list[Sample], photos: int) -> MemoryCurve:
    """RSS at the first sample with >= 10% (and >= 90%) of `photos` committed, and the
    least-squares slope of RSS over committed rows across the samples from one to the other.

    Least squares rather than the two end points: RSS moves by a few MB within a batch cycle,
    which on 100 photos alone would read as tens of MB per 1,000.
    """

    def first_at(fraction: float) -> int | None:
        need = max(1, math.ceil(fraction * photos))
        return next((i for i, s in enumerate(samples) if s.committed >= need), None)

    low, high = first_at(0.1), first_at(0.9)
    if low is None or high is None:
        return MemoryCurve(None, None, None, None, None, None, None, 0, "the daemon exited before a sample saw 10% and 90% committed")
    window = samples[low : high + 1]
    a, b = samples[low], samples[high]
    curve = MemoryCurve(a.rss_kb / 1024, b.rss_kb / 1024, a.anon_kb / 1024, b.anon_kb / 1024, None, a.committed, b.committed, len(window))
    xs = [s.committed for s in window]
    if len(set(xs)) < 2:
        curve.why = f"10% and 90% are the same commit ({samples[low].committed} rows): the backlog is one batch"
        return curve
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(s.rss_kb / 1024 for s in window)
    covariance = sum((x - mean_x) * (s.rss_kb / 1024 - mean_y) for x, s in zip(xs, window, strict=True))
    curve.slope_mb_per_1000 = 1000 * covariance / sum((x - mean_x) ** 2 for x in xs)
    return curve


# --- the run --------------------------------------------------------------------------------


@dataclass
class Drain:
    """One drain of one backlog: what run_daemon saw, and the RSS samples taken beside it."""

    run: Any  # bench.endtoend.DaemonRun
    samples: list[Sample]
    curve: MemoryCurve


def drain(config: Path, photos: int, batch_size: int, interval: float) -> Drain:
    """`endtoend.run_daemon` on the prepared inbox, with an RssSampler watching the same daemon."""
    from bench import endtoend

    sampler = RssSampler(config.resolve(), interval)
    sampler.start()
    try:
        run = endtoend.run_daemon(config, photos, batch_size, 0, 1)
    finally:
        sampler.stop()
    return Drain(run, sampler.samples, memory_curve(sampler.samples, photos))


def trace(samples: list[Sample]) -> list[dict]:
    """The samples for the JSON, in MB and seconds since the first, so the curve can be plotted later."""
    first = samples[0].t if samples else 0.0
    return [
        {"t_s": round(s.t - first, 3), "rss_mb": round(s.rss_kb / 1024, 2), "anon_mb": round(s.anon_kb / 1024, 2), "committed": s.committed}
        for s in samples
    ]


def source_fingerprint() -> str:
    """A hash of birdtrap/'s Python files as they are now: each daemon imports them afresh, so a
    backlog drained after someone edited them ran other code, and the sizes no longer compare."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "birdtrap").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def folder_bytes(folder: Path) -> int:
    return sum(entry.stat().st_size for entry in folder.rglob("*") if entry.is_file())


def add_figures(results: Any, n: int, size: str, smallest: int, drains: list[Drain]) -> None:
    """Medians over the runs of one backlog size, each against the same figure at the smallest size."""
    runs, prefix, base = len(drains), f"backlog.{n}", f"backlog.{smallest}"
    label = f"{n:,} x {size}"

    def median(values: list[float]) -> float:
        return statistics.median(values)

    drain_s = median([d.run.drain_s for d in drains])
    results.add(f"{prefix}.per_photo", f"{label}: drain per photo", 1000 * drain_s / n, "ms", f"{base}.per_photo", runs,
                goal="~1x", note=f"READY=1 -> last commit, {drain_s:.1f} s")  # fmt: skip
    results.add(f"{prefix}.ready_s", f"{label}: start -> READY=1", median([d.run.ready_s for d in drains]), "s", f"{base}.ready_s", runs,
                note="includes the start-up scan of the inbox")  # fmt: skip
    results.add(f"{prefix}.cpu_per_photo", f"{label}: CPU per photo", 1000 * median([d.run.drain_cpu_s / n for d in drains]), "ms CPU",
                f"{base}.cpu_per_photo", runs, goal="~1x", note="all threads, READY=1 -> last commit")  # fmt: skip
    results.add(f"{prefix}.write_bytes_per_photo", f"{label}: bytes to storage per photo",
                median([d.run.write_bytes / n for d in drains]), "B", f"{base}.write_bytes_per_photo", runs, goal="~1x",
                note="/proc io write_bytes: DB, WAL, log")  # fmt: skip
    results.add(f"{prefix}.peak_rss_mb", f"{label}: peak RSS (VmHWM)", median([d.run.peak_rss_mb for d in drains]), "MB",
                f"{base}.peak_rss_mb", runs, goal="~1x (flat)",
                note=f"RSS at READY=1 {median([d.run.rss_ready_mb for d in drains]):.0f} MB")  # fmt: skip
    curves = [d.curve for d in drains]
    seen = [c for c in curves if c.rss_10_mb is not None and c.rss_90_mb is not None]
    sloped = [c for c in curves if c.slope_mb_per_1000 is not None]
    samples = median([len(d.samples) for d in drains])
    why = next((c.why for c in curves if c.why), "no samples")
    if seen:
        # The notes quote the first run with the figure; the values are medians over the runs.
        first, anon_10, anon_90 = seen[0], median([c.anon_10_mb for c in seen]), median([c.anon_90_mb for c in seen])
        results.add(f"{prefix}.rss_10_mb", f"{label}: RSS at 10% committed", median([c.rss_10_mb for c in seen]), "MB", None, len(seen),
                    note=f"first sample with >= 10%: {first.committed_10} rows; RssAnon {anon_10:.0f} MB")  # fmt: skip
        results.add(f"{prefix}.rss_90_mb", f"{label}: RSS at 90% committed", median([c.rss_90_mb for c in seen]), "MB",
                    f"{prefix}.rss_10_mb", len(seen), goal="~1x",
                    note=f"first sample with >= 90%: {first.committed_90} rows; RssAnon {anon_90:.0f} MB")  # fmt: skip
    else:
        results.skip(f"{prefix}.rss_10_mb", f"{label}: RSS at 10% committed", "MB", why)
        results.skip(f"{prefix}.rss_90_mb", f"{label}: RSS at 90% committed", "MB", why, f"{prefix}.rss_10_mb")
    if sloped:
        first = sloped[0]
        results.add(f"{prefix}.rss_slope_mb_per_1000", f"{label}: RSS growth, 10% -> 90%",
                    median([c.slope_mb_per_1000 for c in sloped]), "MB/1000 photos", None, len(sloped), goal="~0 (flat)",
                    note=f"least squares, {first.samples_between} samples from {first.committed_10} to {first.committed_90} rows "
                    f"committed; {samples:.0f} in all")  # fmt: skip
    else:
        results.skip(f"{prefix}.rss_slope_mb_per_1000", f"{label}: RSS growth, 10% -> 90%", "MB/1000 photos", why)


def run(args: argparse.Namespace) -> tuple[Any, dict]:
    """Write, drain and measure every backlog size; returns the Results and the RSS samples by size."""
    from bench import endtoend, photos
    from bench.report import Results

    results = Results()
    results.settings = run_settings(args)
    results.settings["sources"] = SOURCES
    traces: dict[str, list[dict]] = {}
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="birdtrap-backlog-", dir=args.workdir))
    # run_daemon binds its notify socket in the backlog's folder, and a socket path has at most 107 bytes.
    longest = workdir / f"n{args.backlogs[-1]}" / "notify.sock"
    if len(os.fsencode(longest)) > 107:
        workdir.rmdir()
        raise SystemExit(f"bench.backlog: {longest} is too long for a unix socket; pass a shorter --workdir")
    smallest, peak_disk, written, fingerprints = args.backlogs[0], 0, {}, set()
    try:
        sources = photos.source_photos(args.shared, SOURCES)
        rendered = [photos.render(source, args.size) for source in sources]
        for n in args.backlogs:
            folder = workdir / f"n{n}"
            config = endtoend.write_config(folder, args.shared.resolve(), args.batch_size)
            began = time.monotonic()
            photos.write_backlog(folder / "inbox", rendered, n)
            write_s = time.monotonic() - began
            inbox = folder_bytes(folder / "inbox")
            say(f"{n:,} photos x {args.size}: {inbox / 1e9:.2f} GB written in {write_s:.1f} s in {folder}")
            drains, code = [], set()
            for index in range(args.runs):
                code.add(source_fingerprint())
                drains.append(drain(config, n, args.batch_size, args.sample_seconds))
                d = drains[-1]
                say(f"  run {index + 1}/{args.runs}: {d.run.drain_s:.1f} s drain, {1000 * d.run.drain_s / n:.1f} ms/photo, "
                    f"VmHWM {d.run.peak_rss_mb:.0f} MB, {len(d.samples)} RSS samples")  # fmt: skip
                if d.run.exit_code != 0:
                    results.notes.append(f"{n:,} photos, run {index + 1}: birdtrap run exited {d.run.exit_code} after SIGTERM")
                traces[f"{n}.run{index + 1}"] = trace(d.samples)
            peak_disk = max(peak_disk, folder_bytes(workdir))
            written[str(n)] = {"write_s": round(write_s, 1), "inbox_mb": round(inbox / 1e6), "birdtrap_sources": sorted(code)}
            fingerprints.update(code)
            add_figures(results, n, args.size, smallest, drains)
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"kept the photos, databases and logs in {workdir}")
    results.settings["backlogs_written"] = written
    if len(fingerprints) > 1:
        results.notes.append(f"birdtrap/*.py changed during the run ({len(fingerprints)} versions, see settings): sizes do not compare")
    results.settings["disk_mb_max"] = round(peak_disk / 1e6)
    results.finish()
    return results, traces


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    args = parse_args(argv)
    if not (args.shared / "models" / "inat_birds" / "model.tflite").exists():
        print(f"bench.backlog: no models under {args.shared}; pass --shared PATH (the folder with images/ and models/)", file=sys.stderr)
        return 2
    # A plain kill (a test's timeout, systemd) still runs the finally blocks that delete the photos.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from bench.report import OtherLoad, publish

    other_load = OtherLoad()
    results, traces = run(args)
    other_load.record(results)
    # The JSON carries every RSS sample too.
    publish(results, args, {"rss_samples": traces}, detail=f", at most {results.settings['disk_mb_max']:,} MB on disk")
    return 0


if __name__ == "__main__":
    sys.exit(main())
