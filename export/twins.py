"""Files derived from a verified file: its fixed-size twin and its ORT-format twin.

Each twin is checked against the file it came from on the test sample (same top-1 on every
image, every probability within the export's tolerance); a fixed-size FP32 file is also checked
against Keras, like the any-size one. A twin of a file that was not written is not written either,
for the same reason.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort

from edge_ssl import contract
from edge_ssl.export import graph_edit, verify
from edge_ssl.export.config import ExportConfig
from edge_ssl.export.ort_format import ort_name, to_ort
from edge_ssl.export.report import ExportedFile
from edge_ssl.export.verify import Check
from edge_ssl.stats import Rate

Built = tuple[ExportedFile, bytes]


def fixed_name(name: str) -> str:
    """`classifier.onnx` → `classifier.fixed.onnx`; `classifier.int8.onnx` →
    `classifier.fixed.int8.onnx`."""
    model, _, rest = name.partition(".")
    return f"{model}.{contract.FIXED_TAG}.{rest}"


def fixed_twins(built: list[Built], size: int, num_classes: int,
                keras_probabilities: Callable[[np.ndarray], np.ndarray],
                parity_images: np.ndarray, test_images: np.ndarray, test_targets: np.ndarray,
                tolerance: float) -> list[Built]:
    """The fixed-size file (uint8 `[N, size, size, 3]`, no Resize) of each any-size file."""
    twins = []
    for exported, data in built:
        name = fixed_name(exported.file)
        if not exported.passed:
            twins.append((replace(exported, file=name, input=contract.INPUT_FIXED,
                                  size_bytes=0, sha256=""), b""))
            continue
        proto = graph_edit.to_fixed(onnx.load_from_string(data), size)
        meta = {p.key: p.value for p in proto.metadata_props}
        meta[contract.META_INPUT] = json.dumps(contract.INPUT_FIXED)  # every value is JSON
        onnx.helper.set_model_props(proto, meta)
        fixed = proto.SerializeToString()
        checks = [verify.check_onnx(proto),
                  verify.check_contract(proto, num_classes, size)]
        accuracy = None
        if all(check.passed for check in checks):
            sess = verify.session(fixed)
            if exported.precision == "fp32":
                checks += [verify.check_parity(keras_probabilities, sess, images, tolerance)
                           for images in (parity_images, parity_images[:1])]
            probabilities = verify.predict(sess, test_images)
            reference = verify.predict(verify.session(data), test_images)
            checks.append(verify.check_twin(reference, probabilities, exported.file,
                                            _twin_tolerance(exported, tolerance, ort=False)))
            accuracy = verify.accuracy(probabilities, test_targets)
        twins.append((_derived(exported, name, fixed, checks, accuracy,
                               input=contract.INPUT_FIXED), fixed))
    return twins


def ort_twins(built: list[Built], tests: dict[str, tuple[np.ndarray, np.ndarray]],
              config: ExportConfig) -> tuple[list[Built], str]:
    """The ORT-format file of each written file, checked against it, and the text of the
    required_operators.config that covers them all.

    `tests` holds each model's test images and their labels, by model name.
    """
    written = {exported.file: (exported, data) for exported, data in built if exported.passed}
    converted, operators = to_ort({name: data for name, (_, data) in written.items()},
                                  config.ort_platform)
    twins = []
    for name, (exported, data) in written.items():
        ort_data = converted[ort_name(name)]
        images, targets = tests[exported.model]
        sess = verify.session(ort_data)
        probabilities = verify.predict(sess, images)
        reference = verify.predict(verify.session(data), images)
        checks = [_metadata_kept(onnx.load_from_string(data), sess.get_modelmeta()),
                  verify.check_twin(reference, probabilities, name,
                                    _twin_tolerance(exported, config.tolerance, ort=True))]
        twins.append((_derived(exported, ort_name(name), ort_data, checks,
                               verify.accuracy(probabilities, targets), format="ort"), ort_data))
    return twins, operators


def _twin_tolerance(exported: ExportedFile, tolerance: float, ort: bool) -> float:
    """How far a twin may move its source's probabilities: the export's tolerance, except where
    onnxruntime is known to round the twin differently (verify's FP16 and INT8 .ort bounds)."""
    if exported.precision == "fp16":
        return verify.FP16_TWIN_TOLERANCE
    if exported.precision == "int8" and ort:
        return verify.INT8_ORT_TWIN_TOLERANCE
    return tolerance


def _metadata_kept(proto: onnx.ModelProto, meta: ort.ModelMetadata) -> Check:
    expected = {p.key: p.value for p in proto.metadata_props}
    actual = dict(meta.custom_metadata_map)
    missing = sorted(key for key in expected if actual.get(key) != expected[key])
    return Check("metadata kept", not missing,
                 f"{len(expected) - len(missing)}/{len(expected)} edge_ssl.* entries equal"
                 + (f"; changed: {', '.join(missing)}" if missing else ""))


def _derived(source: ExportedFile, name: str, data: bytes, checks: list[Check],
             accuracy: Rate | None, **kind: str) -> ExportedFile:
    return replace(source, file=name, size_bytes=len(data),
                   sha256=hashlib.sha256(data).hexdigest(), checks=checks,
                   accuracy=accuracy, **kind)

