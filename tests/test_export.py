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
from export_fixtures import copy_run
from typer.testing import CliRunner, Result

import edge_ssl
from edge_ssl import contract
from edge_ssl.cli import app
from edge_ssl.errors import ConfigError, ExportError, ExportVerificationError, ModelError
from edge_ssl.export import convert, pipeline, verify
from edge_ssl.export.config import CONFIG_FILE, ExportConfig, InputKind
from edge_ssl.export.ort_format import OPERATORS_CONFIG, OrtPlatform, ort_name
from edge_ssl.export.report import ExportReport
from edge_ssl.export.twins import fixed_name
from edge_ssl.train.model import Preprocess, load_model

TOLERANCE = 1e-4
FILES = [f"{model}{suffix}.onnx" for model in ("pretext", "classifier")
         for suffix in ("", ".int8", ".fp16")]  # the any-size ONNX files
FIXED = [fixed_name(file) for file in FILES]
# The report's order: each model's any-size files, then their fixed twins; then the ORT files.
ONNX_FILES = [f for model in ("pretext", "classifier") for f in FILES + FIXED
              if f.startswith(model)]
ORT_FILES = [ort_name(file) for file in ONNX_FILES]


@pytest.fixture(scope="session")
def classifier(source_run: Path) -> keras.Model:
    return load_model(source_run / contract.CLASSIFIER_MODEL)


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, ["export", *map(str, args)])


def hidden_leftovers(run: Path) -> list[str]:
    return [p.name for p in run.iterdir() if p.name.startswith(".")]


# The exported files -------------------------------------------------------------------------


def test_export_writes_every_file_with_its_evidence(
        exported: tuple[Path, ExportReport]) -> None:
    exports, report = exported
    assert sorted(p.name for p in exports.iterdir()) == sorted(
        [*ONNX_FILES, *ORT_FILES, contract.EXPORT_REPORT, CONFIG_FILE, OPERATORS_CONFIG])
    saved = json.loads((exports / contract.EXPORT_REPORT).read_text())
    assert saved["run"] == export_fixtures.RUN_NAME and saved["not_written"] == []
    assert saved["tolerances"]["max_abs_probability_diff"] == TOLERANCE
    assert json.loads((exports / CONFIG_FILE).read_text()) == report.config.to_json()
    assert [f["file"] for f in saved["files"]] == ONNX_FILES + ORT_FILES
    for entry in saved["files"]:
        data = (exports / entry["file"]).read_bytes()
        assert entry["size_bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["written"] is True
        assert all(check["passed"] for check in entry["checks"] if not check["advisory"]), entry
        fixed = ".fixed." in entry["file"]
        assert (entry["input"], entry["format"]) == ("fixed" if fixed else "any",
                                                     entry["file"].rsplit(".", 1)[1])
        assert ("TensorRT" in entry["suits"]) == (fixed and entry["format"] == "onnx")
        if entry["file"] in FILES:
            rule = next(c for c in entry["checks"] if c["check"] == "resize rule")
            assert rule["frame_size"] == 8 * export_fixtures.SIZE
            assert 0 < rule["max_abs_pixel_diff"] <= 1.0
        else:  # derived from a checked file, and checked against it on the test sample
            twin = entry["checks"][-1]
            assert twin["check"].startswith("same as ") and twin["images"] == 40
            assert twin["top1_mismatches"] == 0
    operators = (exports / OPERATORS_CONFIG).read_text()
    assert "ai.onnx;" in operators and "Conv" in operators and "Resize" in operators
    assert "- classifier.fixed.int8.ort" in operators and "/tmp" not in operators
    parity = [c for c in saved["files"][ONNX_FILES.index("classifier.onnx")]["checks"]
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
    correct = np.asarray(classifier(images)).argmax(1) == labels
    by_file = {f.file: f for f in report.files}
    accuracy = by_file["classifier.onnx"].accuracy
    # The gate sample holds at most 1,000 images: here all 40 held-out ones.
    assert accuracy is not None and (accuracy.hits, accuracy.n) == (correct.sum(), len(labels))
    low, high = accuracy.ci95
    assert low < accuracy.percent < high
    int8 = by_file["classifier.int8.onnx"]
    assert int8.calibration_images == 32 and int8.fp32_nodes == ()  # all the run holds
    # The gate decides on the run's training images (never the test images the file's accuracy
    # is measured on): FP32's accuracy there is the Keras model's on those images.
    gate = int8.checks[-1].values
    gate_x = heldout[contract.HELDOUT_GATE_IMAGES]
    gate_correct = np.asarray(classifier(gate_x)).argmax(1) == heldout[contract.HELDOUT_GATE_LABELS]
    assert gate["images"] == len(gate_x) == 32
    assert gate["fp32_accuracy"]["hits"] == gate_correct.sum()
    assert int8.accuracy is not None and int8.accuracy.n == len(labels)
    # 37 quantizable nodes: MobileNetV2 cut at block_9_add, then the Dense head.
    assert gate["fallback"] == {"candidates": 37, "tried": [
        {"fp32_nodes": 0, "top1_agreement": gate["top1_agreement"]["percent"]}]}


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
    assert next(o.version for o in proto.opset_import if not o.domain) == 18
    (resize,) = [n for n in proto.graph.node if n.op_type == "Resize"]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in resize.attribute}
    assert attributes["antialias"] == 1 and attributes["exclude_outside"] == 1
    assert not {n.op_type for n in proto.graph.node} & verify.RANDOM_OPS
    assert verify.check_contract(proto, 2 if "classifier" in file else 4).passed


@pytest.mark.parametrize("file", ONNX_FILES + ORT_FILES)
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
        contract.META_PRECISION: "int8" if ".int8." in file else "fp16" if ".fp16." in file
        else "fp32",
        contract.META_INPUT: "fixed" if ".fixed." in file else "any",
    }


