"""`edge-ssl train` as a library call: the pretext, then the fine-tune and its baselines.

A stage is complete once its .keras file exists (written atomically); `--resume` skips complete
stages and lets Keras' BackupAndRestore continue the interrupted one from its last epoch. The
probes and the colour floor take seconds and are recomputed when missing from report.json.
"""

from __future__ import annotations

import contextlib
import json
import platform
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TextIO

import keras
import numpy as np
import tensorflow as tf

from edge_ssl import __version__
from edge_ssl import contract as C
from edge_ssl.atomic import write_json, write_with
from edge_ssl.console import console, err_console
from edge_ssl.errors import TrainingError
from edge_ssl.images import INTERPOLATION
from edge_ssl.stats import Rate
from edge_ssl.train import distribute, methods, pipeline, plots, step_memory
from edge_ssl.train import method_names as names
from edge_ssl.train.config import (
    DEFAULT_BN_MOMENTUM_RANDOM,
    MIN_SELECTION_PER_CLASS,
    FinetuneBatchNorm,
    Freeze,
    PretextLR,
    Schedule,
    TrainConfig,
)
from edge_ssl.train.cuts import CUT_LAYERS
from edge_ssl.train.model import ModelSpec, build_model, load_model
from edge_ssl.train.monitor import KnnMonitor
from edge_ssl.train.sources import ImageSet, Source, load_source, split_pretext, split_selection
from edge_ssl.train.stages import StageResult, finish_stage, fit_stage

CALIBRATION_IMAGES = 256  # training images kept in heldout.npz for INT8 calibration
GATE_IMAGES = 1000  # other training images on which export decides INT8/FP16 (never test images)
# Held-out pretext images decoded to validate the pretext and kept for export: enough for a
# ±1-point interval (8,000 rotated samples), and bounded however big the folder is.
MAX_HELDOUT_PRETEXT = 2000
CACHE_DIR = "cache"  # RUN/cache: the chief's decoded-image cache on disk, while the pretext trains
MONITOR_IMAGES = 1000  # labelled images the pretext's kNN monitor measures each epoch
MODEL_FILES = {names.SSL_FINETUNE: C.CLASSIFIER_MODEL, names.SCRATCH: C.BASELINE_MODEL,
               names.SCRATCH_SHALLOW: C.BASELINE_SHALLOW_MODEL}
HISTORY_FILES = {names.SSL_FINETUNE: C.HISTORY_FINETUNE, names.SCRATCH: C.HISTORY_BASELINE,
                 names.SCRATCH_SHALLOW: C.HISTORY_BASELINE_SHALLOW}
TEST_SETS = {"tiny-imagenet": "Tiny ImageNet val/ (the official validation images)",
             "folder": "the held-out 20 % of each class folder",
             "demo": "separately drawn demo scenes"}


def device_description() -> str:
    """What TensorFlow trains on: the GPU when it sees one, else the CPU's model name."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"GPU ({', '.join(g.name for g in gpus)})"
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in
             (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
             if line.startswith("model name")]
    return f"CPU ({names[0] if names else platform.processor() or platform.machine()})"


def model_spec(config: TrainConfig) -> ModelSpec:
    return ModelSpec(config.image_size, config.width, config.effective_bn_momentum,
                     config.backbone_weights, top=config.pretext_top)


def scratch_spec(config: TrainConfig) -> ModelSpec:
    """The from-scratch baseline's network: the run's architecture and preprocessing, never
    loaded weights, and the random-init BatchNorm momentum unless one was given."""
    return replace(model_spec(config), load_weights=False,
                   bn_momentum=config.bn_momentum or DEFAULT_BN_MOMENTUM_RANDOM)


def tensorboard_callbacks(config: TrainConfig, run: Path,
                          stage: str) -> list[keras.callbacks.Callback]:
    """Keras' own TensorBoard logger for one stage, into RUN/tensorboard/<stage>/, when asked."""
    if not config.tensorboard:
        return []
    return [keras.callbacks.TensorBoard(str(run / C.TENSORBOARD_DIR / stage))]


def keras_verbosity(stream: TextIO) -> int:
    """Keras' per-batch progress bar on a terminal; one line per epoch in a pipe or a log."""
    return 1 if stream.isatty() else 2


