"""Prediction files written as the images finish: CSV or JSON Lines, one row per file.

Rows go to a hidden file beside the target, flushed after every batch, and the file is renamed
over the target when the job ends, also when it is interrupted (Ctrl-C) or onnxruntime fails
part-way: the target then holds every row finished so far, each one whole. A job that finishes
no row leaves an existing target untouched.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TextIO

import numpy as np

from edge_ssl.atomic import temporary_beside
from edge_ssl.errors import ConfigError

FORMATS = (".csv", ".jsonl")


@dataclass(frozen=True)
class Prediction:
    """One classified image: the top label, its probability, and the top-k (label, prob)."""

    path: Path
    label: str
    confidence: float
    top_k: tuple[tuple[str, float], ...]


def top_labels(probabilities: np.ndarray, labels: Sequence[str], top_k: int
               ) -> list[tuple[tuple[str, float], ...]]:
    """Each row's `top_k` (label, probability), best first; ties keep the labels' order."""
    ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    return [tuple((labels[i], row[i]) for i in order)
            for row, order in zip(probabilities.tolist(), ranked.tolist(), strict=True)]


@dataclass(frozen=True)
class Failure:
    """One file that could not be classified, and why (`reason` does not repeat the path)."""

    path: Path
    reason: str


Row = Prediction | Failure


class PredictionWriter:
    """Streams rows to `path` (.csv or .jsonl) through a temporary file; use as a context manager.

    CSV columns: path, label, confidence, label_2, confidence_2, ... (with `top_k` > 1), error
    (empty for a classified file; label and confidence are empty for a failed one). JSON Lines:
    {path, label, confidence[, top_k]} per classified file, {path, error} per failed one.

    Raises:
        ConfigError: `path` cannot be written (a folder, a read-only place).
    """

    def __init__(self, path: Path, top_k: int) -> None:
        self.path = Path(path)
        self.top_k = top_k
        self.rows = 0
        self._csv = self.path.suffix.lower() == ".csv"
        if self.path.is_dir():
            raise ConfigError(f"{self.path} is a folder; give --output a file name ending in "
                              ".csv or .jsonl.")
        try:
            self._tmp = temporary_beside(self.path)
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot write there ({exc.strerror}); choose "
                              "another --output path.") from None
        self._file: TextIO = self._tmp.open("w", encoding="utf-8", newline="")
        if self._csv:
            extra = [f"{name}_{i}" for i in range(2, top_k + 1) for name in ("label", "confidence")]
            self._file.write(self._format([["path", "label", "confidence", *extra, "error"]]))

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def write(self, rows: Sequence[Row]) -> None:
        """Append `rows` as one write, then flush: an interruption never splits a row."""
        if self._csv:
            text = self._format([self._csv_row(row) for row in rows])
        else:
            text = "".join(json.dumps(self._json_row(row)) + "\n" for row in rows)
        self._file.write(text)
        self._file.flush()
        self.rows += len(rows)

    def close(self) -> None:
        """Rename the rows written so far over the target; drop the file if there are none."""
        if self._file.closed:
            return
        self._file.close()
        if self.rows:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def _csv_row(self, row: Row) -> list[str]:
        blanks = [""] * (2 * (self.top_k - 1))
        if isinstance(row, Failure):
            return [str(row.path), "", "", *blanks, row.reason]
        ranked = [v for label, conf in row.top_k[1:self.top_k] for v in (label, f"{conf:.6f}")]
        return [str(row.path), row.label, f"{row.confidence:.6f}", *ranked, ""]

    def _json_row(self, row: Row) -> dict[str, object]:
        if isinstance(row, Failure):
            return {"path": str(row.path), "error": row.reason}
        out: dict[str, object] = {"path": str(row.path), "label": row.label,
                                  "confidence": round(row.confidence, 6)}
        if self.top_k > 1:
            out["top_k"] = [{"label": label, "confidence": round(conf, 6)}
                            for label, conf in row.top_k[:self.top_k]]
        return out

    @staticmethod
    def _format(rows: list[list[str]]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        return buffer.getvalue()