@pytest.mark.parametrize("file", FIXED)
def test_fixed_file_takes_the_models_size_without_a_resize(
        exported: tuple[Path, ExportReport], file: str) -> None:
    proto = onnx.load(exported[0] / file)
    image = proto.graph.input[0].type.tensor_type
    assert [d.dim_param or d.dim_value for d in image.shape.dim] == [
        "batch", export_fixtures.SIZE, export_fixtures.SIZE, 3]
    assert "Resize" not in {n.op_type for n in proto.graph.node}  # what TensorRT/WebGPU refuse
    assert proto.graph.node[0].op_type == "Cast"
    checks = {c.name: c for c in next(f for f in exported[1].files if f.file == file).checks}
    assert checks["graph contract"].passed
    assert "uint8 [batch, 32, 32, 3]" in checks["graph contract"].detail
    parity = sorted((c.values["height"], c.values["images"]) for name, c in checks.items()
                    if name.startswith("parity"))
    # FP32 against Keras, like its any-size twin at the native size; variants against their twin.
    assert parity == ([(32, 1), (32, 32)] if file.count(".") == 2 else [])


def test_twins_answer_like_their_source_through_the_runtime(
        exported: tuple[Path, ExportReport]) -> None:
    from edge_ssl.runtime.model import Device, open_session

    images = np.random.default_rng(3).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    source, _, _ = open_session(exported[0] / "classifier.int8.onnx", Device.CPU)
    expected = source.run(None, {contract.INPUT_NAME: images})[0]
    for twin in ("classifier.fixed.int8.onnx", "classifier.int8.ort",
                 "classifier.fixed.int8.ort"):
        session, info, _ = open_session(exported[0] / twin, Device.CPU)
        assert info.input == ("fixed" if ".fixed." in twin else "any")
        answers = session.run(None, {contract.INPUT_NAME: images})[0]
        # An ARM-optimized INT8 .ort file requantizes with other kernels on x86: a few steps.
        atol = verify.INT8_ORT_TWIN_TOLERANCE if twin.endswith(".ort") else TOLERANCE
        np.testing.assert_allclose(answers, expected, atol=atol)
        assert (answers.argmax(1) == expected.argmax(1)).all()


