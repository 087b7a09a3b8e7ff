"""The Keras internals edge_ssl.train.keras_multi_worker replaces still exist as it expects.

This is the test that fails loudly when a Keras release moves them: multi-worker training
would then stop with a TrainingError naming the Keras version, rather than train wrongly.
"""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("tensorflow")
from keras.src.backend.tensorflow import trainer  # noqa: E402

from edge_ssl.train import keras_multi_worker  # noqa: E402


def test_the_replaced_functions_have_the_signatures_the_fixes_take() -> None:
    assert list(inspect.signature(trainer.reduce_per_replica).parameters) == [
        "values", "strategy", "reduction"]
    assert list(inspect.signature(
        trainer.TensorFlowTrainer._maybe_symbolic_build).parameters) == [
        "self", "iterator", "data_batch"]


def test_the_fixes_apply_only_inside_their_scope() -> None:
    before = (trainer.reduce_per_replica, trainer.TensorFlowTrainer._maybe_symbolic_build)
    with keras_multi_worker.fixes():
        assert trainer.reduce_per_replica is not before[0]
        assert trainer.TensorFlowTrainer._maybe_symbolic_build is not before[1]
    assert (trainer.reduce_per_replica, trainer.TensorFlowTrainer._maybe_symbolic_build) == before
