"""Figures, their baselines and ratios, and the machine they were measured on.

Every figure names a baseline figure from the same run, and the ratio is value / baseline. A
timing on its own says little (this box is not a Pi); the ratio against something measured a
second earlier on the same CPU is what carries over to other machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bench.measure import machine_busy_seconds, own_cpu_seconds

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Figure:
    """One measured number, the figure it is compared against, and how many samples it summarises."""

    key: str
    label: str
    value: float | None
    unit: str
    baseline: str | None = None
    repeats: int = 1
    goal: str = ""
    note: str = ""
    required: bool = True
    ratio: float | None = None
    baseline_value: float | None = None


@dataclass
class Results:
    """All figures of one run, in the order they were measured."""

    figures: dict[str, Figure] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def add(
        self,
        key: str,
        label: str,
        value: float | None,
        unit: str,
        baseline: str | None = None,
        repeats: int = 1,
        goal: str = "",
        note: str = "",
        required: bool = True,
    ) -> Figure:
        figure = Figure(key, label, None if value is None else float(value), unit, baseline, repeats, goal, note, required)
        self.figures[key] = figure
        return figure

    def skip(self, key: str, label: str, unit: str, why: str, baseline: str | None = None) -> None:
        """Record a figure that could not be measured here (an optional decoder, a broken model)."""
        self.add(key, label, None, unit, baseline, repeats=0, note=why, required=False)

    def value(self, key: str) -> float | None:
        figure = self.figures.get(key)
        return None if figure is None else figure.value

    def finish(self) -> None:
        """Fill in every ratio once all figures (baselines included) are in."""
        for figure in self.figures.values():
            base = self.figures.get(figure.baseline) if figure.baseline else None
            figure.baseline_value = base.value if base else None
            if figure.value is not None and base is not None and base.value:
                figure.ratio = figure.value / base.value

    def as_json(self, machine: dict) -> dict:
        return {
            "machine": machine,
            "settings": self.settings,
            "figures": {key: asdict(figure) for key, figure in self.figures.items()},
            "notes": self.notes,
        }


def _format(value: float | None) -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(results: Results, markdown: bool = False) -> str:
    """The run as a table: figure, median, unit, baseline, ratio, repeats, goal or note."""
    header = ["figure", "median", "unit", "baseline", "ratio", "n", "goal / note"]
    rows = [header]
    for figure in results.figures.values():
        ratio = "-" if figure.ratio is None else f"{figure.ratio:.2f}x"
        remark = "; ".join(part for part in (figure.goal, figure.note) if part)
        rows.append([figure.label, _format(figure.value), figure.unit, figure.baseline or "-", ratio, str(figure.repeats), remark])
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows[1:]]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.ljust(width) if i in (0, 2, 3) else cell.rjust(width) for i, (cell, width) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join(cells) + "  " + row[-1])
        if index == 0:
            lines.append("-" * (sum(widths) + 2 * len(widths) + 11))
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _revision() -> str | None:
    """The commit measured, with '+dirty' when birdtrap/ has uncommitted changes."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "birdtrap"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def machine() -> dict:
    """The machine and the library versions the figures depend on (decoders, runtime)."""
    try:
        from PIL import features

        pillow_turbo = bool(features.check_feature("libjpeg_turbo"))
    except Exception:  # noqa: BLE001 - a missing feature check must not lose the run
        pillow_turbo = None
    return {
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_mb": _memory_mb(),
        "system": platform.platform(),
        "python": sys.version.split()[0],
        "birdtrap_revision": _revision(),
        "versions": {
            name: _version(name)
            for name in ("opencv-python-headless", "numpy", "pillow", "ai-edge-litert", "SQLAlchemy", "PyTurboJPEG", "simplejpeg")
        },
        "pillow_libjpeg_turbo": pillow_turbo,
        # Other work on the machine skews every figure; the load average at the end says if there was any.
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def add_output_options(parser: argparse.ArgumentParser, name: str) -> None:
    """--out, --markdown and --json, the same for every bench: the JSON goes to bench/out/<name>.json."""
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / f"{name}.json", help=f"JSON output [bench/out/{name}.json]")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (for bench/README.md)")
    parser.add_argument("--json", action="store_true", help="print the JSON instead of the table")


def run_settings(args: argparse.Namespace) -> dict:
    """The options a run was given, for its JSON: paths as text, the output switches left out."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("markdown", "json")}


class OtherLoad:
    """CPU that other processes used while a bench ran, started at construction.

    Work competing for the cores inflates every timing (the daemon's most), so each run records
    how much there was and says so when it is more than a tenth of a core.
    """

    def __init__(self) -> None:
        self.began = time.monotonic()
        self._busy, self._own = machine_busy_seconds(), own_cpu_seconds()

    def record(self, results: Results) -> float:
        """Put `other_processes_cpu_percent` and `seconds` in the run's settings; returns the percent."""
        elapsed = time.monotonic() - self.began
        others = (machine_busy_seconds() - self._busy) - (own_cpu_seconds() - self._own)
        percent = round(100 * max(0.0, others) / elapsed, 1)
        results.settings["other_processes_cpu_percent"] = percent
        if percent > 10:
            results.notes.append(f"other processes kept {percent:.0f}% of a core busy during the run: timings are inflated")
        results.settings["seconds"] = round(elapsed, 1)
        return percent


def write_json(path: Path, results: Results, machine_info: dict, extra: dict | None = None) -> dict:
    """The run as JSON (figures, machine, settings, notes, and any `extra` sections); returns it."""
    report = results.as_json(machine_info) | (extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def publish(results: Results, args: argparse.Namespace, extra: dict | None = None, detail: str = "") -> None:
    """Write the JSON to --out, then print it (--json) or the machine, the table and its notes.

    `detail` goes into the closing line after the run's seconds.
    """
    info = machine()
    report = write_json(args.out, results, info, extra)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    load = results.settings.get("other_processes_cpu_percent")
    print(
        f"machine: {info['cpu']}, {info['usable_cores']} cores, {info['machine']}, Python {info['python']}, "
        f"birdtrap {info['birdtrap_revision']}" + ("" if load is None else f", other processes {load}% of a core")
    )
    print(table(results, markdown=args.markdown))
    for note in results.notes:
        print(f"note: {note}")
    print(f"({results.settings.get('seconds', '?')} s{detail}; JSON in {args.out})")