def test_int8_quantizes_every_convolution(exported: tuple[Path, ExportReport]) -> None:
    graph = onnx.load(exported[0] / "classifier.int8.onnx").graph
    dequantized = {out for n in graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    # MobileNetV2 cut at block_9_add: Conv1, block_0's two, three in each of blocks 1–9, with
    # BatchNorm folded into them.
    assert len(convs) == 30
    assert all(n.input[0] in dequantized and n.input[1] in dequantized for n in convs)


def test_int8_image_convolution_reads_four_channels_straight(
        exported: tuple[Path, ExportReport], tmp_path: Path) -> None:
    # onnxruntime's fast INT8 convolution needs input channels in multiples of 4: the file
    # widens the image with a float MatMul, and in the graph onnxruntime runs no Transpose is
    # left between the image and the first convolution. The fixture exports with no fallback
    # (max_fp32_nodes=0), so that convolution is quantized and widened.
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(exported[0] / "classifier.int8.onnx"), options,
                         providers=["CPUExecutionProvider"])
    graph = onnx.load(tmp_path / "optimized.onnx").graph
    made = {out: node for node in graph.node for out in node.output}
    conv = next(node for node in graph.node if node.op_type == "QLinearConv")
    path, tensor = [], conv.input[0]
    while tensor in made:
        path.append(made[tensor].op_type)
        tensor = made[tensor].input[0]
    assert tensor == contract.INPUT_NAME
    assert "MatMul" in path and "Transpose" not in path, path


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


def test_opsets_without_an_antialiased_resize_are_refused(classifier: keras.Model) -> None:
    with pytest.raises(ExportError, match="use opset 18"):
        convert.to_onnx(classifier, 17)


def _colour_model(size: int) -> keras.Model:
    """Preprocess → mean colour → softmax(20 × mean): a model 8-bit rounding cannot sway."""
    images = keras.Input((None, None, 3), dtype="uint8")
    x = Preprocess(size, scale=1.0 / 255.0, offset=0.0)(images)
    x = keras.layers.GlobalAveragePooling2D()(x)
    head = keras.layers.Dense(3, activation="softmax")
    model = keras.Model(images, head(x))
    head.set_weights([20.0 * np.eye(3, dtype=np.float32), np.zeros(3, np.float32)])
    return model


def test_raw_frames_fed_to_the_graph_agree_with_the_runtime() -> None:
    size = 16
    rng = np.random.default_rng(3)
    tint = rng.uniform(40, 220, (200, 1, 1, 3))
    images = np.clip(tint + rng.normal(0, 30, (200, size, size, 3)), 0, 255).astype(np.uint8)
    proto = convert.to_onnx(_colour_model(size), 18)

    rule, frames = verify.check_frames(proto, images, size, 8, 99.5, seed=0)

    assert rule.passed and rule.values["max_abs_pixel_diff"] <= 1.0, rule.detail
    assert frames.passed and frames.values["top1_agreement"]["percent"] >= 99.5, frames.detail
    assert frames.values["images"] == 200 and frames.values["frame_size"] == 128
    # The same graph with the resize of tf2onnx's default conversion (no antialiasing) aliases
    # the frames: the check sees it.
    resize = next(n for n in proto.graph.node if n.op_type == "Resize")
    for attribute in resize.attribute:
        if attribute.name in ("antialias", "exclude_outside"):
            attribute.i = 0
    aliased, _ = verify.check_frames(proto, images, size, 8, 99.5, seed=0)
    assert not aliased.passed and aliased.values["max_abs_pixel_diff"] > 10


