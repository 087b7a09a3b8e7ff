"""ExportConfig: every export option, validated once and saved beside the exported files."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_ssl.errors import ConfigError

# tf2onnx 1.17 converts to opsets up to 18 (its OPSET_TO_IR_VERSION); per-channel QDQ needs 13.
# Every opset in this range was converted and checked against Keras here.
SUPPORTED_OPSETS = range(13, 19)
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
        max_int8_drop: accuracy points an INT8 or FP16 variant may lose against FP32; negative
            demands a gain.
        overwrite: replace an existing `RUN/exports` folder.
        tolerance: max |Δprobability| allowed between Keras and ONNX FP32.
        verify_images: held-out images per parity check.
        verify_sizes: (height, width) sizes checked besides the native one.
    """

    run_dir: Path
    opset: int = 17
    int8: bool = False
    fp16: bool = False
    calibration_images: int = 100
    max_int8_drop: float = 1.0
    overwrite: bool = False
    tolerance: float = 1e-4
    verify_images: int = 32
    verify_sizes: tuple[tuple[int, int], ...] = ((37, 91), (128, 128))

    def __post_init__(self) -> None:
        def bad(option: str, value: Any, allowed: str) -> ConfigError:
            return ConfigError(f"--{option} {value} is not allowed: {allowed}.")

        if not isinstance(self.run_dir, Path):
            raise bad("run", repr(self.run_dir), "expected a pathlib.Path")
        if self.opset not in SUPPORTED_OPSETS:
            raise bad("opset", self.opset, f"use {SUPPORTED_OPSETS.start}–"
                      f"{SUPPORTED_OPSETS.stop - 1} (tf2onnx's range; 13+ for per-channel INT8)")
        if self.calibration_images < 1:
            raise bad("calibration-images", self.calibration_images, "use at least 1")
        if not (math.isfinite(self.max_int8_drop) and -100.0 <= self.max_int8_drop <= 100.0):
            raise bad("max-int8-drop", self.max_int8_drop, "use -100 to 100 accuracy points")
        if not (math.isfinite(self.tolerance) and 0.0 < self.tolerance < 1.0):
            raise bad("tolerance", self.tolerance, "use a probability difference in (0, 1)")
        if self.verify_images < 1:
            raise bad("verify-images", self.verify_images, "use at least 1")
        for size in self.verify_sizes:
            if len(size) != 2 or min(size) < 1:
                raise bad("verify-sizes", size, "use (height, width) pairs of positive ints")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["run_dir"] = str(self.run_dir)
        data["verify_sizes"] = [list(size) for size in self.verify_sizes]
        return data
