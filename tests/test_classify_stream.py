"""`classify` streams its rows: written as batches finish, kept on Ctrl-C and on runtime errors."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx_models
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from edge_ssl.cli import app
from edge_ssl.commands.render_runtime import progress_bar
from edge_ssl.errors import InferenceError
from edge_ssl.runtime.classify import ClassifyConfig, classify
from edge_ssl.runtime.output import Failure, Prediction, Row


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return onnx_models.build_model(tmp_path_factory.mktemp("model") / "classifier.onnx")


def colours(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    paths = []
    for i in range(n):
        paths.append(folder / f"{i:04d}.png")
        Image.new("RGB", (12, 10), tuple(int(c) for c in rng.integers(0, 256, 3))).save(paths[-1])
    return paths


def hidden(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".")]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_rows_reach_the_file_as_batches_finish(tmp_path: Path, model: Path) -> None:
    colours(tmp_path / "imgs", 10)
    out = tmp_path / "out" / "preds.csv"
    seen: list[list[str]] = []

    def after_batch(rows: Sequence[Row]) -> None:
        (partial,) = hidden(out.parent)  # the target appears only at the end
        assert not out.exists()
        seen.append(partial.read_text(encoding="utf-8").splitlines())

    result = classify(ClassifyConfig((tmp_path / "imgs",), model=model, batch_size=4,
                                     output=out), on_rows=after_batch)

    assert [len(lines) for lines in seen] == [5, 9, 11]  # header + 4, + 4, + 2 rows
    assert len(read_csv(out)) == 10 == result.classified and hidden(out.parent) == []
    assert result.output == out


def test_an_interruption_keeps_the_finished_rows(tmp_path: Path, model: Path) -> None:
    paths = colours(tmp_path / "imgs", 10)
    (tmp_path / "imgs" / "0002.png").write_bytes(b"broken")
    out = tmp_path / "preds.jsonl"
    out.write_text("an earlier run's file\n")
    batches = 0

    def interrupt_after_two(rows: Sequence[Row]) -> None:
        nonlocal batches
        batches += 1
        if batches == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        classify(ClassifyConfig((tmp_path / "imgs",), model=model, batch_size=3, output=out),
                 on_rows=interrupt_after_two)

    import json

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # Two batches of 3 decoded images, and the unreadable file between them, in input order.
    assert [Path(r["path"]).name for r in rows] == [p.name for p in paths[:7]]
    assert rows[2] == {"path": str(paths[2]), "error": "not an image Pillow can read"}
    assert all(r["label"] in onnx_models.COLOURS for i, r in enumerate(rows) if i != 2)
    assert hidden(tmp_path) == []


def test_interrupted_before_any_row_leaves_an_existing_file_alone(tmp_path: Path,
                                                                  model: Path) -> None:
    colours(tmp_path / "imgs", 3)
    out = tmp_path / "preds.csv"
    out.write_text("kept\n")

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        classify(ClassifyConfig((tmp_path / "imgs",), model=model, output=out),
                 on_start=interrupt)

    assert out.read_text() == "kept\n" and hidden(tmp_path) == []


@pytest.mark.parametrize(("stop", "code", "word"), [(signal.SIGINT, 130, "interrupted"),
                                                    (signal.SIGTERM, 143, "terminated")],
                         ids=["ctrl-c", "kill"])
def test_a_real_process_stopped_midway_leaves_a_valid_partial_csv(
        tmp_path: Path, model: Path, stop: signal.Signals, code: int, word: str) -> None:
    # 400 hard links to one 1-megapixel PNG: ~20 ms to decode each, seconds in all.
    big = tmp_path / "big.png"
    pixels = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(big)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(400):
        os.link(big, folder / f"{i:04d}.png")
    out = tmp_path / "preds.csv"
    # A test runner started in the background ignores SIGINT, and so would its children:
    # restore Python's Ctrl-C handler first, as an interactive shell gives it.
    start = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "from edge_ssl.cli import main; main()")
    command = [sys.executable, "-c", start, "classify", str(folder), "--model", str(model),
               "-o", str(out), "--batch-size", "4"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            partial = [p for p in hidden(tmp_path) if p.suffix == ".csv"]
            if partial and len(partial[0].read_text().splitlines()) > 2:
                break
            time.sleep(0.05)
        process.send_signal(stop)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()

    assert process.returncode == code, stderr
    rows = read_csv(out)
    assert 0 < len(rows) < 400 and len(rows) % 4 == 0  # whole batches only
    assert all(r["label"] in onnx_models.COLOURS and float(r["confidence"]) > 0 for r in rows)
    assert f"{word}; {len(rows)} finished rows are in {out}" in " ".join(stderr.split())
    assert "Traceback" not in stderr and hidden(tmp_path) == []


def test_an_onnxruntime_failure_is_one_line_and_exit_4(tmp_path: Path) -> None:
    colours(tmp_path / "imgs", 3)
    # Weights for 6×6 images behind a resize to 8×8: the MatMul fails when the model runs.
    broken = onnx_models.build_model(tmp_path / "broken.onnx", onnx_models.colour_weights(6),
                                     size=8)

    result = CliRunner().invoke(app, ["classify", str(tmp_path / "imgs"), "--model",
                                      str(broken), "-o", str(tmp_path / "p.csv")])

    assert result.exit_code == 4, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {broken}: onnxruntime failed on a batch of 3 images")
    assert "MatMul dimension mismatch" in line and "--device cpu" in line
    assert not (tmp_path / "p.csv").exists() and hidden(tmp_path) == []
    with pytest.raises(InferenceError):
        classify(ClassifyConfig((tmp_path / "imgs",), model=broken))


def test_an_output_path_that_cannot_be_written_is_a_usage_error(tmp_path: Path,
                                                                model: Path) -> None:
    colours(tmp_path / "imgs", 1)
    (tmp_path / "taken.csv").mkdir()
    blocked = tmp_path / "file"
    blocked.write_text("a file, not a folder")

    as_folder = CliRunner().invoke(app, ["classify", str(tmp_path / "imgs"), "--model",
                                         str(model), "-o", str(blocked / "p.csv")])

    assert as_folder.exit_code == 2 and "cannot write there" in as_folder.stderr


@pytest.mark.parametrize(("show", "terminal", "total", "drawn"), [
    (None, True, 300, True), (None, True, 10, False), (True, True, 10, True),
    (False, True, 300, False), (True, False, 300, False)])
def test_progress_bar_only_on_a_terminal(show: bool | None, terminal: bool, total: int,
                                         drawn: bool) -> None:
    console = Console(force_terminal=terminal, record=True, width=80)

    with progress_bar(console, show) as update:
        update(total // 2, total)
        update(total, total)

    assert (f"{total}/{total}" in console.export_text()) is drawn


def test_progress_option_reaches_the_bar(tmp_path: Path, model: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    colours(tmp_path / "imgs", 2)
    shown: list[bool | None] = []
    from edge_ssl.commands import render_runtime as report

    real = report.progress_bar

    def spy(console: Console, show: bool | None = None, what: str = "classifying"):  # type: ignore[no-untyped-def]
        shown.append(show)
        return real(console, show, what)

    monkeypatch.setattr(report, "progress_bar", spy)
    for flag in ("--progress", "--no-progress"):
        result = CliRunner().invoke(app, ["classify", str(tmp_path / "imgs"), "--model",
                                          str(model), flag])
        assert result.exit_code == 0, result.output
    assert shown == [True, False]


def test_rows_keep_input_order_with_failures(tmp_path: Path, model: Path) -> None:
    paths = colours(tmp_path / "imgs", 5)
    paths[1].write_bytes(b"")
    got: list[Row] = []

    classify(ClassifyConfig((tmp_path / "imgs",), model=model, batch_size=2),
             on_rows=got.extend)

    assert [row.path for row in got] == paths
    assert isinstance(got[1], Failure) and got[1].reason == "empty file"
    assert all(isinstance(row, Prediction) for i, row in enumerate(got) if i != 1)
