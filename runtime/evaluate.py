"""Measure exported models on a labelled folder, side by side, with onnxruntime alone.

Every model sees the same decoded images (decoded once per native size); labels are matched by
name through each model's metadata. Accuracy carries its n and 95 % interval; per-class
precision, recall and F1, the confusion matrix and the misclassified files come with it, and
top-1 agreement between every two models tells how often a variant changes FP32's answer.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge_ssl import atomic, progress
from edge_ssl.errors import ConfigError, DataError
from edge_ssl.options import DATA, OUTPUT, option, split_commas
from edge_ssl.runtime import confusion_png
from edge_ssl.runtime.classify import CALIBRATE_FROM, ReadOptions
from edge_ssl.runtime.decode import batches
from edge_ssl.runtime.labelled import LabelledImages, find_labelled
from edge_ssl.runtime.metrics import ClassMetrics, confusion_matrix, macro, per_class
from edge_ssl.runtime.model import ModelInfo, open_session
from edge_ssl.runtime.parallel import Layout, Runner, open_runner
from edge_ssl.stats import Rate

log = logging.getLogger(__name__)

REPORT_FILE = "evaluation.json"


@dataclass(frozen=True)
class EvaluateConfig(ReadOptions):
    """Which models, which labelled folder, where the artifacts go."""

    models: tuple[Path, ...] = option(
        MISSING, "ONNX models written by `edge-ssl export`, e.g. classifier.onnx and its int8 "
        "and fp16 variants.", "MODEL...", argument=True)
    data: Path = option(
        MISSING, "Labelled images: DIR/<class>/*.jpg, or a Tiny ImageNet folder (its val/).",
        "DIR", DATA, short="-d", show_default=False)
    classes: tuple[str, ...] = option(
        (), "Only these classes, comma-separated: folder names, wnids or labels.", "A,B", DATA,
        parse=split_commas, show_default=False)
    output_dir: Path | None = option(
        None, "Where the PNGs, CSVs and evaluation.json go (default: evaluations/<UTC time>).",
        "DIR", OUTPUT, short="-o", show_default=False)
    overwrite: bool = option(False, "Write into an --output-dir that is not empty.",
                             panel=OUTPUT)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.models:
            raise ConfigError("models is empty; give at least one .onnx file")


@dataclass
class ModelEvaluation:
    """One model on the evaluated images (those every model's decoding read)."""

    info: ModelInfo
    provider: str
    layout: Layout
    name: str  # short, unique among the models: names its artifacts
    probabilities: np.ndarray = field(repr=False)  # float32 [n, C], C = len(info.labels)
    accuracy: Rate = field(default_factory=lambda: Rate(0, 0))
    classes: list[ClassMetrics] = field(default_factory=list)
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    ms_per_image: float = 0.0  # inference only, warm (the first batch excluded)
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


@dataclass
class Evaluation:
    """Every model's numbers, their pairwise agreement, and the files that could not be read."""

    data: LabelledImages
    paths: list[Path]  # evaluated images
    truths: list[str]
    models: list[ModelEvaluation]
    agreement: dict[tuple[int, int], Rate]
    failures: dict[Path, str]  # unreadable file → reason
    batch_size: int
    output_dir: Path


def evaluate(config: EvaluateConfig) -> Evaluation:
    """Run every model of `config` over the labelled images of `config.data` and write the
    confusion matrices, misclassified files and evaluation.json to the output folder.

    Raises:
        ConfigError: the output folder exists and is not empty (without `overwrite`), or
            cannot be written.
        DataError: the folder has no labelled images, or a class a model does not know.
        ModelError, DeviceError: a model cannot be used (see `open_session`).
        InferenceError: onnxruntime failed while running a model.
    """
    output_dir = config.output_dir or Path(
        "evaluations", datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S"))
    if output_dir.exists() and not config.overwrite and (
            not output_dir.is_dir() or any(output_dir.iterdir())):
        raise ConfigError(f"{output_dir} already exists; pass --overwrite to replace its "
                          "files, or choose another --output-dir.")
    # The first model's labels say which images to read; its session is only for that.
    _, first, _ = open_session(config.models[0], config.device, config.threads, spin=False)
    data = find_labelled(config.data, first.labels, config.classes)
    with contextlib.ExitStack() as stack:
        runners = [stack.enter_context(open_runner(
            path, config.device, config.sessions, config.threads, config.batch_size,
            len(data.paths) >= CALIBRATE_FROM, spin=False)) for path in config.models]
        for runner in runners[1:]:
            unknown = sorted(set(data.truths) - set(runner.info.labels))
            if unknown:
                raise DataError(f"{runner.info.path} has no label "
                                f"{', '.join(map(repr, unknown))} (it knows "
                                f"{', '.join(runner.info.labels)}); evaluate models with the "
                                "same classes together.")
        models = [ModelEvaluation(runner.info, runner.provider, runner.layout, name,
                                  np.zeros((len(data.paths), len(runner.info.labels)),
                                           np.float32))
                  for runner, name in zip(runners, _names(config.models), strict=True)]
        decoded, failures = _infer(config, data, runners, models)
    if not decoded.any():
        raise DataError(f"none of the {len(data.paths):,} images of {config.data} could be "
                        "read; see the files reported above.")
    paths = [p for p, ok in zip(data.paths, decoded, strict=True) if ok]
    truths = [t for t, ok in zip(data.truths, decoded, strict=True) if ok]
    for model in models:
        model.probabilities = model.probabilities[decoded]
        _score(model, truths)
    agreement = {(i, j): Rate.of(_names_of(models[i]) == _names_of(models[j]))
                 for i in range(len(models)) for j in range(i + 1, len(models))}
    result = Evaluation(data, paths, truths, models, agreement, failures, config.batch_size,
                        output_dir)
    try:
        _write(result)
    except OSError as exc:
        raise ConfigError(f"{output_dir}: cannot write the results ({exc.strerror}); choose "
                          "another --output-dir.") from None
    return result


def _infer(config: EvaluateConfig, data: LabelledImages, runners: list[Runner],
           models: list[ModelEvaluation]) -> tuple[np.ndarray, dict[Path, str]]:
    """Every model's probabilities and warm time per image; which files decoded, and why the
    others did not. Files are decoded once per native size, for every model of that size."""
    decoded = np.ones(len(data.paths), bool)
    failures: dict[Path, str] = {}
    timings = [0.0] * len(models)
    timed = [0] * len(models)
    workers = config.decode_threads or min(8, os.cpu_count() or 1)
    sizes = sorted({runner.info.image_size for runner in runners})
    total = len(data.paths) * len(sizes)
    done = 0
    for size in sizes:
        group = [i for i, runner in enumerate(runners) if runner.info.image_size == size]
        offset = 0
        for number, batch in enumerate(batches(data.paths, size, config.batch_size, workers)):
            for position, message in batch.errors.items():
                decoded[offset + position] = False
                path = batch.paths[position]
                failures[path] = message.removeprefix(f"{path}: ")
            rows = [offset + position for position in batch.decoded]
            for i in group:
                start = time.perf_counter()
                models[i].probabilities[rows] = runners[i].run(batch.pixels)
                if number > 0 or len(data.paths) <= config.batch_size:
                    timings[i] += time.perf_counter() - start
                    timed[i] += len(rows)
            offset += len(batch.paths)
            done += len(batch.paths)
            progress.report(log, "evaluated", done, total)
    for model, seconds, images in zip(models, timings, timed, strict=True):
        model.ms_per_image = 1000.0 * seconds / images if images else 0.0
    return decoded, failures


def _score(model: ModelEvaluation, truths: Sequence[str]) -> None:
    labels = list(model.info.labels)
    truth = np.array([labels.index(t) for t in truths], np.int64)
    predicted = model.predictions
    model.accuracy = Rate.of(predicted == truth)
    model.confusion = confusion_matrix(truth, predicted, len(labels))
    model.classes = per_class(model.confusion, labels)


def _names_of(model: ModelEvaluation) -> np.ndarray:
    """Predicted label names: models may order their labels differently."""
    return np.asarray(model.info.labels, dtype=object)[model.predictions]


def _names(paths: Sequence[Path]) -> list[str]:
    # classifier.int8.onnx → classifier.int8; numbered when two models share a file name.
    stems = [path.name.removesuffix(".onnx") for path in paths]
    return [f"{i + 1}-{stem}" if stems.count(stem) > 1 else stem
            for i, stem in enumerate(stems)]


def _write(result: Evaluation) -> None:
    out = result.output_dir
    for model in result.models:
        low, high = model.accuracy.ci95  # ASCII only: Pillow's default font has no dashes
        title = (f"{model.name} on {result.data.root}: accuracy {model.accuracy.percent:.1f}% "
                 f"(95% CI {low:.1f}-{high:.1f}, n={model.accuracy.n})")
        model.artifacts["confusion_png"] = confusion_png.save(
            model.confusion, model.info.labels, title, out / f"{model.name}.confusion.png")
        model.artifacts["misclassified_csv"] = atomic.write_text(
            out / f"{model.name}.misclassified.csv", _misclassified(model, result))
    atomic.write_json(out / REPORT_FILE, to_json(result))


def _misclassified(model: ModelEvaluation, result: Evaluation) -> str:
    labels = list(model.info.labels)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "true", "predicted", "confidence", "true_probability"])
    for path, truth, probabilities in zip(result.paths, result.truths, model.probabilities,
                                          strict=True):
        best = int(probabilities.argmax())
        if labels[best] != truth:
            writer.writerow([str(path), truth, labels[best], f"{probabilities[best]:.6f}",
                             f"{probabilities[labels.index(truth)]:.6f}"])
    return buffer.getvalue()


