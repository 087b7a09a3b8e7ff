"""The targets summary itself: ratios from known medians (a smoke run times nothing to check)."""

from __future__ import annotations

import json

import pytest
from bench_report import Results, format_measurements, format_targets, targets, to_json

from edge_ssl.runtime.parallel import Layout


@pytest.fixture
def measured() -> Results:
    results = Results()
    for name, seconds, items in [
        ("onnx-fp32-b1", 0.0005, 1), ("keras-predict_on_batch-b1", 0.0100, 1),
        ("litert-fp32-b1", 0.0004, 1), ("onnx-fp32-b32", 0.0100, 32),
        ("onnx-int8-b32", 0.0050, 32), ("classify-fp32", 0.8, 2048),
        ("classify-fp32-model-b32", 0.0100, 32),
        ("onnx-fp32-bare-b32", 0.0070, 32),
        ("cli-startup", 0.6, 1), ("pipeline-files", 1.2, 512), ("pipeline-cached", 1.0, 512),
    ]:
        results.add(name, seconds, items)
    results.accuracy.update({"onnx-fp32": 82.4, "onnx-int8": 81.2})
    results.input_wait.update({"files": 0.2, "cached": 0.04})
    results.layouts["onnx-fp32-b32"] = Layout(2, 1)
    return results


def test_targets_are_ratios_of_same_run_medians(measured: Results) -> None:
    rows = {row.name: row for row in targets(measured, vnni=True)}

    keras = rows["ONNX FP32 batch-1 latency / Keras predict_on_batch"]
    assert keras.value == pytest.approx(0.05) and keras.met is True
    latency = rows["ONNX FP32 batch-1 latency / LiteRT FP32's"]
    assert latency.value == pytest.approx(1.25) and latency.met is True
    assert rows["ONNX INT8 / FP32 throughput, batch 32"].value == pytest.approx(2.0)
    assert rows["ONNX INT8 / FP32 throughput, batch 32"].met is True
    control = rows["ONNX FP32 batch 32: the contender / the same in a bare process"]
    assert control.value == pytest.approx(0.0100 / 0.0070) and control.met is False
    assert rows["ONNX INT8 accuracy loss on the validation images"].value == pytest.approx(1.2)
    classify = rows["classify a JPEG folder / the model's batch-32 throughput, FP32"]
    assert classify.value == pytest.approx((2048 / 0.8) / (32 / 0.01)) and classify.met is True
    assert rows["CLI start-up to first result"].met is True
    assert rows["input pipeline: a step on JPEG files / on cached tensors"].met is False
    starved = rows["  … the same, from time spent waiting for input"]
    assert starved.value == pytest.approx(0.96 / 0.8) and starved.met is False


def test_unmeasured_targets_are_neither_met_nor_missed(measured: Results) -> None:
    rows = {row.name: row for row in targets(measured, vnni=False)}

    int8_litert = rows["ONNX INT8 throughput / LiteRT INT8's, batch 32"]
    assert int8_litert.value is None and int8_litert.met is None
    # Without VNNI the INT8 speed-up is shown, not judged.
    assert rows["ONNX INT8 / FP32 throughput, batch 32 (no VNNI)"].met is None


def test_summary_prints_and_serialises_every_target(measured: Results) -> None:
    rows = targets(measured, vnni=True)

    lines = format_targets(rows)
    payload = json.loads(json.dumps(to_json(measured, rows)))

    assert len(lines) == len(rows) + 1 and "NOT MET" in "\n".join(lines)
    assert payload["medians"]["onnx-fp32-b32"]["per_second"] == pytest.approx(3200)
    assert payload["layouts"] == {"onnx-fp32-b32": {"sessions": 2, "threads": 1}}
    assert "2 sessions × 1 thread" in "\n".join(format_measurements(measured))
    assert len(payload["targets"]) == len(rows)
