"""ONNX files → ORT-format files for onnxruntime mobile and reduced builds.

Through onnxruntime's own converter (`onnxruntime.tools.convert_onnx_models_to_ort`), which also
writes the `required_operators.config` a reduced onnxruntime build needs. It works
on folders, so the files pass through a temporary one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator
from enum import Enum
from pathlib import Path

from edge_ssl.errors import ExportError

OPERATORS_CONFIG = "required_operators.config"


class OrtPlatform(str, Enum):
    """The CPU an ORT file is optimised for: `arm` keeps it portable (and runs QDQ as int8 on
    ARM), `amd64` bakes in x86-only NCHWc kernels."""

    ARM = "arm"
    AMD64 = "amd64"


def to_ort(files: dict[str, bytes], platform: OrtPlatform) -> tuple[dict[str, bytes], str]:
    """`{name.onnx: bytes}` → (`{name.ort: bytes}`, the text of required_operators.config).

    Optimisations are applied once at conversion (onnxruntime's "Fixed" style), the style its
    documentation recommends unless a compiling EP (NNAPI, CoreML) takes part of the graph.

    Raises:
        ExportError: onnxruntime could not convert a file.
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    with tempfile.TemporaryDirectory(prefix="edge-ssl-ort-") as tmp:
        folder = Path(tmp)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        try:
            # The converter prints and logs each step; the export's report says what matters.
            with contextlib.redirect_stdout(io.StringIO()), _quiet("ort_format_model.utils"):
                convert_onnx_models_to_ort(folder, optimization_styles=[OptimizationStyle.Fixed],
                                           target_platform=platform.value)
        except Exception as exc:  # onnxruntime raises whatever its session raises
            raise ExportError(f"onnxruntime could not convert to ORT format: {exc}") from exc
        converted = {ort_name(name): (folder / ort_name(name)).read_bytes() for name in files}
        operators = (folder / OPERATORS_CONFIG).read_text(encoding="utf-8")
        # Its header lists the files it came from, by their temporary paths: name them as written.
        return converted, operators.replace(f"{folder.resolve()}/", "")


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def ort_name(onnx_name: str) -> str:
    """`classifier.int8.onnx` → `classifier.int8.ort`."""
    return onnx_name.removesuffix(".onnx") + ".ort"
