"""A study's cells (a seed and a budget: every method on the same labels), in this process or
spread over worker processes.

On a CPU, one TensorFlow training a small network on batches of 32 keeps its cores busy only
part of the time (tracing, Python between steps, small convolutions that one thread runs as fast
as two). On 2 cores, two processes of one thread each, each training its own method, did the
five networks of a cell in 140 s where one process of two threads took 218 s. So `--workers N`
starts N processes, each with its share of the cores, and hands them the methods one at a time,
the longest first; a cell is written when its last method is done. Every method sets its own
seed, so what a method answers does not depend on which worker ran it (only, in the last
digits, on the thread count each worker has).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_ssl.errors import TrainingError
from edge_ssl.runtime.parallel import usable_cores
from edge_ssl.train import method_names as names
from edge_ssl.train.finetune_options import Schedule
from edge_ssl.train.sources import ImageSet, split_selection

if TYPE_CHECKING:
    from edge_ssl.train.methods import Labelled, MethodResult
    from edge_ssl.train.study import StudyConfig

MAX_WORKERS = 4  # the default's ceiling: each worker holds its own TensorFlow (about 1.5 GB)
# The networks in the order they take longest (2 cores, 50 labels per class, 600 steps: 120,
# 100, 72, 56 and 50 s); the probes and floors after them take seconds.
LONGEST_FIRST = (names.S4L_SCRATCH, names.SCRATCH, names.S4L_FINETUNE, names.SSL_FINETUNE,
                 names.SCRATCH_SHALLOW)

Cell = tuple[int, int | None, dict[str, dict[str, Any]]]  # seed, budget, results per method


@dataclass(frozen=True)
class StudyImages:
    """The task's decoded images: every labelled training image (the budgets draw from them,
    the rest are the rotation loss's unlabelled ones) and the test images."""

    train: np.ndarray  # uint8 [N, S, S, 3]
    train_labels: np.ndarray  # int64 [N]
    test: np.ndarray
    test_labels: np.ndarray
    num_classes: int


def default_workers(on_gpu: bool) -> int:
    """One worker per core up to MAX_WORKERS; one on a GPU, which one process keeps busy."""
    return 1 if on_gpu else max(1, min(MAX_WORKERS, usable_cores()))


