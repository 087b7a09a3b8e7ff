"""Stage 1, the rotation pretext: trained under the run's tf.distribute strategy, measured, saved.

Every worker of a multi-worker job trains it; only the chief measures it and writes the run
directory, while the others keep their backups in a temporary folder and resume from the
chief's. A run whose pretext is done (or a fine-tune of another run's) loads it instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from edge_ssl import contract as C
from edge_ssl.atomic import write_json, write_with
from edge_ssl.stats import Rate
from edge_ssl.train import distribute, methods, pipeline, plots, step_memory
from edge_ssl.train.artifacts import stage_json
from edge_ssl.train.config import PretextLR
from edge_ssl.train.cuts import CUT_LAYERS
from edge_ssl.train.environment import note_memory
from edge_ssl.train.model import build_model, load_model, model_spec
from edge_ssl.train.monitor import KnnMonitor
from edge_ssl.train.session import Session
from edge_ssl.train.sources import ImageSet, Source
from edge_ssl.train.stages import Checkpoints, Recipe, StageResult, finish_stage, fit_stage

log = logging.getLogger(__name__)

CACHE_DIR = "cache"  # RUN/cache: the chief's decoded-image cache on disk, while the pretext trains
MONITOR_IMAGES = 1000  # labelled images the pretext's kNN monitor measures each epoch
SAMPLE_IMAGES = 64  # pretext images drawn, augmented and rotated, in pretext_samples.png


def train_pretext(session: Session, source: Source, pretext_train: ImageSet,
                  heldout_px: np.ndarray, report: dict[str, Any]) -> keras.Model:
    """The chief's side of the pretext: train it, measure it, save it, record it in `report`."""
    config, run = session.config, session.run
    if not (run / C.SAMPLES_PNG).exists():
        first = pretext_train.take(range(min(len(pretext_train), SAMPLE_IMAGES)))
        sample_x, sample_y = pipeline.pretext_samples(
            session.decode(first, "pretext samples"), config.batch_size, config.rotations,
            config.seed)
        plots.save_pretext_samples(sample_x, sample_y, run / C.SAMPLES_PNG)
    monitor_set = source.train.take(np.random.default_rng(config.seed + 3).permutation(
        len(source.train))[:MONITOR_IMAGES])
    monitor_px, monitor_y = session.decode_labelled(monitor_set, "monitor")
    log.info("Stage 1: rotation pretext on %d images (%s rotations), %d held out; kNN monitor "
             "on %d labelled images", len(pretext_train), config.rotations.value,
             len(heldout_px), len(monitor_y))
    monitor = KnnMonitor(monitor_px, monitor_y, config.cut)
    checkpoints = Checkpoints(session.checkpoint_dir("pretext"), run / C.HISTORY_PRETEXT)
    pretext, stage, extra = _fit(session, pretext_train, heldout_px, checkpoints,
                                 monitors=[monitor])
    pretext_path = run / C.PRETEXT_MODEL
    rotation = rotation_rate(pretext, heldout_px)
    write_with(pretext_path, pretext.save)
    session.cluster.barrier()  # the other workers leave only once the model is safely on disk
    top = config.pretext_top or CUT_LAYERS[-1]
    report["pretext"] = {"heldout_rotation": rotation.to_json(),
                         "knn_accuracy": round(monitor.measure(), 4), "backbone_ends_at": top,
                         **stage_json(stage), **extra}
    note_memory(report)
    write_json(run / C.REPORT_FILE, report)
    finish_stage(checkpoints.folder)
    replicas = session.cluster.replicas
    log.info("pretext: held-out rotation accuracy %s (%d epochs of MobileNetV2 up to %s, %.0f "
             "images/s on %d replica%s)", rotation, stage.epochs_run, top,
             stage.images_per_second, replicas, "s" if replicas > 1 else "")
    stage.raise_if_diverged("pretext", pretext_path)
    return pretext


