"""`edge-ssl study-summary`: one claim over several pairs of classes.

A margin on one pair says little: the pair may be easy for the pretext or hard for the baselines.
The summary reads finished studies (one per pair) and gives, per self-supervised method and
budget, each pair's margin over its best label-only baseline and the mean over the pairs, with a
paired 95 % interval that resamples every pair's seeds and test images together
(stats.paired_bootstrap_mean). TensorFlow-free: it reads study.json files only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edge_ssl.errors import RunDirError
from edge_ssl.stats import paired_bootstrap_mean
from edge_ssl.train.study import SSL_METHODS, STUDY_FILE, paired_points, verdict

SUMMARY_FILE = "summary.json"
SUMMARY_PNG = "margins.png"


def load_studies(folders: list[Path]) -> list[dict[str, Any]]:
    """Each folder's study.json, complete and with per-image predictions, or a RunDirError
    naming the folder and what to do."""
    studies = []
    for folder in folders:
        path = folder / STUDY_FILE
        if not path.is_file():
            raise RunDirError(f"{folder}: no {STUDY_FILE} here; pass the folders that "
                              "`edge-ssl study` wrote, e.g. runs/NAME/studies/*.")
        try:
            study = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RunDirError(f"{path}: unreadable ({exc}); re-run that study.") from None
        if not study.get("complete"):
            raise RunDirError(f"{folder}: the study is not finished; finish it with "
                              "`edge-ssl study ... --resume` first.")
        if "test_labels" not in study:
            raise RunDirError(f"{folder}: this study kept no per-image predictions (it predates "
                              "them), so no paired interval can be computed; re-run it.")
        study["folder"] = str(folder)
        studies.append(study)
    pairs = [" vs ".join(s["labels"]) for s in studies]
    if len(set(pairs)) < len(pairs):
        raise RunDirError("two of these studies are on the same classes: a summary counts each "
                          "pair once; pass one study per pair.")
    return studies


def summarise_pairs(studies: list[dict[str, Any]]) -> dict[str, Any]:
    """summary.json's content: per SSL method and budget, each pair's margin and the mean."""
    first = next(iter(studies[0]["summary"].values()))
    budgets = [b for b in first if all(_has_budget(s, b) for s in studies)]
    margins: dict[str, Any] = {}
    for method in SSL_METHODS:
        if not all(method in s["margins"] for s in studies):
            continue
        rows = {}
        for budget in budgets:
            per_pair, differences = [], []
            for study in studies:
                margin = study["margins"][method].get(budget)
                if margin is None or not margin.get("paired"):
                    break
                differences.append(paired_points(study["cells"], budget, method,
                                                 margin["best_baseline"],
                                                 np.asarray(study["test_labels"])))
                per_pair.append({"pair": " vs ".join(study["labels"]),
                                 **{k: margin[k] for k in ("best_baseline", "points", "ci95",
                                                           "verdict")}})
            else:
                low, high = paired_bootstrap_mean(differences)
                mean = float(np.mean([d.mean() for d in differences]))
                rows[budget] = {"pairs": per_pair, "mean_points": round(mean, 2),
                                "ci95": [round(low, 2), round(high, 2)],
                                "verdict": verdict(low, high)}
        if rows:
            margins[method] = rows
    return {"studies": [s["folder"] for s in studies],
            "pairs": [" vs ".join(s["labels"]) for s in studies],
            "seeds": [len({c["seed"] for c in s["cells"]}) for s in studies],
            "test_images": [s["test_images"] for s in studies],
            "rule": "per pair, the best baseline is the label-only method with the highest mean "
                    "test accuracy; the mean's interval resamples each pair's seeds and test "
                    "images together, 2,000 rounds",
            "margins": margins}


def _has_budget(study: dict[str, Any], budget: str) -> bool:
    return all(budget in rows for rows in study["summary"].values())
