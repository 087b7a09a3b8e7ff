"""`edge-ssl study`: does the pretext save labels? Every method, several label budgets and seeds.

One pretext (an existing run), then for each seed and each budget of labelled images per class
the six methods of edge_ssl.train.methods on the same labelled images and the same test images.
Budgets are nested per seed (the 10 images of a class include its 5), so the curves compare
like with like. Cells are saved as they finish: an interrupted study continues with --resume.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_ssl.atomic import write_json
from edge_ssl.errors import ConfigError, RunDirError
from edge_ssl.options import (
    DATA,
    TRAINING,
    from_json,
    joined,
    not_allowed,
    option,
    split_commas,
    to_json,
    with_default,
)
from edge_ssl.stats import Rate, paired_bootstrap
from edge_ssl.train.config import load_run_config
from edge_ssl.train.finetune_options import LEGACY_FINETUNE, FinetuneOptions, Schedule
from edge_ssl.train.method_names import LABELS_ONLY, METHODS, SELF_SUPERVISED, TITLES
from edge_ssl.train.study_cells import MAX_WORKERS

log = logging.getLogger(__name__)

STUDIES_DIR = "studies"
STUDY_CONFIG = "study_config.json"
STUDY_FILE = "study.json"
STUDY_PNG = "label_efficiency.png"
DEFAULT_BUDGETS = (5, 10, 25, 50, 100)
SSL_METHODS = SELF_SUPERVISED  # each gets its margin over the best of the BASELINES
BASELINES = LABELS_ONLY


def parse_budget(text: str | int | None) -> int | None:
    """'all' → None (every labelled image), otherwise labels per class."""
    if text is None or str(text).strip().lower() == "all":
        return None
    try:
        return int(str(text).strip())
    except ValueError:
        raise ConfigError(f"--budgets {text} is not allowed: use whole numbers or 'all', "
                          "e.g. 5,10,25,50,100,all.") from None


def parse_budgets(text: str) -> tuple[int | None, ...]:
    return tuple(parse_budget(budget) for budget in split_commas(text))


@dataclass(frozen=True, kw_only=True)
class StudyConfig(FinetuneOptions):
    """Every option of `edge-ssl study`; `budgets` holds labels per class, None meaning all."""

    run: Path = option(MISSING, "Run whose pretext.keras every SSL method starts from.", "RUN",
                       argument=True)
    data: Path | None = option(
        None, "Labelled data; default: the pretext run's --data.", "DIR", DATA,
        show_default=False)
    classes: tuple[str, ...] = option(
        (), "Classes of the task, comma-separated; default: the data's default classes.",
        "A,B", DATA, parse=split_commas, show_default=False)
    budgets: tuple[int | None, ...] = option(
        DEFAULT_BUDGETS, "Labelled images per class, comma-separated; 'all' for every one.",
        "N,N", DATA, parse=parse_budgets, text=lambda b: joined(map(_budget_text, b)))
    seeds: int = option(3, "Seeds per budget (label samples, inits).", "N", TRAINING)
    methods: tuple[str, ...] = option(
        METHODS, f"Methods to run, comma-separated; default: all of {', '.join(METHODS)}.",
        "A,B", TRAINING, parse=split_commas, text=joined, show_default=False)
    workers: int | None = option(
        None, "Processes that train the methods side by side, each with its share of the CPU "
        f"cores; default: one per core, at most {MAX_WORKERS}, or 1 on a GPU.", "N", TRAINING,
        show_default=False)
    # A study compares methods at a fixed number of epochs: every label trains.
    schedule: Schedule = with_default(FinetuneOptions, "schedule", Schedule.fixed)

    def __post_init__(self) -> None:
        super().__post_init__()

        def bad(name: str, value: Any, allowed: str) -> ConfigError:
            return not_allowed(self, name, value, allowed)

        budgets = ",".join(map(_budget_text, self.budgets))
        if not self.budgets or any(b is not None and b < 1 for b in self.budgets):
            raise bad("budgets", budgets or "''",
                      "use labels per class of 1 or more, or 'all', e.g. 5,10,25,50,100")
        if len(set(self.budgets)) != len(self.budgets):
            raise bad("budgets", budgets, "list each once")
        if self.seeds < 1:
            raise bad("seeds", self.seeds, "use 1 or more (3 or more to report a spread)")
        if self.workers is not None and self.workers < 1:
            raise bad("workers", self.workers, "use 1 or more, or leave it out")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise bad("methods", ",".join(self.methods) or "''",
                      f"choose from {', '.join(METHODS)}")

    def to_json(self) -> dict[str, Any]:
        return {**to_json(self), "budgets": [_budget_text(b) for b in self.budgets]}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> StudyConfig:
        # Studies saved before an option existed keep what they did (see TrainConfig.from_dict).
        return from_json(cls, {**values, "budgets": parse_budgets(joined(values["budgets"]))},
                         legacy={"head_epochs": 0, "finetune_batchnorm": "train",
                                 "workers": 1, **LEGACY_FINETUNE})


def _budget_text(budget: int | None) -> str:
    return "all" if budget is None else str(budget)


def study_dir(run: Path, name: str) -> Path:
    return run / STUDIES_DIR / name


def prepare(config: StudyConfig, out: Path, overwrite: bool, resume: bool) -> StudyConfig:
    """Create (or reopen with `resume`) the study folder; returns the config to run with.

    Raises:
        RunDirError: the folder exists and neither `overwrite` nor `resume` was given, or
            `resume` finds no study there.
    """
    import shutil

    saved = out / STUDY_CONFIG
    if resume:
        if not saved.is_file():
            raise RunDirError(f"{out}: no study to resume here; start one without --resume.")
        return StudyConfig.from_json(json.loads(saved.read_text()))
    if out.exists():
        if not overwrite:
            raise RunDirError(f"{out} already exists; pass --resume to continue it, "
                              "--overwrite to replace it, or --name to pick another name.")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_json(saved, config.to_json())
    return config


def run_study(config: StudyConfig, out: Path) -> dict[str, Any]:
    """Run every missing cell of the study into `out`; returns study.json's content."""
    from edge_ssl.train import pipeline, plots, study_cells
    from edge_ssl.train.artifacts import TEST_SETS
    from edge_ssl.train.environment import on_gpu
    from edge_ssl.train.sources import load_source

    run_config = load_run_config(config.run)
    task_config = dataclasses.replace(
        run_config, data=config.data if config.data is not None else run_config.data,
        classes=config.classes, labels_per_class=None)
    source = load_source(task_config)
    skipped = pipeline.SkippedFiles()
    size = run_config.image_size
    train_px, train_y = pipeline.decode_eagerly(source.train, size, skipped, "labelled")
    test_px, test_y = pipeline.decode_eagerly(source.test, size, skipped, "test")
    assert train_y is not None and test_y is not None  # labelled sets carry labels
    images = study_cells.StudyImages(train_px, train_y, test_px, test_y, len(source.labels))
    previous = json.loads((out / STUDY_FILE).read_text()) if (out / STUDY_FILE).exists() else {}
    cells: list[dict[str, Any]] = previous.get("cells", [])
    done = {(c["seed"], c["budget"]) for c in cells}
    todo = [(seed, budget) for seed in range(config.seeds) for budget in config.budgets
            if (seed, _budget_text(budget)) not in done]
    workers = config.workers or study_cells.default_workers(on_gpu())
    study: dict[str, Any] = {
        "run": str(config.run), "labels": list(source.labels),
        "test_set": TEST_SETS[source.kind], "test_images": int(len(test_y)),
        "labelled_images_per_class": np.bincount(train_y).tolist(),
        "test_labels": test_y.tolist(),
        "skipped_files": skipped.messages,
        "workers": {"processes": workers,
                    "threads_each": study_cells.threads_per_worker(workers)},
        "wall_seconds": previous.get("wall_seconds", 0.0), "cells": cells}
    log.info("%d cell%s of %d methods to run, in %s", len(todo), "" if len(todo) == 1 else "s",
             len(config.methods), "this process" if workers == 1
             else f"{workers} processes side by side")
    # Cells finish in any order with workers; study.json lists them by seed and budget.
    order = {_budget_text(b): i for i, b in enumerate(config.budgets)}
    waited, start = previous.get("wall_seconds", 0.0), time.perf_counter()
    for seed, budget, results in study_cells.run_cells(config, images, todo, workers):
        chosen = study_cells.chosen_images(train_y, seed, budget)
        cell = {"seed": seed, "budget": _budget_text(budget),
                "labels_per_class": int(np.bincount(train_y[chosen]).min()),
                # The methods' own times: with workers they overlap, so this is work done,
                # and `wall_seconds` (the whole call) is what a user waits.
                "seconds": round(sum(r["seconds"] for r in results.values()), 1),
                "results": results}
        cells.append(cell)
        cells.sort(key=lambda c: (c["seed"], order.get(c["budget"], len(order))))
        study["summary"] = summarise(cells, config.methods)
        study["margins"] = margins(study["summary"], cells, test_y)
        study["wall_seconds"] = round(waited + time.perf_counter() - start, 1)
        write_json(out / STUDY_FILE, study)
        log.info(_cell_line(cell))
    study["summary"] = summarise(cells, config.methods)
    study["margins"] = margins(study["summary"], cells, test_y)
    study["complete"] = True
    write_json(out / STUDY_FILE, study)
    plots.save_label_efficiency(study["summary"], TITLES,
                                f"{' vs '.join(source.labels)} — {study['test_set']}",
                                out / STUDY_PNG, study["margins"])
    return study


