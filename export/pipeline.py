"""The export stage: a run directory in, verified ONNX files in RUN/exports out.

Everything is built and verified in memory, written to a hidden staging folder inside the run
and renamed to `exports/` in one step. When an FP32 file fails a check nothing is written; an
INT8 or FP16 variant that misses its gate costs that variant only: it is left out, the report
says why, and the verified FP32 files are published.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import keras
import numpy as np
import onnx
import onnxruntime

from edge_ssl import contract
from edge_ssl.atomic import publish_folder, refuse_existing, sibling
from edge_ssl.errors import ModelError
from edge_ssl.export import convert, graph_edit, quantize, twins, verify
from edge_ssl.export.config import CONFIG_FILE, ExportConfig
from edge_ssl.export.ort_format import OPERATORS_CONFIG
from edge_ssl.export.report import ExportedFile, ExportReport, versions
from edge_ssl.export.run_source import RunSource, open_run
from edge_ssl.export.verify import Check
from edge_ssl.stats import Rate, stratified_sample
from edge_ssl.train.model import as_float32, load_model, mixed_policy, preprocess_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Job:
    """One Keras model to export, with its held-out data. Images are uint8 `[N, S, S, 3]`."""

    name: str
    keras_file: str
    task: str
    labels: list[str]
    images: np.ndarray  # test images: parity, raw frames and the reported accuracies
    targets: np.ndarray  # int64 [N] true class of each test image
    calibration: np.ndarray
    gate: np.ndarray  # training images on which a variant is kept or rejected
    gate_targets: np.ndarray


def export_run(config: ExportConfig) -> ExportReport:
    """Export, verify and publish both models of `config.run_dir`.

    Returns:
        The report; `report.rejected` lists the variants that missed their gate and were not
        written (the CLI exits non-zero for them).

    Raises:
        RunDirError: the run is incomplete, or exports exist and `overwrite` is off.
        ModelError: a .keras file is not one edge-ssl wrote or does not match the run.
        ExportError: tf2onnx or a quantizer failed.
        ExportVerificationError: an FP32 file failed a check; nothing was written.
    """
    source = open_run(config.run_dir)
    exports = source.path / contract.EXPORTS_DIR
    refuse_existing(exports, config.overwrite)
    jobs = _jobs(source)
    trained = {job.name: _load(source, job) for job in jobs}  # fail fast, before converting
    exported_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    files: list[tuple[ExportedFile, bytes]] = []
    tests: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # model → test sample, its labels
    for job in jobs:
        test = stratified_sample(job.targets, config.gate_images, config.seed)
        tests[job.name] = job.images[test], job.targets[test]
        files += _export_model(trained[job.name], job, source, config, exported_at,
                               tests[job.name])
    verify.raise_failures((f.file, check) for f, _ in files if f.precision == "fp32"
                          for check in f.checks)
    # The any-size files are the fixed ones' reference; with --input fixed they are not kept.
    files = [(f, data) for f, data in files if f.input in config.input.kinds]
    operators = None
    if config.ort:
        log.info("converting to ORT format")
        ort_files, operators = twins.ort_twins(files, tests, config)
        files += ort_files
    report = ExportReport(exports, source.name, exported_at, config, [f for f, _ in files],
                          versions())
    # The staging folder is the atomic unit: it becomes exports/ in one rename, complete.
    staging = sibling(exports, "new")
    staging.mkdir()
    try:
        for exported, data in files:
            if exported.passed:
                (staging / exported.file).write_bytes(data)
        if operators is not None:
            (staging / OPERATORS_CONFIG).write_text(operators, encoding="utf-8")
        for name, content in ((CONFIG_FILE, config.to_json()),
                              (contract.EXPORT_REPORT, report.to_json())):
            (staging / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        publish_folder(staging, exports, config.overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _jobs(source: RunSource) -> list[_Job]:
    pretext, rotations = _all_rotations(source.pretext_images)
    # Calibrate the pretext on rotated images too: that is the input it sees.
    calibration = np.stack([np.rot90(image, k % 4) for k, image in
                            enumerate(source.calibration_images)])
    return [
        # The pretext's held-out images are unlabeled training images, never test images:
        # they serve both to measure and to decide.
        _Job("pretext", contract.PRETEXT_MODEL, contract.TASK_ROTATION,
             list(contract.ROTATION_LABELS), pretext, rotations, calibration, pretext,
             rotations),
        _Job("classifier", contract.CLASSIFIER_MODEL, contract.TASK_CLASSIFICATION,
             source.labels, source.classifier_images, source.classifier_labels,
             source.calibration_images, source.gate_images, source.gate_labels),
    ]


def _all_rotations(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 `[N, S, S, 3]` → `[4N, S, S, 3]` (each image at k·90°, k = 0..3) and labels k."""
    rotated = np.stack([np.rot90(image, k) for image in images for k in range(4)])
    return rotated, np.tile(np.arange(4, dtype=np.int64), len(images))


