"""Decode image files on threads, in order, a few batches ahead of inference.

Pillow and onnxruntime both release the GIL, so while the model runs batch i the next batches
are decoded. A file that cannot be decoded yields its reason instead of pixels; it costs that
file only. `classify` and `evaluate` both read through here.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_ssl.errors import ImageDecodeError
from edge_ssl.images import load_rgb

DECODE_CHUNK = 8  # files per decoding task
WAITED_SHARE = 0.1  # of the time, the consumer waiting for pixels, that adds a decoding thread
# The same when inference runs in the background: such a consumer waited here up to a quarter
# of the time even with inference the bottleneck, and a second decoding thread then made
# `classify` slower on 2 cores.
STREAM_WAITED_SHARE = 0.5


@dataclass(frozen=True)
class Batch:
    """Consecutive files in input order: `pixels` (uint8 `[n, S, S, 3]`) of those that decoded,
    `decoded[i]` the index in `paths` of pixel row i, and the reason for each that did not."""

    paths: list[Path]
    pixels: np.ndarray
    decoded: list[int]
    errors: dict[int, str]


def batches(paths: Sequence[Path], size: int, batch_size: int, workers: int,
            inference_ahead: bool = False) -> Iterator[Batch]:
    """Yield batches of `paths` holding up to `batch_size` decoded images each, in order.

    `inference_ahead`: the consumer runs inference in the background (`Runner.stream`), so its
    waits for pixels are not all idle inference (see `_Decoder`).
    """
    entries: list[Path] = []
    decoded: list[int] = []
    errors: dict[int, str] = {}
    pixels = np.empty((batch_size, size, size, 3), np.uint8)
    # Two batches ahead, and enough chunks to keep every decoding thread busy.
    ahead = max(2 * batch_size, 2 * workers * DECODE_CHUNK)
    waited_share = STREAM_WAITED_SHARE if inference_ahead else WAITED_SHARE
    for path, result in decode_in_order(paths, size, workers, ahead, waited_share):
        if isinstance(result, str):
            errors[len(entries)] = result
        else:
            pixels[len(decoded)] = result
            decoded.append(len(entries))
        entries.append(path)
        if len(decoded) == batch_size:
            yield Batch(entries, pixels, decoded, errors)
            entries, decoded, errors = [], [], {}
            pixels = np.empty_like(pixels)
    if entries:
        yield Batch(entries, pixels[:len(decoded)], decoded, errors)


def decode_in_order(paths: Sequence[Path], size: int, workers: int, ahead: int,
                    waited_share: float = WAITED_SHARE
                    ) -> Iterator[tuple[Path, np.ndarray | str]]:
    """Decode `paths` in order, about `ahead` files in flight, on up to `workers` threads, one
    more whenever the consumer spent over `waited_share` of the time waiting (`_Decoder`).

    Files go to the threads in chunks: one task per file costs locking and thread wake-ups
    comparable to decoding a small JPEG (docs/benchmarks.md, "How `classify` keeps inference
    fed").
    """
    chunks = (paths[i:i + DECODE_CHUNK] for i in range(0, len(paths), DECODE_CHUNK))
    decoder = _Decoder(size, workers, waited_share)
    pending: deque[tuple[Sequence[Path], Future[list[np.ndarray | str]]]] = deque()
    try:
        for chunk in itertools.islice(chunks, max(1, ahead // DECODE_CHUNK)):
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

    On the CPU inference wants every core, and a decoding thread that is not needed costs it
    (GIL hand-offs, preempted intra-op threads; measured in docs/benchmarks.md). So decoding
    starts on one thread, and one more joins, up to `max_threads`, whenever the consumer spent
    over `waited_share` of the time waiting for pixels (large photos, or a GPU doing the
    inference): a tenth for a consumer that runs inference itself, where every wait idles it,
    and half for one whose inference runs in the background (STREAM_WAITED_SHARE).
    """

    WINDOW = 8  # chunks between decisions

    def __init__(self, size: int, max_threads: int, waited_share: float) -> None:
        self._size = size
        self._waited_share = waited_share
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
            if self._waited > self._waited_share * (time.perf_counter() - self._since):
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