def resolve_schedule(config: TrainConfig, labels: np.ndarray) -> Schedule:
    """`auto` → early stopping when every class gives the selection split at least
    MIN_SELECTION_PER_CLASS images, else a fixed schedule that trains on every label."""
    if config.schedule is not Schedule.auto:
        return config.schedule
    smallest = int(np.bincount(labels).min()) if len(labels) else 0
    enough = round(smallest * config.selection_fraction) >= MIN_SELECTION_PER_CLASS
    return Schedule.early_stopping if enough else Schedule.fixed


def fit_settings(config: TrainConfig, verbose: int) -> methods.FitSettings:
    return methods.FitSettings(
        cut=config.cut, epochs=config.finetune_epochs, learning_rate=config.learning_rate,
        patience=config.patience, lr_patience=config.lr_patience, batch_size=config.batch_size,
        freeze_backbone=config.freeze is Freeze.backbone, seed=config.seed, verbose=verbose,
        head_epochs=config.head_epochs,
        freeze_batchnorm=config.finetune_batchnorm is FinetuneBatchNorm.frozen)


def train(config: TrainConfig, run: Path, *, source: Source | None = None, resume: bool = False,
          extra_callbacks: list[keras.callbacks.Callback] | None = None,
          cluster: distribute.Cluster | None = None) -> dict[str, Any]:
    """Run (or continue) both stages into `run`; returns the report also saved as report.json.

    The pretext trains under `cluster`'s strategy (default: one device). Only the chief writes
    `run`; another worker of a multi-worker job trains its share of the pretext, reads the
    chief's checkpoints to resume, and leaves when the pretext is done.

    The fine-tune and its baselines always train on the chief's first device, with the batch
    and learning rate of the options: they see only the labelled images (tens to thousands),
    where a global batch of 32 × replicas would leave a few steps per epoch, and the methods
    are compared with each other under one training recipe whatever the machine.
    """
    start = time.perf_counter()
    cluster = cluster or distribute.single_device()
    # Skipping unreadable files leaves a file-based dataset's length unknown until its first
    # pass; Keras then reports each epoch's end as "input ran out of data", which is expected.
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    # A run stopped before one full pass (one short epoch, early stopping) leaves tf.data's
    # cache unfinished; tf.data drops it and says so, which is expected too.
    warnings.filterwarnings("ignore", message=".*did not fully read the dataset being cached")
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy("mixed_float16" if config.mixed_precision
                                            else "float32")
    source = source or load_source(config)
    for note in source.notes:
        console.print(f"[dim]{note}[/]")
    skipped = pipeline.SkippedFiles()
    verbosity = keras_verbosity(sys.stdout)
    pretext_train: ImageSet | None = None
    heldout_px: np.ndarray | None = None
    if config.pretext_from is None and not (run / C.PRETEXT_MODEL).exists():
        pretext_train, pretext_val = split_pretext(source.pretext, config.seed)
        heldout_px, _ = pipeline.decode_eagerly(
            pretext_val.take(range(min(len(pretext_val), MAX_HELDOUT_PRETEXT))),
            config.image_size, skipped, "pretext held-out")
    if not cluster.is_chief:
        return _worker_pretext(config, run, source, pretext_train, heldout_px, skipped,
                               cluster, verbosity, extra_callbacks or [])

    size = config.image_size
    schedule = resolve_schedule(config, np.asarray(source.train.labels))
    fit_set, selection_set = (split_selection(source.train, config.selection_fraction,
                                              config.seed)
                              if schedule is Schedule.early_stopping else (source.train, None))
    test_px, test_y = _decode_labelled(source.test, size, skipped, "test")
    selection = (_decode_labelled(selection_set, size, skipped, "selection")
                 if selection_set is not None else None)
    report_path = run / C.REPORT_FILE
    report = json.loads(report_path.read_text()) if resume and report_path.exists() else {}
    if not resume:
        _write_config(run, config, source, cluster, pretext_train)
        _write_heldout(run, config, source, heldout_px, test_px, test_y, skipped)
    report.update(name=run.name, data=source.summary(), device=device_description(),
                  complete=False, protocol={
                      "test_images": len(test_y), "test_set": TEST_SETS[source.kind],
                      "schedule": schedule.value,
                      "fit_images": len(fit_set),
                      "selection_images": len(selection[1]) if selection else 0,
                      "cut": config.cut,
                      "head_epochs": config.head_epochs,
                      "finetune_batchnorm": config.finetune_batchnorm.value,
                      "rule": "test images are measured once at the end; early stopping, the "
                              "learning-rate schedule and best-epoch restore see only the "
                              "selection split (or nothing, with a fixed schedule)"})
    _note_memory(report)

    if pretext_train is None or heldout_px is None:
        pretext = _reuse_pretext(config, run, report)
    else:
        pretext = _pretext_stage(config, run, source, pretext_train, heldout_px, report,
                                 skipped, cluster, verbosity, extra_callbacks)
    if cluster.name is not distribute.StrategyName.default:
        # The fine-tune trains on one device: a fresh copy of the pretext, whose variables are
        # plain ones rather than the strategy's mirrored ones.
        pretext = load_model(run / C.PRETEXT_MODEL)

    data = methods.Labelled(
        fit=pipeline.image_dataset(fit_set, size, skipped), fit_size=len(fit_set),
        selection=selection, test=(test_px, test_y), num_classes=len(source.labels))
    wanted = [names.SSL_FINETUNE] + ([m for m in names.METHODS if m != names.SSL_FINETUNE]
                                     if config.baseline else [])
    settings = fit_settings(config, verbosity)
    results = report.setdefault("methods", {})
    console.print(f"[bold]Stage 2: fine-tune[/] on {len(fit_set)} labelled images of "
                  f"{len(source.labels)} classes ({schedule.value} schedule"
                  + (f", {len(selection[1])} selection images" if selection else "")
                  + (f", the SSL fine-tune after {config.head_epochs} head-only epochs"
                     if settings.head_first(names.SSL_FINETUNE) else "")
                  + (", its BatchNorm frozen" if settings.batchnorm_frozen(names.SSL_FINETUNE)
                     else "")
                  + f"), tested on {len(test_y)} images")
    for method in wanted:
        if method in results and (method not in MODEL_FILES
                                  or (run / MODEL_FILES[method]).exists()):
            console.print(f"{names.TITLES[method]}: already done")
            continue
        result = _run_method(method, pretext, config, run, data, settings, extra_callbacks)
        results[method] = _result_json(result)
        _note_memory(report)
        write_json(report_path, report)
        _print_result(result)

    plots.save_curves({name: plots.read_history(run / f) for name, f in (
        ("pretext", C.HISTORY_PRETEXT), ("fine-tune", C.HISTORY_FINETUNE),
        ("from scratch", C.HISTORY_BASELINE),
        ("from scratch, shallow", C.HISTORY_BASELINE_SHALLOW))}, run / C.CURVES_PNG)
    if config.baseline:
        plots.save_methods(results, names.TITLES, report["protocol"]["test_set"],
                           run / C.METHODS_PNG)
    report["skipped_files"] = report.get("skipped_files", []) + skipped.messages
    report["wall_seconds"] = round(report.get("wall_seconds", 0.0)
                                   + time.perf_counter() - start, 1)
    report["complete"] = True
    _note_memory(report)
    write_json(report_path, report)
    if (run / C.CHECKPOINTS_DIR).exists() and not any((run / C.CHECKPOINTS_DIR).iterdir()):
        (run / C.CHECKPOINTS_DIR).rmdir()
    return report


