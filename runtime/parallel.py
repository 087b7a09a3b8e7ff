"""Data-parallel inference: one model on several onnxruntime sessions, each batch split among them.

A small network leaves a multi-core CPU half idle inside one session: its convolutions are too
small to share well between threads. N sessions with T intra-op threads each, every one given a
contiguous part of the batch on its own Python thread (onnxruntime releases the GIL while it
runs), keep every core busy: on 2 AMD EPYC cores, two one-thread sessions classified 2.3× as
many images per second as one two-thread session. Which layout wins depends on the model, the
batch and the CPU, so when the user names none, a short calibration on random images of the
job's batch size picks it. Each session holds its own copy of the weights: N times the memory
of one, a few MB for the models this kit exports.
"""

from __future__ import annotations

import functools
import os
import queue
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

from edge_ssl import contract
from edge_ssl.errors import InferenceError
from edge_ssl.runtime.model import CPU, Device, ModelInfo, open_session

if TYPE_CHECKING:
    import onnxruntime as ort

CALIBRATION_SECONDS = 0.15  # timed per candidate layout and comparison, in all
CALIBRATION_ROUNDS = 3  # blocks each of two candidates is timed in, alternately
CALIBRATION_RUNS = 1  # calls per block at least, whatever the time
# A spinning onnxruntime session's idle threads spin on for 20-50 ms after a run (1.31): an engine
# timed right after shared its cores with them, and ran 1.4x slower (docs/benchmarks.md).
SPIN_SETTLE_SECONDS = 0.08
STREAM_AHEAD = 2  # batches in flight while `Runner.stream`'s caller prepares the next

K = TypeVar("K")


@dataclass(frozen=True)
class Layout:
    """How the cores run a model: `sessions` sessions of `threads` intra-op threads each
    (None: onnxruntime's own choice, one per physical core)."""

    sessions: int
    threads: int | None

    def __str__(self) -> str:
        threads = ("default threads" if self.threads is None
                   else f"{self.threads} thread{'s' if self.threads > 1 else ''}")
        return f"{self.sessions} session{'s' if self.sessions > 1 else ''} × {threads}"

    def to_json(self) -> dict[str, int | None]:
        return {"sessions": self.sessions, "threads": self.threads}


def usable_cores() -> int:
    """The cores this process may run on (a container's or `taskset`'s share, not the box's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def candidate_layouts(sessions: int | None, threads: int | None, batch_size: int,
                      cores: int) -> list[Layout]:
    """The layouts worth timing for a batch of `batch_size` on `cores` cores.

    What the user set is kept: `--threads` alone is one session of that many threads (what it
    always meant), `--sessions` alone shares the cores among the sessions. With neither: one
    session with onnxruntime's default threads, then the splits of the cores into several
    sessions (`core_splits`).
    """
    if sessions is not None:
        return [Layout(sessions, threads or max(1, cores // sessions))]
    if threads is not None:
        return [Layout(1, threads)]
    return [Layout(1, None), *core_splits(batch_size, cores)]


def core_splits(batch_size: int, cores: int) -> list[Layout]:
    """`cores` shared by 2 or more sessions of 1, 2, 4, ... threads each, as many sessions as
    the batch can feed (one image each at least): the multi-session layouts worth timing."""
    found = []
    per_session = 1
    while cores // per_session >= 2:
        if cores // per_session <= batch_size:
            found.append(Layout(cores // per_session, per_session))
        per_session *= 2
    return found


class Split:
    """Runs each of `parts` (predict functions) on a contiguous share of a batch, each on its
    own thread, the first on the caller's (one part costs no thread hand-off); the shares are
    `np.array_split`'s, in order, one image each at least."""

    def __init__(self, parts: Sequence[Callable[[np.ndarray], np.ndarray]],
                 layout: Layout | None = None) -> None:
        self.parts = list(parts)
        self.layout = layout  # what the parts are, when someone asks
        self._pool = (ThreadPoolExecutor(len(parts) - 1, thread_name_prefix="edge-ssl-run")
                      if len(parts) > 1 else None)

    def shares(self, images: np.ndarray) -> list[np.ndarray]:
        """`images` cut into one contiguous share per part, in order, one image each at least."""
        return np.array_split(images, min(len(self.parts), len(images)))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        shares = self.shares(images)
        if self._pool is None or len(shares) == 1:
            return self.parts[0](images)
        futures = [self._pool.submit(part, share)
                   for part, share in zip(self.parts[1:], shares[1:], strict=False)]
        first = self.parts[0](shares[0])
        return np.concatenate([first, *(future.result() for future in futures)])

    def close(self) -> None:
        """Stop the threads and let the parts go (and the sessions they hold)."""
        if self._pool is not None:
            self._pool.shutdown()
        self.parts = []


