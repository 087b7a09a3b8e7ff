"""Where training runs: one device, several GPUs of one machine, or several machines.

Everything here is `tf.distribute`: MirroredStrategy over the visible GPUs (or over logical CPU
devices, to try it without GPUs), MultiWorkerMirroredStrategy across machines described by
`TF_CONFIG`. The per-replica batch stays what `--batch-size` says; the global batch and the
learning rate grow with the replica count (linear scaling, Goyal et al. 2017, with a warm-up
from the single-replica rate so that the first large steps do not blow up).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from edge_ssl.errors import ConfigError, TrainingError
from edge_ssl.train import keras_multi_worker
from edge_ssl.train.config import StrategyName

TF_CONFIG = "TF_CONFIG"
WARMUP_MAX_STEPS = 1000  # the warm-up is the first epoch, or its first 1,000 steps if longer
TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')


@dataclass(frozen=True)
class Cluster:
    """The strategy a run trains its pretext with, and this process's part in it."""

    strategy: tf.distribute.Strategy
    name: StrategyName  # what `auto` resolved to
    replicas: int  # replicas in sync, over every worker
    workers: int
    task: str  # "worker 1", "chief 0"; "local" without TF_CONFIG
    is_chief: bool  # the one process that writes the run directory
    devices: tuple[str, ...]  # this worker's devices that hold a replica

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Build, compile and fit models inside this: variables and the optimizer are mirrored."""
        with self.strategy.scope():
            if self.name is StrategyName.multi_worker:
                with keras_multi_worker.fixes():
                    yield
            else:
                yield

    def barrier(self) -> None:
        """Every worker waits here until all have arrived (nothing to wait for on one)."""
        if self.workers > 1:
            self.strategy.reduce("SUM", self.strategy.run(lambda: tf.constant(1.0)), axis=None)

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.name.value, "replicas": self.replicas, "workers": self.workers,
                "task": self.task, "devices": list(self.devices)}


def single_device() -> Cluster:
    """The default strategy: what `edge-ssl finetune`, `study` and every fine-tune train on."""
    first = (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))[:1]
    return Cluster(tf.distribute.get_strategy(), StrategyName.default, 1, 1, "local", True,
                   tuple(d.name for d in first))


@dataclass(frozen=True)
class Scaling:
    """Batch and learning rate for `replicas` replicas (linear rule, warm-up)."""

    per_replica_batch: int
    replicas: int
    base_learning_rate: float

    @property
    def global_batch(self) -> int:
        """Samples per weight update, over every replica."""
        return self.per_replica_batch * self.replicas

    def warmup_steps(self, steps_per_epoch: int) -> int:
        """0 on one replica: nothing changes there."""
        return 0 if self.replicas == 1 else max(1, min(steps_per_epoch, WARMUP_MAX_STEPS))

    @property
    def learning_rate(self) -> float:
        """The linear scaling rule: a batch `replicas` times larger takes steps as much larger."""
        return self.base_learning_rate * self.replicas

    def to_json(self, steps_per_epoch: int) -> dict[str, Any]:
        return {"per_replica_batch": self.per_replica_batch, "replicas": self.replicas,
                "global_batch": self.global_batch,
                "base_learning_rate": self.base_learning_rate,
                "learning_rate": self.learning_rate,
                "warmup_steps": self.warmup_steps(steps_per_epoch),
                "rule": "global batch = per-replica batch × replicas; learning rate = base × "
                        "replicas, reached linearly from the base rate over the warm-up steps"}


class WarmUp(keras.callbacks.Callback):
    """Raises the learning rate linearly from `start` to `peak` over the first `steps` steps.

    Counts from the optimizer's own step counter, which BackupAndRestore restores, so a resumed
    run does not warm up twice. After the warm-up it never touches the rate again, so
    ReduceLROnPlateau stays in charge. `steps` are weight updates: with gradient accumulation
    an update takes `accumulation` Keras batches, all at that update's rate.
    """

    def __init__(self, start: float, peak: float, steps: int, accumulation: int = 1) -> None:
        super().__init__()
        self.start, self.peak, self.steps, self.accumulation = start, peak, steps, accumulation
        self._batch = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        # Epochs end on whole updates, so a resumed run starts at an update's first batch.
        self._batch = int(self.model.optimizer.iterations.numpy()) * self.accumulation

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # Update k of the warm-up trains at start + (peak - start)·(k + 1)/steps: its last
        # update at the peak, and the one after it at whatever the schedule sets for its epoch.
        update = self._batch // self.accumulation
        if update < self.steps:
            fraction = (update + 1) / self.steps
            self.model.optimizer.learning_rate = self.start + (self.peak - self.start) * fraction
        self._batch += 1


def configure_devices(cpu_replicas: int | None) -> None:
    """Split a GPU-less machine's CPU into `cpu_replicas` logical devices for MirroredStrategy,
    before TensorFlow starts its runtime. (GPU memory growth is set when a command imports
    TensorFlow: edge_ssl.start_tensorflow.)

    Raises:
        ConfigError: `cpu_replicas` on a machine with GPUs, or after TensorFlow has started.
    """
    if cpu_replicas is None or cpu_replicas < 2:
        return
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        raise ConfigError(f"--cpu-replicas {cpu_replicas} is not allowed: this machine has "
                          f"{len(gpus)} GPU(s); mirrored training uses them.")
    try:
        tf.config.set_logical_device_configuration(
            tf.config.list_physical_devices("CPU")[0],
            [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
    except RuntimeError as exc:  # TensorFlow has already initialised its devices
        raise ConfigError(f"devices cannot be configured once TensorFlow has started ({exc}); "
                          "start a new process.") from None


def connect(requested: StrategyName, cpu_replicas: int | None) -> Cluster:
    """Resolve `requested` on this machine and create its strategy.

    Must run before any other TensorFlow operation of the process (MultiWorkerMirroredStrategy
    starts a server and fixes the device list).

    Raises:
        ConfigError: multi-worker without a usable TF_CONFIG, or devices that cannot be set.
    """
    cluster_spec = _tf_config_cluster()
    if requested is StrategyName.multi_worker and cluster_spec is None:
        raise ConfigError(f"--strategy multi-worker needs the {TF_CONFIG} environment variable "
                          f"on every worker, naming two or more of them, e.g. "
                          f"{TF_CONFIG}='{TF_CONFIG_EXAMPLE}' (index 1 on the second machine).")
    configure_devices(cpu_replicas)
    name = requested
    if name is StrategyName.auto:
        gpus = tf.config.list_physical_devices("GPU")
        if cluster_spec is not None:
            name = StrategyName.multi_worker
        elif len(gpus) > 1 or (not gpus and cpu_replicas and cpu_replicas > 1):
            name = StrategyName.mirrored
        else:
            name = StrategyName.default
    if name is StrategyName.default:
        return single_device()
    if name is StrategyName.mirrored:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        strategy: tf.distribute.Strategy = tf.distribute.MirroredStrategy(devices)
        return Cluster(strategy, name, strategy.num_replicas_in_sync, 1, "local", True,
                       tuple(strategy.extended.worker_devices))
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    jobs = resolver.cluster_spec().as_dict()
    workers = sum(len(tasks) for job, tasks in jobs.items() if job in ("chief", "worker"))
    task_type, task_id = resolver.task_type, int(resolver.task_id)
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0
                                        and "chief" not in jobs)
    return Cluster(strategy, name, strategy.num_replicas_in_sync, workers,
                   f"{task_type} {task_id}", is_chief, tuple(strategy.extended.worker_devices))


def _tf_config_cluster() -> dict[str, Any] | None:
    """TF_CONFIG's cluster when it names more than one task; None when unset or alone."""
    text = os.environ.get(TF_CONFIG)
    if not text:
        return None
    try:
        config = json.loads(text)
        cluster = config["cluster"]
        task = config["task"]
        tasks = [t for job in ("chief", "worker") for t in cluster.get(job, [])]
        if task["type"] not in ("chief", "worker") or not 0 <= int(task["index"]) < len(
                cluster.get(task["type"], [])):
            raise ValueError(f"task {task} is not one of the cluster's chief/worker tasks")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{TF_CONFIG} is not usable ({exc}); it should look like "
                          f"'{TF_CONFIG_EXAMPLE}'.") from None
    return cluster if len(tasks) > 1 else None


def raise_worker_failure(exc: BaseException, resume_hint: str) -> None:
    """A collective that failed because a peer stopped becomes one clear line; other errors
    are left to propagate."""
    if isinstance(exc, tf.errors.UnavailableError | tf.errors.CancelledError
                  | tf.errors.DeadlineExceededError | tf.errors.InternalError):
        # TensorFlow's message starts with "Graph execution error:" and a traceback of graph
        # nodes; the line naming the peer problem is the useful one.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = next((line for line in lines if any(word in line.lower() for word in (
            "abort", "unavailable", "connect", "peer", "socket"))), type(exc).__name__)
        raise TrainingError(f"another worker of the multi-worker job stopped ({reason[:200]}); "
                            f"start every worker again with {resume_hint}.") from None
