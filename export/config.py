"""ExportConfig: every export option, validated once and saved beside the exported files."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from edge_ssl import contract
from edge_ssl.errors import ConfigError
from edge_ssl.export.ort_format import OrtPlatform
from edge_ssl.options import OUTPUT, not_allowed, option, to_json

# ONNX Resize has an antialiased mode from opset 18 on, and the preprocessing needs it; tf2onnx
# 1.17 converts up to opset 18.
SUPPORTED_OPSETS = range(18, 19)
CONFIG_FILE = "export_config.json"
CONVERSION = "Conversion"  # help panels of `edge-ssl export`
VARIANTS = "INT8 and FP16 variants"
FORMATS = "Inputs and formats"


class InputKind(str, Enum):
    """Which input the files take: any size (resized inside the graph), the model's fixed size
    (no Resize: what TensorRT, WebGPU and WebNN accept), or both."""

    ANY = "any"
    FIXED = "fixed"
    BOTH = "both"

    @property
    def kinds(self) -> tuple[str, ...]:
        """The `edge_ssl.input` values of the files this choice writes."""
        if self is InputKind.BOTH:
            return (contract.INPUT_ANY, contract.INPUT_FIXED)
        return (self.value,)


@dataclass(frozen=True)
class ExportConfig:
    """What `edge-ssl export` does to one run directory.

    Attributes:
        run_dir: the run written by `edge-ssl train`.
        opset: ONNX opset of the exported graphs.
        int8: also write static-QDQ INT8 variants (`*.int8.onnx`).
        fp16: also write FP16 variants with FP32 inputs/outputs (`*.fp16.onnx`).
        input: any-size files, fixed-size files (`*.fixed.*`), or both.
        ort: also write ORT-format files (`*.ort`) and required_operators.config.
        ort_platform: the CPU the ORT files are optimised for.
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

    run_dir: Path = option(Path("runs/latest"), "Run directory written by `edge-ssl train`.",
                           "RUN", argument=True)
    opset: int = option(
        18, "ONNX opset; 18, the first with the antialiased Resize the preprocessing needs.",
        "N", CONVERSION)
    int8: bool = option(False, "Also write static-QDQ INT8 variants (*.int8.onnx).",
                        panel=VARIANTS)
    fp16: bool = option(False, "Also write FP16 variants with FP32 inputs/outputs "
                        "(*.fp16.onnx).", panel=VARIANTS)
    input: InputKind = option(
        InputKind.BOTH, "Input of the files: any (any image size, resized in the graph), fixed "
        "(the model's size, no Resize: for TensorRT, WebGPU, WebNN; *.fixed.onnx) or both.",
        "KIND", FORMATS)
    ort: bool = option(False, "Also write ORT-format files (*.ort) for onnxruntime mobile, "
                       "with the required_operators.config a reduced build needs.",
                       panel=FORMATS)
    ort_platform: OrtPlatform = option(
        OrtPlatform.ARM, "CPU the ORT files are optimised for: arm (runs anywhere) or amd64 "
        "(x86-only kernels).", "CPU", FORMATS)
    calibration_images: int = option(
        100, "Most stored training images used to calibrate INT8.", "N", VARIANTS)
    min_int8_agreement: float = option(
        99.0, "INT8 gate: % of held-out images whose top-1 must equal FP32's.", "PERCENT",
        VARIANTS)
    max_fp32_nodes: int = option(
        16, "Most nodes INT8 may keep in FP32 to meet its gate (0: no fallback).", "N",
        VARIANTS)
    fp16_tolerance: float = option(
        0.05, "FP16 gate: largest |Δprobability| allowed against FP32.", "P", VARIANTS)
    gate_images: int = 1000
    seed: int = option(0, "Seed of the checks' image samples.", "N", CONVERSION)
    overwrite: bool = option(False, "Replace an existing RUN/exports folder.", panel=OUTPUT)
    tolerance: float = 1e-4
    verify_images: int = 32
    verify_sizes: tuple[tuple[int, int], ...] = ((37, 91), (128, 128))
    frame_images: int = 200
    frame_scale: int = 8
    min_frame_agreement: float = 99.5

    def __post_init__(self) -> None:
        def bad(name: str, value: Any, allowed: str) -> ConfigError:
            return not_allowed(self, name, value, allowed)

        def percent(name: str) -> None:
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 100.0):
                raise bad(name, f"{value:g}", "use a percentage from 0 to 100")

        if not isinstance(self.input, InputKind):
            raise bad("input", repr(self.input), "use any, fixed or both")
        if not isinstance(self.ort_platform, OrtPlatform):
            raise bad("ort_platform", repr(self.ort_platform), "use arm or amd64")
        if not isinstance(self.run_dir, Path):
            raise bad("run_dir", repr(self.run_dir), "expected a pathlib.Path")
        if self.opset not in SUPPORTED_OPSETS:
            raise bad("opset", self.opset, f"use {SUPPORTED_OPSETS.start} (the antialiased "
                      "resize the preprocessing needs arrived in opset 18; tf2onnx converts up "
                      "to 18)")
        for name in ("calibration_images", "gate_images", "verify_images", "frame_images",
                     "frame_scale"):
            if getattr(self, name) < 1:
                raise bad(name, getattr(self, name), "use at least 1")
        if self.max_fp32_nodes < 0:
            raise bad("max_fp32_nodes", self.max_fp32_nodes, "use 0 (no fallback) or more")
        percent("min_int8_agreement")
        percent("min_frame_agreement")
        for name in ("fp16_tolerance", "tolerance"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 < value < 1.0):
                raise bad(name, f"{value:g}", "use a probability difference in (0, 1)")
        for size in self.verify_sizes:
            if len(size) != 2 or min(size) < 1:
                raise bad("verify_sizes", size, "use (height, width) pairs of positive ints")

    def to_json(self) -> dict[str, Any]:
        return to_json(self)
