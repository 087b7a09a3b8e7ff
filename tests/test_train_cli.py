"""`edge-ssl train` meets bad input with one line and a non-zero exit, before any training."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from edge_ssl.cli import app

runner = CliRunner()


def _train(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["train", *args])
    return result.exit_code, result.output


def _classes(root: Path, names: list[str], per_class: int = 3) -> Path:
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (16, 16), (i * 40, 20, 20)).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize("args, message", [
    (["--data", "does/not/exist"], "does/not/exist: no such folder"),
    (["--batch-size", "6"], "--batch-size 6 is not allowed"),
    (["--width", "0"], "--width 0.0 is not allowed"),
    (["--image-size", "16"], "--image-size 16 is not allowed"),
    (["--strategy", "default", "--cpu-replicas", "2"], "--cpu-replicas 2 is not allowed"),
    (["--cpu-replicas", "0"], "--cpu-replicas 0 is not allowed"),
    (["--memory-cache-gb", "-1"], "--memory-cache-gb -1.0 is not allowed"),
    (["--step-memory-gb", "0"], "--step-memory-gb 0.0 is not allowed"),
    (["--head-epochs", "-1"], "--head-epochs -1 is not allowed"),
])
def test_bad_options_fail_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    code, output = _train(*args, "--runs-dir", str(tmp_path / "runs"))
    assert code == 1
    assert message in output and "Traceback" not in output
    assert not (tmp_path / "runs").exists()  # nothing half-made


def test_empty_and_single_class_folders(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, output = _train("--data", str(empty))
    assert code == 1 and "no class folders" in output
    code, output = _train("--data", str(_classes(tmp_path / "one", ["cat"])))
    assert code == 1 and "at least two classes" in output


def test_unknown_class_suggests_names(tmp_path: Path) -> None:
    data = _classes(tmp_path / "d", ["duck", "fish"])
    code, output = _train("--data", str(data), "--classes", "duck,fsh")
    assert code == 1 and "unknown class 'fsh'" in output and "'fish'" in output


def test_tiny_imagenet_without_val_annotations(tmp_path: Path) -> None:
    root = tmp_path / "tiny"
    (root / "train").mkdir(parents=True)
    (root / "wnids.txt").write_text("n01443537\nn01855672\n")
    code, output = _train("--data", str(root))
    assert code == 1 and "val_annotations.txt: missing" in output


def test_existing_run_is_not_overwritten(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    (runs / "mine").mkdir(parents=True)
    (runs / "mine" / "keep.txt").write_text("precious")
    code, output = _train("--runs-dir", str(runs), "--name", "mine", "--demo-per-class", "2")
    assert code == 1 and "already exists; pass --overwrite" in output
    assert f"`edge-ssl train --resume {runs / 'mine'}` to continue it" in output
    assert (runs / "mine" / "keep.txt").read_text() == "precious"


def test_resume_errors(tmp_path: Path) -> None:
    code, output = _train("--resume", str(tmp_path / "nope"))
    assert code == 1 and "no such run directory" in output
    (tmp_path / "run").mkdir()
    code, output = _train("--resume", str(tmp_path / "run"), "--width", "0.5")
    assert code == 1 and "drop --width" in output
    code, output = _train("--resume", str(tmp_path / "run"))
    assert code == 1 and "has no config.json" in output


def test_tensorboard_without_its_package_fails_before_a_run_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else find_spec(name, *a))
    code, output = _train("--tensorboard", "--runs-dir", str(tmp_path / "runs"))
    assert code == 1 and "--tensorboard needs the tensorboard package: pip install" in output
    assert not (tmp_path / "runs").exists()


def test_runs_saved_before_the_fine_tune_and_pretext_options_keep_their_recipe() -> None:
    from edge_ssl.train.config import PretextLR, TrainConfig
    from edge_ssl.train.finetune_options import DEFAULT_HEAD_EPOCHS, FinetuneBatchNorm

    old = TrainConfig.from_dict({"width": 0.5})  # a config.json without the newer keys
    assert (old.head_epochs, old.pretext_lr) == (0, PretextLR.plateau)
    assert old.finetune_batchnorm is FinetuneBatchNorm.train
    assert TrainConfig().head_epochs == DEFAULT_HEAD_EPOCHS
    assert TrainConfig().finetune_batchnorm is FinetuneBatchNorm.frozen
    frozen_then = TrainConfig(finetune_batchnorm=FinetuneBatchNorm.train).to_dict()
    assert TrainConfig.from_dict(frozen_then).finetune_batchnorm is FinetuneBatchNorm.train
    assert TrainConfig.from_dict(TrainConfig(head_epochs=3).to_dict()).head_epochs == 3


def test_a_cut_past_the_pretext_network_is_refused_with_the_way_out() -> None:
    from edge_ssl.errors import ConfigError
    from edge_ssl.train.config import PretextDepth, TrainConfig, pretext_top

    assert pretext_top(PretextDepth.cut, "block_12_add") == "block_12_add"
    assert pretext_top(PretextDepth.full, "block_12_add") is None
    assert TrainConfig(cut="block_12_add", pretext_top=None).pretext_top is None
    with pytest.raises(ConfigError, match="--cut block_12_add is past the end of the pretext "
                                          "network, which stops at block_9_add.*"
                                          "--pretext-depth full"):
        TrainConfig(cut="block_12_add", pretext_top="block_9_add")
    # Runs saved before the option trained the whole network; they still fine-tune anywhere.
    assert TrainConfig.from_dict({"cut": "out_relu"}).pretext_top is None
