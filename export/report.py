"""What an export produced and the evidence for each file: `export_report.json`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import onnx
import onnxruntime
import tensorflow as tf
import tf2onnx

import edge_ssl
from edge_ssl import contract
from edge_ssl.export.config import ExportConfig
from edge_ssl.export.verify import Check
from edge_ssl.stats import Rate


@dataclass(frozen=True)
class ExportedFile:
    """One ONNX file and the evidence that it is right. Only files that passed are written."""

    file: str
    model: str
    precision: str
    size_bytes: int
    sha256: str
    accuracy: Rate | None  # top-1 on the gate sample of held-out images; None when not run
    checks: list[Check]
    calibration_images: int | None = None
    fp32_nodes: tuple[str, ...] | None = None  # INT8: the nodes the fallback kept in FP32
    # A model trained with mixed precision, converted from its float32 rebuild: how the rebuild's
    # answers compare with the mixed-precision model's (edge_ssl.export.verify.compare_rebuild).
    rebuilt: dict[str, Any] | None = None
    input: str = contract.INPUT_ANY  # or INPUT_FIXED: the model's size only, no Resize
    format: str = "onnx"  # or "ort": onnxruntime's format for mobile and reduced builds

    @property
    def suits(self) -> list[str]:
        """Where the file runs, for the report: what its input and format allow."""
        if self.format == "ort":
            return ["onnxruntime mobile and reduced builds (ORT format)",
                    "edge-ssl classify / serve"]
        runtimes = ["onnxruntime CPU and CUDA", "onnxruntime-web WASM", "edge-ssl classify / serve"]
        if self.input == contract.INPUT_FIXED:
            return [*runtimes, "TensorRT", "onnxruntime-web WebGPU", "WebNN",
                    "converters that need a static input size"]
        return [*runtimes, "camera frames of any size (resized inside the graph)"]

    @property
    def passed(self) -> bool:
        """Every check that decides whether the file is written passed."""
        return all(check.passed for check in self.checks if not check.advisory)

    @property
    def advisories(self) -> list[Check]:
        """Failed advisory checks: the file is written, and the export says what they found."""
        return [check for check in self.checks if check.advisory and not check.passed]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "file": self.file, "model": self.model, "precision": self.precision,
            "input": self.input, "format": self.format, "suits": self.suits,
            "written": self.passed, "size_bytes": self.size_bytes, "sha256": self.sha256,
            "accuracy": None if self.accuracy is None else self.accuracy.to_json(),
            "passed": self.passed, "checks": [check.to_json() for check in self.checks]}
        if self.calibration_images is not None:
            data["calibration_images"] = self.calibration_images
        if self.fp32_nodes is not None:
            data["fp32_nodes"] = list(self.fp32_nodes)
        if self.rebuilt is not None:
            data["float32_rebuild"] = self.rebuilt
        return data


@dataclass(frozen=True)
class ExportReport:
    """What `export_report.json` holds; the CLI prints it as a table."""

    exports_dir: Path
    run: str
    exported_at: str
    config: ExportConfig
    files: list[ExportedFile]
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def written(self) -> list[ExportedFile]:
        return [f for f in self.files if f.passed]

    @property
    def rejected(self) -> list[ExportedFile]:
        """Variants that missed their gate: left out, while the FP32 files were written."""
        return [f for f in self.files if not f.passed]

    def rejection(self) -> str | None:
        """One line: each variant left out, why, and what to try; None when none was."""
        reasons = [f"{f.file} was not written ({_short(f)}); {_hint(f, self.config)}"
                   for f in self.rejected]
        if not reasons:
            return None
        return " ".join(reasons) + (f" The verified FP32 files are in {self.exports_dir} "
                                    f"(details in {contract.EXPORT_REPORT}).")

    def frames_warning(self) -> str | None:
        """One line when raw frames fed to a written file change its answers, else None."""
        frames = [(f.file, check) for f in self.written for check in f.advisories]
        if not frames:
            return None
        values = frames[0][1].values
        changed = ", ".join(f"{file} on {100 - c.values['top1_agreement']['percent']:.1f}%"
                            for file, c in frames)
        return (f"raw {values['frame_size']}px frames get another top-1 than the runtime gives "
                f"from {changed} of {values['images']} frames (budget "
                f"{100 - self.config.min_frame_agreement:g}%): the graph resizes as the runtime "
                "does, but the model changes its answer under the runtime's 8-bit rounding; "
                "resize frames to the native size with Pillow's BILINEAR before feeding them, "
                "or train longer.")

    def to_json(self) -> dict[str, Any]:
        config = self.config
        return {"run": self.run, "exported_at": self.exported_at,
                "passed": all(f.passed and not f.advisories for f in self.files),
                "not_written": [f.file for f in self.rejected],
                "config": config.to_json(),
                "tolerances": {"max_abs_probability_diff": config.tolerance,
                               "top1": "identical (Keras ties within the tolerance excepted)",
                               "min_raw_frame_agreement_percent": config.min_frame_agreement,
                               "min_int8_agreement_percent": config.min_int8_agreement,
                               "max_fp32_nodes": config.max_fp32_nodes,
                               "fp16_max_abs_probability_diff": config.fp16_tolerance},
                "versions": self.versions, "files": [f.to_json() for f in self.files]}


def _short(exported: ExportedFile) -> str:
    failed = [c for c in exported.checks if not c.passed and not c.advisory]
    gate = exported.checks[-1]
    if failed == [gate] and gate.name == "int8 agreement":
        kept = gate.values["fp32_nodes"]
        return (f"its top-1 agrees with FP32 on {gate.values['top1_agreement']['percent']:.1f}% "
                f"< {gate.values['min_agreement']:g}% of {gate.values['images']} held-out "
                f"images, at best, with {len(kept)} nodes kept in FP32")
    if failed == [gate] and gate.name == "fp16 |Δp|":
        return (f"max |Δp| vs FP32 {gate.values['max_abs_diff_vs_fp32']:.1e} > "
                f"{gate.values['tolerance']:g}")
    return "; ".join(f"{c.name}: {c.detail}" for c in failed)


def _hint(exported: ExportedFile, config: ExportConfig) -> str:
    # The gate is the last check; anything else failing is a broken file, not a missed budget.
    gate_failed = [c for c in exported.checks if not c.passed and not c.advisory] == [
        exported.checks[-1]] and exported.checks[-1].name in ("int8 agreement", "fp16 |Δp|")
    if exported.precision == "int8" and gate_failed:
        reached = exported.checks[-1].values["top1_agreement"]["percent"]
        return (f"try --max-fp32-nodes {max(2 * config.max_fp32_nodes, 8)}, more "
                f"--calibration-images (used {exported.calibration_images}), or training "
                "longer: a more confident model changes fewer answers when quantized; "
                f"--min-int8-agreement {math.floor(reached)} would accept this one.")
    if exported.precision == "fp16" and gate_failed:
        return (f"try --fp16-tolerance {2 * config.fp16_tolerance:g}, or use the FP32 file "
                "(FP16 pays on GPUs, not on CPUs).")
    return "please report this with export_report.json; the FP32 files are unaffected."


def versions() -> dict[str, str]:
    """The libraries that produced and checked the files, for the report."""
    return {"edge_ssl": edge_ssl.__version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "tf2onnx": tf2onnx.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
