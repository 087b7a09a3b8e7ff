"""The measurement protocol: test images never steer training, every accuracy has n and a CI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_ssl.stats import Rate, wilson_interval
from edge_ssl.train.config import TrainConfig
from edge_ssl.train.finetune_options import Schedule
from edge_ssl.train.sources import ImageSet, load_source, split_selection


def test_wilson_interval_matches_known_values() -> None:
    low, high = wilson_interval(81, 100)
    assert (round(low, 4), round(high, 4)) == (0.7222, 0.8749)
    assert wilson_interval(0, 10)[0] == 0.0 and 0.27 < wilson_interval(0, 10)[1] < 0.28
    assert wilson_interval(10, 10)[1] == 1.0
    rate = Rate.of(np.array([0, 1, 1, 0]) == np.array([0, 1, 0, 0]))
    assert (rate.percent, rate.n) == (75.0, 4) and rate.ci95[0] < 75.0 < rate.ci95[1]


def test_selection_split_is_stratified_disjoint_and_seeded() -> None:
    labels = np.repeat([0, 1, 2], [50, 20, 6])
    images = ImageSet(paths=tuple(Path(f"{i}.png") for i in range(len(labels))), labels=labels)
    fit, selection = split_selection(images, 0.2, seed=3)
    assert not set(fit.paths) & set(selection.paths)
    assert len(fit) + len(selection) == len(images)
    assert np.bincount(selection.labels).tolist() == [10, 4, 1]
    again, _ = split_selection(images, 0.2, seed=3)
    assert again.paths == fit.paths
    other, _ = split_selection(images, 0.2, seed=4)
    assert other.paths != fit.paths


def test_tiny_imagenet_test_images_never_reach_training_or_selection(
        tiny_imagenet_mini: Path) -> None:
    source = load_source(TrainConfig(data=tiny_imagenet_mini, labels_per_class=30))
    fit, selection = split_selection(source.train, 0.2, seed=0)
    test = set(source.test.paths)
    assert test and all("/val/images/" in str(p) for p in test)
    assert not test & set(fit.paths) and not test & set(selection.paths)
    assert not test & set(source.pretext.paths)
    assert np.bincount(selection.labels).tolist() == [6, 6]


def test_auto_schedule_early_stops_only_with_enough_selection_images() -> None:
    pytest.importorskip("tensorflow")
    from edge_ssl.train.finetune_stage import resolve_schedule

    config = TrainConfig()
    assert resolve_schedule(config, np.repeat([0, 1], [250, 250])) is Schedule.early_stopping
    assert resolve_schedule(config, np.repeat([0, 1], [250, 247])) is Schedule.fixed
    assert resolve_schedule(config, np.repeat([0, 1], [50, 50])) is Schedule.fixed
    assert resolve_schedule(TrainConfig(schedule=Schedule.fixed),
                            np.repeat([0, 1], [500, 500])) is Schedule.fixed


def _row(mean: float | None, hits: int, n: int = 300) -> dict:
    return {"mean": mean, "pooled": Rate(hits, n).to_json()}


def test_margins_compare_each_ssl_method_with_the_best_baseline_that_learned() -> None:
    from edge_ssl.train.study import margins

    summary = {
        "ssl_finetune": {"5": _row(60.0, 180), "50": _row(90.0, 270)},
        "ssl_probe": {"5": _row(None, 0), "50": _row(75.0, 225)},
        "scratch": {"5": _row(None, 150), "50": _row(74.0, 222)},  # collapsed at 5/class
        "scratch_shallow": {"5": _row(80.0, 240), "50": _row(72.0, 216)},
        "colour": {"5": _row(70.0, 210), "50": _row(70.0, 210)},
    }
    out = margins(summary)
    assert out["ssl_finetune"]["5"] == {"best_baseline": "scratch_shallow", "points": -20.0,
                                        "verdict": "below"}
    assert out["ssl_finetune"]["50"] == {"best_baseline": "scratch", "points": 16.0,
                                         "verdict": "above"}
    assert "5" not in out["ssl_probe"]  # a probe that did not learn has no margin
    assert out["ssl_probe"]["50"]["verdict"] == "within the intervals"
    assert margins({"colour": summary["colour"]}) == {}  # no SSL method, nothing to compare


def test_a_paired_margin_carries_its_interval_and_decides_the_verdict() -> None:
    from edge_ssl.train.study import margins

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 50)

    def predictions(accuracy: float) -> list[int]:
        right = rng.random(len(labels)) < accuracy
        return np.where(right, labels, 1 - labels).tolist()

    def cell(seed: int, fine_tune: float, probe: float, shallow: float) -> dict:
        results = {"ssl_finetune": fine_tune, "ssl_probe": probe, "scratch_shallow": shallow}
        return {"seed": seed, "budget": "50",
                "results": {m: {"predictions": predictions(a)} for m, a in results.items()}}

    cells = [cell(seed, 0.95, 0.72, 0.70) for seed in range(3)]
    summary = {m: {"50": _row(mean, 0)} for m, mean in
               (("ssl_finetune", 95.0), ("ssl_probe", 72.0), ("scratch_shallow", 70.0))}
    out = margins(summary, cells, labels)
    fine_tune, probe = out["ssl_finetune"]["50"], out["ssl_probe"]["50"]
    assert fine_tune["paired"] and fine_tune["best_baseline"] == "scratch_shallow"
    low, high = fine_tune["ci95"]
    assert low > 0 and low < fine_tune["points"] < high and fine_tune["verdict"] == "above"
    assert probe["ci95"][0] < 0 < probe["ci95"][1] and probe["verdict"] == "within the interval"


def test_the_paired_interval_resamples_seeds_and_images_together() -> None:
    from edge_ssl.stats import paired_bootstrap

    assert paired_bootstrap(np.zeros((3, 100))) == (0.0, 0.0)
    # The same images right and wrong for both methods: no difference, however noisy each is.
    shared = np.random.default_rng(1).random((3, 100)) < 0.5
    assert paired_bootstrap(shared.astype(float) - shared) == (0.0, 0.0)
    # One seed far from the others widens the interval: seeds are resampled, not pooled.
    steady = np.full((3, 100), 10.0)
    spread = np.vstack([np.full(100, 0.0), np.full(100, 10.0), np.full(100, 20.0)])
    assert paired_bootstrap(steady) == (10.0, 10.0)
    low, high = paired_bootstrap(spread)
    assert low < 5 and high > 15
