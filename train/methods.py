"""Nine ways to turn the same labelled images into a classifier, measured on the same test images.

A sceptic's question for each: (a) `ssl_finetune` — what the kit ships; (a') `s4l_finetune` —
the same with the rotation loss on the task's images kept during the fine-tune (S4L); (b)
`ssl_probe` — do the frozen pretext features alone separate the classes; (b') `s4l_scratch` —
the rotation loss during the fine-tune without the pretext: how much of (a') is the pretext's;
(c) `scratch` — what the labels buy without the pretext, same architecture; (c')
`scratch_shallow` — the same from a network cut at SHALLOW_CUT, a size that suits a few labels
better; (d) `random_probe` — the same probe on a random-init backbone: did the pretext learn
anything at all; (e) `tiny_images` — a ridge classifier on the pixels of tiny thumbnails; (f)
`colour` — is a colour histogram already enough. Every network method takes the same number of
optimizer steps on the same labels (FitSettings.steps_per_epoch).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from edge_ssl.stats import Rate
from edge_ssl.train import joint, pipeline, probe
from edge_ssl.train.cuts import CUT_LAYERS, SHALLOW_CUT
from edge_ssl.train.finetune_options import FinetuneBatchNorm, FinetuneOptions
from edge_ssl.train.method_names import (
    COLOUR,
    FROM_PRETEXT,
    RANDOM_PROBE,
    SCRATCH_SHALLOW,
    SSL_PROBE,
    TINY_IMAGES,
    WITH_ROTATION,
)
from edge_ssl.train.model import (
    BACKBONE_NAME,
    ModelSpec,
    build_classifier,
    build_model,
    copy_model,
    predict,
    recompute_batchnorm_statistics,
)
from edge_ssl.train.stages import Checkpoints, Recipe, StageResult, fit_stage

HEAD_LR_FACTOR = 10  # the head-only epochs train a linear layer from scratch: a larger step


@dataclass(frozen=True)
class Labelled:
    """One task's images: `fit` trains, `selection` (optional) steers the schedule, `test` is
    measured once. Pixels are uint8 `[N, S, S, 3]`, labels int64 `[N]`."""

    fit: tf.data.Dataset  # unbatched (pixels, label) pairs, decoded and cached
    fit_size: int
    selection: tuple[np.ndarray, np.ndarray] | None
    test: tuple[np.ndarray, np.ndarray]
    num_classes: int
    # The task's images without labels (uint8 pixels), for the rotation loss of the S4L methods
    # beside the labelled ones; None or empty: the labelled images alone.
    unlabelled: np.ndarray | None = None


@dataclass(frozen=True)
class FitSettings:
    """How a network method trains: the fine-tune options (of `train`, `finetune` or `study`,
    read where they are used) and what the run adds."""

    options: FinetuneOptions
    patience: int
    lr_patience: int
    batch_size: int
    seed: int
    freeze_backbone: bool = False  # `--freeze backbone`
    verbose: int = 0

    @property
    def recipe(self) -> Recipe:
        """How every network method trains, whichever it is."""
        return Recipe(self.options.finetune_epochs, self.options.learning_rate, self.patience,
                      self.lr_patience, weight_decay=self.options.weight_decay)

    def epochs(self, method: str) -> int:
        """Every epoch `method` trains: its head-only ones first, if any, then the rest."""
        head = self.options.head_epochs if self.head_first(method) else 0
        return head + self.options.finetune_epochs

    def steps_per_epoch(self, method: str, fit_size: int) -> int:
        """Optimizer steps in each of `method`'s epochs, so that every network method takes the
        same number of steps on the same labels: `finetune_steps`, or `finetune_epochs` passes
        over the labels when those are more, shared out over all of its epochs. With
        `finetune_steps` 0 an epoch is one pass over the labels, as before the budget existed."""
        passes = math.ceil(fit_size / self.batch_size)
        if self.options.finetune_steps == 0:
            return passes
        total = max(self.options.finetune_steps, self.options.finetune_epochs * passes)
        return math.ceil(total / self.epochs(method))

    def frozen(self, method: str) -> bool:
        """`--freeze backbone` holds only the backbones the pretext trained; scratch always
        trains."""
        return self.freeze_backbone and method in FROM_PRETEXT

    def cut_for(self, method: str) -> str:
        """The layer `method`'s backbone is cut at: SHALLOW_CUT for the shallow from-scratch
        baseline, `cut` for every other network."""
        return SHALLOW_CUT if method == SCRATCH_SHALLOW else self.options.cut

    def head_first(self, method: str) -> bool:
        """Whether `method` trains its head alone before every layer: only the SSL fine-tunes,
        and only when their backbone will train afterwards. From scratch there is nothing to
        keep, and a head fitted to random features first measured worse."""
        return (self.options.head_epochs > 0 and method in FROM_PRETEXT
                and not self.frozen(method))

    def batchnorm_frozen(self, method: str) -> bool:
        """Whether `method`'s BatchNorm layers keep their statistics, scale and shift while the
        backbone trains: only the SSL fine-tunes', whose statistics the pretext estimated on
        thousands of images. A random-init network has no statistics worth keeping."""
        frozen = self.options.finetune_batchnorm is FinetuneBatchNorm.frozen
        return frozen and method in FROM_PRETEXT and not self.frozen(method)


@dataclass(frozen=True)
class MethodResult:
    """A method's test accuracy, and for network methods how the training went."""

    method: str
    test: Rate  # correct test predictions, with the 95 % interval
    stage: StageResult | None = None
    model: keras.Model | None = None
    collapsed: bool = False  # predicted one class for every test image
    predicted: np.ndarray | None = None  # int [N]: the class predicted for each test image
    choice: str | None = None  # what a probe chose on the labelled images (block, thumbnail)
    seconds: float | None = None  # wall time of the whole method, set by `measure`


