"""`python -m training.convert`: tiny YOLO-shaped ONNX models made here, through onnx2tf and
TensorFlow's converter, into bundles the daemon's own loader and detector read; the answer on a
synthetic image is known from the weights, so a wrong grid decode, channel order or scale fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from birdtrap import config as config_module
from birdtrap.daemon.wiring import load_detector
from birdtrap.identify.bundle import sha256_file
from tests.conftest import ROOT, photo

onnx = pytest.importorskip("onnx", reason="conversion needs the convert extra: pip install -e '.[convert]'")
pytest.importorskip("onnx2tf", reason="conversion needs the convert extra: pip install -e '.[convert]'")
pytest.importorskip("tensorflow", reason="conversion needs the convert extra: pip install -e '.[convert]'")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from training.convert import REFERENCE_SHA256, REFERENCE_VERSIONS, YOLOX_NANO_SHA256, cli, convert_yolox, yolox_grid  # noqa: E402
from training.errors import ConvertError  # noqa: E402

CONVERTED = ROOT.parent / "converted"  # the real conversions, run once by hand (docs/models.md)


def _save(path: Path, nodes: list, inputs: list, outputs: list, initializers: dict[str, np.ndarray]) -> Path:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _mean_of_channel(channel: int, scale: float) -> tuple[list, dict]:
    """Nodes giving `brightness` (1, 1, 1): the mean of one input channel x scale."""
    nodes = [
        helper.make_node("Slice", ["image", "c_from", "c_to", "c_axis"], ["one_channel"]),
        helper.make_node("ReduceMean", ["one_channel"], ["mean4"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean4", "shape111"], ["mean3"]),
        helper.make_node("Mul", ["mean3", "scale"], ["brightness"]),
    ]
    consts = {
        "c_from": np.array([channel], np.int64),
        "c_to": np.array([channel + 1], np.int64),
        "c_axis": np.array([1], np.int64),
        "shape111": np.array([1, 1, 1], np.int64),
        "scale": np.array([scale], np.float32),
    }
    return nodes, consts


def tiny_yolox(path: Path, size: int = 64) -> tuple[Path, int]:
    """A YOLOX-shaped ONNX (raw head, 80 classes) whose only sure row is a bird at a stride-16 cell.

    Its objectness is the mean of input channel 2 (red, as YOLOX takes BGR) / 255, so a red image
    has the bird and a blue one has nothing. Returns the path and the row of the bird.
    """
    cells, steps = yolox_grid(size, size)
    rows = len(cells)
    row = int(np.flatnonzero((steps[:, 0] == 16) & (cells[:, 0] == 1) & (cells[:, 1] == 2))[0])
    base = np.zeros((1, rows, 85), np.float32)
    base[0, :, 2:4] = -10.0  # tiny boxes everywhere else
    base[0, row, :4] = (0.5, 0.5, np.log(2.0), np.log(2.0))
    base[0, row, 5 + 14] = 1.0  # COCO bird
    mask = np.zeros((1, rows, 85), np.float32)
    mask[0, row, 4] = 1.0
    nodes, consts = _mean_of_channel(2, 1 / 255)
    nodes += [helper.make_node("Mul", ["brightness", "mask"], ["objectness"]), helper.make_node("Add", ["objectness", "base"], ["output"])]
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, rows, 85])]
    return _save(path, nodes, inputs, outputs, {**consts, "mask": mask, "base": base}), row


def tiny_yolov5(path: Path, size: int = 32) -> Path:
    """A MegaDetector-v5-shaped ONNX: (1, 12, 8) rows, the first an animal box whose objectness is
    the mean of input channel 0 (red, RGB 0-1); the others never sure."""
    base = np.tile(np.array([4, 4, 2, 2, 0.01, 0, 1, 0], np.float32), (1, 12, 1))
    base[0, 0] = (16, 8, 8, 8, 0, 1, 0, 0)
    mask = np.zeros((1, 12, 8), np.float32)
    mask[0, 0, 4] = 1.0
    nodes, consts = _mean_of_channel(0, 1.0)
    nodes += [helper.make_node("Mul", ["brightness", "mask"], ["objectness"]), helper.make_node("Add", ["objectness", "base"], ["output"])]
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 12, 8])]
    return _save(path, nodes, inputs, outputs, {**consts, "mask": mask, "base": base})


def _detector(tmp_path: Path, detector: dict):
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({"detector": detector}), encoding="utf-8")
    return load_detector(config_module.load(path))


def _plain(bgr: tuple[int, int, int], size: int = 96) -> np.ndarray:
    return np.full((size, size, 3), bgr, np.uint8)


RED_BGR, BLUE_BGR = (0, 0, 255), (255, 0, 0)


def test_a_tiny_yolox_converts_and_the_detector_decodes_its_grid_in_bgr(tmp_path):
    source, _ = tiny_yolox(tmp_path / "tiny_yolox.onnx")
    result = convert_yolox(source, tmp_path / "bundle", quantization="float32", sha256=sha256_file(source))

    card = json.loads((tmp_path / "bundle" / "model.json").read_text())
    assert card["source"]["sha256"] == sha256_file(source)
    assert card["output_sha256"] == sha256_file(tmp_path / "bundle" / "model.tflite")
    assert card["input"]["channels"] == "BGR" and card["input"]["std"] == 1.0
    assert (tmp_path / "bundle" / "labels.txt").read_text().splitlines()[14] == "bird"
    assert result.card["detector"]["decoding"] == "yolov5"

    detector = _detector(tmp_path, {"preset": "yolox-nano", "path": str(tmp_path / "bundle")})
    [[found]] = detector.detect([_plain(RED_BGR)], min_score=0.3)
    assert found.kind == "bird" and found.class_id == 14
    assert found.score == pytest.approx(1.0, abs=0.02)
    # cell (1, 2) of stride 16: centre (24, 40) px, 32 px square, on a 64 px input
    assert found.box == pytest.approx((8 / 64, 24 / 64, 40 / 64, 56 / 64), abs=0.01)
    assert detector.detect([_plain(BLUE_BGR)], min_score=0.3) == [[]]


def test_the_detector_reads_bgr_input_from_the_card_without_a_preset(tmp_path):
    source, _ = tiny_yolox(tmp_path / "tiny_yolox.onnx")
    convert_yolox(source, tmp_path / "bundle", quantization="float32", sha256=sha256_file(source))
    detector = _detector(
        tmp_path,
        {
            "path": str(tmp_path / "bundle" / "model.tflite"),
            "decoding": "yolov5",
            "bird_classes": [14],
            "animal_classes": [],
            "person_classes": [0],
        },
    )
    assert detector.spec.channels == "BGR" and detector.spec.std == 1.0
    assert [d.kind for d in detector.detect([_plain(RED_BGR)], min_score=0.3)[0]] == ["bird"]


def test_a_yolox_source_whose_sha256_differs_from_the_pin_is_refused_naming_the_flag(tmp_path):
    source, _ = tiny_yolox(tmp_path / "tiny_yolox.onnx")
    with pytest.raises(ConvertError, match="--sha256") as caught:
        convert_yolox(source, tmp_path / "bundle", sha256=YOLOX_NANO_SHA256)
    assert YOLOX_NANO_SHA256 in str(caught.value)
    assert not (tmp_path / "bundle").exists()


def test_the_megadetector_command_converts_a_tiny_yolov5_export_that_the_v5_preset_reads(tmp_path):
    source = tiny_yolov5(tmp_path / "md_tiny.onnx")
    result = CliRunner().invoke(
        cli,
        [
            "megadetector",
            "--source",
            str(source),
            "--sha256",
            sha256_file(source),
            "--out",
            str(tmp_path / "md"),
            "--quantization",
            "float32",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sha256_file(tmp_path / "md" / "model.tflite") in result.output
    assert (tmp_path / "md" / "labels.txt").read_text().split() == ["animal", "person", "vehicle"]

    detector = _detector(tmp_path, {"preset": "megadetector-v5", "path": str(tmp_path / "md")})
    [[found]] = detector.detect([_plain(RED_BGR)], min_score=0.3)
    assert (found.kind, found.class_id) == ("animal", 0)
    assert found.box == pytest.approx((12 / 32, 4 / 32, 20 / 32, 12 / 32), abs=0.01)
    assert detector.detect([_plain(BLUE_BGR)], min_score=0.3) == [[]]


def test_the_megadetector_command_refuses_a_file_that_is_not_onnx_or_torchscript(tmp_path):
    source = tmp_path / "md_v5a.0.0.bin"
    source.write_bytes(b"not a model")
    result = CliRunner().invoke(cli, ["megadetector", "--source", str(source), "--out", str(tmp_path / "md")])
    assert result.exit_code != 0
    assert "--source" in result.output and "ONNX" in result.output


@pytest.mark.skipif(
    not (CONVERTED / "yolox-nano" / "model.tflite").exists(),
    reason=f"the real conversion is not in {CONVERTED}/yolox-nano (docs/models.md)",
)
def test_the_real_converted_yolox_nano_finds_the_person_in_a_real_photo(tmp_path):
    from PIL import Image

    detector = _detector(tmp_path, {"preset": "yolox-nano", "path": str(CONVERTED / "yolox-nano")})
    bgr = np.ascontiguousarray(np.asarray(Image.open(photo("grace_hopper.bmp")).convert("RGB"))[..., ::-1])
    found = detector.detect([bgr], min_score=0.3)[0]
    assert found and found[0].kind == "person"
    x0, y0, x1, y1 = found[0].box
    assert (x1 - x0) * (y1 - y0) > 0.3  # a portrait: the person fills much of the frame


def test_the_pinned_yolox_nano_converts_to_the_recorded_bytes_and_finds_the_person(tmp_path):
    import onnx2tf
    import tensorflow as tf

    from tests.conftest import MODELS

    result = convert_yolox(MODELS / "sources" / "yolox_nano" / "yolox_nano.onnx", tmp_path / "yolox")
    if {"tensorflow": tf.__version__, "onnx2tf": onnx2tf.__version__} == REFERENCE_VERSIONS:
        assert result.card["output_sha256"] == REFERENCE_SHA256[("yolox-nano", "dynamic")]
    detector = _detector(tmp_path, {"preset": "yolox-nano", "path": str(tmp_path / "yolox")})
    from PIL import Image

    bgr = np.ascontiguousarray(np.asarray(Image.open(photo("grace_hopper.bmp")).convert("RGB"))[..., ::-1])
    assert [d.kind for d in detector.detect([bgr], min_score=0.3)[0]][:1] == ["person"]


@pytest.mark.skipif(
    not (CONVERTED / "efficientnet-lite2" / "model.tflite").exists(),
    reason=f"the real conversion is not in {CONVERTED}/efficientnet-lite2 (docs/models.md)",
)
def test_the_real_converted_efficientnet_lite2_is_a_gate_that_tells_a_bird_from_a_cat():
    from birdtrap.identify.classifier import Classifier
    from birdtrap.identify.gate import BirdGate
    from birdtrap.identify.preprocess import load, to_model_input

    gate = BirdGate(Classifier.from_path(CONVERTED / "efficientnet-lite2" / "model.tflite", threads=1, delegate="cpu"))
    assert (gate.spec.mean, gate.spec.std) == (127.0, 128.0)  # from the card, not the 127.5 default
    assert len(gate.bird_indices) > 50  # ImageNet-1k ids with no background row: the birds are found by id and name
    inputs = np.stack([to_model_input(load(photo(name)).bgr, gate.spec) for name in ("bird.bmp", "cat.bmp")])
    bird, cat = gate.bird_probability(inputs)
    assert bird > 0.5 > cat