def summarise(cells: list[dict[str, Any]], method_names: tuple[str, ...]) -> dict[str, Any]:
    """Per method and budget: mean and standard deviation over seeds of the test accuracy (%).

    A collapsed network (one class for every test image) is left out of the mean and counted
    in `collapsed`: it is a failure to report, not an accuracy. `pooled` adds up the test
    predictions of all seeds, for an interval on the cell.
    """
    summary: dict[str, Any] = {}
    budgets = list(dict.fromkeys(c["budget"] for c in cells))
    for method in method_names:
        rows = {}
        for budget in budgets:
            results = [c["results"][method] for c in cells
                       if c["budget"] == budget and method in c["results"]]
            accuracies = [r["percent"] for r in results if not r["collapsed"]]
            per_class = [c["labels_per_class"] for c in cells if c["budget"] == budget]
            rows[budget] = {
                "labels_per_class": min(per_class),
                "mean": round(float(np.mean(accuracies)), 2) if accuracies else None,
                "std": round(float(np.std(accuracies, ddof=1)), 2) if len(accuracies) > 1
                else None,
                "seeds": len(accuracies), "collapsed": len(results) - len(accuracies),
                "n_test": results[0]["n"] if results else 0,
                # Every test prediction of every seed together (collapsed runs included: they
                # are what the method did), with its Wilson interval.
                "pooled": Rate(sum(r["hits"] for r in results),
                               sum(r["n"] for r in results)).to_json() if results else None}
        summary[method] = rows
    return summary