def scored(method: str, predicted: np.ndarray, data: Labelled, stage: StageResult | None = None,
           model: keras.Model | None = None) -> MethodResult:
    """`predicted`'s test accuracy, flagged `collapsed` when it is one class for every test
    image: a network that did not learn, or a probe whose features do not separate the classes,
    is a failure to report, not an accuracy."""
    test_y = data.test[1]
    collapsed = data.num_classes > 1 and len(np.unique(predicted)) == 1
    return MethodResult(method, Rate.of(predicted == test_y), stage, model, collapsed,
                        np.asarray(predicted))


def fit_arrays(data: Labelled) -> tuple[np.ndarray, np.ndarray]:
    """The fit split's pixels and labels as arrays, in the dataset's order."""
    batches = [(x.numpy(), y.numpy()) for x, y in data.fit.batch(512)]
    return (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))


def labelled_probe_data(data: Labelled) -> tuple[np.ndarray, np.ndarray]:
    """All labelled training pixels (fit + selection) for the probes, which pick their own
    regularisation by leave-one-out and so need no selection split."""
    pixels, labels = fit_arrays(data)
    if data.selection is not None:
        pixels = np.concatenate([pixels, data.selection[0]])
        labels = np.concatenate([labels, data.selection[1]])
    return pixels, labels


def colour_floor(data: Labelled) -> MethodResult:
    pixels, labels = labelled_probe_data(data)
    predicted = probe.linear_probe(probe.colour_histogram(pixels), labels,
                                   probe.colour_histogram(data.test[0]))
    return scored(COLOUR, predicted, data)


def tiny_images(data: Labelled) -> MethodResult:
    """A ridge probe on the raw pixels of thumbnails, at the size (probe.TINY_SIDES) that a
    cross-validation on the labelled images prefers: the cheapest learned feature."""
    pixels, labels = labelled_probe_data(data)
    side = probe.best_thumbnail_side(pixels, labels)
    predicted = probe.linear_probe(probe.thumbnails(pixels, side), labels,
                                   probe.thumbnails(data.test[0], side))
    return replace(scored(TINY_IMAGES, predicted, data), choice=f"{side}x{side}")


def probe_backbone(method: str, model: keras.Model, cut: str, data: Labelled) -> MethodResult:
    """A ridge probe on the frozen, pooled features of `model`'s backbone at the block, up to
    `cut`, that a cross-validation on the labelled images prefers. The pretext's and the
    random-init network's probes each choose their own block: the control gets the same
    search as the method it controls, and middle blocks often suit few labels better."""
    pixels, labels = labelled_probe_data(data)
    blocks = CUT_LAYERS[:CUT_LAYERS.index(cut) + 1]
    features = probe.pooled_features(model, blocks, pixels)
    block = probe.best_features(features, labels)
    test_x = probe.extract(probe.feature_extractor(model, block), data.test[0])
    return replace(scored(method, probe.linear_probe(features[block], labels, test_x), data),
                   choice=block)


def random_init_network(spec: ModelSpec, seed: int) -> keras.Model:
    """The pretext architecture at random initialisation (seeded), never with loaded weights."""
    keras.utils.set_random_seed(seed)
    return build_model(replace(spec, load_weights=False), 4, "random_init")


