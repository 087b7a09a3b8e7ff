"""`edge-ssl export`: the graph contract, metadata, parity, the guards, and the accuracy gates."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import export_fixtures
import keras
import numpy as np
import onnx
import pytest
from typer.testing import CliRunner, Result

import edge_ssl
from edge_ssl import contract
from edge_ssl.cli import app
from edge_ssl.errors import ConfigError, ExportVerificationError, ModelError
from edge_ssl.export import convert, pipeline, verify
from edge_ssl.export.config import CONFIG_FILE, ExportConfig
from edge_ssl.export.report import ExportReport
from edge_ssl.train.model import load_model

TOLERANCE = 1e-4
FILES = [f"{model}{suffix}.onnx" for model in ("pretext", "classifier")
         for suffix in ("", ".int8", ".fp16")]


@pytest.fixture(scope="session")
def source_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pristine run directory; tests that export copy it first."""
    return export_fixtures.write_run(tmp_path_factory.mktemp("runs") / "tiny-run")


@pytest.fixture(scope="session")
def exported(source_run: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, ExportReport]:
    """One full export with both variants, shared by the read-only tests."""
    run = copy_run(source_run, tmp_path_factory.mktemp("exported"))
    # A 0.35-wide network with random features is not a model INT8 is expected to keep within
    # one point on 40 images; the gate itself is tested in test_int8_gate_fails.
    config = ExportConfig(run, int8=True, fp16=True, max_int8_drop=100.0)
    return run / contract.EXPORTS_DIR, pipeline.export_run(config)


@pytest.fixture(scope="session")
def classifier(source_run: Path) -> keras.Model:
    return load_model(source_run / contract.CLASSIFIER_MODEL)


def copy_run(source: Path, parent: Path) -> Path:
    return Path(shutil.copytree(source, parent / export_fixtures.RUN_NAME))


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, ["export", *map(str, args)])


def hidden_leftovers(run: Path) -> list[str]:
    return [p.name for p in run.iterdir() if p.name.startswith(".")]


# The exported files -------------------------------------------------------------------------


def test_export_writes_every_file_with_its_evidence(
        exported: tuple[Path, ExportReport]) -> None:
    exports, report = exported
    assert sorted(p.name for p in exports.iterdir()) == sorted(
        [*FILES, contract.EXPORT_REPORT, CONFIG_FILE])
    saved = json.loads((exports / contract.EXPORT_REPORT).read_text())
    assert saved["passed"] is True and saved["run"] == export_fixtures.RUN_NAME
    assert saved["tolerances"]["max_abs_probability_diff"] == TOLERANCE
    assert json.loads((exports / CONFIG_FILE).read_text()) == report.config.to_json()
    assert [f["file"] for f in saved["files"]] == FILES
    for entry in saved["files"]:
        data = (exports / entry["file"]).read_bytes()
        assert entry["size_bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert all(check["passed"] for check in entry["checks"]), entry
    parity = [c for c in saved["files"][FILES.index("classifier.onnx")]["checks"]
              if c["check"].startswith("parity")]
    assert [(c["height"], c["width"], c["images"]) for c in parity] == [
        (32, 32, 32), (32, 32, 1), (37, 91, 32), (128, 128, 32)]
    assert all(c["max_abs_diff"] <= TOLERANCE and c["top1_mismatches"] == 0 for c in parity)


def test_reported_accuracy_is_the_models(exported: tuple[Path, ExportReport],
                                         classifier: keras.Model, source_run: Path) -> None:
    _, report = exported
    heldout = np.load(source_run / contract.HELDOUT_FILE)
    images = heldout[contract.HELDOUT_CLASSIFIER_IMAGES]
    labels = heldout[contract.HELDOUT_CLASSIFIER_LABELS]
    expected = float(np.mean(np.asarray(classifier(images)).argmax(1) == labels) * 100)
    by_file = {f.file: f for f in report.files}
    assert by_file["classifier.onnx"].accuracy == pytest.approx(expected)
    assert by_file["classifier.int8.onnx"].calibration_images == 32  # all the run holds
    gate = by_file["classifier.int8.onnx"].checks[-1].values
    assert gate["drop_points"] == pytest.approx(expected - by_file["classifier.int8.onnx"].accuracy)


@pytest.mark.parametrize("file", FILES)
def test_graph_contract(exported: tuple[Path, ExportReport], file: str) -> None:
    proto = onnx.load(exported[0] / file)
    image = proto.graph.input[0]
    assert [i.name for i in proto.graph.input] == [contract.INPUT_NAME]
    assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim] == [
        "batch", "height", "width", 3]
    first = proto.graph.node[0]
    assert first.op_type == "Cast" and list(first.input) == [contract.INPUT_NAME]
    assert onnx.helper.get_attribute_value(first.attribute[0]) == onnx.TensorProto.FLOAT
    output = proto.graph.output[0]
    assert output.name == contract.OUTPUT_NAME
    assert output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert output.type.tensor_type.shape.dim[1].dim_value == (2 if "classifier" in file else 4)
    assert next(o.version for o in proto.opset_import if not o.domain) == 17
    assert not {n.op_type for n in proto.graph.node} & verify.RANDOM_OPS
    assert verify.check_contract(proto, 2 if "classifier" in file else 4).passed


