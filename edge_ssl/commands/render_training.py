"""How training, studies and exports look on a terminal: rich tables the commands print.

The stages return plain results (report.json's dict, study.json's, an ExportReport); only the
CLI draws them, each table narrow enough for an 80-column terminal.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from edge_ssl.console import console
from edge_ssl.train.method_names import (
    COLOUR,
    RANDOM_PROBE,
    SCRATCH,
    SCRATCH_SHALLOW,
    SSL_FINETUNE,
    TINY_IMAGES,
    TITLES,
)

if TYPE_CHECKING:
    from edge_ssl.export.report import ExportedFile, ExportReport
    from edge_ssl.export.verify import Check


def print_run(run: Path, report: dict[str, Any]) -> None:
    """What `train` and `finetune` measured: one row per stage or method, then what next."""
    protocol = report.get("protocol", {})
    table = Table(title=f"edge-ssl train — {escape(str(run))}", box=box.SIMPLE_HEAD)
    table.add_column("stage / method")
    table.add_column("accuracy [95 % CI]", justify="right")
    table.add_column("n", justify="right")
    table.add_column("epochs", justify="right")
    table.add_column("images/s", justify="right")
    rows: list[tuple[str, dict[str, Any]]] = []
    if "heldout_rotation" in report.get("pretext", {}):
        rows.append(("pretext: held-out rotation", report["pretext"]))
    rows += [(result["title"], result) for result in report.get("methods", {}).values()]
    for title, result in rows:
        accuracy = result.get("test") or result["heldout_rotation"]
        low, high = accuracy["ci95"]
        cell = f"{accuracy['percent']:.1f}% [{low:.1f}–{high:.1f}]"
        if result.get("collapsed"):
            cell = f"did not learn ({cell})"
        table.add_row(title, cell, str(accuracy["n"]), str(result.get("epochs_run", "")),
                      f"{result['images_per_second']:.0f}" if "images_per_second" in result
                      else "")
    console.print(table)
    if protocol:
        console.print(f"Test images: {protocol['test_set']}; fine-tune schedule: "
                      f"{protocol['schedule']}, cut at {protocol['cut']}.")
    console.print(f"Artifacts in {run}; next: edge-ssl export {run}")


# The baselines' names where a table cell has room for one word.
SHORT_TITLES = {SCRATCH: "scratch", SCRATCH_SHALLOW: "shallow", RANDOM_PROBE: "random",
                TINY_IMAGES: "tiny", COLOUR: "colour"}


def print_study(result: dict[str, Any]) -> None:
    """Each method's mean accuracy per budget; then, per budget, the best baseline and each SSL
    method's margin over it. Two tables, so that five budgets still fit 80 columns."""
    summary = result["summary"]
    budgets = list(next(iter(summary.values())).keys())
    accuracy = Table(title=f"{' vs '.join(result['labels'])}: test accuracy %, mean±s.d. over "
                           f"seeds (n = {result['test_images']} test images each), by labelled "
                           "images per class", box=box.SIMPLE_HEAD, padding=(0, 0))
    accuracy.add_column("method")
    for budget in budgets:
        accuracy.add_column(budget, justify="right")
    collapsed = False
    for method, rows in summary.items():
        cells = []
        for budget in budgets:
            row = rows[budget]
            text = "—" if row["mean"] is None else f"{row['mean']:.1f}"
            if row["std"] is not None:
                text += f"±{row['std']:.1f}"
            if row["collapsed"]:
                text += "✗"
                collapsed = True
            cells.append(text)
        accuracy.add_row(TITLES[method], *cells)
    if collapsed:
        accuracy.caption = ("✗: seeds that did not learn are left out of the mean (study.json "
                            "counts them).")
    margins = result.get("margins", {})
    if not margins:
        console.print(accuracy)
        return
    table = Table(title="does the pretext pay? points above (+) or below (−) the baseline with "
                        "the highest mean", box=box.SIMPLE_HEAD, padding=(0, 0),
                  caption="▲ ▼ where the paired 95 % interval (seeds and test images "
                          "resampled together; study.json) excludes 0; shallow: from scratch, cut "
                          "early; random: random-init probe; tiny: ridge on thumbnails")
    table.add_column("labels per class")
    for budget in budgets:
        table.add_column(budget, justify="right")
    best = {b: rows[b]["best_baseline"] for rows in margins.values() for b in rows}
    table.add_row("best baseline", *(SHORT_TITLES[best[b]] if b in best else "—"
                                     for b in budgets))
    marks = {"above": " ▲", "below": " ▼"}
    for method, rows in margins.items():
        table.add_row(f"{TITLES[method]} − best baseline", *(
            f"{rows[b]['points']:+.1f}{marks.get(rows[b]['verdict'], '')}" if b in rows else "—"
            for b in budgets), style="bold" if method == SSL_FINETUNE else None)
    console.print(accuracy, table)