def train_network(method: str, source: keras.Model, data: Labelled, settings: FitSettings,
                  history_path: Path, checkpoint_dir: Path,
                  extra_callbacks: Sequence[keras.callbacks.Callback] = (),
                  resumable: bool = True) -> MethodResult:
    """Fit a classifier cut from a copy of `source` (the pretext network, or a random-init one
    for the from-scratch baseline) and measure it on the test images; `source` is not changed.
    `resumable`: back up after every epoch so that an interrupted fit goes on (see fit_stage)."""
    keras.utils.set_random_seed(settings.seed)
    recipe = settings.recipe
    network = copy_model(source)
    model = build_classifier(network, settings.cut_for(method), data.num_classes,
                             freeze_backbone=settings.frozen(method))
    train = pipeline.labelled_train_dataset(data.fit, settings.batch_size, settings.seed,
                                            data.fit_size)
    steps = settings.steps_per_epoch(method, data.fit_size)
    selection = (pipeline.labelled_eval_dataset(*data.selection, settings.batch_size)
                 if data.selection is not None else None)
    if settings.head_first(method):
        # A random head's first gradients would go through the backbone and overwrite what
        # the pretext learned; a head fitted first leaves the backbone a gentler start (LP-FT).
        backbone = model.get_layer(BACKBONE_NAME)
        backbone.trainable = False  # and its BatchNorm in inference mode (Keras 3)
        head = replace(recipe, epochs=settings.options.head_epochs,
                       learning_rate=recipe.learning_rate * HEAD_LR_FACTOR)
        fit_stage(model, train, None, head,
                  Checkpoints(checkpoint_dir / "head", resumable=resumable),
                  samples_per_batch=settings.batch_size, steps_per_epoch=steps,
                  extra_callbacks=extra_callbacks)
        backbone.trainable = True
    if settings.batchnorm_frozen(method):
        # Batch statistics of a few labelled images are noisy and pull the layers away from
        # what the pretext saw; trainable=False keeps a Keras 3 BatchNorm in inference mode.
        for layer in model.get_layer(BACKBONE_NAME).layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    fitted: keras.Model = model
    fit_pixels, _ = fit_arrays(data)
    if method in WITH_ROTATION:
        # S4L: from here on every step adds the rotation loss on the task's images.
        pool = (fit_pixels if data.unlabelled is None or not len(data.unlabelled)
                else np.concatenate([fit_pixels, data.unlabelled]))
        fitted = joint.JointRotation(model, joint.rotation_model(network, model),
                                     pseudo_labels=settings.options.pseudo_labels)
        train = joint.joint_dataset(train, pool, settings.batch_size, settings.seed)
    stage = fit_stage(
        fitted, train, selection, recipe,
        Checkpoints(checkpoint_dir, history_path, resumable=resumable),
        samples_per_batch=settings.batch_size, steps_per_epoch=steps, verbose=settings.verbose,
        extra_callbacks=extra_callbacks)
    # Shuffled so that every batch mixes the classes, as the training batches did.
    fit_pixels = fit_pixels[np.random.default_rng(settings.seed).permutation(len(fit_pixels))]
    recompute_batchnorm_statistics(model, fit_pixels, settings.batch_size)
    # One class for every test image is a network that did not learn (or BatchNorm statistics
    # that do not match its weights).
    return scored(method, predict_classes(model, data.test[0]), data, stage=stage, model=model)


def predict_classes(model: keras.Model, pixels: np.ndarray) -> np.ndarray:
    """Class indices for uint8 `[N, S, S, 3]`, in inference mode."""
    return predict(model, pixels).argmax(1)


def measure(method: str, pretext: keras.Model, spec: ModelSpec, data: Labelled,
            settings: FitSettings, history_path: Path, checkpoint_dir: Path,
            extra_callbacks: Sequence[keras.callbacks.Callback] = (),
            resumable: bool = True) -> MethodResult:
    """`method` on `data`: the SSL methods start from `pretext`, the baselines from a random
    initialisation of `spec` (seeded). A network method trains with `train_network`. The result
    carries its wall time: a study's time is spent unevenly, and the user sees where."""
    start = time.perf_counter()
    result = _measure(method, pretext, spec, data, settings, history_path, checkpoint_dir,
                      extra_callbacks, resumable)
    return replace(result, seconds=round(time.perf_counter() - start, 1))


def _measure(method: str, pretext: keras.Model, spec: ModelSpec, data: Labelled,
             settings: FitSettings, history_path: Path, checkpoint_dir: Path,
             extra_callbacks: Sequence[keras.callbacks.Callback],
             resumable: bool) -> MethodResult:
    if method == COLOUR:
        return colour_floor(data)
    if method == SSL_PROBE:
        return probe_backbone(method, pretext, settings.options.cut, data)
    if method == RANDOM_PROBE:
        return probe_backbone(method, random_init_network(spec, settings.seed + 1),
                              settings.options.cut, data)
    if method == TINY_IMAGES:
        return tiny_images(data)
    source = (pretext if method in FROM_PRETEXT
              else random_init_network(spec, settings.seed + 1))
    return train_network(method, source, data, settings, history_path, checkpoint_dir,
                         extra_callbacks, resumable)


def run_in_memory(methods: Sequence[str], pretext: keras.Model, spec: ModelSpec,
                  data: Labelled, settings: FitSettings) -> dict[str, MethodResult]:
    """Every method of `methods` on `data`, for a study cell: nothing is written to disk but
    Keras' own scratch files, in a temporary folder. A study redoes an interrupted cell whole,
    so no network backs up after each epoch."""
    results: dict[str, MethodResult] = {}
    scratch_dir = Path(tempfile.mkdtemp(prefix="edge-ssl-cell-"))
    try:
        for method in methods:
            result = measure(method, pretext, spec, data, settings,
                             scratch_dir / f"{method}.csv", scratch_dir / method,
                             resumable=False)
            results[method] = replace(result, model=None)
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)
    return results
