"""The fuzz corpus (tests/fuzz_corpus.py) through the real daemon under a memory limit (issue 16).

A few hundred hostile files lie beside good photos; the daemon runs as a subprocess whose
address space is capped with RLIMIT_AS (a Pi-sized budget: a photo that made it allocate
gigabytes would end it with MemoryError). Every file must end `done` or `failed`, the daemon
must stay up, and the good photos must be named. The peak RSS is written to the test's output
(-s) for RELIABILITY.md, not asserted.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import fuzz_corpus

from conftest import HERON, photo, rows, wait_for, write_config

# The daemon with its three models maps ~1 GB of address space at rest (thread stacks, arenas,
# libraries); 1.5 GB leaves ~0.5 GB for a batch of photos, about what a 1 GB Pi can spare.
ADDRESS_SPACE_LIMIT = int(os.environ.get("BIRDTRAP_FUZZ_AS_LIMIT", 1536 * 2**20))


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def test_a_few_hundred_hostile_files_each_end_done_or_failed_under_a_memory_limit_and_the_daemon_stays_up(tmp_path):
    good = [photo("bird.bmp"), HERON[0], HERON[5], photo("IMG_0708.JPG")]
    inbox = tmp_path / "inbox"
    kinds = fuzz_corpus.make(inbox, good)
    config = write_config(tmp_path, batch={"size": 8, "max_wait_seconds": 0.3}, watch={"patterns": list(fuzz_corpus.SUFFIXES)})
    files = sorted(p.name for p in inbox.iterdir() if p.is_file() and not p.is_symlink())
    log = tmp_path / "daemon.log"
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    environment.pop("JOURNAL_STREAM", None)
    with log.open("w") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "birdtrap", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=tmp_path,
            preexec_fn=_limit_memory,
        )
        try:

            def settled() -> bool:
                assert daemon.poll() is None, f"the daemon exited ({daemon.returncode}):\n{log.read_text()[-3000:]}"
                ended = {Path(path).name: status for path, status, *_ in rows(tmp_path) if status != "pending"}
                return all(name in ended for name in files)

            wait_for(settled, timeout=600, interval=1, what="every corpus file to end done or failed")
            peak = _peak_rss_mb(daemon.pid)
            assert daemon.poll() is None
        finally:
            daemon.terminate()
            daemon.wait(60)
    statuses = {Path(path).name: (status, error) for path, status, _, _, _, error in rows(tmp_path)}
    assert {statuses[name][0] for name in files} <= {"done", "failed"}, {
        n: statuses[n] for n in files if statuses[n][0] not in ("done", "failed")
    }
    for name in kinds["good"]:
        assert statuses[name][0] == "done", (name, statuses[name])
    for name in kinds["extreme-shape"]:
        status, error = statuses[name]
        shape_refused = "preprocess.max_aspect_ratio" in error or "preprocess.min_side" in error if error else False
        assert status == "failed" and shape_refused, (name, status, error)
    for name in kinds["huge-claimed-header"]:
        assert statuses[name][0] == "failed", (name, statuses[name])
    for name in kinds["full-decode-too-large"]:
        status, error = statuses[name]
        assert status == "failed" and "preprocess.max_full_decode_pixels" in (error or ""), (name, status, error)
    for name in kinds["odd-shape-inside-bounds"] + kinds["random-noise-photo"] + kinds["decompression-bomb-inside-limits"]:
        assert statuses[name][0] == "done", (name, statuses[name])
    assert "Traceback" not in log.read_text()
    failed = sum(1 for name in files if statuses[name][0] == "failed")
    print(
        f"\nfuzz corpus: {len(kinds)} kinds, {len(files)} files (+ symlinks), {len(files) - failed} done, {failed} failed, "
        f"0 crashes, daemon peak RSS {peak:.0f} MB under RLIMIT_AS {ADDRESS_SPACE_LIMIT / 2**20:.0f} MB"
    )
