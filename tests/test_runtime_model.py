"""edge_ssl.runtime.model: metadata, signature checks and provider choice, with tiny models."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numpy as np
import onnx_models
import onnxruntime as ort
import pytest
from onnx import TensorProto

from edge_ssl import contract
from edge_ssl.errors import DeviceError, ModelError
from edge_ssl.runtime import model as runtime_model
from edge_ssl.runtime.model import (
    DEFAULT_MODEL,
    Device,
    ModelInfo,
    open_session,
    resolve_model,
)


def read_model_info(path: Path) -> ModelInfo:
    """What `open_session` learns about a model on the CPU (the runtime reads nothing else)."""
    return open_session(path, Device.CPU, threads=1)[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def test_read_model_info_reads_every_field(models: Path) -> None:
    path = onnx_models.build_model(models / "colour.onnx")

    info = read_model_info(path)

    assert info.path == path
    assert info.task == contract.TASK_CLASSIFICATION
    assert info.labels == onnx_models.COLOURS
    assert info.image_size == onnx_models.SIZE
    assert info.interpolation == "bilinear"
    assert (info.precision, info.version, info.run) == ("fp32", "0.1.0", "test-run")
    assert info.exported_at == "2024-01-01T00:00:00Z"
    assert info.input == contract.INPUT_ANY  # files from before the fixed variant say nothing
    assert info.file_size == path.stat().st_size


def test_fixed_size_model_is_read_and_runs(models: Path) -> None:
    import onnx

    from edge_ssl.export.graph_edit import to_fixed

    proto = to_fixed(onnx.load(onnx_models.build_model(models / "any.onnx")), onnx_models.SIZE)
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props},
                                        contract.META_INPUT: json.dumps(contract.INPUT_FIXED)})
    onnx.save(proto, models / "fixed.onnx")
    images = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)

    session, info, _ = open_session(models / "fixed.onnx", Device.CPU, threads=1)
    (probabilities,) = session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: images})

    assert info.input == contract.INPUT_FIXED
    assert session.get_inputs()[0].shape == ["batch", 8, 8, 3]
    expected = onnx_models.expected_probabilities(images, onnx_models.colour_weights())
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)


def test_rotation_model_info(models: Path) -> None:
    info = read_model_info(onnx_models.rotation_model(models / "pretext.onnx"))

    assert info.task == contract.TASK_ROTATION
    assert info.labels == contract.ROTATION_LABELS


def test_open_session_on_cpu_runs_the_contract(models: Path) -> None:
    path = onnx_models.build_model(models / "run.onnx")
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)

    session, info, provider = open_session(path, Device.CPU, threads=1)
    (probabilities,) = session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: images})

    assert provider == "CPUExecutionProvider"
    assert info.labels == onnx_models.COLOURS
    expected = onnx_models.expected_probabilities(images, onnx_models.colour_weights())
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    # No memory pattern: it would make a session's second run of each batch size slow.
    assert not session.get_session_options().enable_mem_pattern


def test_optional_metadata_may_be_missing(models: Path) -> None:
    meta = onnx_models.metadata(onnx_models.COLOURS)
    for key in (contract.META_PRECISION, contract.META_VERSION, contract.META_RUN,
                contract.META_EXPORTED_AT, contract.META_INTERPOLATION, contract.META_RESCALE):
        del meta[key]
    info = read_model_info(onnx_models.build_model(models / "bare.onnx", meta=meta))

    assert (info.precision, info.version, info.run, info.exported_at) == (None,) * 4
    assert info.interpolation == "bilinear"


def _meta(**changes: object) -> dict[str, object]:
    meta = onnx_models.metadata(onnx_models.COLOURS)
    meta.update({getattr(contract, k): v for k, v in changes.items()})
    return meta


@pytest.mark.parametrize(("build", "message"), [
    (lambda p: onnx_models.build_model(p, meta={}), "no edge-ssl metadata"),
    (lambda p: onnx_models.build_model(p, input_type=TensorProto.FLOAT),
     "(image: float [?, ?, ?, 3]), not image: uint8 [N, H, W, 3]"),
    (lambda p: onnx_models.build_model(p, input_name="input_1"), "input_1: uint8"),
    (lambda p: onnx_models.build_model(p, meta=_meta(META_LABELS=["a", "b"])),
     "3 outputs but 2 labels"),
    (lambda p: onnx_models.build_model(p, meta=_meta(META_TASK="detection")),
     "unknown task 'detection'"),
    (lambda p: onnx_models.build_model(p, meta=_meta(META_INTERPOLATION="nearest")),
     "trained with nearest resizing"),
    (lambda p: onnx_models.build_model(p, meta=_meta(META_IMAGE_SIZE="big")),
     "edge_ssl.image_size is '\"big\"', not a JSON int"),
    (lambda p: onnx_models.build_model(p, meta=_meta(META_INPUT=contract.INPUT_FIXED)),
     "its metadata says it takes 8×8 images, but its input is uint8 [?, ?, ?, 3]"),
    (lambda p: onnx_models.not_onnx(p), "not an ONNX model"),
], ids=["no-metadata", "float-input", "input-name", "label-count", "task", "interpolation",
        "image-size", "fixed-but-any-size", "not-onnx"])
def test_models_that_break_the_contract_are_refused(
    tmp_path: Path, build: object, message: str
) -> None:
    path = build(tmp_path / "model.onnx")  # type: ignore[operator]

    with pytest.raises(ModelError, match=re.escape(message)):
        open_session(path, Device.CPU)


def test_metadata_that_is_not_json_is_refused(tmp_path: Path) -> None:
    meta = onnx_models.metadata(onnx_models.COLOURS)
    path = onnx_models.build_model(tmp_path / "m.onnx", meta=meta)
    # build_model JSON-encodes; write a raw non-JSON value the way a careless exporter would.
    import onnx

    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == contract.META_LABELS:
            prop.value = "red,green,blue"
    onnx.save(model, str(path))

    with pytest.raises(ModelError, match="edge_ssl.labels is 'red,green,blue', which is not JSON"):
        read_model_info(path)


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p, "no such file"),
    (lambda p: p.mkdir() or p, "is a folder"),
    (lambda p: p.touch() or p, "empty file"),
    (lambda p: p.symlink_to(p.parent / "gone.onnx") or p, "broken symbolic link"),
], ids=["missing", "folder", "empty", "broken-link"])
def test_model_files_that_are_not_there(tmp_path: Path, make: object, message: str) -> None:
    path = make(tmp_path / "model.onnx")  # type: ignore[operator]

    with pytest.raises(ModelError, match=message):
        open_session(path)


def test_default_model_missing_says_to_train_and_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ModelError, match="run `edge-ssl train` and `edge-ssl export` first"):
        resolve_model(None)


def test_default_model_is_the_latest_classifier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    DEFAULT_MODEL.parent.mkdir(parents=True)
    onnx_models.build_model(DEFAULT_MODEL)

    assert resolve_model(None) == Path("runs/latest/exports/classifier.onnx")
    assert resolve_model(Path("other.onnx")) == Path("other.onnx")


def test_auto_picks_a_provider_that_works(models: Path) -> None:
    path = onnx_models.build_model(models / "auto.onnx")

    session, _, provider = open_session(path, Device.AUTO)

    assert provider == session.get_providers()[0]
    assert provider in ort.get_available_providers()


def test_device_missing_from_the_build_is_an_error(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = onnx_models.build_model(models / "cpu_only.onnx")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])

    with pytest.raises(DeviceError, match="this onnxruntime build has no CUDAExecutionProvider"):
        open_session(path, Device.CUDA)
    with pytest.raises(DeviceError, match="no TensorrtExecutionProvider"):
        open_session(path, Device.TENSORRT)
    assert open_session(path, Device.AUTO)[2] == "CPUExecutionProvider"


class _NoGpuSession(ort.InferenceSession):
    """What onnxruntime does when CUDA is in the build but does not start: run on the CPU."""

    def __init__(self, path: str, options: ort.SessionOptions, **kwargs: object) -> None:
        kwargs["providers"] = ["CPUExecutionProvider"]
        super().__init__(path, options, **kwargs)


@pytest.fixture()
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """CUDA in the build but not starting; the providers each session asked for, in order."""
    asked: list[list[str]] = []

    class Recording(_NoGpuSession):
        def __init__(self, path: str, options: ort.SessionOptions, **kwargs: object) -> None:
            asked.append(list(kwargs["providers"]))  # type: ignore[call-overload]
            super().__init__(path, options, **kwargs)

    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", Recording)
    # What this process learnt about CUDA stays in the test.
    monkeypatch.setattr(runtime_model, "_CUDA_DID_NOT_START", threading.Event())
    return asked


def test_device_that_does_not_start(models: Path, no_gpu: list[list[str]]) -> None:
    path = onnx_models.build_model(models / "no_gpu.onnx")

    with pytest.raises(DeviceError, match="could not start CUDAExecutionProvider here"):
        open_session(path, Device.CUDA)
    assert open_session(path, Device.AUTO)[2] == "CPUExecutionProvider"


def test_auto_tries_cuda_once_per_process(models: Path, no_gpu: list[list[str]]) -> None:
    path = onnx_models.build_model(models / "auto_once.onnx")

    for _ in range(3):
        assert open_session(path, Device.AUTO)[2] == "CPUExecutionProvider"
    cuda = "CUDAExecutionProvider"
    assert [cuda in providers for providers in no_gpu] == [True, False, False]


def test_metadata_values_are_json(models: Path) -> None:
    # The runtime decodes every value with json.loads: the helper must write what export writes.
    path = onnx_models.build_model(models / "json.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map

    assert json.loads(meta[contract.META_LABELS]) == list(onnx_models.COLOURS)
    assert json.loads(meta[contract.META_RESCALE]) == onnx_models.RESCALE
