"""The one place edge-ssl reaches into Keras' internals: two fixes for multi-worker training.

Keras 3's TensorFlow trainer fails under MultiWorkerMirroredStrategy (seen with Keras 3.15 and
TensorFlow 2.21): `fit` reduces the first data batch with a nested `strategy.reduce`, which the
collective strategy cannot do, and reduces each step's scalar logs over axis 0, which scalars do
not have. Keras offers no public hook for either (its `distribute_reduction_method` setting is
not read by the TensorFlow trainer), so `fixes()` swaps the two private functions for the
duration of multi-worker training and restores them afterwards. tests/test_distribute.py checks
that both still exist with the signatures replaced here, so a Keras that moves them fails
loudly there (and here, with a TrainingError) rather than training wrongly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import keras
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as tf_trainer

from edge_ssl.errors import TrainingError


@contextlib.contextmanager
def fixes() -> Iterator[None]:
    """Within this block, Keras averages each step's logs over replicas (axis=None) and builds
    the model when the train function is traced, as it does without a strategy. Both only
    produce logs and a symbolic build; training itself is untouched."""
    original_reduce = getattr(tf_trainer, "reduce_per_replica", None)
    original_build = getattr(tf_trainer.TensorFlowTrainer, "_maybe_symbolic_build", None)
    if original_reduce is None or original_build is None:
        raise TrainingError(f"multi-worker training needs the Keras 3 internals it works "
                            f"around (found Keras {keras.__version__}); use --strategy mirrored "
                            "on one machine.")
    reduce: Callable[..., Any] = original_reduce

    def reduce_per_replica(values: Any, strategy: tf.distribute.Strategy,
                           reduction: str) -> Any:
        if reduction not in ("auto", "mean"):
            return reduce(values, strategy, reduction)
        return tf.nest.map_structure(
            lambda v: strategy.reduce("MEAN", v, axis=None)
            if isinstance(v, tf.distribute.DistributedValues) else v, values)

    def symbolic_build_when_traced(self: Any, iterator: Any = None,
                                   data_batch: Any = None) -> None:
        return None

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = symbolic_build_when_traced
    try:
        yield
    finally:
        tf_trainer.reduce_per_replica = original_reduce
        tf_trainer.TensorFlowTrainer._maybe_symbolic_build = original_build
