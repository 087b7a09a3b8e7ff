"""TrainConfig: every option of `edge-ssl train`, declared, validated once, saved in config.json.

Each field that is a command-line option is declared here with its help (edge_ssl/options.py);
`train`, `finetune`, `study` and `demo` build their options from these declarations.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

from edge_ssl.errors import ConfigError, RunDirError
from edge_ssl.options import (
    DATA,
    MODEL,
    OUTPUT,
    TRAINING,
    from_json,
    not_allowed,
    option,
    split_commas,
    to_json,
)
from edge_ssl.train.cuts import CUT_LAYERS, DEFAULT_CUT, require_within_pretext
from edge_ssl.train.finetune_options import LEGACY_FINETUNE, FinetuneOptions

# keras.applications.MobileNetV2 ships ImageNet weights only for these widths.
IMAGENET_WIDTHS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
# Keras' 0.999 never catches up in a pretext of a few thousand steps from random init: held-out
# accuracy then sits at chance while training accuracy rises (docs/training-recipe.md).
DEFAULT_BN_MOMENTUM_RANDOM = 0.9
DEFAULT_BN_MOMENTUM_IMAGENET = 0.999


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


class RotationLoss(str, Enum):
    """Whether the shipped fine-tune keeps the rotation loss on the task's images (S4L)."""

    auto = "auto"  # on when the task has images without labels, off otherwise
    on = "on"
    off = "off"


class StrategyName(str, Enum):
    """Which tf.distribute strategy trains the pretext."""

    auto = "auto"  # several GPUs → mirrored; a TF_CONFIG cluster → multi-worker; else default
    default = "default"  # one device: the first GPU, else the CPU
    mirrored = "mirrored"  # every GPU of this machine (or --cpu-replicas logical CPUs)
    multi_worker = "multi-worker"  # every machine of TF_CONFIG, each with all its GPUs