def _load(source: RunSource, job: _Job) -> keras.Model:
    path = source.model_path(job.keras_file)
    model = load_model(path)
    size = preprocess_of(model).image_size
    if size != source.image_size:
        raise ModelError(f"{path}: resizes to {size}×{size} but the run's config.json says "
                         f"{source.image_size}; re-run `edge-ssl train`.")
    outputs = model.output_shape[-1]
    if outputs != len(job.labels):
        raise ModelError(f"{path}: has {outputs} outputs for {len(job.labels)} labels "
                         f"({', '.join(job.labels)}); re-run `edge-ssl train`.")
    return model


def _export_model(trained: keras.Model, job: _Job, source: RunSource, config: ExportConfig,
                  exported_at: str, test: tuple[np.ndarray, np.ndarray]
                  ) -> list[tuple[ExportedFile, bytes]]:
    """The any-size files of one model and, when asked, their fixed-size twins.

    A model trained with mixed precision is rebuilt in float32 with the same weights first; the
    file is that float32 model, checked against it like any other, and how far its answers are
    from the mixed-precision model's is recorded beside it.
    """
    policy = mixed_policy(trained)
    model = as_float32(trained) if policy else trained
    built = _any_size(trained, model, policy, job, source, config, exported_at, test)
    if contract.INPUT_FIXED not in config.input.kinds:
        return built
    log.info(f"deriving the fixed-size files of {job.name}")
    parity = job.images[stratified_sample(job.targets, config.verify_images, config.seed)]
    return built + twins.fixed_twins(
        built, source.image_size, len(job.labels),
        lambda images: np.asarray(model(images, training=False)), parity, *test,
        config.tolerance)


def _any_size(trained: keras.Model, model: keras.Model, policy: str | None, job: _Job,
              source: RunSource, config: ExportConfig, exported_at: str,
              test: tuple[np.ndarray, np.ndarray]) -> list[tuple[ExportedFile, bytes]]:
    """The FP32 file and, when asked and FP32 passed, its INT8/FP16 variants.

    Every sample is seeded and class-stratified (one seed, so the smaller samples are part of the
    larger ones). Parity, raw frames and the reported accuracies use the test images; whether a
    variant is kept, and which nodes INT8 keeps in FP32, is decided on training images (the
    gate sample), so that no test image steers a choice.
    """
    def meta(precision: str) -> dict[str, Any]:
        return convert.metadata(job.task, job.labels, preprocess_of(model), source.name,
                                exported_at, precision)

    def sample(n: int) -> np.ndarray:
        return stratified_sample(job.targets, n, config.seed)

    log.info(f"converting {job.name} (opset {config.opset})")
    proto = convert.to_onnx(model, config.opset)
    graph_edit.fold_rescale(proto)  # before quantizing, so that every variant has it
    convert.set_metadata(proto, meta("fp32"))
    data = proto.SerializeToString()
    checks = _structure(proto, job)
    if not all(check.passed for check in checks):
        return [(_file(f"{job.name}.onnx", job, "fp32", data, None, checks), data)]
    log.info(f"verifying {job.name}.onnx against Keras")
    sess = verify.session(data)
    checks += _parity(model, sess, job.images[sample(config.verify_images)], config)
    checks += _frames(proto, job, sample(config.frame_images), source.image_size, config)
    test_images, test_targets = test
    gate = stratified_sample(job.gate_targets, config.gate_images, config.seed)
    gate_images, gate_targets = job.gate[gate], job.gate_targets[gate]
    fp32 = verify.predict(sess, gate_images)
    exported = _file(f"{job.name}.onnx", job, "fp32", data,
                     verify.accuracy(verify.predict(sess, test_images), test_targets), checks,
                     rebuilt=verify.compare_rebuild(trained, model, policy, job.images[sample(
                         config.verify_images)]) if policy else None)
    files = [(exported, data)]
    if not exported.passed:
        return files  # the variants' reference is wrong: do not build on them
    if config.int8:
        log.info(f"quantizing {job.name}.int8.onnx")
        calibration = job.calibration[:config.calibration_images]
        outcome = quantize.int8_within_budget(proto, calibration, gate_images, fp32,
                                              config.min_int8_agreement, config.max_fp32_nodes)
        convert.set_metadata(outcome.proto, meta("int8"))
        check = verify.check_int8(fp32, outcome.probabilities, gate_targets,
                                  config.min_int8_agreement, outcome.fp32_nodes, {
                                      "candidates": outcome.candidates,
                                      "tried": [{"fp32_nodes": count, "top1_agreement": agree}
                                                for count, agree in outcome.tried]})
        files.append(_variant(outcome.proto, "int8", check, job, test_images, test_targets,
                              source.image_size, config,
                              calibration_images=len(calibration),
                              fp32_nodes=outcome.fp32_nodes))
    if config.fp16:
        log.info(f"converting {job.name}.fp16.onnx")
        fp16 = quantize.to_fp16(proto)
        convert.set_metadata(fp16, meta("fp16"))
        probabilities = verify.predict(verify.session(fp16.SerializeToString()), gate_images)
        check = verify.check_fp16(fp32, probabilities, gate_targets, config.fp16_tolerance)
        files.append(_variant(fp16, "fp16", check, job, test_images, test_targets,
                              source.image_size, config))
    return files


