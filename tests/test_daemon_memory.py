"""What keeps the shipped daemon's memory down (issue 22 item 5): real models, real files, real glibc.

The figures themselves (peak RSS before and after) are in bench/README.md; these tests hold the
mechanisms, never a number of megabytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from birdtrap.errors import PhotoError
from birdtrap.identify import preprocess
from birdtrap.identify.preprocess import read_photo_bytes
from birdtrap.identify.tflite import TFLiteModel, hand_back_file_pages, open_interpreter

from conftest import INAT, MODELS, ROOT, SHARED

linux_only = pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads /proc/self/smaps (Linux)")


def resident_kb(path: Path) -> int:
    """The kB of `path`'s mappings resident in this process, from /proc/self/smaps."""
    target, total, inside = os.path.realpath(path), 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping's header line
            inside = len(fields) == 6 and fields[5] == target
        elif inside and line.startswith("Rss:"):
            total += int(fields[1])
    return total


@linux_only
@pytest.mark.parametrize("name", ["inat_birds", "imagenet_mobilenet_v2", "coco_ssd_mobilenet_v1"])
def test_a_loaded_model_keeps_none_of_its_file_resident_and_answers_as_the_runtime_alone(name):
    path = MODELS / name / "model.tflite"
    model = TFLiteModel(path, threads=2, delegate="cpu")
    assert resident_kb(path) < 64, "the file's pages should be handed back once the interpreter is built"

    rng = np.random.default_rng(7)
    height, width, channels = model.input_shape
    image = rng.integers(0, 256, (1, height, width, channels)).astype(model.input_dtype)
    # The same file through the runtime with its pages left resident: the same outputs, bit for bit.
    plain, _, _ = open_interpreter(path, 2, "cpu")
    detail = plain.get_input_details()[0]
    plain.set_tensor(detail["index"], image)
    plain.invoke()
    expected = [plain.get_tensor(d["index"]) for d in plain.get_output_details()]
    got = model.invoke(image)
    assert len(got) == len(expected)
    for ours, theirs, detail in zip(got, expected, model.output_details, strict=True):
        scale, zero = detail.get("quantization", (0.0, 0))
        theirs = theirs.astype(np.float32) if not scale else (theirs.astype(np.float32) - zero) * scale
        np.testing.assert_array_equal(ours, theirs)


@linux_only
def test_handing_back_pages_leaves_a_writable_or_unmapped_file_alone(tmp_path):
    # A file nobody mapped: nothing to advise, nothing raised.
    loose = tmp_path / "model.tflite"
    loose.write_bytes((INAT / "model.tflite").read_bytes())
    assert hand_back_file_pages(loose) == 0
    # A writable shared mapping is never advised: its pages may hold what was written.
    import mmap

    with loose.open("r+b") as handle, mmap.mmap(handle.fileno(), 0) as mapped:
        mapped[0] = mapped[0]
        assert hand_back_file_pages(loose) == 0
        assert resident_kb(loose) > 0


def test_a_photo_is_read_whole_and_exactly(tmp_path):
    source = SHARED / "images" / "camtrap_heron"
    first = sorted(source.glob("*.JPG"))[0]
    data = first.read_bytes()
    assert read_photo_bytes(first, max_bytes=len(data)) == data
    assert read_photo_bytes(first) == data


def test_a_photo_that_grows_while_it_is_read_is_read_on_and_refused_past_the_bound(tmp_path, monkeypatch):
    photo = tmp_path / "growing.jpg"
    photo.write_bytes(b"x" * 5000)
    real_fstat = os.fstat

    def stat_from_before_it_grew(fd):  # the race: the size was taken when the file was shorter
        info = real_fstat(fd)
        return os.stat_result((info.st_mode, *info[1:6], 1000, *info[7:]))

    monkeypatch.setattr(preprocess.os, "fstat", stat_from_before_it_grew)
    assert read_photo_bytes(photo, max_bytes=8000) == b"x" * 5000, "a file that grew, still under the bound, is read whole"
    assert read_photo_bytes(photo) == b"x" * 5000
    with pytest.raises(PhotoError, match="grew past preprocess.max_file_mb"):
        read_photo_bytes(photo, max_bytes=3000)


def glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError, OSError):
        return False


# Threads that allocate at once, then glibc's own account of its arenas (malloc_info's <heap> elements).
ARENAS_SEEN = """
import ctypes, sys, threading
from birdtrap.daemon.memory import one_malloc_arena
print(one_malloc_arena(), flush=True)
gate = threading.Barrier(4)
def work():
    gate.wait()
    kept = [bytearray(200_000) for _ in range(50)]
    gate.wait()
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.fdopen.restype = ctypes.c_void_p
stream = libc.fdopen(1, b"w")
libc.malloc_info(0, ctypes.c_void_p(stream))
libc.fflush(ctypes.c_void_p(stream))
"""


@pytest.mark.skipif(not glibc(), reason="glibc's malloc arenas")
def test_the_daemon_limits_malloc_to_one_arena_unless_the_environment_chose():
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    environment["PYTHONPATH"] = str(ROOT)

    def run(extra: dict[str, str]) -> tuple[str, int]:
        done = subprocess.run([sys.executable, "-c", ARENAS_SEEN], capture_output=True, text=True, env={**environment, **extra}, check=True)
        first, _, info = done.stdout.partition("\n")
        return first, info.count("<heap nr=")

    assert run({}) == ("True", 1)
    chosen, arenas = run({"MALLOC_ARENA_MAX": "4"})
    assert chosen == "False" and arenas > 1, "the user's own MALLOC_ARENA_MAX is left as it is"
