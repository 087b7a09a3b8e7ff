"""FinetuneOptions: how a fine-tune trains, the options `train`, `finetune` and `study` share.

Declared once here with their help (edge_ssl/options.py); TrainConfig (config.py) adds what
the pretext and the run depend on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from edge_ssl.errors import ConfigError
from edge_ssl.options import MODEL, TRAINING, not_allowed, option
from edge_ssl.train.cuts import CUT_LAYERS, DEFAULT_CUT

# With fewer selection images than this per class, early stopping follows noise (one image of
# ten is 10 points) and the split costs labels the network never trains on; the development
# pairs measured it (docs/training-recipe.md, "Fine-tune schedule").
MIN_SELECTION_PER_CLASS = 50


class FinetuneBatchNorm(str, Enum):
    """What the SSL fine-tune does with the pretext's BatchNorm layers once every layer trains."""

    frozen = "frozen"  # keep statistics, scale and shift: a few labels cannot re-estimate them
    train = "train"  # batch statistics while training, scale and shift learned (Keras' default)


class Schedule(str, Enum):
    """How the fine-tune decides when to stop and when to lower the learning rate."""

    auto = "auto"  # early-stopping when the selection split is big enough, else fixed
    early_stopping = "early-stopping"  # watch a selection split carved from the labels
    fixed = "fixed"  # all labels train; cosine decay over --finetune-epochs, last epoch kept


DEFAULT_HEAD_EPOCHS = 10  # runs saved before the option had none (see TrainConfig.from_dict)
# Every network method's fine-tune takes at least this many optimizer steps, whatever the number
# of labels: at 50 labels per class one pass an epoch gave 160 steps in all, too few for a network
# trained from scratch to show what the labels can do. 600 keeps a study of five networks, three
# seeds and three pairs within an hour on two CPU cores (1,000 steps gained nothing on the first
# development pair). A multiple of 200, so that the default 40 epochs and the SSL fine-tune's
# 10 + 40 both split it into whole steps per epoch.
DEFAULT_FINETUNE_STEPS = 600
# The fine-tune's own batch, apart from the pretext's --batch-size: a pretext of many images runs
# faster with a larger batch (128 rotated samples a step measured 1.37x faster), but at 50 labels
# per class a batch of 128 repeats each image in every batch and costs about 3x as much a step
# as 32, the batch every fine-tune recipe was tuned at on the development pairs.
DEFAULT_FINETUNE_BATCH = 32


# What a fine-tune saved before the step budget and weight decay existed did.
LEGACY_FINETUNE = {"finetune_steps": 0, "weight_decay": 0.0, "finetune_batch_size": 0}


@dataclass(frozen=True, kw_only=True)
class FinetuneOptions:
    """How a fine-tune trains: the options `train`, `finetune` and `study` share."""

    cut: str = option(DEFAULT_CUT, f"Backbone layer the classifier and the probes are cut at: "
                      f"{', '.join(CUT_LAYERS)}.", "LAYER", MODEL)
    finetune_epochs: int = option(
        40, "Most fine-tune epochs (every one of them with --schedule fixed).", "N", TRAINING)
    head_epochs: int = option(
        DEFAULT_HEAD_EPOCHS, "SSL fine-tune: epochs that train the new head alone on the frozen "
        "backbone (at 10× the learning rate) before every layer trains; 0 for none.", "N",
        TRAINING)
    finetune_batchnorm: FinetuneBatchNorm = option(
        FinetuneBatchNorm.frozen, "SSL fine-tune: keep the pretext's BatchNorm statistics, "
        "scale and shift (frozen), or train them with the other layers (train).",
        "frozen|train", TRAINING)
    learning_rate: float = option(1e-3, "Adam learning rate.", "LR", TRAINING)
    schedule: Schedule = option(
        Schedule.auto, "Fine-tune: early-stopping on a selection split carved from the labels, "
        "or fixed (cosine decay, every label trains); auto picks early-stopping when each "
        f"class gives the split at least {MIN_SELECTION_PER_CLASS} images.", "MODE", TRAINING)
    selection_fraction: float = option(
        0.2, "Share of each class's labelled images in the selection split.", "F", TRAINING)
    finetune_steps: int = option(
        DEFAULT_FINETUNE_STEPS, "Fewest optimizer steps of every network fine-tune, the same "
        "whatever the number of labels: the labelled images repeat, re-augmented each pass, and "
        "the steps spread evenly over the epochs (head-only ones included); 0: one pass over "
        "the labels an epoch.", "N", TRAINING)
    finetune_batch_size: int = option(
        DEFAULT_FINETUNE_BATCH, "Labelled images per fine-tune batch, for every network method "
        "(the pretext's is --batch-size); a multiple of 4; 0: the run's --batch-size.", "N",
        TRAINING)
    weight_decay: float = option(
        0.0, "Decoupled weight decay of every network fine-tune (AdamW); 0 for none.", "WD",
        TRAINING)
    pseudo_labels: float = option(
        0.0, "Fine-tunes with the rotation loss: also train on the task's images (labelled and "
        "unlabelled) with the class the classifier gives them, where it is at least this "
        "confident, e.g. 0.95; 0 for none.", "P", TRAINING)

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> ConfigError:
            return not_allowed(self, name, getattr(self, name), allowed)

        if self.cut not in CUT_LAYERS:
            raise bad("cut", f"use one of {', '.join(CUT_LAYERS)}")
        if self.finetune_epochs < 1:
            raise bad("finetune_epochs", "use 1 or more")
        if self.head_epochs < 0:
            raise bad("head_epochs", "use 0 (no head-only epochs) or more")
        if self.learning_rate <= 0:
            raise bad("learning_rate", "use a positive value such as 1e-3")
        if not 0.0 < self.selection_fraction < 1.0:
            raise bad("selection_fraction", "use a fraction between 0 and 1, e.g. 0.2")
        if self.finetune_steps < 0:
            raise bad("finetune_steps", "use 0 (one pass over the labels an epoch) or more")
        if self.finetune_batch_size < 0 or self.finetune_batch_size % 4:
            raise bad("finetune_batch_size", "use a multiple of 4 such as 32, or 0 for the "
                      "run's --batch-size")
        if self.weight_decay < 0:
            raise bad("weight_decay", "use 0 (none) or a small positive value such as 1e-4")
        if not 0.0 <= self.pseudo_labels < 1.0:
            raise bad("pseudo_labels", "use 0 (none) or a confidence below 1, such as 0.95")

    def finetune_batch(self, run_batch: int) -> int:
        """The fine-tune's batch: `finetune_batch_size`, or with 0 (what fine-tunes saved before
        the option did) the run's `--batch-size`."""
        return self.finetune_batch_size or run_batch
