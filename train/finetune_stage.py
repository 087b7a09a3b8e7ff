"""Stage 2, the fine-tune, and with --baseline every other method on the same labels and tests.

Test images are measured once at the end of each method; early stopping, the learning-rate
schedule and best-epoch restore see only the selection split carved from the labelled images
(or nothing, with a fixed schedule). Each network method is complete once its .keras file
exists; the probes and the colour floor take seconds and are recomputed when missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from edge_ssl import contract as C
from edge_ssl.atomic import write_json, write_with
from edge_ssl.train import method_names as names
from edge_ssl.train import methods, pipeline, plots
from edge_ssl.train.artifacts import TEST_SETS, model_files, shipped_method, stage_json
from edge_ssl.train.config import Freeze, TrainConfig
from edge_ssl.train.environment import note_memory
from edge_ssl.train.finetune_options import MIN_SELECTION_PER_CLASS, Schedule
from edge_ssl.train.model import scratch_spec
from edge_ssl.train.session import Session
from edge_ssl.train.sources import ImageSet, Source, split_selection
from edge_ssl.train.stages import finish_stage

log = logging.getLogger(__name__)

MAX_SPARE_IMAGES = 5000  # the task's unlabelled images a rotation-loss fine-tune decodes


@dataclass(frozen=True)
class Task:
    """The run's labelled images as the fine-tune uses them. Pixels are uint8 `[N, S, S, 3]`."""

    schedule: Schedule  # `auto` resolved
    fit: ImageSet  # the images the networks train on
    selection: tuple[np.ndarray, np.ndarray] | None  # what the schedule watches, if anything
    test: tuple[np.ndarray, np.ndarray]  # measured once, at the end

    def protocol(self, config: TrainConfig, source: Source) -> dict[str, Any]:
        """report.json's `protocol`: how the methods were compared."""
        return {"test_images": len(self.test[1]), "test_set": TEST_SETS[source.kind],
                "schedule": self.schedule.value, "fit_images": len(self.fit),
                "selection_images": len(self.selection[1]) if self.selection else 0,
                "cut": config.cut, "head_epochs": config.head_epochs,
                "finetune_batchnorm": config.finetune_batchnorm.value,
                "rule": "test images are measured once at the end; early stopping, the "
                        "learning-rate schedule and best-epoch restore see only the "
                        "selection split (or nothing, with a fixed schedule)"}


def resolve_schedule(config: TrainConfig, labels: np.ndarray) -> Schedule:
    """`auto` → early stopping when every class gives the selection split at least
    MIN_SELECTION_PER_CLASS images, else a fixed schedule that trains on every label."""
    if config.schedule is not Schedule.auto:
        return config.schedule
    smallest = int(np.bincount(labels).min()) if len(labels) else 0
    enough = round(smallest * config.selection_fraction) >= MIN_SELECTION_PER_CLASS
    return Schedule.early_stopping if enough else Schedule.fixed


def fit_settings(config: TrainConfig, verbose: int) -> methods.FitSettings:
    return methods.FitSettings(config, config.patience, config.lr_patience,
                               config.finetune_batch(config.batch_size),
                               config.seed, config.freeze is Freeze.backbone, verbose)


def prepare_task(session: Session, source: Source) -> Task:
    """Resolve the schedule, carve the selection split, decode the selection and test images."""
    config = session.config
    schedule = resolve_schedule(config, np.asarray(source.train.labels))
    fit, selection = (split_selection(source.train, config.selection_fraction, config.seed)
                      if schedule is Schedule.early_stopping else (source.train, None))
    return Task(schedule, fit,
                None if selection is None else session.decode_labelled(selection, "selection"),
                session.decode_labelled(source.test, "test"))


