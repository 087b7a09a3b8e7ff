"""TrainConfig: every option of `edge-ssl train`, validated once, saved in config.json."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from edge_ssl.errors import ConfigError, RunDirError
from edge_ssl.train.layers import CUT_LAYERS, DEFAULT_CUT, reaches

# keras.applications.MobileNetV2 ships ImageNet weights only for these widths.
IMAGENET_WIDTHS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
# Keras' 0.999 never catches up in a pretext of a few thousand steps from random init: held-out
# accuracy then sits at chance while training accuracy rises (docs/training-recipe.md).
DEFAULT_BN_MOMENTUM_RANDOM = 0.9
DEFAULT_BN_MOMENTUM_IMAGENET = 0.999
# With fewer selection images than this per class, early stopping follows noise (one image of
# ten is 10 points) and the split costs labels the network never trains on: on four development
# pairs at 50 labels per class, a fixed schedule scored 68.1 % against 63.3 % for early stopping
# on a 10-image split (docs/training-recipe.md).
MIN_SELECTION_PER_CLASS = 50


class Rotations(str, Enum):
    all = "all"  # all four rotations of an image in the same batch (RotNet)
    random = "random"  # one random rotation per image (the study's wording)


class PretextLR(str, Enum):
    """How the pretext's learning rate moves; EarlyStopping on held-out rotations either way."""

    plateau = "plateau"  # constant, halved when the held-out loss stops falling
    cosine = "cosine"  # cosine decay over --pretext-epochs: a short pretext ends annealed


class PretextDepth(str, Enum):
    """How much of MobileNetV2 the pretext trains (saved in config.json as `pretext_top`)."""

    cut = "cut"  # up to --cut: the classifier never uses the blocks past it
    full = "full"  # the whole network: one pretext that a fine-tune may cut anywhere


class Freeze(str, Enum):
    none = "none"
    backbone = "backbone"


class FinetuneBatchNorm(str, Enum):
    """What the SSL fine-tune does with the pretext's BatchNorm layers once every layer trains."""

    frozen = "frozen"  # keep statistics, scale and shift: a few labels cannot re-estimate them
    train = "train"  # batch statistics while training, scale and shift learned (Keras' default)


class Schedule(str, Enum):
    """How the fine-tune decides when to stop and when to lower the learning rate."""

    auto = "auto"  # early-stopping when the selection split is big enough, else fixed
    early_stopping = "early-stopping"  # watch a selection split carved from the labels
    fixed = "fixed"  # all labels train; cosine decay over --finetune-epochs, last epoch kept


class StrategyName(str, Enum):
    """Which tf.distribute strategy trains the pretext."""

    auto = "auto"  # several GPUs → mirrored; a TF_CONFIG cluster → multi-worker; else default
    default = "default"  # one device: the first GPU, else the CPU
    mirrored = "mirrored"  # every GPU of this machine (or --cpu-replicas logical CPUs)
    multi_worker = "multi-worker"  # every machine of TF_CONFIG, each with all its GPUs