def margins(summary: dict[str, Any], cells: list[dict[str, Any]] | None = None,
            test_labels: np.ndarray | None = None) -> dict[str, Any]:
    """Per SSL method and budget: its margin over the best baseline (the highest mean of the
    baselines that ran and learned), in points, and a verdict.

    With the cells' per-image predictions, the margin is paired: every seed's per-image
    correctness of the two methods on the same labels and test images, their difference
    resampled over seeds and images together (stats.paired_bootstrap); `ci95` is its 95 %
    interval and the verdict is "above" or "below" when it excludes 0, else "within the
    interval". Cells saved before predictions were kept compare the two means, with "above" or
    "below" where their pooled intervals are apart ("within the intervals" else). The question
    the study asks, in one number a reader cannot misread for a single method's score.
    """
    out: dict[str, Any] = {}
    for method in (m for m in SSL_METHODS if m in summary):
        rows = {}
        for budget, row in summary[method].items():
            scored = [b for b in BASELINES
                      if b in summary and summary[b][budget]["mean"] is not None]
            if row["mean"] is None or not scored:
                continue
            best = max(scored, key=lambda b: summary[b][budget]["mean"])
            difference = (None if cells is None or test_labels is None
                          else paired_points(cells, budget, method, best, test_labels))
            if difference is None:
                own, theirs = row["pooled"]["ci95"], summary[best][budget]["pooled"]["ci95"]
                apart = ("above" if own[0] > theirs[1] else "below" if own[1] < theirs[0]
                         else "within the intervals")
                rows[budget] = {"best_baseline": best,
                                "points": round(row["mean"] - summary[best][budget]["mean"], 2),
                                "verdict": apart}
                continue
            low, high = paired_bootstrap(difference)
            rows[budget] = {"best_baseline": best, "points": round(float(difference.mean()), 2),
                            "ci95": [round(low, 2), round(high, 2)], "paired": True,
                            "verdict": verdict(low, high)}
        out[method] = rows
    return out


def paired_points(cells: list[dict[str, Any]], budget: str, method: str, baseline: str,
                  test_labels: np.ndarray) -> np.ndarray | None:
    """`method`'s per-image correctness minus `baseline`'s at `budget`, in points, `[seeds,
    images]` over the seeds that ran both; None when a cell kept no predictions."""
    rows = [c["results"] for c in cells if c["budget"] == budget
            and method in c["results"] and baseline in c["results"]]
    if not rows or any("predictions" not in r[m] for r in rows for m in (method, baseline)):
        return None
    own, theirs = (np.array([np.asarray(r[m]["predictions"]) == test_labels for r in rows])
                   for m in (method, baseline))
    return 100.0 * (own.astype(float) - theirs)


def verdict(low: float, high: float) -> str:
    """What a paired 95 % interval of a margin says."""
    return "above" if low > 0 else "below" if high < 0 else "within the interval"


def _cell_line(cell: dict[str, Any]) -> str:
    parts = ", ".join(f"{m} {r['percent']:.1f}%" + (" (did not learn)" if r["collapsed"] else "")
                      for m, r in cell["results"].items())
    return (f"seed {cell['seed']}, {cell['budget']} labels per class "
            f"({cell['seconds']:.0f} s): {parts}")