def print_summary(summary: dict[str, Any]) -> None:
    """Per budget, a table: a row per pair and one for the mean over the pairs, a column per
    self-supervised method, each cell its margin over the pair's best baseline and the paired
    95 % interval."""
    marks = {"above": " ▲", "below": " ▼"}
    margins = summary["margins"]
    budgets = list(dict.fromkeys(b for rows in margins.values() for b in rows))
    for budget in budgets:
        methods = [m for m in margins if budget in margins[m]]
        table = Table(title=f"points above the best label-only baseline, {budget} labels per "
                            "class [paired 95 % interval]", box=box.SIMPLE_HEAD, padding=(0, 0),
                      caption="▲ ▼ where the interval excludes 0; the mean's interval resamples "
                              "every pair's seeds and test images")
        table.add_column("pair", max_width=24)
        for method in methods:
            table.add_column(TITLES[method], justify="right", max_width=13)
        for index, pair in enumerate(summary["pairs"]):
            table.add_row(pair, *(_margin_text(margins[m][budget]["pairs"][index], marks)
                                  for m in methods))
        table.add_row("mean over pairs", *(
            _margin_text({"points": margins[m][budget]["mean_points"],
                          "ci95": margins[m][budget]["ci95"],
                          "verdict": margins[m][budget]["verdict"]}, marks)
            for m in methods), style="bold")
        console.print(table)


def _margin_text(margin: dict[str, Any], marks: dict[str, str]) -> str:
    low, high = margin["ci95"]
    # The interval on a line of its own: four methods and a pair's name still fit 80 columns.
    return f"{margin['points']:+.1f}{marks.get(margin['verdict'], '')}\n[{low:+.0f}, {high:+.0f}]"


def export_tables(report: ExportReport) -> list[RenderableType]:
    """The files (size, accuracy, checks passed), then the numbers that decided each one.

    Two narrow tables rather than one wide one, so that each file is one line at 80 columns,
    then a line for what a row cannot say; every check with all its numbers is in
    export_report.json.
    """
    files = Table(title=f"edge-ssl export — {escape(report.run)}", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    for name in ("file", "MB", "accuracy (95% CI)", "checks"):
        files.add_column(name, justify="left" if name == "file" else "right")
    evidence = Table(title="evidence: FP32 files against Keras, variants against FP32, "
                     "fixed-size and .ort files against their source",
                     box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("file", "max |Δp|", "top-1 same", "resize", "raw frames"):
        evidence.add_column(name, justify="left" if name == "file" else "right")
    notes = []
    for exported in report.files:
        passed = sum(check.passed for check in exported.checks)
        accuracy = "–" if exported.accuracy is None else (
            f"{exported.accuracy.percent:.1f}% ({exported.accuracy.ci95[0]:.1f}–"
            f"{exported.accuracy.ci95[1]:.1f})")
        name = exported.file if exported.passed else f"{exported.file} (not written)"
        files.add_row(escape(name + (" (!)" if exported.advisories else "")),
                      f"{exported.size_bytes / 1e6:.1f}", accuracy,
                      f"{passed}/{len(exported.checks)}")
        evidence.add_row(escape(exported.file), *_evidence(exported.checks))
        notes += [f"{exported.file}: {note}" for note in _notes(exported)]
    return [files, evidence, *(Text(note) for note in notes)]


def _evidence(checks: list[Check]) -> tuple[str, str, str, str]:
    """max |Δp|, top-1 agreement, the resize rule's largest pixel difference, raw frames."""
    by_name = {check.name: check for check in checks}
    parity = [c.values for c in checks if c.name.startswith("parity")]
    gate = by_name.get("int8 agreement") or by_name.get("fp16 |Δp|")
    twin = next((c.values for c in checks if c.name.startswith("same as")), None)
    if twin is not None:  # a fixed-size or ORT file, against the file it was derived from
        diff = f"{twin['max_abs_diff']:.0e}"
        same = f"{twin['images'] - twin['top1_mismatches']}/{twin['images']}"
    elif gate is not None:
        diff = f"{gate.values['max_abs_diff_vs_fp32']:.0e}"
        same = f"{gate.values['top1_agreement']['percent']:.1f}%"
    elif parity:
        diff = f"{max(values['max_abs_diff'] for values in parity):.0e}"
        images = sum(values["images"] for values in parity)
        changed = sum(values["top1_mismatches"] for values in parity)
        same = f"{images - changed}/{images}"
    else:
        diff = same = "–"
    rule = by_name.get("resize rule")
    resize = ("–" if rule is None or "max_abs_pixel_diff" not in rule.values
              else f"{rule.values['max_abs_pixel_diff']:.1f}")
    frames = next((c for c in checks if c.name.startswith("raw frames")), None)
    raw = "–" if frames is None else f"{frames.values['top1_agreement']['percent']:.1f}%"
    return diff, same, resize, raw


def _notes(exported: ExportedFile) -> list[str]:
    """What a row cannot say: failed checks, INT8's FP32 nodes, a mixed-precision rebuild."""
    notes = [f"{check.name}: {check.detail}" for check in exported.checks
             if not check.passed and not check.advisory]
    if exported.fp32_nodes:
        notes.append(f"{len(exported.fp32_nodes)} nodes kept in FP32")
    if exported.advisories:
        notes.append("(!) raw frames fed to it change some answers: see the warning")
    if exported.rebuilt is not None:
        rebuilt = exported.rebuilt
        notes.append(f"float32 rebuild of a {rebuilt['trained_precision']} model: top-1 as "
                     f"trained {rebuilt['top1_agreement_vs_trained']['percent']:.1f}%, "
                     f"max |Δp| {rebuilt['max_abs_diff_vs_trained']:.0e}")
    return notes
