"""Timing and process accounting: medians of repeats, and what /proc says about a running daemon.

/proc is read directly rather than through psutil, so the bench needs nothing the edge install
does not have, and reads exactly the counters a Pi exposes.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Timing:
    """The median of the samples (seconds) and how many there were."""

    median: float
    samples: int

    @property
    def ms(self) -> float:
        return 1000 * self.median


def time_each(fn: Callable[[Any], object], inputs: Sequence[Any], repeats: int, warmup: int = 1) -> Timing:
    """Median time of `fn(x)` over every input, `repeats` times each (after `warmup` untimed rounds).

    Inputs are interleaved across rounds, so a slow first call (cold cache, lazy init) is spread
    out instead of landing on one input.
    """
    for _ in range(warmup):
        for item in inputs:
            fn(item)
    samples = []
    for _ in range(repeats):
        for item in inputs:
            start = time.perf_counter()
            fn(item)
            samples.append(time.perf_counter() - start)
    return Timing(statistics.median(samples), len(samples))


def loop_once(fn: Callable[[], object], per: int) -> tuple[float, float]:
    """Wall seconds and CPU-seconds per item of one whole loop `fn()` over `per` items.

    CPU time is the process's (every thread, the interpreter's included), so a model invoked on
    two threads counts twice its wall time: that is the energy figure.
    """
    cpu = time.process_time()
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) / per, (time.process_time() - cpu) / per


# --- /proc ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (alive or finished) included."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def status_kb(pid: int, key: str) -> int:
    """A `kB` value from /proc/PID/status, e.g. VmHWM (peak resident set) or VmRSS."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def context_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches summed over the process's live threads.

    /proc/PID/status alone counts only the main thread; a voluntary switch is a thread going to
    sleep and so, summed over threads, the number of wake-ups.
    """
    voluntary = involuntary = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            lines = (task / "status").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("voluntary_ctxt_switches:"):
                voluntary += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                involuntary += int(line.split()[1])
    return voluntary, involuntary


def io_counters(pid: int) -> dict[str, int]:
    """/proc/PID/io: wchar (bytes handed to write calls) and write_bytes (bytes sent to storage)."""
    counters = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        name, _, value = line.partition(":")
        counters[name.strip()] = int(value)
    return counters


def machine_busy_seconds() -> float:
    """CPU-seconds the whole machine has spent busy (all cores, all processes), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def own_cpu_seconds() -> float:
    """CPU-seconds of this process and of its finished children (the daemons it waited for)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system
