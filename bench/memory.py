"""`python -m bench.memory`: peak transient memory per photo, normal and extreme shapes (issue 16).

For each photo shape, in a fresh process: the peak RSS while it is decoded (beyond the decoded
frame that is kept) and while its model input and motion thumbnail are made, each as MB and as
a ratio to the decoded frame. The peak is Linux's VmHWM, reset before each stage by writing 5 to
/proc/self/clear_refs. Prints JSON naming the machine. A figure, never a test assertion.

    python -m bench.memory
"""

from __future__ import annotations

import io
import json
import multiprocessing
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "images"
# (name, width, height or None for a real photo): legit shapes, the bounds' worst cases, the issue's case.
CASES = [
    ("12 MP camera-trap JPEG (real)", "camtrap_nonbird/2021-05-28_SYFR0041_deer.JPG"),
    ("12 MP PNG 4000x3000", (4000, 3000)),
    ("panorama PNG 6:1, 12000x2000", (12000, 2000)),
    ("tall PNG 1:20, 1000x20000 (the aspect bound)", (1000, 20000)),
    ("wide PNG 20:1, 40000x2000 (80 MP, both bounds)", (40000, 2000)),
    ("1x5000 PNG (issue 16: 17.9 GiB before)", (1, 5000)),
]


def _status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def _peak_of(step):
    """(result, peak MB above the RSS before the step)."""
    before = _status("VmRSS:")
    Path("/proc/self/clear_refs").write_text("5")
    result = step()
    return result, _status("VmHWM:") - before


def _measure(case: tuple) -> dict:
    import numpy as np
    from PIL import Image

    from birdtrap.errors import PhotoError
    from birdtrap.identify.motion import thumbnail_for_motion
    from birdtrap.identify.preprocess import InputSpec, PreprocessSettings, decode, to_model_input

    name, source = case
    if isinstance(source, str):
        data = (SHARED / source).read_bytes()
    else:
        pixels = np.random.default_rng(0).integers(0, 256, (source[1], source[0], 3), dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "PNG", compress_level=1)
        data = out.getvalue()
        del pixels, out
    settings = PreprocessSettings()
    spec = InputSpec(224, 224, dtype="uint8", scale=0.0078125, zero_point=128)
    try:
        photo, decode_peak = _peak_of(lambda: decode(data, name, settings))
    except PhotoError as e:
        return {"photo": name, "refused": str(e)}
    frame_mb = photo.bgr.nbytes / 2**20
    _, steps_peak = _peak_of(lambda: (to_model_input(photo.bgr, spec, settings), thumbnail_for_motion(photo.bgr)))
    beyond = max(0.0, decode_peak - frame_mb)
    return {
        "photo": name,
        "decoded_frame_mb": round(frame_mb, 1),
        "decode_transient_mb": round(beyond, 1),
        "decode_transient_x_frame": round(beyond / frame_mb, 2),
        "model_input_and_thumbnail_mb": round(steps_peak, 1),
        "model_input_and_thumbnail_x_frame": round(steps_peak / frame_mb, 3),
    }


def main() -> None:
    context = multiprocessing.get_context("spawn")  # a fresh process per photo: no peak carries over
    rows = []
    for case in CASES:
        with context.Pool(1) as pool:
            rows.append(pool.apply(_measure, (case,)))
    print(json.dumps({"machine": platform.machine(), "python": platform.python_version(), "photos": rows}, indent=1))


if __name__ == "__main__":
    main()