# Decoded pretext images stay in memory up to this size, per worker; beyond it they go to disk.
DEFAULT_MEMORY_CACHE_GB = 2.0
# Most activations (GB) one pretext training step may hold on the CPU; a larger batch is split
# into micro-batches with accumulated gradients (train/step_memory.py). 1.5 keeps a 224-px,
# width-1.0 pretext under 4 GB in all; at 64 px nothing is split.
DEFAULT_STEP_MEMORY_GB = 1.5
# Fine-tune defaults shared by `train`, `finetune` and `study`. Epochs: the most with
# early-stopping, all of them with the fixed (cosine) schedule.
DEFAULT_FINETUNE_EPOCHS = 40
# Epochs that fit the new head alone on the frozen backbone before all layers train.
DEFAULT_HEAD_EPOCHS = 10
DEFAULT_LEARNING_RATE = 1e-3  # Adam, every fine-tuned network alike
DEFAULT_SELECTION_FRACTION = 0.2  # share of each class's labels in the selection split


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on. `data=None` means the built-in demo dataset."""

    data: Path | None = None
    unlabeled: Path | None = None
    classes: tuple[str, ...] = ()
    pretext_classes: int | None = None
    labels_per_class: int | None = None
    demo_per_class: int = 500
    image_size: int = 64
    width: float = 1.0
    backbone_weights: Path | None = None
    bn_momentum: float | None = None
    rotations: Rotations = Rotations.all
    pretext_lr: PretextLR = PretextLR.plateau
    batch_size: int = 32
    pretext_epochs: int = 100
    finetune_epochs: int = DEFAULT_FINETUNE_EPOCHS
    head_epochs: int = DEFAULT_HEAD_EPOCHS
    finetune_batchnorm: FinetuneBatchNorm = FinetuneBatchNorm.frozen
    learning_rate: float = DEFAULT_LEARNING_RATE
    patience: int = 10
    lr_patience: int = 4
    freeze: Freeze = Freeze.none
    schedule: Schedule = Schedule.auto
    selection_fraction: float = DEFAULT_SELECTION_FRACTION
    cut: str = DEFAULT_CUT
    # Where the pretext network's backbone ends; None: all of MobileNetV2. Blocks past the cut
    # cost pretext time and the classifier throws them away (docs/training-recipe.md).
    pretext_top: str | None = DEFAULT_CUT
    baseline: bool = False
    seed: int = 0
    mixed_precision: bool = False
    tensorboard: bool = False  # log every stage into RUN/tensorboard/<stage>/
    pretext_from: Path | None = None  # fine-tune the pretext of this run instead of training one
    strategy: StrategyName = StrategyName.auto
    cpu_replicas: int | None = None  # split a GPU-less machine's CPU into this many devices
    cache_dir: Path | None = None  # decoded pretext images cached in files here
    memory_cache_gb: float = DEFAULT_MEMORY_CACHE_GB
    step_memory_gb: float = DEFAULT_STEP_MEMORY_GB

    def __post_init__(self) -> None:
        def bad(field: str, value: Any, allowed: str) -> ConfigError:
            return ConfigError(f"--{field.replace('_', '-')} {value} is not allowed: {allowed}.")

        if self.image_size < 32:
            raise bad("image_size", self.image_size, "MobileNetV2 needs at least 32 pixels")
        if self.width <= 0:
            raise bad("width", self.width, "use a positive MobileNetV2 alpha such as 0.35 or 1.0")
        if self.backbone_weights is not None and self.width not in IMAGENET_WIDTHS:
            raise bad("width", self.width, f"ImageNet weights exist for {IMAGENET_WIDTHS}")
        if self.bn_momentum is not None and not 0.0 < self.bn_momentum < 1.0:
            raise bad("bn_momentum", self.bn_momentum, "use a value between 0 and 1, e.g. 0.9")
        if self.batch_size < 4 or (self.rotations is Rotations.all and self.batch_size % 4):
            raise bad("batch_size", self.batch_size,
                      "use at least 4, and a multiple of 4 with --rotations all")
        for field in ("pretext_epochs", "finetune_epochs", "patience", "lr_patience",
                      "demo_per_class"):
            if getattr(self, field) < 1:
                raise bad(field, getattr(self, field), "use 1 or more")
        if self.head_epochs < 0:
            raise bad("head_epochs", self.head_epochs, "use 0 (no head-only epochs) or more")
        for field in ("pretext_classes", "labels_per_class"):
            if getattr(self, field) is not None and getattr(self, field) < 1:
                raise bad(field, getattr(self, field), "use 1 or more")
        if not 0.0 < self.selection_fraction < 1.0:
            raise bad("selection_fraction", self.selection_fraction,
                      "use a fraction between 0 and 1, e.g. 0.2")
        if self.cut not in CUT_LAYERS:
            raise bad("cut", self.cut, f"use one of {', '.join(CUT_LAYERS)}")
        if self.pretext_top is not None and self.pretext_top not in CUT_LAYERS:
            raise ConfigError(f"pretext_top {self.pretext_top} is not a layer edge-ssl cuts at; "
                              f"use one of {', '.join(CUT_LAYERS)}.")
        require_within_pretext(self.cut, self.pretext_top)
        if self.learning_rate <= 0:
            raise bad("learning_rate", self.learning_rate, "use a positive value such as 1e-3")
        if self.cpu_replicas is not None and self.cpu_replicas < 1:
            raise bad("cpu_replicas", self.cpu_replicas, "use 1 or more, e.g. 2")
        if self.cpu_replicas is not None and self.cpu_replicas > 1 and self.strategy not in (
                StrategyName.auto, StrategyName.mirrored):
            raise bad("cpu_replicas", self.cpu_replicas,
                      "logical CPU devices are for --strategy mirrored (or auto)")
        if self.memory_cache_gb < 0:
            raise bad("memory_cache_gb", self.memory_cache_gb,
                      "use 0 (always on disk) or more, e.g. 2")
        if self.step_memory_gb <= 0:
            raise bad("step_memory_gb", self.step_memory_gb, "use a positive size, e.g. 1.5")

    @property
    def effective_bn_momentum(self) -> float:
        if self.bn_momentum is not None:
            return self.bn_momentum
        if self.backbone_weights is not None:
            return DEFAULT_BN_MOMENTUM_IMAGENET
        return DEFAULT_BN_MOMENTUM_RANDOM

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Enum):
                value = value.value
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in known}
        for key in ("data", "unlabeled", "backbone_weights", "pretext_from", "cache_dir"):
            if kwargs.get(key) is not None:
                kwargs[key] = Path(kwargs[key])
        kwargs["classes"] = tuple(kwargs.get("classes", ()))
        kwargs["rotations"] = Rotations(kwargs.get("rotations", "all"))
        kwargs["pretext_lr"] = PretextLR(kwargs.get("pretext_lr", "plateau"))
        kwargs.setdefault("head_epochs", 0)  # runs saved before the option trained without
        # and, before that option, trained the BatchNorm layers with the rest
        kwargs["finetune_batchnorm"] = FinetuneBatchNorm(kwargs.get("finetune_batchnorm", "train"))
        kwargs.setdefault("pretext_top", None)  # and their pretext trained all of MobileNetV2
        kwargs["freeze"] = Freeze(kwargs.get("freeze", "none"))
        kwargs["schedule"] = Schedule(kwargs.get("schedule", "auto"))
        kwargs["strategy"] = StrategyName(kwargs.get("strategy", "auto"))
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text)["config"])


def pretext_top(depth: PretextDepth, cut: str) -> str | None:
    """The `--pretext-depth` option as the layer the pretext backbone ends at."""
    return cut if depth is PretextDepth.cut else None


def require_within_pretext(cut: str, top: str | None) -> None:
    """A classifier cannot cut a pretext network past its last block: say so before any work."""
    if not reaches(top, cut):
        raise ConfigError(f"--cut {cut} is past the end of the pretext network, which stops at "
                          f"{top}: cut at {top} or an earlier block, or train a pretext with "
                          "--pretext-depth full.")


def load_run_config(run: Path) -> TrainConfig:
    """The TrainConfig a run directory was trained with (its config.json)."""
    from edge_ssl.contract import CONFIG_FILE

    try:
        return TrainConfig.from_json((run / CONFIG_FILE).read_text())
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise RunDirError(f"{run / CONFIG_FILE}: unreadable ({exc}); this run cannot be "
                          "resumed or reused, start a new one.") from None
