"""What an export produced and the evidence for each file: `export_report.json`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import onnx
import onnxruntime
import tensorflow as tf
import tf2onnx

import edge_ssl
from edge_ssl.export.config import ExportConfig
from edge_ssl.export.verify import Check


@dataclass(frozen=True)
class ExportedFile:
    """One ONNX file and the evidence that it is right."""

    file: str
    model: str
    precision: str
    size_bytes: int
    sha256: str
    accuracy: float | None  # top-1 % on the held-out validation images; None when not run
    checks: list[Check]
    calibration_images: int | None = None

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        data = {"file": self.file, "model": self.model, "precision": self.precision,
                "size_bytes": self.size_bytes, "sha256": self.sha256, "accuracy": self.accuracy,
                "passed": self.passed, "checks": [check.to_json() for check in self.checks]}
        if self.calibration_images is not None:
            data["calibration_images"] = self.calibration_images
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

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "exported_at": self.exported_at,
                "passed": all(f.passed for f in self.files), "config": self.config.to_json(),
                "tolerances": {"max_abs_probability_diff": self.config.tolerance,
                               "top1": "identical (Keras ties within the tolerance excepted)",
                               "max_accuracy_drop_points": self.config.max_int8_drop},
                "versions": self.versions, "files": [f.to_json() for f in self.files]}


def versions() -> dict[str, str]:
    """The libraries that produced and checked the files, for the report."""
    return {"edge_ssl": edge_ssl.__version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "tf2onnx": tf2onnx.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
