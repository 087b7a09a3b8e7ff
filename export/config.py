"""ExportConfig: every export option, validated once and saved beside the exported files."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_ssl.errors import ConfigError

# ONNX Resize has an antialiased mode from opset 18 on, and the preprocessing needs it; tf2onnx
# 1.17 converts up to opset 18.
SUPPORTED_OPSETS = range(18, 19)
CONFIG_FILE = "export_config.json"


@dataclass(frozen=True)
class ExportConfig:
    """What `edge-ssl export` does to one run directory.

    Attributes:
        run_dir: the run written by `edge-ssl train`.
        opset: ONNX opset of the exported graphs.
        int8: also write static-QDQ INT8 variants (`*.int8.onnx`).
        fp16: also write FP16 variants with FP32 inputs/outputs (`*.fp16.onnx`).
        calibration_images: at most this many stored training images calibrate INT8.
        min_int8_agreement: percent of the gate sample on which INT8's top-1 must equal FP32's.
            Agreement a bounds the accuracy change: |Δaccuracy| ≤ 100 − a points.
        max_fp32_nodes: the most nodes the INT8 fallback may keep in FP32 to meet the agreement
            (0: no fallback).
        fp16_tolerance: max |Δprobability| allowed between FP16 and FP32 on the gate sample.
        gate_images: the most held-out images (seeded, class-stratified) the INT8 and FP16 gates
            measure on.
        seed: seed of every sample the checks draw.
        overwrite: replace an existing `RUN/exports` folder.
        tolerance: max |Δprobability| allowed between Keras and ONNX FP32.
        verify_images: held-out images (seeded, class-stratified) per parity check.
        verify_sizes: (height, width) sizes checked besides the native one.
        frame_images: held-out images turned into large raw camera frames for the frame check.
        frame_scale: the frames' side as a multiple of the native size.
        min_frame_agreement: percent of frames on which the graph's own resize must give the
            runtime's top-1.
    """

    run_dir: Path
    opset: int = 18
    int8: bool = False
    fp16: bool = False
    calibration_images: int = 100
    min_int8_agreement: float = 99.0
    max_fp32_nodes: int = 16
    fp16_tolerance: float = 0.05
    gate_images: int = 1000
    seed: int = 0
    overwrite: bool = False
    tolerance: float = 1e-4
    verify_images: int = 32
    verify_sizes: tuple[tuple[int, int], ...] = ((37, 91), (128, 128))
    frame_images: int = 200
    frame_scale: int = 8
    min_frame_agreement: float = 99.5

    def __post_init__(self) -> None:
        # `option` is the `edge-ssl export` flag, or for settings only Python callers choose,
        # the field: a message never names a flag the command does not have.
        def bad(option: str, value: Any, allowed: str) -> ConfigError:
            return ConfigError(f"{option} {value} is not allowed: {allowed}.")

        def percent(option: str, value: float) -> None:
            if not (math.isfinite(value) and 0.0 <= value <= 100.0):
                raise bad(option, f"{value:g}", "use a percentage from 0 to 100")

        if not isinstance(self.run_dir, Path):
            raise bad("ExportConfig.run_dir", repr(self.run_dir), "expected a pathlib.Path")
        if self.opset not in SUPPORTED_OPSETS:
            raise bad("--opset", self.opset, f"use {SUPPORTED_OPSETS.start} (the antialiased "
                      "resize the preprocessing needs arrived in opset 18; tf2onnx converts up "
                      "to 18)")
        for option, count in (("--calibration-images", self.calibration_images),
                              ("ExportConfig.gate_images", self.gate_images),
                              ("ExportConfig.verify_images", self.verify_images),
                              ("ExportConfig.frame_images", self.frame_images),
                              ("ExportConfig.frame_scale", self.frame_scale)):
            if count < 1:
                raise bad(option, count, "use at least 1")
        if self.max_fp32_nodes < 0:
            raise bad("--max-fp32-nodes", self.max_fp32_nodes, "use 0 (no fallback) or more")
        percent("--min-int8-agreement", self.min_int8_agreement)
        percent("ExportConfig.min_frame_agreement", self.min_frame_agreement)
        for option, value in (("--fp16-tolerance", self.fp16_tolerance),
                              ("ExportConfig.tolerance", self.tolerance)):
            if not (math.isfinite(value) and 0.0 < value < 1.0):
                raise bad(option, f"{value:g}", "use a probability difference in (0, 1)")
        for size in self.verify_sizes:
            if len(size) != 2 or min(size) < 1:
                raise bad("ExportConfig.verify_sizes", size,
                          "use (height, width) pairs of positive ints")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["run_dir"] = str(self.run_dir)
        data["verify_sizes"] = [list(size) for size in self.verify_sizes]
        return data