def threads_per_worker(workers: int) -> int:
    return max(1, usable_cores() // workers)


def chosen_images(labels: np.ndarray, seed: int, budget: int | None) -> np.ndarray:
    """The indices of a cell's labelled images. The budgets are nested per seed: one seeded
    order of each class's images, budget b takes the first b."""
    rng = np.random.default_rng(seed + 1)
    orders = [rng.permutation(np.flatnonzero(labels == c)) for c in range(int(labels.max()) + 1)]
    return np.sort(np.concatenate([o[:budget] for o in orders]))


def cell_task(config: StudyConfig, images: StudyImages, seed: int, budget: int | None
              ) -> Labelled:
    """One cell's data: its labelled images (with a selection split when the schedule stops
    early), the test images, and the task's other images without their labels."""
    import tensorflow as tf

    from edge_ssl.train.methods import Labelled

    chosen = chosen_images(images.train_labels, seed, budget)
    labelled = ImageSet(pixels=images.train[chosen], labels=images.train_labels[chosen])
    selection = None
    if config.schedule is Schedule.early_stopping:
        labelled, held = split_selection(labelled, config.selection_fraction, seed)
        selection = (held.pixels, held.labels)
    fit = tf.data.Dataset.from_tensor_slices((labelled.pixels, labelled.labels)).cache()
    # The task's other training images, their labels unused: the rotation loss's.
    return Labelled(fit=fit, fit_size=len(labelled), selection=selection,
                    test=(images.test, images.test_labels), num_classes=images.num_classes,
                    unlabelled=np.delete(images.train, chosen, axis=0))


def method_json(result: MethodResult) -> dict[str, Any]:
    """What study.json keeps of a method in a cell, its per-image predictions included."""
    return {**result.test.to_json(), "collapsed": result.collapsed, "seconds": result.seconds,
            **({"epochs_run": result.stage.epochs_run} if result.stage else {}),
            **({"choice": result.choice} if result.choice else {}),
            "predictions": np.asarray(result.predicted).tolist()}


def run_cells(config: StudyConfig, images: StudyImages, todo: Sequence[tuple[int, int | None]],
              workers: int) -> Iterator[Cell]:
    """Every cell of `todo`, each yielded as soon as its last method is done."""
    if workers == 1:
        yield from _in_process(config, images, todo)
    else:
        yield from _in_workers(config, images, todo, workers)


def _in_process(config: StudyConfig, images: StudyImages,
                todo: Sequence[tuple[int, int | None]]) -> Iterator[Cell]:
    import keras

    from edge_ssl.train import methods

    pretext, spec, run_config = _load(config)
    for seed, budget in todo:
        data = cell_task(config, images, seed, budget)
        results = methods.run_in_memory(config.methods, pretext, spec, data,
                                        _settings(config, run_config, seed))
        yield seed, budget, {m: method_json(r) for m, r in results.items()}
        keras.utils.clear_session()


def _in_workers(config: StudyConfig, images: StudyImages,
                todo: Sequence[tuple[int, int | None]], workers: int) -> Iterator[Cell]:
    order = sorted(config.methods, key=lambda m: LONGEST_FIRST.index(m)
                   if m in LONGEST_FIRST else len(LONGEST_FIRST))
    done: dict[tuple[int, int | None], dict[str, dict[str, Any]]] = {key: {} for key in todo}
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker,
                               initargs=(config, images, threads_per_worker(workers)))
    # Cell by cell, the longest method first: a worker that finishes early takes up the next
    # cell, and the first cells are written while the last ones train.
    futures: dict[Future[dict[str, Any]], tuple[int, int | None, str]] = {
        pool.submit(_measure_in_worker, seed, budget, method): (seed, budget, method)
        for seed, budget in todo for method in order}
    try:
        for future in as_completed(futures):
            seed, budget, method = futures[future]
            results = done[(seed, budget)]
            results[method] = future.result()
            if len(results) == len(order):
                yield seed, budget, {m: results[m] for m in config.methods}
    except BrokenProcessPool:
        raise TrainingError(
            f"a study worker process died (out of memory?); continue with --resume and fewer "
            f"--workers than {workers}.") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


# One worker's TensorFlow, pretext and images, loaded once by _start_worker.
_worker: dict[str, Any] = {}


def _start_worker(config: StudyConfig, images: StudyImages, threads: int) -> None:
    from edge_ssl.start_tensorflow import start_tensorflow

    start_tensorflow()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    _worker.update(config=config, images=images, loaded=_load(config))


def _measure_in_worker(seed: int, budget: int | None, method: str) -> dict[str, Any]:
    import keras

    from edge_ssl.train import methods

    config, images = _worker["config"], _worker["images"]
    pretext, spec, run_config = _worker["loaded"]
    data = cell_task(config, images, seed, budget)
    result = methods.run_in_memory([method], pretext, spec, data,
                                   _settings(config, run_config, seed))[method]
    keras.utils.clear_session()
    return method_json(result)


def _load(config: StudyConfig) -> tuple[Any, Any, Any]:
    from edge_ssl import contract as C
    from edge_ssl.train.config import load_run_config
    from edge_ssl.train.model import load_model, scratch_spec

    run_config = load_run_config(config.run)
    return load_model(config.run / C.PRETEXT_MODEL), scratch_spec(run_config), run_config


def _settings(config: StudyConfig, run_config: Any, seed: int) -> Any:
    from edge_ssl.train import methods

    return methods.FitSettings(config, run_config.patience, run_config.lr_patience,
                               config.finetune_batch(run_config.batch_size), seed)