@pytest.mark.parametrize("file", FILES)
def test_metadata_round_trip(exported: tuple[Path, ExportReport], file: str) -> None:
    import onnxruntime as ort

    meta = ort.InferenceSession(exported[0] / file, providers=["CPUExecutionProvider"]
                                ).get_modelmeta().custom_metadata_map
    decoded = {key: json.loads(value) for key, value in meta.items()}
    exported_at = datetime.fromisoformat(decoded.pop(contract.META_EXPORTED_AT))
    assert exported_at.utcoffset() is not None
    rotation = file.startswith("pretext")
    assert decoded == {
        contract.META_TASK: contract.TASK_ROTATION if rotation else contract.TASK_CLASSIFICATION,
        contract.META_LABELS: list(contract.ROTATION_LABELS) if rotation
        else export_fixtures.LABELS,
        contract.META_IMAGE_SIZE: export_fixtures.SIZE,
        contract.META_RESCALE: {"scale": 1.0 / 255.0, "offset": 0.0},
        contract.META_INTERPOLATION: "bilinear",
        contract.META_VERSION: edge_ssl.__version__,
        contract.META_RUN: export_fixtures.RUN_NAME,
        contract.META_PRECISION: {"int8": "int8", "fp16": "fp16"}.get(file.split(".")[1], "fp32"),
    }


def test_int8_quantizes_every_convolution(exported: tuple[Path, ExportReport]) -> None:
    graph = onnx.load(exported[0] / "classifier.int8.onnx").graph
    dequantized = {out for n in graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == 52  # MobileNetV2's convolutions, BatchNorm folded into them
    assert all(n.input[0] in dequantized and n.input[1] in dequantized for n in convs)


def test_fp16_keeps_resize_and_io_in_float32(exported: tuple[Path, ExportReport]) -> None:
    proto = onnx.shape_inference.infer_shapes(onnx.load(exported[0] / "classifier.fp16.onnx"))
    types = {v.name: v.type.tensor_type.elem_type for v in proto.graph.value_info}
    resize = next(n for n in proto.graph.node if n.op_type == "Resize")
    assert types[resize.input[0]] == onnx.TensorProto.FLOAT
    conv_weights = {init.name: init.data_type for init in proto.graph.initializer}
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    assert conv_weights[conv.input[1]] == onnx.TensorProto.FLOAT16


# Parity ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width", "batch"),
                         [(32, 32, 1), (32, 32, 7), (37, 91, 3), (128, 128, 2), (5, 300, 4)])
