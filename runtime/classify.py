"""Classify files and folders of images with an exported model.

Decoding runs on threads ahead of inference (edge_ssl.runtime.decode), and inference runs ahead
of the rows (`Runner.stream`): while this thread gathers one batch's pixels and writes the rows of
another, the sessions work on the batches in between. Results are streamed:
each batch's rows (a prediction, or the reason a file could not be read) go to the output file
and to the caller as soon as the batch is done, so that nothing but counts is kept in memory and
an interrupted job keeps what it finished.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field
from pathlib import Path

import numpy as np

from edge_ssl import progress
from edge_ssl.errors import ConfigError, DataError
from edge_ssl.images import IMAGE_EXTENSIONS, list_images
from edge_ssl.options import INPUT, OUTPUT, RUNTIME, option
from edge_ssl.runtime.decode import Batch, batches
from edge_ssl.runtime.model import ModelInfo, SessionOptions, require_positive, resolve_model
from edge_ssl.runtime.output import (
    FORMATS,
    Failure,
    Prediction,
    PredictionWriter,
    Row,
    top_labels,
)
from edge_ssl.runtime.parallel import Layout, Runner, open_runner

log = logging.getLogger(__name__)

RowsCallback = Callable[[Sequence[Row]], None]  # one batch's rows, in input order
# A job of fewer images runs on one session: timing the layouts would cost more than it saves.
CALIBRATE_FROM = 1000


@dataclass(frozen=True, kw_only=True)
class ReadOptions(SessionOptions):
    """How image files reach the model: the options `classify` and `evaluate` share."""

    batch_size: int = option(32, "Images per inference call.", "N", RUNTIME, minimum=1)
    decode_threads: int | None = None  # the most; None: one per core, at most 8

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self, "batch_size", "decode_threads")


@dataclass(frozen=True)
class ClassifyConfig(ReadOptions):
    """One classify job: what to read, which model, where to run it, where to write."""

    paths: tuple[Path, ...] = option(
        MISSING, "Image files and folders (JPEG, PNG, BMP, WebP, GIF, TIFF).", "PATH...",
        argument=True)
    model: Path | None = option(
        None, "ONNX model written by `edge-ssl export` (default: the classifier of "
        "runs/latest).", "FILE", INPUT, short="-m", show_default=False)
    recursive: bool = option(False, "Also classify the images in subfolders.", panel=INPUT,
                             short="-r")
    output: Path | None = option(
        None, "Write one row per file to this .csv or .jsonl file, as images finish, instead "
        "of a table.", "FILE", OUTPUT, short="-o", show_default=False)
    top_k: int = option(1, "Also report the next best labels, up to this many in all.", "K",
                        OUTPUT, minimum=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.paths:
            raise ConfigError("paths is empty; give at least one image file or folder")
        require_positive(self, "top_k")
        if self.output is not None and self.output.suffix.lower() not in FORMATS:
            raise ConfigError(f"output is {self.output}; its name must end in .csv or .jsonl")


@dataclass
class ClassifyResult:
    """A finished (or interrupted) job: counts per label, the failures, and how it ran."""

    info: ModelInfo
    provider: str
    layout: Layout
    files: int  # in the job
    output: Path | None  # the file being written, if any
    label_counts: Counter[str] = field(default_factory=Counter)
    confidence_sums: Counter[str] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0  # decoding and inference, once the model is loaded

    @property
    def classified(self) -> int:
        return sum(self.label_counts.values())

    @property
    def images_per_second(self) -> float:
        return self.classified / self.seconds if self.seconds > 0 else 0.0


def find_images(paths: Sequence[Path], recursive: bool = False) -> list[Path]:
    """Files to classify: folders expanded to their images, files kept whatever their name.

    A path that does not exist is kept too, so that it is reported as a failure with the rest.
    """
    found: list[Path] = []
    for path in paths:
        found.extend(list_images(path, recursive) if path.is_dir() else [path])
    return found


def classify(config: ClassifyConfig, on_rows: RowsCallback | None = None,
             on_start: Callable[[ClassifyResult, Sequence[Path]], None] | None = None
             ) -> ClassifyResult:
    """Classify every image of `config.paths`, streaming rows to `config.output` when set.

    `on_start` is called once the model is open (with the empty result and the files), `on_rows`
    with each batch's rows, in input order; the count of files done is logged after each batch
    (edge_ssl.progress). On an interruption or an inference error the rows finished so far are
    in `config.output` before the exception propagates.

    Raises:
        DataError: no image file was found.
        ModelError, DeviceError: the model cannot be used (see `open_session`).
        ConfigError: --top-k is more than the labels, or the output cannot be written.
        InferenceError: onnxruntime failed while running the model.
    """
    paths = find_images(config.paths, config.recursive)
    if not paths:
        where = ", ".join(str(p) for p in config.paths)
        hint = "" if config.recursive else "; add --recursive to look in subfolders"
        raise DataError(f"no images found in {where} (looked for "
                        f"{', '.join(sorted(IMAGE_EXTENSIONS))}){hint}.")
    # Spinning intra-op threads would take the cores the decoding threads need.
    with open_runner(resolve_model(config.model), config.device, config.sessions,
                     config.threads, config.batch_size, len(paths) >= CALIBRATE_FROM,
                     spin=False) as runner:
        labels = runner.info.labels
        if config.top_k > len(labels):
            raise ConfigError(f"--top-k {config.top_k} is more than the model's {len(labels)} "
                              f"labels; use --top-k {len(labels)} or less.")
        writer = (PredictionWriter(config.output, config.top_k) if config.output is not None
                  else None)
        result = ClassifyResult(runner.info, runner.provider, runner.layout, len(paths),
                                config.output)
        _stream(config, paths, runner, result, writer, on_rows, on_start)
    return result


def _stream(config: ClassifyConfig, paths: Sequence[Path], runner: Runner,
            result: ClassifyResult, writer: PredictionWriter | None,
            on_rows: RowsCallback | None,
            on_start: Callable[[ClassifyResult, Sequence[Path]], None] | None) -> None:
    """Decode, classify and write every file, batch by batch, counting into `result`; the
    writer is closed whatever happens, with the rows finished so far."""
    workers = config.decode_threads or min(8, os.cpu_count() or 1)
    start = time.perf_counter()
    done = 0
    try:
        if on_start is not None:
            on_start(result, paths)
        decoded = batches(paths, runner.info.image_size, config.batch_size, workers,
                          inference_ahead=True)
        for batch, probabilities in runner.stream((batch, batch.pixels) for batch in decoded):
            rows = _rows(batch, probabilities, runner.info.labels, config.top_k)
            for row in rows:
                if isinstance(row, Failure):
                    result.failures.append(row)
                else:
                    result.label_counts[row.label] += 1
                    result.confidence_sums[row.label] += row.confidence
            if writer is not None:
                writer.write(rows)
            if on_rows is not None:
                on_rows(rows)
            done += len(batch.paths)
            progress.report(log, "classified", done, len(paths))
    finally:
        result.seconds = time.perf_counter() - start
        if writer is not None:
            writer.close()
            result.output = config.output if writer.rows else None


def _rows(batch: Batch, probabilities: np.ndarray, labels: Sequence[str], top_k: int
          ) -> list[Row]:
    """The batch's rows in input order. probabilities: float32 `[n decoded, C]`."""
    rows: list[Row] = [Failure(path, "") for path in batch.paths]
    for position, top in zip(batch.decoded, top_labels(probabilities, labels, top_k),
                             strict=True):
        rows[position] = Prediction(batch.paths[position], top[0][0], top[0][1], top)
    for position, message in batch.errors.items():
        path = batch.paths[position]
        rows[position] = Failure(path, message.removeprefix(f"{path}: "))
    return rows