def _note_memory(report: dict[str, Any]) -> None:
    """report["peak_rss_mb"]: the most resident memory any session of this run has used."""
    peak = peak_rss_mb()
    if peak is not None:
        report["peak_rss_mb"] = max(peak, report.get("peak_rss_mb", 0.0))


def peak_rss_mb() -> float | None:
    """This process's peak resident set size in MB (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6, 1)


def _decode_labelled(images: ImageSet, size: int, skipped: pipeline.SkippedFiles,
                     what: str) -> tuple[np.ndarray, np.ndarray]:
    pixels, labels = pipeline.decode_eagerly(images, size, skipped, what)
    if labels is None:
        raise TypeError(f"the {what} images carry no labels")
    return pixels, labels


def _write_heldout(run: Path, config: TrainConfig, source: Source,
                   heldout_px: np.ndarray | None, test_px: np.ndarray, test_y: np.ndarray,
                   skipped: pipeline.SkippedFiles) -> None:
    """heldout.npz: what export needs to verify and calibrate without the data folder."""
    size = config.image_size
    if heldout_px is None:  # --pretext-from: that run's held-out pretext images
        with np.load(config.pretext_from / C.HELDOUT_FILE) as earlier:  # type: ignore[operator]
            heldout_px = earlier[C.HELDOUT_PRETEXT_IMAGES]
    order = np.random.default_rng(config.seed).permutation(len(source.train))
    calibration_px, _ = pipeline.decode_eagerly(
        source.train.take(order[:CALIBRATION_IMAGES]), size, skipped, "calibration")
    # With fewer training images than both need, the gate reuses calibration images: weaker
    # evidence, but still never the test images.
    gate = order[CALIBRATION_IMAGES:CALIBRATION_IMAGES + GATE_IMAGES]
    gate_px, gate_y = _decode_labelled(source.train.take(gate if len(gate) else order),
                                       size, skipped, "gate")
    write_with(run / C.HELDOUT_FILE, lambda tmp: np.savez_compressed(tmp, **{
        C.HELDOUT_CLASSIFIER_IMAGES: test_px, C.HELDOUT_CLASSIFIER_LABELS: test_y,
        C.HELDOUT_GATE_IMAGES: gate_px, C.HELDOUT_GATE_LABELS: gate_y,
        C.HELDOUT_PRETEXT_IMAGES: heldout_px[:MAX_HELDOUT_PRETEXT],
        C.HELDOUT_CALIBRATION_IMAGES: calibration_px}))


def _reuse_pretext(config: TrainConfig, run: Path, report: dict[str, Any]) -> keras.Model:
    """The rotation model this run trained already, or the one of the run that
    `edge-ssl finetune` starts from (`config.pretext_from`)."""
    pretext_path = run / C.PRETEXT_MODEL
    if config.pretext_from is not None and not pretext_path.exists():
        write_with(pretext_path, lambda tmp: shutil.copyfile(
            config.pretext_from / C.PRETEXT_MODEL, tmp))  # type: ignore[operator]
        earlier = json.loads((config.pretext_from / C.REPORT_FILE).read_text())
        report["pretext"] = {**earlier.get("pretext", {}), "from_run": str(config.pretext_from)}
    origin = f"from {config.pretext_from}" if config.pretext_from else "already trained"
    console.print(f"pretext: {origin}, loaded {pretext_path}")
    return load_model(pretext_path)


def _pretext_stage(config: TrainConfig, run: Path, source: Source, pretext_train: ImageSet,
                   heldout_px: np.ndarray, report: dict[str, Any],
                   skipped: pipeline.SkippedFiles, cluster: distribute.Cluster, verbosity: int,
                   extra_callbacks: list[keras.callbacks.Callback] | None) -> keras.Model:
    """The chief's side of the pretext: train it, measure it, save it."""
    if not (run / C.SAMPLES_PNG).exists():
        sample_x, sample_y = pipeline.pretext_samples(
            pipeline.decode_eagerly(pretext_train.take(range(min(len(pretext_train), 64))),
                                    config.image_size, skipped, "pretext samples")[0],
            config.batch_size, config.rotations, config.seed)
        plots.save_pretext_samples(sample_x, sample_y, run / C.SAMPLES_PNG)
    monitor_set = source.train.take(np.random.default_rng(config.seed + 3).permutation(
        len(source.train))[:MONITOR_IMAGES])
    monitor_px, monitor_y = _decode_labelled(monitor_set, config.image_size, skipped, "monitor")
    console.print(f"[bold]Stage 1: rotation pretext[/] on {len(pretext_train)} images "
                  f"({config.rotations.value} rotations), {len(heldout_px)} held out; "
                  f"kNN monitor on {len(monitor_y)} labelled images")
    monitor = KnnMonitor(monitor_px, monitor_y, config.cut)
    pretext, stage, extra = _fit_pretext(
        config, run, pretext_train, heldout_px, skipped, cluster, verbosity,
        checkpoint_dir=run / C.CHECKPOINTS_DIR / "pretext", history_path=run / C.HISTORY_PRETEXT,
        monitors=[monitor], extra_callbacks=[
            *(extra_callbacks or []), *tensorboard_callbacks(config, run, "pretext")])
    pretext_path = run / C.PRETEXT_MODEL
    rotation = rotation_rate(pretext, heldout_px)
    write_with(pretext_path, pretext.save)
    cluster.barrier()  # the other workers leave only once the model is safely on disk
    top = config.pretext_top or CUT_LAYERS[-1]
    report["pretext"] = {"heldout_rotation": rotation.to_json(),
                         "knn_accuracy": round(monitor.measure(), 4), "backbone_ends_at": top,
                         **_stage_json(stage), **extra}
    _note_memory(report)
    write_json(run / C.REPORT_FILE, report)
    finish_stage(run / C.CHECKPOINTS_DIR / "pretext")
    console.print(f"pretext: held-out rotation accuracy {rotation} "
                  f"({stage.epochs_run} epochs of MobileNetV2 up to {top}, "
                  f"{stage.images_per_second:.0f} images/s on "
                  f"{cluster.replicas} replica{'s' if cluster.replicas > 1 else ''})")
    _raise_if_diverged("pretext", stage.diverged, stage.best_epoch, pretext_path)
    return pretext