def test_parity_at_sizes_and_batches(exported: tuple[Path, ExportReport],
                                     classifier: keras.Model, height: int, width: int,
                                     batch: int) -> None:
    rng = np.random.default_rng(height * width + batch)
    images = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    sess = verify.session((exported[0] / "classifier.onnx").read_bytes())
    expected = np.asarray(classifier(images, training=False))
    actual = verify.predict(sess, images)
    assert actual.shape == (batch, 2) and actual.dtype == np.float32
    assert np.max(np.abs(actual - expected)) <= TOLERANCE
    assert np.array_equal(actual.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("opset", [13, 18])
def test_other_opsets_convert_and_match(classifier: keras.Model, opset: int) -> None:
    proto = convert.to_onnx(classifier, opset)
    assert next(o.version for o in proto.opset_import if not o.domain) == opset
    assert verify.check_onnx(proto).passed and verify.check_contract(proto, 2).passed
    images, _ = export_fixtures.images(np.random.default_rng(opset), 8)
    check = verify.check_parity(lambda x: np.asarray(classifier(x)),
                                verify.session(proto.SerializeToString()),
                                verify.resized(images, 37, 91), TOLERANCE)
    assert check.passed, check.detail


def _tamper_head(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Shift the first class's column of the final Dense(128 → 2) kernel by 0.05."""
    tampered = onnx.ModelProto()
    tampered.CopyFrom(proto)
    kernel = next(i for i in tampered.graph.initializer if list(i.dims) == [128, 2])
    weights = onnx.numpy_helper.to_array(kernel).copy()
    weights[:, 0] += 0.05
    kernel.CopyFrom(onnx.numpy_helper.from_array(weights, kernel.name))
    return tampered


def test_tampered_weight_is_caught(exported: tuple[Path, ExportReport],
                                   classifier: keras.Model, source_run: Path) -> None:
    proto = _tamper_head(onnx.load(exported[0] / "classifier.onnx"))
    assert verify.check_onnx(proto).passed  # structurally fine: only parity can tell
    images = np.load(source_run / contract.HELDOUT_FILE)[contract.HELDOUT_CLASSIFIER_IMAGES]
    check = verify.check_parity(lambda x: np.asarray(classifier(x)),
                                verify.session(proto.SerializeToString()), images, TOLERANCE)
    assert not check.passed and check.values["max_abs_diff"] > 10 * TOLERANCE
    with pytest.raises(ExportVerificationError, match=r"parity 32×32 batch 40: max \|Δp\| "):
        verify.raise_failures([("classifier.onnx", check)])


def test_failed_verification_writes_nothing(source_run: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    run = copy_run(source_run, tmp_path)
    real = convert.to_onnx

    def tampering(model: keras.Model, opset: int) -> onnx.ModelProto:
        proto = real(model, opset)
        return _tamper_head(proto) if model.name == "classifier" else proto

    monkeypatch.setattr(convert, "to_onnx", tampering)
    result = invoke(run)
    assert result.exit_code == 1 and "Traceback" not in result.output
    # One line listing every failing check once, with the numbers and the tolerance.
    message = " ".join(result.stderr.split())
    assert message.count("classifier.onnx: parity") == 4 and "> 1e-04" in message
    assert "pretext.onnx" not in message
    assert not (run / contract.EXPORTS_DIR).exists() and hidden_leftovers(run) == []


def test_augmentation_op_breaks_the_contract(exported: tuple[Path, ExportReport]
                                             ) -> None:
    proto = onnx.load(exported[0] / "classifier.onnx")
    proto.graph.node.append(onnx.helper.make_node(
        "RandomUniformLike", [proto.graph.node[0].output[0]], ["noise"]))
    check = verify.check_contract(proto, 2)
    assert not check.passed and "RandomUniformLike" in check.detail


# Variants' accuracy gate ----------------------------------------------------------------------


def test_int8_gate_fails_when_the_allowed_drop_is_impossible(source_run: Path,
                                                             tmp_path: Path) -> None:
    run = copy_run(source_run, tmp_path)
    result = invoke(run, "--int8", "--max-int8-drop", "-100")
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert "(2 problems)" in message
    # Gaining 100 points is impossible for either model; FP32 itself passed.
    for model in ("pretext", "classifier"):
        assert re.search(rf"{model}\.int8\.onnx: int8 accuracy: .* > -100 points", message)
    assert not (run / contract.EXPORTS_DIR).exists() and hidden_leftovers(run) == []


# A fresh interpreter --------------------------------------------------------------------------

_FRESH = """
import json, sys
import numpy as np, onnxruntime as ort
from pathlib import Path
from edge_ssl.runtime.model import read_model_info
exports = Path(sys.argv[1])
images = np.load(sys.argv[2])
out = {}
for name in ("classifier.onnx", "classifier.int8.onnx", "pretext.fp16.onnx"):
    sess = ort.InferenceSession(exports / name, providers=["CPUExecutionProvider"])
    out[name] = sess.run(["probabilities"], {"image": images})[0].tolist()
    out[name + " labels"] = list(read_model_info(exports / name).labels)
heavy = sorted(m for m in ("tensorflow", "keras", "tf2onnx") if m in sys.modules)
print(json.dumps({"outputs": out, "heavy": heavy}))
"""


def test_exported_model_runs_without_tensorflow(exported: tuple[Path, ExportReport],
                                                classifier: keras.Model, tmp_path: Path) -> None:
    images = np.random.default_rng(7).integers(0, 256, (3, 37, 91, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    done = subprocess.run([sys.executable, "-c", _FRESH, str(exported[0]),
                           str(tmp_path / "images.npy")],
                          capture_output=True, text=True, timeout=120, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    outputs = result["outputs"]
    expected = np.asarray(classifier(images))
    assert np.max(np.abs(np.asarray(outputs["classifier.onnx"]) - expected)) <= TOLERANCE
    # The Softmax stays float in INT8: probabilities, not steps of 1/255.
    assert np.allclose(np.sum(outputs["classifier.int8.onnx"], axis=1), 1.0, atol=1e-6)
    assert np.asarray(outputs["pretext.fp16.onnx"]).shape == (3, 4)
    assert outputs["classifier.onnx labels"] == export_fixtures.LABELS
    assert outputs["pretext.fp16.onnx labels"] == list(contract.ROTATION_LABELS)


# Bad input, through the CLI ---------------------------------------------------------------------


def test_existing_exports_are_kept_without_overwrite(
        exported: tuple[Path, ExportReport]) -> None:
    exports, _ = exported
    before = (exports / contract.EXPORT_REPORT).read_bytes()
    result = invoke(exports.parent)
    assert result.exit_code == 1
    assert "already exists; pass --overwrite" in result.stderr
    assert (exports / contract.EXPORT_REPORT).read_bytes() == before


def test_overwrite_replaces_the_exports(source_run: Path, tmp_path: Path) -> None:
    run = copy_run(source_run, tmp_path)
    stale = run / contract.EXPORTS_DIR / "classifier.onnx"
    stale.parent.mkdir()
    stale.write_bytes(b"an old export")
    result = invoke(run, "--overwrite")
    assert result.exit_code == 0, result.output
    assert "classifier.onnx" in result.stdout and "Wrote 2 ONNX files" in result.stdout
    assert onnx.load(stale).graph.input[0].name == contract.INPUT_NAME
    assert sorted(p.name for p in stale.parent.iterdir()) == sorted(
        ["pretext.onnx", "classifier.onnx", contract.EXPORT_REPORT, CONFIG_FILE])
    assert hidden_leftovers(run) == []


def test_missing_run_directory(tmp_path: Path) -> None:
    result = invoke(tmp_path / "nope")
    assert result.exit_code == 1
    assert "no such run directory" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("missing", [contract.CLASSIFIER_MODEL, contract.HELDOUT_FILE])
def test_missing_run_file_is_named(source_run: Path, tmp_path: Path, missing: str) -> None:
    run = copy_run(source_run, tmp_path)
    (run / missing).unlink()
    result = invoke(run)
    assert result.exit_code == 1
    assert f"{missing} is missing" in result.stderr and "edge-ssl train" in result.stderr


def test_keras_file_edge_ssl_did_not_write(source_run: Path, tmp_path: Path) -> None:
    run = copy_run(source_run, tmp_path)
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(run / contract.CLASSIFIER_MODEL)
    result = invoke(run)
    assert result.exit_code == 1 and "not written by edge-ssl" in result.stderr
    (run / contract.PRETEXT_MODEL).write_bytes(b"not a zip file")
    with pytest.raises(ModelError, match="not a Keras model edge-ssl can load"):
        pipeline.export_run(ExportConfig(run))
    assert not (run / contract.EXPORTS_DIR).exists()


@pytest.mark.parametrize(("option", "value"), [("--opset", "12"), ("--opset", "19"),
                                               ("--calibration-images", "0"),
                                               ("--max-int8-drop", "nan")])
def test_bad_options_are_refused(source_run: Path, option: str, value: str) -> None:
    result = invoke(source_run, option, value)
    assert result.exit_code == 1
    assert f"{option} {value} is not allowed" in result.stderr


def test_config_accepts_the_supported_opsets_only() -> None:
    for opset in range(13, 19):
        assert ExportConfig(Path("run"), opset=opset).opset == opset
    with pytest.raises(ConfigError, match="--tolerance 0.0 is not allowed"):
        ExportConfig(Path("run"), tolerance=0.0)