def train_methods(session: Session, source: Source, task: Task, pretext: keras.Model,
                  report: dict[str, Any]) -> None:
    """The SSL fine-tune and, with --baseline, every other method, into `report["methods"]`,
    saved after each; methods already in a resumed run's report are kept."""
    config, run = session.config, session.run
    shipped = shipped_method(config)
    wanted = [shipped] + ([m for m in names.METHODS if m != shipped] if config.baseline else [])
    spare = None
    if set(wanted) & set(names.WITH_ROTATION):
        if len(source.spare):
            # Enough for the rotation loss's variety, bounded in memory however big the folder.
            order = np.random.default_rng(config.seed).permutation(len(source.spare))
            spare = session.decode(source.spare.take(order[:MAX_SPARE_IMAGES]), "unlabelled")
        # The rotation loss's images besides the labelled ones: the task's without labels.
        report["protocol"]["rotation_loss_unlabelled_images"] = 0 if spare is None else len(spare)
    data = methods.Labelled(
        fit=pipeline.image_dataset(task.fit, config.image_size, session.skipped),
        fit_size=len(task.fit), selection=task.selection, test=task.test,
        num_classes=len(source.labels), unlabelled=spare)
    settings = fit_settings(config, session.verbosity)
    log.info("Stage 2: fine-tune on %d labelled images of %d classes (%s schedule%s%s%s), "
             "tested on %d images", len(task.fit), len(source.labels), task.schedule.value,
             f", {len(task.selection[1])} selection images" if task.selection else "",
             f", the SSL fine-tune after {config.head_epochs} head-only epochs"
             if settings.head_first(shipped) else "",
             ", its BatchNorm frozen" if settings.batchnorm_frozen(shipped) else "",
             len(task.test[1]))
    results = report.setdefault("methods", {})
    models, histories = model_files(config)
    for method in wanted:
        if method in results and (method not in models or (run / models[method]).exists()):
            log.info("%s: already done", names.TITLES[method])
            continue
        result = _run_method(session, method, pretext, data, settings)
        results[method] = _result_json(result)
        note_memory(report)
        write_json(run / C.REPORT_FILE, report)
        _log_result(result)
    plots.save_curves({"pretext": plots.read_history(run / C.HISTORY_PRETEXT)} | {
        names.TITLES[method]: plots.read_history(run / histories[method])
        for method in wanted if method in histories}, run / C.CURVES_PNG)
    if config.baseline:
        plots.save_methods(results, names.TITLES, report["protocol"]["test_set"],
                           run / C.METHODS_PNG)


def _run_method(session: Session, method: str, pretext: keras.Model, data: methods.Labelled,
                settings: methods.FitSettings) -> methods.MethodResult:
    """One method; a network is saved to its .keras file, which marks it complete."""
    checkpoint_dir = session.checkpoint_dir(method)
    models, histories = model_files(session.config)
    result = methods.measure(method, pretext, scratch_spec(session.config), data, settings,
                             session.run / histories.get(method, f"{method}.csv"),
                             checkpoint_dir, session.callbacks_for(method))
    if result.model is not None and result.stage is not None:
        path = session.run / models[method]
        write_with(path, result.model.save)
        finish_stage(checkpoint_dir)
        result.stage.raise_if_diverged(names.TITLES[method], path)
    return result


def _result_json(result: methods.MethodResult) -> dict[str, Any]:
    out: dict[str, Any] = {"title": names.TITLES[result.method],
                           "test": result.test.to_json(), "collapsed": result.collapsed,
                           "seconds": result.seconds}
    if result.stage is not None:
        out.update(stage_json(result.stage))
    if result.choice is not None:
        out["choice"] = result.choice
    return out


def _log_result(result: methods.MethodResult) -> None:
    title = names.TITLES[result.method]
    if result.collapsed:
        remedy = ("Try more --finetune-epochs or a lower --learning-rate." if result.stage
                  else "Its features do not separate the classes with these few labels; try "
                  "more --labels-per-class.")
        log.warning("%s predicts one class for every test image: it did not learn, so its "
                    "accuracy is not a result. %s", title, remedy)
    extra = (f" ({result.stage.epochs_run} epochs, {result.stage.images_per_second:.0f} "
             "images/s)" if result.stage else "")
    log.info("%s: test accuracy %s%s", title, result.test, extra)