def rotation_rate(model: keras.Model, pixels: np.ndarray, chunk: int = 256) -> Rate:
    """Held-out rotation accuracy: every image of uint8 `[N, S, S, 3]` at all four rotations.

    Rotated `chunk` images at a time: four rotated copies of all of them at once would be four
    times their memory (1.2 GB for 2,000 images at 224 px).
    """
    hits = []
    for start in range(0, len(pixels), chunk):
        rotated, rotations = pipeline.rotate_all(tf.constant(pixels[start:start + chunk]))
        hits.append(methods.predict_classes(model, rotated.numpy()) == rotations.numpy())
    return Rate.of(np.concatenate(hits))


def _worker_pretext(config: TrainConfig, run: Path, source: Source,
                    pretext_train: ImageSet | None, heldout_px: np.ndarray | None,
                    skipped: pipeline.SkippedFiles, cluster: distribute.Cluster, verbosity: int,
                    extra_callbacks: list[keras.callbacks.Callback]) -> dict[str, Any]:
    """A worker that is not the chief: its share of the pretext, written nowhere but a
    temporary folder (its own backups); it resumes from the chief's."""
    if pretext_train is None or heldout_px is None:
        console.print(f"{cluster.task}: the pretext is trained; the chief does the rest.")
        return {"task": cluster.task, "pretext": "done"}
    with tempfile.TemporaryDirectory(prefix="edge-ssl-worker-") as scratch:
        console.print(f"{cluster.task}: training the pretext with the chief "
                      f"({cluster.replicas} replicas over {cluster.workers} workers)")
        _, stage, extra = _fit_pretext(
            config, run, pretext_train, heldout_px, skipped, cluster, verbosity,
            checkpoint_dir=Path(scratch) / "pretext", history_path=None,
            restore_from=run / C.CHECKPOINTS_DIR / "pretext", extra_callbacks=extra_callbacks)
        cluster.barrier()  # wait until the chief has saved the model
    console.print(f"{cluster.task}: pretext done; the chief fine-tunes and writes the run "
                  "directory.")
    return {"task": cluster.task, "pretext": _stage_json(stage), **extra}