def _variant(proto: onnx.ModelProto, precision: str, gate: Check, job: _Job,
             test_images: np.ndarray, test_targets: np.ndarray, size: int,
             config: ExportConfig,
             calibration_images: int | None = None,
             fp32_nodes: tuple[str, ...] | None = None) -> tuple[ExportedFile, bytes]:
    """A reduced-precision file with its evidence: structure, raw frames, its gate, and its
    accuracy on the test sample."""
    name = f"{job.name}.{precision}.onnx"
    log.info(f"checking {name}")
    data = proto.SerializeToString()
    checks = _structure(proto, job)
    if all(check.passed for check in checks):
        checks += _frames(proto, job,
                          stratified_sample(job.targets, config.frame_images, config.seed),
                          size, config)
    checks.append(gate)
    accuracy = (verify.accuracy(verify.predict(verify.session(data), test_images), test_targets)
                if all(check.passed for check in _structure(proto, job)) else None)
    exported = _file(name, job, precision, data, accuracy, checks, calibration_images,
                     fp32_nodes)
    return exported, data


def _structure(proto: onnx.ModelProto, job: _Job) -> list[Check]:
    return [verify.check_onnx(proto), verify.check_contract(proto, len(job.labels))]


def _frames(proto: onnx.ModelProto, job: _Job, sample: np.ndarray, size: int,
            config: ExportConfig) -> list[Check]:
    return verify.check_frames(proto, job.images[sample], size, config.frame_scale,
                               config.min_frame_agreement, config.seed)


def _parity(model: keras.Model, sess: onnxruntime.InferenceSession, native: np.ndarray,
            config: ExportConfig) -> list[Check]:
    """Native size at full and single-image batch, then each odd size."""
    def keras_probabilities(images: np.ndarray) -> np.ndarray:
        return np.asarray(model(images, training=False))

    batches = [native, native[:1]] + [verify.resized(native, height, width)
                                      for height, width in config.verify_sizes]
    return [verify.check_parity(keras_probabilities, sess, images, config.tolerance)
            for images in batches]


def _file(name: str, job: _Job, precision: str, data: bytes, accuracy: Rate | None,
          checks: list[Check], calibration_images: int | None = None,
          fp32_nodes: tuple[str, ...] | None = None,
          rebuilt: dict[str, Any] | None = None) -> ExportedFile:
    return ExportedFile(name, job.name, precision, len(data), hashlib.sha256(data).hexdigest(),
                        accuracy, checks, calibration_images, fp32_nodes, rebuilt)
