"""`edge-ssl study-summary`: the mean margin over pairs, with a paired interval, from study.json
files alone (no TensorFlow, no training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_ssl.cli import app
from edge_ssl.stats import Rate, paired_bootstrap, paired_bootstrap_mean

runner = CliRunner()


def test_the_mean_over_pairs_resamples_each_pair_and_weights_them_equally() -> None:
    assert paired_bootstrap_mean([np.full((3, 100), 4.0), np.full((3, 50), 10.0)]) == (7.0, 7.0)
    one = np.random.default_rng(0).integers(-1, 2, (3, 100)).astype(float)
    assert paired_bootstrap_mean([one]) == paired_bootstrap(one)  # one pair: the pair's own
    # Three noisy pairs: the interval of their mean is narrower than a single pair's.
    pairs = [np.random.default_rng(s).integers(-1, 2, (3, 100)).astype(float) for s in (1, 2, 3)]
    low, high = paired_bootstrap_mean(pairs)
    single = [paired_bootstrap(p) for p in pairs]
    assert high - low < min(h - lo for lo, h in single)
    assert low < np.mean([p.mean() for p in pairs]) < high


def _study(folder: Path, labels: list[str], fine_tune: float, seed: int,
           complete: bool = True) -> Path:
    """A finished one-budget study.json: the SSL fine-tune right on a share `fine_tune` of the
    test images, the shallow baseline on 70 %, colour on 60 %."""
    rng = np.random.default_rng(seed)
    test = np.repeat([0, 1], 50)

    def predictions(accuracy: float) -> list[int]:
        return np.where(rng.random(100) < accuracy, test, 1 - test).tolist()

    cells = [{"seed": s, "budget": "50", "labels_per_class": 50, "results": {
        m: {**Rate.of(np.asarray(p) == test).to_json(), "collapsed": False, "predictions": p}
        for m, p in (("ssl_finetune", predictions(fine_tune)),
                     ("scratch_shallow", predictions(0.7)), ("colour", predictions(0.6)))}}
        for s in range(3)]
    from edge_ssl.train.study import margins, summarise

    summary = summarise(cells, ("ssl_finetune", "scratch_shallow", "colour"))
    folder.mkdir(parents=True)
    (folder / "study.json").write_text(json.dumps({
        "labels": labels, "test_images": 100, "test_labels": test.tolist(), "cells": cells,
        "summary": summary, "margins": margins(summary, cells, test), "complete": complete}))
    return folder


def test_summary_of_three_pairs_prints_writes_and_plots(tmp_path: Path) -> None:
    studies = tmp_path / "runs" / "r" / "studies"
    folders = [_study(studies / f"p{i}", [f"a{i}", f"b{i}"], accuracy, i)
               for i, accuracy in enumerate((0.9, 0.8, 0.75))]
    result = runner.invoke(app, ["study-summary", *map(str, folders)], terminal_width=100)
    assert result.exit_code == 0, result.output
    out = tmp_path / "runs" / "r" / "summary"
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "margins.png").stat().st_size > 0
    assert summary["pairs"] == ["a0 vs b0", "a1 vs b1", "a2 vs b2"]
    row = summary["margins"]["ssl_finetune"]["50"]
    points = [pair["points"] for pair in row["pairs"]]
    assert {pair["best_baseline"] for pair in row["pairs"]} == {"scratch_shallow"}
    assert row["mean_points"] == pytest.approx(np.mean(points), abs=0.01)
    low, high = row["ci95"]
    assert 0 < low < row["mean_points"] < high and row["verdict"] == "above"
    assert "mean over pairs" in result.output and f"{row['mean_points']:+.1f} ▲" in result.output
    again = runner.invoke(app, ["study-summary", *map(str, folders)])
    assert again.exit_code == 1 and "already exists; pass --overwrite" in again.output
    assert runner.invoke(app, ["study-summary", *map(str, folders), "--overwrite"]).exit_code == 0


def test_summary_refuses_what_it_cannot_summarise(tmp_path: Path) -> None:
    one = _study(tmp_path / "one", ["a", "b"], 0.9, 0)
    same = _study(tmp_path / "same", ["a", "b"], 0.8, 1)
    running = _study(tmp_path / "running", ["c", "d"], 0.8, 2, complete=False)
    cases = [([one], "two or more pairs"), ([one, tmp_path / "nowhere"], "no study.json here"),
             ([one, running], "not finished"), ([one, same], "same classes")]
    for folders, message in cases:
        result = runner.invoke(app, ["study-summary", *map(str, folders)])
        assert result.exit_code != 0 and message in " ".join(result.output.split()), folders
        assert "Traceback" not in result.output
    assert not (tmp_path / "summary").exists()


def test_a_one_budget_study_draws_the_methods_side_by_side(tmp_path: Path) -> None:
    from edge_ssl.train import plots
    from edge_ssl.train.method_names import TITLES

    study = json.loads((_study(tmp_path / "s", ["a", "b"], 0.85, 0) / "study.json").read_text())
    plots.save_label_efficiency(study["summary"], TITLES, "a vs b", tmp_path / "one.png",
                                study["margins"])
    from PIL import Image

    with Image.open(tmp_path / "one.png") as picture:  # two panels: wider than tall
        assert picture.width > 2 * picture.height
