"""End to end through the CLI, on files: train → export → classify → bench, and `demo`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("tensorflow")

from edge_ssl import contract as C  # noqa: E402
from edge_ssl.cli import app  # noqa: E402

runner = CliRunner()
TINY = ["--width", "0.35", "--image-size", "32", "--pretext-epochs", "1", "--finetune-epochs",
        "1", "--finetune-steps", "0"]
ARTIFACTS = [C.CONFIG_FILE, C.PRETEXT_MODEL, C.CLASSIFIER_MODEL, C.BASELINE_MODEL,
             C.BASELINE_SHALLOW_MODEL, C.HISTORY_PRETEXT, C.HISTORY_FINETUNE,
             C.HISTORY_BASELINE, C.HISTORY_BASELINE_SHALLOW, C.ROTATION_CLASSIFIER_MODEL,
             C.ROTATION_BASELINE_MODEL, C.HISTORY_FINETUNE_ROTATION, C.HISTORY_BASELINE_ROTATION,
             C.CURVES_PNG, C.SAMPLES_PNG,
             C.REPORT_FILE, C.HELDOUT_FILE, C.METHODS_PNG]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A run trained through the CLI with --tensorboard, and what the command printed. Its
    --step-memory-gb (4 MB) splits each pretext batch of 8 in two (0.8 MB a sample)."""
    runs = tmp_path_factory.mktemp("e2e") / "runs"
    result = runner.invoke(app, ["train", *TINY, "--demo-per-class", "8", "--batch-size", "8",
                                 "--baseline", "--tensorboard", "--step-memory-gb", "0.004",
                                 "--runs-dir", str(runs), "--name", "e2e"])
    assert result.exit_code == 0, result.output
    return runs / "e2e", result.output


@pytest.fixture(scope="module")
def run(trained: tuple[Path, str]) -> Path:
    return trained[0]


def test_tensorboard_gets_event_files_for_every_trained_stage(run: Path) -> None:
    logs = run / C.TENSORBOARD_DIR
    for stage in ("pretext", "ssl_finetune", "scratch"):
        for split in ("train", "validation") if stage == "pretext" else ("train",):
            events = list((logs / stage / split).glob("events.out.tfevents.*"))
            assert events and events[0].stat().st_size > 0, f"{stage}/{split}"


def test_piped_output_has_one_line_per_epoch_and_no_progress_bar(
        trained: tuple[Path, str]) -> None:
    output = trained[1]
    # Keras' verbose=2 ends each epoch with one "2/2 - 3s - 1s/step - loss: ..." line, and
    # verbose=1 would redraw "1/2 ━━━━━━━━━━ 0s 1s/step" every batch. One epoch each: pretext,
    # fine-tune, fine-tune + rotation, from scratch + rotation, from scratch, shallow.
    epoch_lines = re.findall(r"^\d+/\d+ - .*loss: ", output, re.MULTILINE)
    assert "each batch of 8 trains as 2 micro-batches of 4 with accumulated gradients" in output
    assert len(epoch_lines) == 6, output
    assert not re.search(r"\d+/\d+ +━", output) and "\r" not in output, output


def test_train_writes_every_artifact(run: Path) -> None:
    for name in ARTIFACTS:
        assert (run / name).is_file(), name
    assert (run.parent / C.LATEST).resolve() == run.resolve()
    assert not (run / C.CHECKPOINTS_DIR).exists()
    report = json.loads((run / C.REPORT_FILE).read_text())
    assert report["complete"] is True
    assert report["pretext"]["heldout_rotation"]["n"] == 4 * 2  # 10 % of 16, four rotations
    assert report["pretext"]["epochs_run"] == 1
    assert report["pretext"]["backbone_ends_at"] == "block_9_add"
    step = report["pretext"]["step"]
    assert (step["micro_batch"], step["gradient_accumulation_steps"]) == (4, 2)
    assert step["step_activations_mb"] <= step["step_memory_budget_mb"] == 4.0
    assert set(report["methods"]) == {"ssl_finetune", "s4l_finetune", "ssl_probe", "s4l_scratch",
                                      "scratch", "scratch_shallow", "random_probe",
                                      "tiny_images", "colour"}
    for result in report["methods"].values():
        assert result["test"]["n"] == 4  # the separately drawn demo test scenes
        low, high = result["test"]["ci95"]
        assert low <= result["test"]["percent"] <= high
    for method in ("ssl_finetune", "s4l_finetune", "s4l_scratch", "scratch", "scratch_shallow"):
        assert report["methods"][method]["epochs_run"] == 1
        assert report["methods"][method]["images_per_second"] > 0
    assert report["protocol"]["schedule"] == "fixed"  # 8 labels per class: too few to split
    config = json.loads((run / C.CONFIG_FILE).read_text())
    assert config["labels"] == ["duck", "fish"] and config["image_size"] == 32
    assert config["config"]["width"] == 0.35 and "tensorflow" in config["versions"]
    assert config["config"]["pretext_top"] == "block_9_add"  # the pretext stops at the cut
    assert config["config"]["finetune_batchnorm"] == "frozen"
    assert report["protocol"]["finetune_batchnorm"] == "frozen"