def train_worker_share(session: Session, pretext_train: ImageSet | None,
                       heldout_px: np.ndarray | None) -> dict[str, Any]:
    """A worker that is not the chief: its share of the pretext, written nowhere but a
    temporary folder (its own backups); it resumes from the chief's."""
    cluster = session.cluster
    if pretext_train is None or heldout_px is None:
        log.info("%s: the pretext is trained; the chief does the rest.", cluster.task)
        return {"task": cluster.task, "pretext": "done"}
    with tempfile.TemporaryDirectory(prefix="edge-ssl-worker-") as scratch:
        log.info("%s: training the pretext with the chief (%d replicas over %d workers)",
                 cluster.task, cluster.replicas, cluster.workers)
        checkpoints = Checkpoints(Path(scratch) / "pretext", history=None,
                                  restore_from=session.checkpoint_dir("pretext"))
        _, stage, extra = _fit(session, pretext_train, heldout_px, checkpoints, monitors=[])
        cluster.barrier()  # wait until the chief has saved the model
    log.info("%s: pretext done; the chief fine-tunes and writes the run directory.", cluster.task)
    return {"task": cluster.task, "pretext": stage_json(stage), **extra}


def load_pretext(session: Session, report: dict[str, Any]) -> keras.Model:
    """The rotation model this run trained already, or the one of the run that
    `edge-ssl finetune` starts from (`config.pretext_from`), copied into this run."""
    earlier, pretext_path = session.config.pretext_from, session.run / C.PRETEXT_MODEL
    if earlier is not None and not pretext_path.exists():
        write_with(pretext_path, lambda tmp: shutil.copyfile(earlier / C.PRETEXT_MODEL, tmp))
        earlier_report = (json.loads((earlier / C.REPORT_FILE).read_text())
                          if (earlier / C.REPORT_FILE).is_file() else {})
        report["pretext"] = {**earlier_report.get("pretext", {}), "from_run": str(earlier)}
    log.info("pretext: %s, loaded %s", f"from {earlier}" if earlier else "already trained",
             pretext_path)
    return load_model(pretext_path)


def rotation_rate(model: keras.Model, pixels: np.ndarray, chunk: int = 256) -> Rate:
    """Held-out rotation accuracy: every image of uint8 `[N, S, S, 3]` at all four rotations.

    Rotated `chunk` images at a time: four rotated copies of all of them at once would be four
    times their memory.
    """
    hits = []
    for start in range(0, len(pixels), chunk):
        rotated, rotations = pipeline.rotate_all(tf.constant(pixels[start:start + chunk]))
        hits.append(methods.predict_classes(model, rotated.numpy()) == rotations.numpy())
    return Rate.of(np.concatenate(hits))