class Runner:
    """A model open on one or more sessions; `run` splits a batch among them.

    Close it (or use `open_runner` as a context manager) to stop its worker threads and let its
    sessions go, and with them their thread pools.
    """

    def __init__(self, sessions: list[ort.InferenceSession], info: ModelInfo, provider: str,
                 layout: Layout) -> None:
        self.info = info
        self.provider = provider
        self.layout = layout
        self._split = Split([functools.partial(self._run_one, session) for session in sessions])

    @property
    def sessions(self) -> int:
        return len(self._split.parts)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.run(pixels)

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities `[n, C]` of uint8 `[n, S, S, 3]` pixels (`[0, C]` for none), in order.

        Raises:
            InferenceError: onnxruntime failed, as one line that names the model.
        """
        if not len(pixels):
            return self._no_rows()
        return self._split(pixels)

    def stream(self, batches: Iterable[tuple[K, np.ndarray]]) -> Iterator[tuple[K, np.ndarray]]:
        """`(key, self.run(pixels))` for each `(key, pixels)` of `batches`, in order, with the
        next batches already running while the caller handles one.

        Inference runs on threads of its own, so that the caller's work between batches
        (decoding, writing rows) overlaps it. A batch is split as `run` splits it, but each
        share goes to whichever session is free: no session waits for the slowest share of a
        batch before it starts on the next. On a 2-core CPU shared with a decoding thread,
        that barrier idled a core whenever decoding preempted one session (docs/benchmarks.md).

        Raises:
            InferenceError: as `run`, for the first batch that failed; the batches after it
                are dropped.
        """
        parts = self._split.parts
        free: queue.SimpleQueue[Callable[[np.ndarray], np.ndarray]] = queue.SimpleQueue()
        for part in parts:
            free.put(part)

        def run_share(share: np.ndarray) -> np.ndarray:
            part = free.get()
            try:
                return part(share)
            finally:
                free.put(part)

        pending: deque[tuple[K, list[Future[np.ndarray]]]] = deque()
        pool = ThreadPoolExecutor(len(parts), thread_name_prefix="edge-ssl-stream")
        try:
            for key, pixels in batches:
                shares = self._split.shares(pixels) if len(pixels) else []
                pending.append((key, [pool.submit(run_share, s) for s in shares]))
                if len(pending) > STREAM_AHEAD:
                    yield self._collect(*pending.popleft())
            while pending:
                yield self._collect(*pending.popleft())
        finally:
            # On an error or an early close: the shares not started are dropped, and the
            # sessions are idle again when this returns.
            pool.shutdown(wait=True, cancel_futures=True)

    def _collect(self, key: K, futures: list[Future[np.ndarray]]) -> tuple[K, np.ndarray]:
        if not futures:
            return key, self._no_rows()
        return key, np.concatenate([future.result() for future in futures])

    def _no_rows(self) -> np.ndarray:
        """The answer to a batch of no images: `[0, C]`."""
        return np.zeros((0, len(self.info.labels)), np.float32)

    def _run_one(self, session: ort.InferenceSession, pixels: np.ndarray) -> np.ndarray:
        try:
            (probabilities,) = session.run([contract.OUTPUT_NAME],
                                           {contract.INPUT_NAME: pixels})
        except Exception as exc:  # onnxruntime raises its own exception types
            reason = str(exc).split(" : ")[-1].strip().splitlines()[0] if str(exc) else ""
            raise InferenceError(
                f"{self.info.path}: onnxruntime failed on a batch of {len(pixels)} images "
                f"({type(exc).__name__}: {reason}); re-export the model with `edge-ssl "
                "export`, or try --device cpu or a smaller --batch-size.") from None
        return np.asarray(probabilities)

    def close(self) -> None:
        self._split.close()


def open_layout(path: Path, device: Device, layout: Layout, spin: bool = True) -> Runner:
    """`layout.sessions` sessions of `path`, each with `layout.threads` intra-op threads.

    One after the other, deliberately: opened side by side they took 13 ms instead of 23
    (INT8, 2 cores), but `--device auto` switches onnxruntime's process-wide logging off while
    it tries CUDA, so concurrent opens printed CUDA's load errors, and TensorRT would build the
    same engine once per session."""
    opened = [open_session(path, device, layout.threads, spin)
              for _ in range(layout.sessions)]
    _, info, provider = opened[0]
    return Runner([session for session, _, _ in opened], info, provider, layout)


@contextmanager
def open_runner(path: Path, device: Device = Device.AUTO, sessions: int | None = None,
                threads: int | None = None, batch_size: int = 32, calibrate: bool = True,
                spin: bool = True, cores: int | None = None) -> Iterator[Runner]:
    """The model open in the layout the user set, or the fastest for `batch_size` on this CPU.

    With several candidate layouts (neither `sessions` nor `threads` set, a CPU provider), each
    is timed for a moment on random images of `batch_size` when `calibrate`, and the one with
    the most images per second is kept and remembered (`layout_cache`): the next job with the
    same model, batch size and machine opens it without timing anything. Without `calibrate`
    (a job of a batch or two, where the calibration would cost more than it saves), one session
    with default threads, as onnxruntime runs by itself. A GPU provider always gets one session.

    Raises:
        ModelError, DeviceError: the model cannot be used (see `open_session`).
    """
    from edge_ssl.runtime import layout_cache

    cores = cores or usable_cores()
    candidates = candidate_layouts(sessions, threads, batch_size, cores)
    choose = len(candidates) > 1 and calibrate
    entry = layout_cache.key(path, device.value, batch_size, cores, spin) if choose else None
    remembered = layout_cache.load(entry) if choose else None
    runner = open_layout(path, device, remembered if remembered in candidates else candidates[0],
                         spin)
    try:
        if runner.provider != CPU and runner.sessions > 1:  # a GPU since the layout was stored
            runner.close()
            runner = open_layout(path, device, Layout(1, None), spin)
        elif runner.provider == CPU and choose and remembered not in candidates:
            runner = fastest(runner, [functools.partial(open_layout, path, device, layout, spin)
                                      for layout in candidates[1:]],
                             random_images(batch_size, runner.info.image_size),
                             settle=SPIN_SETTLE_SECONDS if spin else 0.0)
            layout_cache.store(entry, runner.layout)
        yield runner
    finally:
        runner.close()


class Engine(Protocol):
    """Anything that predicts a batch and can be closed: a Runner, a Split of interpreters."""

    def __call__(self, images: np.ndarray, /) -> np.ndarray: ...

    def close(self) -> None: ...


E = TypeVar("E", bound=Engine)


def fastest(first: E, others: Sequence[Callable[[], E]], images: np.ndarray,
            seconds: float = CALIBRATION_SECONDS, settle: float = 0.0) -> E:
    """Of `first` and the engines `others` open, the one with the most images per second on
    `images`; the rest are closed (on an error, all but `first`, which the caller closes).

    The best so far meets each other engine in turn, the two timed alternately in
    CALIBRATION_ROUNDS short blocks (`seconds` each in all): a machine whose speed drifts for
    seconds at a time (a shared VM's does, by 40 %) would otherwise crown whichever engine ran
    in a fast moment, and the choice is remembered (`layout_cache`). Two engines are open at a
    time, not all of them. Each block starts `settle` seconds after the other engine's last call:
    SPIN_SETTLE_SECONDS for engines whose idle threads spin.
    """
    best = first
    for open_other in others:
        engine = open_other()
        try:
            best_calls, engine_calls = (_Tally(), _Tally())
            for _ in range(CALIBRATION_ROUNDS):
                best_calls.time(best, images, seconds / CALIBRATION_ROUNDS, settle)
                engine_calls.time(engine, images, seconds / CALIBRATION_ROUNDS, settle)
        except BaseException:
            engine.close()
            if best is not first:  # `first` is the caller's to close
                best.close()
            raise
        if engine_calls.rate > best_calls.rate:
            best, engine = engine, best
        engine.close()
    return best


@dataclass
class _Tally:
    """Images and seconds an engine ran in its timed blocks."""

    images: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    def time(self, engine: Engine, images: np.ndarray, seconds: float, settle: float) -> None:
        """A pause of `settle` seconds (the other engine's threads stop spinning), one untimed
        call (caches and threads are cold), then calls for `seconds`, CALIBRATION_RUNS at least."""
        time.sleep(settle)
        engine(images)
        calls, start = 0, time.perf_counter()
        while calls < CALIBRATION_RUNS or time.perf_counter() - start < seconds:
            engine(images)
            calls += 1
        self.images += calls * len(images)
        self.seconds += time.perf_counter() - start


def random_images(count: int, size: int) -> np.ndarray:
    """uint8 `[count, size, size, 3]`, the same every time: what calibrations time."""
    return np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8)
