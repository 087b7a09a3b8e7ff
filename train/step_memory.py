"""How much memory one pretext training step takes on the CPU, and how to keep it bounded.

On the CPU a training step's activations live in the process's own memory, gigabytes of them
for a batch of large images. Rather than change the batch (and with
it the learning dynamics), a batch whose activations would exceed `--step-memory-gb` is split
into equal micro-batches whose gradients Keras' optimizer accumulates
(`gradient_accumulation_steps`): one weight update per full batch, with the full batch's
averaged gradient. What differs is BatchNorm, which normalises each micro-batch by its own
statistics. On a GPU the activations are device memory, so nothing is split there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from edge_ssl.train.config import Rotations, TrainConfig
from edge_ssl.train.model import nested_layers
from edge_ssl.train.pipeline import NUM_ROTATIONS

BYTES_PER_VALUE = 4  # float32 activations (the CPU never trains in float16 here)


@dataclass(frozen=True)
class StepPlan:
    """A per-replica batch of `batch` samples, trained as `accumulation` micro-batches."""

    batch: int
    accumulation: int
    sample_bytes: int  # activations of one training sample, summed over the network's layers
    local_replicas: int  # replicas sharing this process's memory
    budget_bytes: int
    on_gpu: bool

    @property
    def micro_batch(self) -> int:
        return self.batch // self.accumulation

    @property
    def step_bytes(self) -> int:
        """Activations of one micro-step of this process (every local replica's)."""
        return self.micro_batch * self.local_replicas * self.sample_bytes

    def to_json(self) -> dict[str, Any]:
        return {"micro_batch": self.micro_batch, "gradient_accumulation_steps": self.accumulation,
                "step_activations_mb": round(self.step_bytes / 1e6, 1),
                "step_memory_budget_mb": None if self.on_gpu else round(self.budget_bytes / 1e6, 1),
                "why": "on a GPU activations are device memory: no split" if self.on_gpu else
                       "the CPU keeps each step's activations in RAM: batches larger than the "
                       "budget are split, gradients accumulated into one update per batch"}


def activation_bytes_per_sample(model: keras.Model) -> int:
    """Sum of every layer's output size for one sample: what backpropagation keeps.

    An estimate that errs on the safe side of a measured step (docs/training-recipe.md,
    "Memory").
    """
    total = 0
    # A nested model's output is its last layer's: counted once, through that layer.
    for layer in nested_layers(model):
        if isinstance(layer, (keras.Model, keras.layers.InputLayer)):
            continue
        outputs = layer.output if isinstance(layer.output, list) else [layer.output]
        total += sum(math.prod(dim or 1 for dim in tensor.shape[1:]) for tensor in outputs)
    return total * BYTES_PER_VALUE


def split_batch(batch: int, sample_bytes: int, budget_bytes: int, multiple: int) -> int:
    """Fewest equal micro-batches (each a multiple of `multiple` samples) whose activations fit
    `budget_bytes`; the smallest possible micro-batch when none fits."""
    splits = [n for n in range(1, batch + 1)
              if batch % n == 0 and (batch // n) % multiple == 0]
    return next((n for n in splits if batch // n * sample_bytes <= budget_bytes), splits[-1])


def plan_steps(config: TrainConfig, model: keras.Model, local_replicas: int) -> StepPlan:
    """The step plan of the pretext `model` trained with `config` by `local_replicas` replicas
    of this process."""
    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    sample_bytes = activation_bytes_per_sample(model)
    budget = int(config.step_memory_gb * 1e9)
    multiple = NUM_ROTATIONS if config.rotations is Rotations.all else 1
    accumulation = 1 if on_gpu else split_batch(
        config.batch_size, sample_bytes * local_replicas, budget, multiple)
    return StepPlan(config.batch_size, accumulation, sample_bytes, local_replicas, budget, on_gpu)