def _fit(session: Session, pretext_train: ImageSet, heldout_px: np.ndarray,
         checkpoints: Checkpoints, monitors: list[keras.callbacks.Callback]
         ) -> tuple[keras.Model, StageResult, dict[str, Any]]:
    """Build and fit the rotation model under the cluster's strategy, every worker alike.

    Returns the model, how the fit went, and what the report records about the input
    pipeline and the distribution (cache, shuffle buffer, scaling).
    """
    config, cluster = session.config, session.cluster
    scaling = distribute.Scaling(config.batch_size, cluster.replicas, config.learning_rate)
    with contextlib.ExitStack() as stack:
        cache_dirs, cache = _cache(session, len(pretext_train), stack)
        try:
            with cluster.scope():
                pretext = build_model(model_spec(config), len(C.ROTATION_LABELS), "pretext")
                if config.pretext_init is not None:
                    # The same network (the train command took its width, size and depth):
                    # the pretext goes on from those weights; a resumed fit from its backup.
                    pretext.set_weights(
                        load_model(config.pretext_init / C.PRETEXT_MODEL).get_weights())
                plan = step_memory.plan_steps(config, pretext, len(cluster.devices))
                _log_step_plan(plan)
                source = pipeline.PretextInput(
                    pretext_train, config.image_size, config.batch_size, config.rotations,
                    config.seed, cluster.replicas, session.skipped, cache_dirs,
                    plan.accumulation)
                updates = source.updates_per_epoch
                warmup_steps = scaling.warmup_steps(updates)
                recipe = Recipe(
                    config.pretext_epochs, scaling.learning_rate, config.patience,
                    config.lr_patience, cosine=config.pretext_lr is PretextLR.cosine,
                    warmup=(config.learning_rate, warmup_steps) if warmup_steps else None,
                    accumulation=plan.accumulation)
                stage = fit_stage(
                    pretext, cluster.strategy.distribute_datasets_from_function(source.dataset),
                    pipeline.pretext_eval_dataset(heldout_px, config.batch_size), recipe,
                    checkpoints, samples_per_batch=source.samples_per_step,
                    steps_per_epoch=source.steps_per_epoch, verbose=session.verbosity,
                    monitors=monitors, extra_callbacks=session.callbacks_for("pretext"))
        except tf.errors.OpError as exc:
            if cluster.workers > 1:
                distribute.raise_worker_failure(exc, f"`edge-ssl train --resume {session.run}`")
            raise
    shuffle = pipeline.shuffle_buffer(-(-len(pretext_train) // cluster.workers),
                                      config.image_size)
    extra = {"input": {**cache, "shuffle_buffer_images": shuffle, "steps_per_epoch": updates},
             "distribution": {**cluster.describe(), **scaling.to_json(updates)},
             "step": plan.to_json()}
    return pretext, stage, extra


def _log_step_plan(plan: step_memory.StepPlan) -> None:
    if plan.accumulation == 1 and plan.step_bytes <= plan.budget_bytes:
        return
    sizes = (f"{plan.step_bytes / 1e6:,.0f} MB of activations a step, "
             f"--step-memory-gb {plan.budget_bytes / 1e9:g}")
    if plan.step_bytes > plan.budget_bytes:
        log.warning("even micro-batches of %d samples take %s; lower --image-size or --width if "
                    "memory runs out.", plan.micro_batch, sizes)
    if plan.accumulation > 1:
        log.info("each batch of %d trains as %d micro-batches of %d with accumulated gradients "
                 "(%s)", plan.batch, plan.accumulation, plan.micro_batch, sizes)


def _cache(session: Session, num_images: int, stack: contextlib.ExitStack
           ) -> tuple[Callable[[int], Path | None], dict[str, Any]]:
    """Where this worker caches its decoded pretext images: memory when they fit
    --memory-cache-gb and no --cache-dir is given, else files that live as long as the stage.

    Files go to --cache-dir, else RUN/cache on the chief and the temporary folder on other
    workers (which never write the run directory). A killed run's leftovers are cleared first.
    """
    config, cluster = session.config, session.cluster
    share = -(-num_images // cluster.workers)
    decoded = share * pipeline.image_bytes(config.image_size)
    budget = int(config.memory_cache_gb * 1e9)
    sizes = {"decoded_mb": round(decoded / 1e6, 1),
             "memory_cache_budget_mb": round(budget / 1e6, 1)}
    if config.cache_dir is None and decoded <= budget:
        return (lambda _: None), {"cache": "memory", **sizes}
    default_root = (session.run / CACHE_DIR if cluster.is_chief
                    else Path(tempfile.gettempdir()) / "edge-ssl-cache")
    root = config.cache_dir or default_root
    folder = root / f"{session.run.name}-{cluster.task.replace(' ', '-')}"
    shutil.rmtree(folder, ignore_errors=True)

    def remove() -> None:
        shutil.rmtree(folder, ignore_errors=True)
        if root == default_root and root.is_dir() and not any(root.iterdir()):
            root.rmdir()

    stack.callback(remove)
    log.info("decoded pretext images (%.1f GB) are cached on disk in %s while the pretext "
             "trains", decoded / 1e9, folder)
    return (lambda pipe: folder / f"pipeline-{pipe}"), {
        "cache": "disk", "cache_dir": str(folder), **sizes}