def to_json(result: Evaluation) -> dict[str, Any]:
    """Everything measured, as evaluation.json holds it."""
    def number(value: float | None) -> float | None:
        return None if value is None else round(value, 6)

    return {
        "data": {"root": str(result.data.root), "kind": result.data.kind,
                 "classes": result.data.sources, "images": len(result.paths),
                 "skipped": {str(p): reason for p, reason in result.failures.items()}},
        "batch_size": result.batch_size,
        "models": [{
            "file": str(m.info.path), "name": m.name, "precision": m.info.precision,
            "provider": m.provider, "layout": m.layout.to_json(),
            "labels": list(m.info.labels),
            "accuracy": m.accuracy.to_json(),
            "macro": {field: number(macro(m.classes, field))
                      for field in ("precision", "recall", "f1")},
            "classes": [{"label": c.label, "precision": number(c.precision),
                         "recall": number(c.recall), "f1": number(c.f1),
                         "support": c.support, "predicted": c.predicted} for c in m.classes],
            "confusion": {"rows": "true", "columns": "predicted",
                          "matrix": m.confusion.tolist()},
            "inference_ms_per_image": number(m.ms_per_image),
            "artifacts": {kind: str(path) for kind, path in m.artifacts.items()},
        } for m in result.models],
        "agreement": [{"models": [result.models[i].name, result.models[j].name],
                       "top1_agreement": rate.to_json()}
                      for (i, j), rate in result.agreement.items()],
    }