@dataclass(frozen=True, kw_only=True)
class TrainConfig(FinetuneOptions):
    """Everything a run depends on. `data=None` means the built-in demo dataset."""

    data: Path | None = option(
        None, "Tiny ImageNet folder (has wnids.txt) or DIR/<class>/*.jpg; default: demo data.",
        "DIR", DATA, show_default=False)
    unlabeled: Path | None = option(
        None, "Extra loose images for the pretext (with a class-per-folder --data).", "DIR", DATA)
    classes: tuple[str, ...] = option(
        (), "Fine-tune classes, comma-separated: wnids, words from words.txt, or folder names; "
        "default: the data's default classes.", "A,B", DATA, parse=split_commas,
        show_default=False)
    pretext_classes: int | None = option(
        None, "Tiny ImageNet: pretext on the first K classes only.", "K", DATA)
    labels_per_class: int | None = option(
        None, "Keep only N labelled images per class for the fine-tune (seeded).", "N", DATA)
    demo_per_class: int = option(500, "Demo data: training images per class.", "N", DATA)
    image_size: int = option(64, "Side of the square training images.", "N", MODEL)
    width: float = option(1.0, "MobileNetV2 width multiplier.", "ALPHA", MODEL)
    backbone_weights: Path | None = option(
        None, "Local ImageNet MobileNetV2 no-top .h5 weights; switches rescaling to [-1, 1].",
        "FILE", MODEL, must_exist=True)
    bn_momentum: float | None = option(
        None, f"BatchNorm momentum; default {DEFAULT_BN_MOMENTUM_RANDOM} (random init) or "
        f"{DEFAULT_BN_MOMENTUM_IMAGENET} (ImageNet weights).", "M", MODEL, show_default=False)
    rotations: Rotations = option(
        Rotations.all, "all: the 4 rotations of an image in one batch; random: one per image.",
        "all|random", TRAINING)
    pretext_lr: PretextLR = option(
        PretextLR.plateau, "Pretext learning rate: plateau halves it when the held-out loss "
        "stalls; cosine decays it over --pretext-epochs.", "plateau|cosine", TRAINING)
    batch_size: int = option(32, "Samples per batch.", "N", TRAINING)
    pretext_epochs: int = option(100, "Most pretext epochs.", "N", TRAINING)
    patience: int = option(
        10, "EarlyStopping patience in epochs (held-out or selection accuracy).", "N", TRAINING)
    lr_patience: int = option(
        4, "ReduceLROnPlateau patience (held-out or selection loss, factor 0.5).", "N", TRAINING)
    freeze: Freeze = option(Freeze.none, "backbone: train only the head during the fine-tune.",
                            "none|backbone", TRAINING)
    baseline: bool = option(
        False, "Also measure every other method on the same labels and test images: the "
        "fine-tune with the rotation loss (from the pretext and from random init), SSL linear "
        "probe, from scratch (the same network, and a shallow one), random-init probe, "
        "tiny-image ridge, colour histogram.", panel=TRAINING)
    rotation_loss: RotationLoss = option(
        RotationLoss.auto, "Fine-tune with the rotation loss kept on the task's images, "
        "labelled and unlabelled (S4L): classifier.keras is that fine-tune. auto: on when the "
        "task has images without labels (those --labels-per-class leaves out, a folder's "
        "unlabeled/); config.json records what auto chose.", "auto|on|off", TRAINING)
    seed: int = option(0, "Seed for splits, sampling and initialisation.", "N", TRAINING)
    mixed_precision: bool = option(
        False, "mixed_float16 policy (GPUs); the softmax and the loss stay float32.",
        panel=TRAINING)
    strategy: StrategyName = option(
        StrategyName.auto, "auto, default, mirrored or multi-worker: how the pretext is "
        "distributed (one device; this machine's GPUs; the machines of TF_CONFIG). auto picks "
        "mirrored with several GPUs, multi-worker when TF_CONFIG names a cluster.", "MODE",
        TRAINING)
    cpu_replicas: int | None = option(
        None, "Without GPUs: split the CPU into N logical devices for --strategy mirrored (to "
        "try distributed training; not faster).", "N", TRAINING, show_default=False)
    cache_dir: Path | None = option(
        None, "Cache decoded pretext images in files here (a fast local disk); default: in "
        "memory when they fit --memory-cache-gb, else in RUN/cache.", "DIR", DATA,
        show_default=False)
    memory_cache_gb: float = option(
        2.0, "Most decoded pretext images (GB, per worker) kept in memory; beyond, on disk.",
        "GB", DATA)
    step_memory_gb: float = option(
        1.5, "On the CPU, most memory (GB) one pretext step's activations may take; a larger "
        "batch is trained as micro-batches with accumulated gradients (same update size).",
        "GB", TRAINING)
    tensorboard: bool = option(
        False, "Also log the training for TensorBoard, in RUN/tensorboard/.", panel=OUTPUT)
    pretext_init: Path | None = option(
        None, "Start the pretext from the rotation model of this run directory; its width, "
        "image size and depth are kept. With --pretext-epochs 0 it is used as it is.", "RUN",
        MODEL, show_default=False)
    # Where the pretext network's backbone ends (`--pretext-depth`); None: all of MobileNetV2.
    pretext_top: str | None = DEFAULT_CUT
    pretext_from: Path | None = None  # fine-tune the pretext of this run instead of training one

    def __post_init__(self) -> None:
        super().__post_init__()

        def bad(name: str, allowed: str) -> ConfigError:
            return not_allowed(self, name, getattr(self, name), allowed)

        if self.image_size < 32:
            raise bad("image_size", "MobileNetV2 needs at least 32 pixels")
        if self.width <= 0:
            raise bad("width", "use a positive MobileNetV2 alpha such as 0.35 or 1.0")
        if self.backbone_weights is not None and self.width not in IMAGENET_WIDTHS:
            raise bad("width", f"ImageNet weights exist for {IMAGENET_WIDTHS}")
        if self.bn_momentum is not None and not 0.0 < self.bn_momentum < 1.0:
            raise bad("bn_momentum", "use a value between 0 and 1, e.g. 0.9")
        if self.batch_size < 4 or (self.rotations is Rotations.all and self.batch_size % 4):
            raise bad("batch_size", "use at least 4, and a multiple of 4 with --rotations all")
        for name in ("pretext_epochs", "patience", "lr_patience", "demo_per_class"):
            if getattr(self, name) < 1 and not (name == "pretext_epochs"
                                                and self.pretext_epochs == 0
                                                and self.pretext_init is not None):
                raise bad(name, "use 1 or more (0 pretext epochs only with --pretext-init)")
        for name in ("pretext_classes", "labels_per_class"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise bad(name, "use 1 or more")
        if self.pretext_top is not None and self.pretext_top not in CUT_LAYERS:
            raise ConfigError(f"TrainConfig.pretext_top {self.pretext_top} is not a layer "
                              f"edge-ssl cuts at; use one of {', '.join(CUT_LAYERS)}.")
        require_within_pretext(self.cut, self.pretext_top)
        if self.cpu_replicas is not None and self.cpu_replicas < 1:
            raise bad("cpu_replicas", "use 1 or more, e.g. 2")
        if self.cpu_replicas is not None and self.cpu_replicas > 1 and self.strategy not in (
                StrategyName.auto, StrategyName.mirrored):
            raise bad("cpu_replicas", "logical CPU devices are for --strategy mirrored (or auto)")
        if self.memory_cache_gb < 0:
            raise bad("memory_cache_gb", "use 0 (always on disk) or more, e.g. 2")
        if self.step_memory_gb <= 0:
            raise bad("step_memory_gb", "use a positive size, e.g. 1.5")

    @property
    def effective_bn_momentum(self) -> float:
        if self.bn_momentum is not None:
            return self.bn_momentum
        if self.backbone_weights is not None:
            return DEFAULT_BN_MOMENTUM_IMAGENET
        return DEFAULT_BN_MOMENTUM_RANDOM

    def to_dict(self) -> dict[str, Any]:
        return to_json(self)

    def resolve_rotation_loss(self, unlabelled_images: int) -> TrainConfig:
        """This config with `auto` decided for a task with that many images without labels."""
        if self.rotation_loss is not RotationLoss.auto:
            return self
        return replace(self, rotation_loss=RotationLoss.on if unlabelled_images
                       else RotationLoss.off)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        # Runs saved before an option existed keep what they did: no head-only epochs, the
        # BatchNorm layers trained with the rest, a pretext over all of MobileNetV2, one pass
        # over the labels an epoch, no weight decay and no rotation loss.
        rotation = values.get("rotation_loss")
        if isinstance(rotation, bool):  # saved as true/false before `auto` existed
            values = {**values, "rotation_loss": "on" if rotation else "off"}
        return from_json(cls, values, legacy={"head_epochs": 0, "finetune_batchnorm": "train",
                                              "pretext_top": None, "rotation_loss": "off",
                                              **LEGACY_FINETUNE})

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text)["config"])


def pretext_top(depth: PretextDepth, cut: str) -> str | None:
    """The `--pretext-depth` option as the layer the pretext backbone ends at."""
    return cut if depth is PretextDepth.cut else None


def load_run_config(run: Path) -> TrainConfig:
    """The TrainConfig a run directory was trained with (its config.json)."""
    from edge_ssl.contract import CONFIG_FILE

    try:
        return TrainConfig.from_json((run / CONFIG_FILE).read_text())
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise RunDirError(f"{run / CONFIG_FILE}: unreadable ({exc}); this run cannot be "
                          "resumed or reused, start a new one.") from None


def require_tensorboard(config: TrainConfig) -> None:
    """Fail before a run starts, not at its first epoch, when --tensorboard cannot log."""
    import importlib.util

    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--tensorboard needs the tensorboard package: "
                          "pip install tensorboard (the [train] extra includes it).")
