"""Options that several commands share: one definition, one help text.

The fine-tune options of `train`, `finetune` and `study`, and `--verbose`. Each is an `Annotated`
type that a command uses as `head_epochs: HeadEpochs = DEFAULT_HEAD_EPOCHS`; the default stays in
the command, where `study` differs (a fixed schedule).
"""

from __future__ import annotations

from typing import Annotated

import typer

from edge_ssl.help_format import OUTPUT, TRAINING
from edge_ssl.train.config import FinetuneBatchNorm, Schedule
from edge_ssl.train.layers import CUT_LAYERS

FinetuneEpochs = Annotated[int, typer.Option(
    metavar="N", rich_help_panel=TRAINING,
    help="Most fine-tune epochs (every one of them with --schedule fixed).")]
HeadEpochs = Annotated[int, typer.Option(
    metavar="N", rich_help_panel=TRAINING,
    help="SSL fine-tune: epochs that train the new head alone on the frozen backbone (at 10× "
         "the learning rate) before every layer trains; 0 for none.")]
FinetuneBatchNormOption = Annotated[FinetuneBatchNorm, typer.Option(
    "--finetune-batchnorm", metavar="frozen|train", rich_help_panel=TRAINING,
    help="SSL fine-tune: keep the pretext's BatchNorm statistics, scale and shift (frozen), or "
         "train them with the other layers (train).")]
LearningRate = Annotated[float, typer.Option(
    metavar="LR", rich_help_panel=TRAINING, help="Adam learning rate.")]
FinetuneSchedule = Annotated[Schedule, typer.Option(
    metavar="MODE", rich_help_panel=TRAINING,
    help="Fine-tune: early-stopping on a selection split carved from the labels, or fixed "
         "(cosine decay, every label trains); auto picks early-stopping when each class gives "
         "the split at least 50 images.")]
SelectionFraction = Annotated[float, typer.Option(
    metavar="F", rich_help_panel=TRAINING,
    help="Share of each class's labelled images in the selection split.")]
Cut = Annotated[str, typer.Option(
    metavar="LAYER", rich_help_panel=TRAINING,
    help=f"Backbone layer the classifier and the probes are cut at: {', '.join(CUT_LAYERS)}.")]
Verbose = Annotated[bool, typer.Option(
    "--verbose", rich_help_panel=OUTPUT, help="Show TensorFlow's own log lines.")]
