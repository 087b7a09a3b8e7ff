"""Classify files and folders of images with an exported model (design §9).

Decoding runs on threads a few batches ahead of inference: Pillow and onnxruntime both release
the GIL, so while the model runs batch i the next batches are decoded. A file that cannot be
decoded becomes a `Failure` and the job goes on; results for good files are never dropped.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_ssl import atomic, contract
from edge_ssl.errors import DataError, EdgeSslError, ImageDecodeError
from edge_ssl.images import IMAGE_EXTENSIONS, list_images, load_rgb
from edge_ssl.runtime.model import Device, ModelInfo, open_session, resolve_model

OUTPUT_FORMATS = (".csv", ".jsonl")
DECODE_CHUNK = 8  # files per decoding task
ProgressCallback = Callable[[int, int], None]  # (files done, files in the job)


@dataclass(frozen=True)
class ClassifyConfig:
    """One classify job: what to read, which model, where to run it, where to write."""

    paths: tuple[Path, ...]
    model: Path | None = None  # None: runs/latest/exports/classifier.onnx
    recursive: bool = False
    batch_size: int = 32
    top_k: int = 1
    device: Device = Device.AUTO
    threads: int | None = None  # onnxruntime intra-op threads; None: one per core
    decode_threads: int | None = None  # the most; None: one per core, at most 8
    output: Path | None = None  # .csv or .jsonl

    def __post_init__(self) -> None:
        if not self.paths:
            raise ValueError("paths is empty; give at least one image file or folder")
        for name in ("batch_size", "top_k", "threads", "decode_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} is {value}; it must be at least 1")
        if self.output is not None and self.output.suffix.lower() not in OUTPUT_FORMATS:
            raise ValueError(f"output is {self.output}; its name must end in .csv or .jsonl")


@dataclass(frozen=True)
class Prediction:
    """One classified image: the top label, its probability, and the top-k (label, prob)."""

    path: Path
    label: str
    confidence: float
    top_k: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Failure:
    """One file that could not be classified; `message` names the file and the reason."""

    path: Path
    message: str


@dataclass(frozen=True)
class ClassifyResult:
    """A finished job: predictions in input order, failures, and how it ran."""

    info: ModelInfo
    provider: str
    threads: int | None
    predictions: tuple[Prediction, ...]
    failures: tuple[Failure, ...]
    seconds: float  # decoding and inference, once the model is loaded
    output: Path | None  # the file written, if any

    @property
    def images_per_second(self) -> float:
        return len(self.predictions) / self.seconds if self.seconds > 0 else 0.0


def find_images(paths: Sequence[Path], recursive: bool = False) -> list[Path]:
    """Files to classify: folders expanded to their images, files kept whatever their name.

    A path that does not exist is kept too, so that it is reported as a failure with the rest.
    """
    found: list[Path] = []
    for path in paths:
        found.extend(list_images(path, recursive) if path.is_dir() else [path])
    return found


def classify(config: ClassifyConfig, progress: ProgressCallback | None = None) -> ClassifyResult:
    """Classify every image of `config.paths`; write `config.output` when set.

    Raises:
        DataError: no image file was found.
        ModelError, DeviceError: the model cannot be used (see `open_session`).
        EdgeSslError: the output file cannot be written.
    """
    paths = find_images(config.paths, config.recursive)
    if not paths:
        where = ", ".join(str(p) for p in config.paths)
        hint = "" if config.recursive else "; add --recursive to look in subfolders"
        raise DataError(f"no images found in {where} (looked for "
                        f"{', '.join(sorted(IMAGE_EXTENSIONS))}){hint}.")
    if config.output is not None:
        _check_writable(config.output)
    # Spinning intra-op threads would take the cores the decoding threads need.
    session, info, provider = open_session(resolve_model(config.model), config.device,
                                           config.threads, spin=False)
    if config.top_k > len(info.labels):
        raise EdgeSslError(f"--top-k {config.top_k} is more than the model's "
                           f"{len(info.labels)} labels; use --top-k {len(info.labels)} or less.")
    predictions: list[Prediction] = []
    failures: list[Failure] = []
    workers = config.decode_threads or min(8, os.cpu_count() or 1)
    start = time.perf_counter()
    for batch_paths, images, bad in _batches(paths, info.image_size, config.batch_size, workers):
        failures.extend(bad)
        if batch_paths:
            (probabilities,) = session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: images})
            predictions.extend(_predictions(batch_paths, probabilities, info.labels,
                                            config.top_k))
        if progress is not None:
            progress(len(predictions) + len(failures), len(paths))
    seconds = time.perf_counter() - start
    if config.output is not None and predictions:
        write_predictions(config.output, predictions, config.top_k)
    return ClassifyResult(info, provider, config.threads, tuple(predictions), tuple(failures),
                          seconds, config.output if predictions else None)


def write_predictions(path: Path, predictions: Sequence[Prediction], top_k: int = 1) -> Path:
    """Write predictions atomically as CSV or JSON Lines, chosen by the suffix of `path`.

    Columns: path, label, confidence, and with `top_k` > 1 also label_2, confidence_2, ...
    (CSV) or a `top_k` list of {label, confidence} (JSON Lines).
    """
    buffer = io.StringIO()
    if path.suffix.lower() == ".csv":
        writer = csv.writer(buffer, lineterminator="\n")
        extra = [f"{name}_{i}" for i in range(2, top_k + 1) for name in ("label", "confidence")]
        writer.writerow(["path", "label", "confidence", *extra])
        for p in predictions:
            ranked = [v for label, conf in p.top_k[1:top_k] for v in (label, f"{conf:.6f}")]
            writer.writerow([str(p.path), p.label, f"{p.confidence:.6f}", *ranked])
    else:
        for p in predictions:
            row: dict[str, object] = {"path": str(p.path), "label": p.label,
                                      "confidence": round(p.confidence, 6)}
            if top_k > 1:
                row["top_k"] = [{"label": label, "confidence": round(conf, 6)}
                                for label, conf in p.top_k[:top_k]]
            buffer.write(json.dumps(row) + "\n")
    try:
        return atomic.write_text(path, buffer.getvalue())
    except OSError as exc:
        raise EdgeSslError(f"{path}: cannot write the predictions ({exc.strerror}); "
                           "choose another --output path.") from None


def _check_writable(path: Path) -> None:
    # Fail before a long job rather than after it.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeSslError(f"{path}: cannot create its folder ({exc.strerror}); "
                           "choose another --output path.") from None
    if path.is_dir() or not os.access(path.parent, os.W_OK):
        raise EdgeSslError(f"{path}: not a writable file path; choose another --output path.")


def _predictions(paths: Sequence[Path], probabilities: np.ndarray, labels: Sequence[str],
                 top_k: int) -> list[Prediction]:
    # probabilities: float32 [N, C]; ranked: int [N, top_k], best first.
    ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    out = []
    for path, row, order in zip(paths, probabilities.tolist(), ranked.tolist(), strict=True):
        top = tuple((labels[i], row[i]) for i in order)
        out.append(Prediction(path, top[0][0], top[0][1], top))
    return out


def _batches(paths: Sequence[Path], size: int, batch_size: int, workers: int
             ) -> Iterator[tuple[list[Path], np.ndarray, list[Failure]]]:
    """Yield (decoded paths, `uint8 [n, size, size, 3]`, failures) with n ≤ batch_size."""
    good: list[Path] = []
    bad: list[Failure] = []
    images = np.empty((batch_size, size, size, 3), np.uint8)
    # Two batches ahead, and enough chunks to keep every decoding thread busy.
    ahead = max(2 * batch_size, 2 * workers * DECODE_CHUNK)
    for path, decoded in _decode_ahead(paths, size, workers, ahead):
        if isinstance(decoded, str):
            bad.append(Failure(path, decoded))
            continue
        images[len(good)] = decoded
        good.append(path)
        if len(good) == batch_size:
            yield good, images, bad
            good, bad = [], []
            images = np.empty_like(images)
    if good or bad:
        yield good, images[:len(good)], bad


def _decode_ahead(paths: Sequence[Path], size: int, workers: int, ahead: int
                  ) -> Iterator[tuple[Path, np.ndarray | str]]:
    """Decode `paths` in order, about `ahead` files in flight, on up to `workers` threads.

    Files go to the threads in chunks: one task per file costs ~15 µs of locking and thread
    wake-ups, a tenth of decoding a small JPEG.
    """
    chunks = (paths[i:i + DECODE_CHUNK] for i in range(0, len(paths), DECODE_CHUNK))
    decoder = _Decoder(size, workers)
    pending: deque[tuple[Sequence[Path], Future[list[np.ndarray | str]]]] = deque()
    try:
        for chunk in itertools.islice(chunks, ahead // DECODE_CHUNK):
            pending.append((chunk, decoder.submit(chunk)))
        while pending:
            chunk, future = pending.popleft()
            for following in itertools.islice(chunks, 1):
                pending.append((following, decoder.submit(following)))
            yield from zip(chunk, decoder.result(future), strict=True)
    finally:
        decoder.close()


class _Decoder:
    """Decoding threads, as few as keep inference fed.

    On the CPU inference wants every core, and a decoding thread that is not needed costs it:
    with two decoders instead of one, classify ran a quarter slower on 2 cores (GIL hand-offs,
    preempted intra-op threads). So decoding starts on one thread, and one more joins, up to
    `max_threads`, whenever inference spent over a tenth of the time waiting for pixels (large
    photos, or a GPU doing the inference).
    """

    WINDOW = 8  # chunks between decisions

    def __init__(self, size: int, max_threads: int) -> None:
        self._size = size
        self._threads = [ThreadPoolExecutor(1, thread_name_prefix="edge-ssl-decode")
                         for _ in range(max_threads)]
        self._active = 1
        self._submitted = 0
        self._fetched = 0
        self._waited = 0.0
        self._since = time.perf_counter()

    def submit(self, chunk: Sequence[Path]) -> Future[list[np.ndarray | str]]:
        thread = self._threads[self._submitted % self._active]
        self._submitted += 1
        return thread.submit(_decode_all, chunk, self._size)

    def result(self, future: Future[list[np.ndarray | str]]) -> list[np.ndarray | str]:
        start = time.perf_counter()
        decoded = future.result()
        self._fetched += 1
        if self._fetched > self.WINDOW:  # the first window always waits: nothing was decoded
            self._waited += time.perf_counter() - start
        if self._fetched % self.WINDOW == 0:
            if self._waited > 0.1 * (time.perf_counter() - self._since):
                self._active = min(self._active + 1, len(self._threads))
            self._waited, self._since = 0.0, time.perf_counter()
        return decoded

    def close(self) -> None:
        for thread in self._threads:
            thread.shutdown(wait=True, cancel_futures=True)


def _decode_all(paths: Sequence[Path], size: int) -> list[np.ndarray | str]:
    """Pixels, or the reason the file could not be decoded, for each of `paths`."""
    out: list[np.ndarray | str] = []
    for path in paths:
        try:
            out.append(load_rgb(path, size))
        except ImageDecodeError as exc:
            out.append(str(exc))
        except Exception as exc:
            # A Pillow plugin's own error on a malformed file (struct.error, EOFError, ...)
            # must cost that file only, not the results of the whole job.
            out.append(f"{path}: cannot decode ({type(exc).__name__}: {exc})")
    return out