def _tamper_head(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Shift the first class's column of the final Dense(features → 2) kernel by 0.05."""
    tampered = onnx.ModelProto()
    tampered.CopyFrom(proto)
    kernel = next(i for i in tampered.graph.initializer
                  if len(i.dims) == 2 and i.dims[1] == 2 and i.dims[0] > 2)
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


def test_mixed_precision_models_export_in_float32_and_pass_parity(tmp_path: Path) -> None:
    """Trained under mixed_float16, the models are rebuilt in float32 with the same weights,
    converted, and pass the same parity checks; float16 graphs would miss them (max |Δp| ~0.05)."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        run = export_fixtures.write_run(tmp_path / export_fixtures.RUN_NAME)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    trained = keras.models.load_model(run / contract.CLASSIFIER_MODEL, compile=False)
    assert trained.get_layer("backbone").layers[1].compute_dtype == "float16"
    result = invoke(run)
    assert result.exit_code == 0, result.output
    assert "rebuild" in result.output  # the table says so
    saved = json.loads((run / contract.EXPORTS_DIR / contract.EXPORT_REPORT).read_text())
    for entry in saved["files"]:
        parity = [c for c in entry["checks"] if c["check"].startswith("parity")]
        assert parity and all(c["passed"] and c["max_abs_diff"] <= TOLERANCE for c in parity)
        rebuild = entry["float32_rebuild"]
        assert rebuild["trained_precision"] == "mixed_float16" and rebuild["images"] > 0
        # The float32 copy computes the same function: close to the float16 answers, not equal.
        assert 0 < rebuild["max_abs_diff_vs_trained"] < 0.5
        proto = onnx.load(run / contract.EXPORTS_DIR / entry["file"])
        assert {i.data_type for i in proto.graph.initializer} <= {
            onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.INT32}
        assert not [n for n in proto.graph.node if n.op_type == "Cast" and any(
            a.name == "to" and a.i == onnx.TensorProto.FLOAT16 for a in n.attribute)]


def test_augmentation_op_breaks_the_contract(exported: tuple[Path, ExportReport]
                                             ) -> None:
    proto = onnx.load(exported[0] / "classifier.onnx")
    proto.graph.node.append(onnx.helper.make_node(
        "RandomUniformLike", [proto.graph.node[0].output[0]], ["noise"]))
    check = verify.check_contract(proto, 2)
    assert not check.passed and "RandomUniformLike" in check.detail


# Variants' accuracy gate ----------------------------------------------------------------------


def test_a_variant_that_misses_its_gate_costs_only_that_variant(source_run: Path,
                                                                  tmp_path: Path) -> None:
    run = copy_run(source_run, tmp_path)
    # INT8 of this random network agrees with FP32 on about 80 % of 40 images, FP16 moves
    # probabilities by about 0.05: both miss these budgets, and no fallback is allowed.
    result = invoke(run, "--int8", "--min-int8-agreement", "100", "--max-fp32-nodes", "0",
                    "--fp16", "--fp16-tolerance", "1e-6")
    assert result.exit_code == 3, result.output
    # This network also changes answers under 8-bit rounding: raw frames are a warning only.
    warning, message = (" ".join(part.split()) for part in result.stderr.split("error: "))
    assert warning.startswith("warning: raw 256px frames get another top-1 than the runtime")
    assert "resize frames to the native size" in warning
    for model in ("pretext", "classifier"):
        assert re.search(rf"{model}\.int8\.onnx was not written \(its top-1 agrees with FP32 on "
                         r"[\d.]+% < 100% of \d+ held-out images", message)
        assert f"{model}.fp16.onnx was not written (max |Δp| vs FP32" in message
    assert "try --max-fp32-nodes 8" in message and "--fp16-tolerance 2e-06" in message
    assert re.search(r"--min-int8-agreement \d+ would accept this one", message)
    # A variant left out takes its fixed-size twin with it, for the same reason.
    assert "classifier.fixed.int8.onnx was not written (its top-1 agrees" in message
    exports = run / contract.EXPORTS_DIR
    assert sorted(p.name for p in exports.iterdir()) == sorted(
        ["pretext.onnx", "classifier.onnx", "pretext.fixed.onnx", "classifier.fixed.onnx",
         contract.EXPORT_REPORT, CONFIG_FILE])
    saved = json.loads((exports / contract.EXPORT_REPORT).read_text())
    assert sorted(saved["not_written"]) == sorted(
        f"{m}{fixed}.{p}.onnx" for m in ("pretext", "classifier") for p in ("int8", "fp16")
        for fixed in ("", ".fixed"))
    assert all(f["written"] == (f["precision"] == "fp32") for f in saved["files"])
    assert "Wrote 4 model files" in result.stdout
    assert hidden_leftovers(run) == []


# A fresh interpreter --------------------------------------------------------------------------

_FRESH = """
import json, sys
import numpy as np, onnxruntime as ort
from pathlib import Path
from edge_ssl.runtime.model import Device, open_session
exports = Path(sys.argv[1])
images = np.load(sys.argv[2])
out = {}
for name in ("classifier.onnx", "classifier.int8.onnx", "pretext.fp16.onnx"):
    sess = ort.InferenceSession(exports / name, providers=["CPUExecutionProvider"])
    out[name] = sess.run(["probabilities"], {"image": images})[0].tolist()
    out[name + " labels"] = list(open_session(exports / name, Device.CPU)[1].labels)
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
    result = invoke(run, "--overwrite", "--input", "any")
    assert result.exit_code == 0, result.output
    assert "classifier.onnx" in result.stdout and "Wrote 2 model files" in result.stdout
    assert onnx.load(stale).graph.input[0].name == contract.INPUT_NAME
    assert sorted(p.name for p in stale.parent.iterdir()) == sorted(
        ["pretext.onnx", "classifier.onnx", contract.EXPORT_REPORT, CONFIG_FILE])
    assert hidden_leftovers(run) == []


def test_fixed_only_with_ort_files_for_x86(source_run: Path, tmp_path: Path) -> None:
    run = copy_run(source_run, tmp_path)
    result = invoke(run, "--input", "fixed", "--ort", "--ort-platform", "amd64")
    assert result.exit_code == 0, result.output
    exports = run / contract.EXPORTS_DIR
    written = ["pretext.fixed.onnx", "classifier.fixed.onnx", "pretext.fixed.ort",
               "classifier.fixed.ort"]
    assert sorted(p.name for p in exports.iterdir()) == sorted(
        [*written, contract.EXPORT_REPORT, CONFIG_FILE, OPERATORS_CONFIG])
    saved = json.loads((exports / CONFIG_FILE).read_text())
    assert (saved["input"], saved["ort"], saved["ort_platform"]) == ("fixed", True, "amd64")
    # amd64 bakes in onnxruntime's x86 NCHWc kernels; arm (the default) would not.
    assert "com.microsoft.nchwc" in (exports / OPERATORS_CONFIG).read_text()
    assert ExportConfig(run).input is InputKind.BOTH
    assert ExportConfig(run).ort_platform is OrtPlatform.ARM


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


@pytest.mark.parametrize(("option", "value"), [("--opset", "17"), ("--opset", "19"),
                                               ("--calibration-images", "0"),
                                               ("--min-int8-agreement", "nan"),
                                               ("--min-int8-agreement", "101"),
                                               ("--max-fp32-nodes", "-1"),
                                               ("--fp16-tolerance", "0")])
def test_bad_options_are_refused(source_run: Path, option: str, value: str) -> None:
    result = invoke(source_run, option, value)
    assert result.exit_code == 1
    assert f"{option} {value} is not allowed" in result.stderr


@pytest.mark.parametrize(("option", "value"), [("--input", "square"),
                                               ("--ort-platform", "riscv")])
def test_unknown_choices_are_refused(source_run: Path, option: str, value: str) -> None:
    result = invoke(source_run, option, value)
    assert result.exit_code == 2
    assert value in result.output and "Traceback" not in result.output


def test_config_accepts_the_supported_opsets_only() -> None:
    assert ExportConfig(Path("run")).opset == 18
    with pytest.raises(ConfigError, match=r"ExportConfig.tolerance 0 is not allowed"):
        ExportConfig(Path("run"), tolerance=0.0)


# The LiteRT twin of an exported classifier (`edge-ssl bench --compare-litert`) ---------------


def test_litert_twin_answers_as_the_onnx_file_in_every_layout(
        exported: tuple[Path, ExportReport], source_run: Path) -> None:
    pytest.importorskip("ai_edge_litert", reason="pip install 'edge-ssl[bench]'")
    from edge_ssl.runtime.litert import convert_source, open_litert
    from edge_ssl.runtime.model import Device
    from edge_ssl.runtime.parallel import Layout, open_layout

    exports, _ = exported
    with np.load(source_run / contract.HELDOUT_FILE) as held:
        images = held[contract.HELDOUT_CLASSIFIER_IMAGES][:6]
    onnx_runner = open_layout(exports / "classifier.onnx", Device.CPU, Layout(1, 1))
    expected = onnx_runner.run(images)
    content = convert_source(onnx_runner.info)
    onnx_runner.close()
    for layout in (Layout(1, 2), Layout(2, 1), Layout(3, 1)):
        twin = open_litert(content, export_fixtures.SIZE, len(images), layout)
        try:
            np.testing.assert_allclose(twin(images), expected, atol=TOLERANCE)
        finally:
            twin.close()


def test_bench_compare_litert_adds_the_twins_of_fp32_and_int8_classifiers(
        exported: tuple[Path, ExportReport], tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert", reason="pip install 'edge-ssl[bench]'")
    exports, _ = exported
    out = tmp_path / "bench.json"
    models = [exports / name for name in ("classifier.onnx", "classifier.int8.onnx",
                                          "classifier.fp16.onnx", "pretext.onnx")]

    result = CliRunner().invoke(app, ["bench", *map(str, models), "--batch-sizes", "1,4",
                                      "--warmup", "1", "--iterations", "3", "--compare-litert",
                                      "--json", str(out)])

    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["results"]
    twins = [(Path(r["model"].removesuffix(" [LiteRT]")).name, r["precision"], r["batch_size"])
             for r in rows if r["provider"] == "LiteRT"]
    assert twins == [("classifier.onnx", "fp32", 1), ("classifier.onnx", "fp32", 4),
                     ("classifier.int8.onnx", "int8", 1), ("classifier.int8.onnx", "int8", 4)]
    assert "classifier.onnx [LiteRT]: batch 1 in" in " ".join(result.output.split())


def test_compare_litert_without_the_keras_model_says_where_it_looked(
        exported: tuple[Path, ExportReport], tmp_path: Path) -> None:
    lone = Path(shutil.copy(exported[0] / "classifier.onnx", tmp_path / "classifier.onnx"))
    result = CliRunner().invoke(app, ["bench", str(lone), "--batch-sizes", "1", "--warmup", "0",
                                      "--iterations", "1", "--compare-litert"])
    assert result.exit_code != 0
    assert "there is no" in result.stderr and contract.CLASSIFIER_MODEL in result.stderr


def test_compare_litert_without_litert_says_what_to_install(
        exported: tuple[Path, ExportReport], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # import fails as if missing
    result = CliRunner().invoke(app, ["bench", str(exported[0] / "classifier.onnx"),
                                      "--batch-sizes", "1", "--warmup", "0", "--iterations", "1",
                                      "--compare-litert"])
    assert result.exit_code != 0
    assert "pip install 'edge-ssl[train,bench]'" in " ".join(result.stderr.split())
