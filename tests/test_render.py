"""What the CLI prints reads at 80 columns: one line per exported file, five budgets per row."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from edge_ssl.commands import render_training
from edge_ssl.stats import Rate
from edge_ssl.train.method_names import METHODS

pytest.importorskip("onnx")
from edge_ssl.export.config import ExportConfig  # noqa: E402
from edge_ssl.export.report import ExportedFile, ExportReport  # noqa: E402
from edge_ssl.export.verify import Check  # noqa: E402


def _printed(monkeypatch: pytest.MonkeyPatch, draw: object, *args: object) -> list[str]:
    console = Console(width=80, record=True, force_terminal=False)
    monkeypatch.setattr(render_training, "console", console)
    if callable(draw):
        result = draw(*args)
        if result is not None:
            console.print(*result)
    return console.export_text().splitlines()


def _file(name: str, precision: str, checks: list[Check]) -> ExportedFile:
    return ExportedFile(name, name.split(".")[0], precision, 2_400_000, "0" * 64,
                        Rate(97, 100), checks, fp32_nodes=("conv_3",) if precision == "int8"
                        else None)


def test_the_export_tables_give_each_file_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    parity = Check("parity 64×64 batch 32", True, "", {
        "max_abs_diff": 2e-6, "images": 32, "top1_mismatches": 0})
    rule = Check("resize rule", True, "", {"max_abs_pixel_diff": 1.0})
    frames = Check("raw frames 512×512", True, "", {"top1_agreement": Rate(200, 200).to_json()},
                   advisory=True)
    gate = Check("int8 agreement", False, "top-1 agrees with FP32 on 97.0% < 99%", {
        "max_abs_diff_vs_fp32": 0.03, "top1_agreement": Rate(97, 100).to_json(),
        "fp32_nodes": ["conv_3"], "min_agreement": 99.0, "images": 100})
    files = [_file("pretext.onnx", "fp32", [parity, rule, frames]),
             _file("classifier.onnx", "fp32", [parity, rule, frames]),
             _file("classifier.int8.onnx", "int8", [rule, frames, gate])]
    report = ExportReport(Path("runs/demo/exports"), "demo", "2026-12-07T00:00:00+00:00",
                          ExportConfig(Path("runs/demo")), files)

    lines = _printed(monkeypatch, render_training.export_tables, report)

    assert max(map(len, lines)) <= 80
    for exported in files:  # a row of each table, whole, on one line
        assert sum(line.split()[:1] == [exported.file] for line in lines) == 2
    assert any("classifier.int8.onnx (not written)" in line for line in lines)
    assert any("int8 agreement: top-1 agrees with FP32" in line for line in lines)
    assert any("1 nodes kept in FP32" in line for line in lines)


def test_a_study_of_five_budgets_fits_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    budgets = ["5", "10", "25", "50", "100"]
    summary = {m: {b: {"mean": 81.3, "std": 13.1, "collapsed": 1 if m == "scratch" else 0}
                   for b in budgets} for m in METHODS}
    margins = {m: {b: {"points": -16.3, "verdict": "below", "best_baseline": "scratch_shallow"}
                   for b in budgets} for m in ("ssl_finetune", "ssl_probe")}
    result = {"summary": summary, "margins": margins, "labels": ["goose", "goldfish"],
              "test_images": 100}

    lines = _printed(monkeypatch, render_training.print_study, result)

    assert max(map(len, lines)) <= 80
    assert "…" not in "\n".join(lines)
    assert any("SSL fine-tune − best baseline" in line and line.count("-16.3 ▼") == 5
               for line in lines)
    assert any(line.split()[:2] == ["from", "scratch"] and line.count("81.3±13.1✗") == 5
               for line in lines)