def _fit_pretext(config: TrainConfig, run: Path, pretext_train: ImageSet,
                 heldout_px: np.ndarray, skipped: pipeline.SkippedFiles,
                 cluster: distribute.Cluster, verbosity: int, *, checkpoint_dir: Path,
                 history_path: Path | None, restore_from: Path | None = None,
                 monitors: list[keras.callbacks.Callback] | None = None,
                 extra_callbacks: list[keras.callbacks.Callback]
                 ) -> tuple[keras.Model, StageResult, dict[str, Any]]:
    """Build and fit the rotation model under the cluster's strategy, every worker alike.

    Returns the model, how the fit went, and what the report records about the input
    pipeline and the distribution (cache, shuffle buffer, scaling).
    """
    scaling = distribute.Scaling(config.batch_size, cluster.replicas, config.learning_rate)
    with contextlib.ExitStack() as stack:
        cache_dirs, cache = _pretext_cache(config, run, cluster, len(pretext_train), stack)
        try:
            with cluster.scope():
                pretext = build_model(model_spec(config), len(C.ROTATION_LABELS), "pretext")
                plan = step_memory.plan_steps(config, pretext, len(cluster.devices))
                _print_step_plan(plan)
                source = pipeline.PretextInput(
                    pretext_train, config.image_size, config.batch_size, config.rotations,
                    config.seed, cluster.replicas, skipped, cache_dirs, plan.accumulation)
                steps, updates = source.steps_per_epoch, source.updates_per_epoch
                warmup_steps = scaling.warmup_steps(updates)
                train_ds = cluster.strategy.distribute_datasets_from_function(source.dataset)
                stage = fit_stage(
                    pretext, train_ds, pipeline.pretext_eval_dataset(heldout_px,
                                                                     config.batch_size),
                    epochs=config.pretext_epochs, learning_rate=scaling.learning_rate,
                    patience=config.patience, lr_patience=config.lr_patience,
                    samples_per_batch=source.samples_per_step, history_path=history_path,
                    checkpoint_dir=checkpoint_dir, verbose=verbosity, monitors=monitors or [],
                    extra_callbacks=extra_callbacks, steps_per_epoch=steps,
                    warmup=(config.learning_rate, warmup_steps) if warmup_steps else None,
                    restore_from=restore_from, accumulation=plan.accumulation,
                    cosine=config.pretext_lr is PretextLR.cosine)
        except tf.errors.OpError as exc:
            if cluster.workers > 1:
                distribute.raise_worker_failure(exc, f"`edge-ssl train --resume {run}`")
            raise
    extra = {"input": {**cache, "shuffle_buffer_images": pipeline.shuffle_buffer(
                 -(-len(pretext_train) // cluster.workers), config.image_size),
                       "steps_per_epoch": updates},
             "distribution": {**cluster.describe(), **scaling.to_json(updates)},
             "step": plan.to_json()}
    return pretext, stage, extra


def _print_step_plan(plan: step_memory.StepPlan) -> None:
    if plan.accumulation == 1 and plan.step_bytes <= plan.budget_bytes:
        return
    sizes = (f"{plan.step_bytes / 1e6:,.0f} MB of activations a step, "
             f"--step-memory-gb {plan.budget_bytes / 1e9:g}")
    if plan.step_bytes > plan.budget_bytes:
        err_console.print(f"[yellow]warning:[/] even micro-batches of {plan.micro_batch} samples "
                          f"take {sizes}; lower --image-size or --width if memory runs out.")
    if plan.accumulation > 1:
        console.print(f"each batch of {plan.batch} trains as {plan.accumulation} micro-batches of "
                      f"{plan.micro_batch} with accumulated gradients ({sizes})")


def _pretext_cache(config: TrainConfig, run: Path, cluster: distribute.Cluster,
                   num_images: int, stack: contextlib.ExitStack
                   ) -> tuple[Callable[[int], Path | None], dict[str, Any]]:
    """Where this worker caches its decoded pretext images: memory when they fit
    --memory-cache-gb and no --cache-dir is given, else files that live as long as the stage.

    Files go to --cache-dir, else RUN/cache on the chief and the temporary folder on other
    workers (which never write the run directory). A killed run's leftovers are cleared first.
    """
    share = -(-num_images // cluster.workers)
    decoded = share * pipeline.image_bytes(config.image_size)
    budget = int(config.memory_cache_gb * 1e9)
    if config.cache_dir is None and decoded <= budget:
        return (lambda _: None), {"cache": "memory", "decoded_mb": round(decoded / 1e6, 1),
                                  "memory_cache_budget_mb": round(budget / 1e6, 1)}
    default_root = (run / CACHE_DIR if cluster.is_chief
                    else Path(tempfile.gettempdir()) / "edge-ssl-cache")
    root = config.cache_dir or default_root
    folder = root / f"{run.name}-{cluster.task.replace(' ', '-')}"
    shutil.rmtree(folder, ignore_errors=True)

    def remove() -> None:
        shutil.rmtree(folder, ignore_errors=True)
        if root == default_root and root.is_dir() and not any(root.iterdir()):
            root.rmdir()

    stack.callback(remove)
    console.print(f"decoded pretext images ({decoded / 1e9:.1f} GB) are cached on disk in "
                  f"{folder} while the pretext trains")
    return (lambda pipe: folder / f"pipeline-{pipe}"), {
        "cache": "disk", "cache_dir": str(folder), "decoded_mb": round(decoded / 1e6, 1),
        "memory_cache_budget_mb": round(budget / 1e6, 1)}


def _run_method(method: str, pretext: keras.Model, config: TrainConfig, run: Path,
                data: methods.Labelled, settings: methods.FitSettings,
                extra_callbacks: list[keras.callbacks.Callback] | None) -> methods.MethodResult:
    if method == names.COLOUR:
        return methods.colour_floor(data)
    if method == names.SSL_PROBE:
        return methods.probe_backbone(method, pretext, config.cut, data)
    random_init = methods.random_init_network(scratch_spec(config), config.seed + 1)
    if method == names.RANDOM_PROBE:
        return methods.probe_backbone(method, random_init, config.cut, data)
    result = methods.train_network(
        method, pretext if method == names.SSL_FINETUNE else random_init, data, settings,
        run / HISTORY_FILES[method], run / C.CHECKPOINTS_DIR / method,
        [*(extra_callbacks or []), *tensorboard_callbacks(config, run, method)])
    assert result.model is not None and result.stage is not None  # network methods have both
    write_with(run / MODEL_FILES[method], result.model.save)
    finish_stage(run / C.CHECKPOINTS_DIR / method)
    _raise_if_diverged(names.TITLES[method], result.stage.diverged, result.stage.best_epoch,
                       run / MODEL_FILES[method])
    return result


def _stage_json(stage: Any) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(stage).items()}


def _result_json(result: methods.MethodResult) -> dict[str, Any]:
    out: dict[str, Any] = {"title": names.TITLES[result.method],
                           "test": result.test.to_json(), "collapsed": result.collapsed}
    if result.stage is not None:
        out.update(_stage_json(result.stage))
    return out


def _print_result(result: methods.MethodResult) -> None:
    title = names.TITLES[result.method]
    if result.collapsed:
        remedy = ("Try more --finetune-epochs or a lower --learning-rate." if result.stage
                  else "Its features do not separate the classes with these few labels; try "
                  "more --labels-per-class.")
        err_console.print(f"[yellow]warning:[/] {title} predicts one class for every test "
                          f"image: it did not learn, so its accuracy is not a result. {remedy}")
    extra = (f" ({result.stage.epochs_run} epochs, {result.stage.images_per_second:.0f} "
             "images/s)" if result.stage else "")
    console.print(f"{title}: test accuracy {result.test}{extra}")


def _raise_if_diverged(stage: str, diverged: bool, best_epoch: int, path: Path) -> None:
    if diverged:
        raise TrainingError(
            f"{stage}: the loss became NaN; training stopped and the weights of epoch "
            f"{best_epoch} were kept in {path}. Lower --learning-rate and start a new run.")


def _write_config(run: Path, config: TrainConfig, source: Source, cluster: distribute.Cluster,
                  pretext_train: ImageSet | None) -> None:
    spec = model_spec(config)
    scaling = distribute.Scaling(config.batch_size, cluster.replicas, config.learning_rate)
    steps = pipeline.steps_per_epoch(len(pretext_train) if pretext_train else 0,
                                     config.batch_size, config.rotations, cluster.replicas)
    write_json(run / C.CONFIG_FILE, {
        C.CONFIG_NAME: run.name,
        C.CONFIG_LABELS: list(source.labels),
        C.CONFIG_IMAGE_SIZE: config.image_size,
        C.CONFIG_RESCALE: spec.rescale,
        "interpolation": INTERPOLATION,
        "bn_momentum": spec.bn_momentum,
        "config": config.to_dict(),
        "versions": {"edge_ssl": __version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "device": device_description(),
        "mixed_precision": config.mixed_precision,
        "distribution": {
            **cluster.describe(),
            "pretext": {**scaling.to_json(steps), "steps_per_epoch": steps},
            "finetune": {"devices": 1, "batch": config.batch_size,
                         "learning_rate": config.learning_rate,
                         "why": "labelled sets are small; every method trains alike"}},
    })