def test_finetune_reuses_the_pretext_and_refuses_a_cut_past_its_end(run: Path,
                                                                    tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for command in (["finetune", str(run), "--runs-dir", str(runs)], ["study", str(run)]):
        past = runner.invoke(app, [*command, "--cut", "block_12_add", "--name", "past"])
        message = " ".join(past.output.split())
        assert past.exit_code == 1 and "Traceback" not in message, past.output
        assert ("--cut block_12_add is past the end of the pretext network, which stops at "
                "block_9_add" in message and "--pretext-depth full" in message)
    assert not runs.exists() and not (run / "studies" / "past").exists()
    done = runner.invoke(app, ["finetune", str(run), "--cut", "block_5_add", "--finetune-epochs",
                               "1", "--finetune-steps", "3", "--head-epochs", "0",
                               "--finetune-batchnorm", "train",
                               "--runs-dir", str(runs), "--name", "ft"])
    assert done.exit_code == 0, done.output
    config = json.loads((runs / "ft" / C.CONFIG_FILE).read_text())["config"]
    assert (config["pretext_top"], config["cut"]) == ("block_9_add", "block_5_add")
    assert config["finetune_batchnorm"] == "train"
    assert (runs / "ft" / C.CLASSIFIER_MODEL).is_file()


def test_export_classify_bench_on_files(run: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(run)])
    assert result.exit_code == 0, result.output
    model = run / C.EXPORTS_DIR / C.CLASSIFIER_ONNX
    assert model.is_file() and (run / C.EXPORTS_DIR / C.PRETEXT_ONNX).is_file()

    images = tmp_path / "imgs"
    assert runner.invoke(app, ["demo-data", str(images), "--per-class", "3", "--unlabeled",
                               "0"]).exit_code == 0
    (images / "duck" / "broken.jpg").write_bytes(b"not a jpeg")
    preds = tmp_path / "preds.jsonl"
    result = runner.invoke(app, ["classify", str(images), "--recursive", "--model", str(model),
                                 "--output", str(preds)])
    assert result.exit_code == 1, result.output  # one broken file, the rest classified
    assert "broken.jpg" in result.output
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    broken = [r for r in rows if "error" in r]
    assert len(rows) == 7 and [Path(r["path"]).name for r in broken] == ["broken.jpg"]
    assert {r["label"] for r in rows if r not in broken} <= {"duck", "fish"}

    bench_json = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", str(model), "--batch-sizes", "1,2", "--warmup", "1",
                                 "--iterations", "3", "--json", str(bench_json)])
    assert result.exit_code == 0, result.output
    assert len(json.loads(bench_json.read_text())["results"]) == 2


def test_demo_command_runs_every_stage(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["demo", *TINY, "--per-class", "8", "--no-int8",
                                 "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    assert (runs / "demo" / C.EXPORTS_DIR / C.CLASSIFIER_ONNX).is_file()
    assert "demo images" in result.output and "duck" in result.output
    again = runner.invoke(app, ["demo", "--runs-dir", str(runs)])
    assert again.exit_code == 1 and "already exists; pass --overwrite" in again.output
    assert "--resume" not in again.output  # the demo has no --resume


@pytest.mark.slow
def test_readme_demo_as_shipped_learns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`edge-ssl demo` exactly as the README's first screen gives it, in a fresh folder."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "demo"
    report = json.loads((run / C.REPORT_FILE).read_text())
    # Measured 100 % and 86 % (n = 240 and 150); chance is 25 % and 50 %.
    assert report["pretext"]["heldout_rotation"]["percent"] > 80, report["pretext"]
    assert report["methods"]["ssl_finetune"]["test"]["percent"] > 70, report["methods"]
    for name in (C.PRETEXT_ONNX, C.CLASSIFIER_ONNX):
        assert (run / C.EXPORTS_DIR / name).is_file()
    assert "edge-ssl classify runs/demo/demo-images" in result.output


def test_study_command_prints_the_margins_and_guards_its_folder(run: Path) -> None:
    args = ["study", str(run), "--budgets", "2,4", "--seeds", "1", "--methods",
            "ssl_finetune,ssl_probe,colour", "--finetune-epochs", "1", "--finetune-steps", "3",
            "--head-epochs", "0",
            "--name", "cli"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    study = json.loads((run / "studies" / "cli" / "study.json").read_text())
    assert study["complete"] and [c["budget"] for c in study["cells"]] == ["2", "4"]
    # Every test image's prediction is kept, and each margin carries its paired interval.
    first = study["cells"][0]["results"]["ssl_finetune"]
    assert len(first["predictions"]) == len(study["test_labels"]) == first["n"]
    assert all(row["paired"] and len(row["ci95"]) == 2
               for row in study["margins"]["ssl_finetune"].values())
    assert (run / "studies" / "cli" / "label_efficiency.png").stat().st_size > 0
    assert "SSL fine-tune − best baseline" in " ".join(result.output.split())
    again = runner.invoke(app, args)
    assert again.exit_code != 0 and "already exists; pass --resume" in again.output
    bad = runner.invoke(app, ["study", str(run), "--methods", "ssl_finetune,nope"])
    assert bad.exit_code != 0 and "--methods ssl_finetune,nope is not allowed" in bad.output
