"""`--pretext-init RUN|builtin`: a pretext that starts from another one, or is used as it is."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

keras = pytest.importorskip("keras")

from edge_ssl import contract as C  # noqa: E402
from edge_ssl import rundir  # noqa: E402
from edge_ssl.cli import app  # noqa: E402

runner = CliRunner()
SMALL = ["--demo-per-class", "8", "--batch-size", "8", "--finetune-epochs", "1",
         "--finetune-steps", "0"]


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run at width 0.35 and 32 px: the pretext others start from."""
    runs = tmp_path_factory.mktemp("origin")
    result = runner.invoke(app, ["train", *SMALL, "--width", "0.35", "--image-size", "32",
                                 "--pretext-epochs", "1", "--runs-dir", str(runs), "--name", "o"])
    assert result.exit_code == 0, result.output
    return runs / "o"


def _conv(path: Path) -> np.ndarray:
    model = keras.models.load_model(path, compile=False)
    return model.get_layer("backbone").get_layer("Conv1").get_weights()[0]


def test_zero_epochs_use_the_pretext_as_it_is_and_keep_its_network(origin: Path,
                                                                   tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", *SMALL, "--pretext-init", str(origin),
                                 "--pretext-epochs", "0", "--runs-dir", str(tmp_path),
                                 "--name", "zero"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "zero"
    assert (run / C.PRETEXT_MODEL).read_bytes() == (origin / C.PRETEXT_MODEL).read_bytes()
    config = json.loads((run / C.CONFIG_FILE).read_text())["config"]
    assert (config["width"], config["image_size"]) == (0.35, 32)  # not the defaults 1.0, 64
    assert config["pretext_from"] == config["pretext_init"] == str(origin.resolve())
    assert json.loads((run / C.REPORT_FILE).read_text())["complete"]


def test_more_epochs_go_on_from_its_weights(origin: Path, tmp_path: Path) -> None:
    # At a learning rate of 1e-9 one epoch cannot move a weight far: where it ends is where
    # it started.
    result = runner.invoke(app, ["train", *SMALL, "--pretext-init", str(origin),
                                 "--pretext-epochs", "1", "--learning-rate", "1e-9",
                                 "--runs-dir", str(tmp_path), "--name", "more"])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(_conv(tmp_path / "more" / C.PRETEXT_MODEL),
                               _conv(origin / C.PRETEXT_MODEL), atol=1e-5)


def test_pretext_init_refuses_another_network_and_a_missing_run(origin: Path,
                                                               tmp_path: Path) -> None:
    cases = [(["--pretext-init", str(origin), "--width", "1.0"],
              "keeps that network's width 0.35, image size 32 and depth; drop --width 1.0"),
             (["--pretext-init", str(origin), "--pretext-depth", "full"], "drop --pretext-depth"),
             (["--pretext-init", str(tmp_path / "nowhere")], "no such run directory"),
             (["--pretext-epochs", "0"], "0 pretext epochs only with --pretext-init")]
    for args, message in cases:
        result = runner.invoke(app, ["train", *SMALL, *args, "--runs-dir", str(tmp_path)])
        assert result.exit_code != 0 and message in " ".join(result.output.split()), args
    assert not any(tmp_path.iterdir())  # nothing was created


def test_builtin_is_checked_against_its_sha256(origin: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_ssl.train.builtin import pack

    shipped = tmp_path / "package" / "builtin"
    provenance = pack(origin, shipped, "edge-ssl train ...", "demo scenes", 12.0)
    digest = hashlib.sha256((shipped / C.PRETEXT_MODEL).read_bytes()).hexdigest()
    assert provenance["sha256"] == digest and provenance["labels_used"] is False
    assert provenance["epochs"] == 1 and provenance["heldout_rotation"]["n"] > 0
    assert json.loads((shipped / C.CONFIG_FILE).read_text())["config"]["data"] is None
    assert (shipped / C.PRETEXT_MODEL).read_bytes() == (origin / C.PRETEXT_MODEL).read_bytes()
    monkeypatch.setattr(rundir, "builtin_dir", lambda: shipped)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["finetune", "builtin", "--finetune-epochs", "1",
                                 "--finetune-steps", "0", "--name", "b"])
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "runs" / "b" / C.HELDOUT_FILE) as heldout:  # no images shipped:
        assert heldout[C.HELDOUT_PRETEXT_IMAGES].shape[1:] == (32, 32, 3)  # the run's own
    (shipped / C.PRETEXT_MODEL).write_bytes(b"not the shipped model")
    damaged = runner.invoke(app, ["finetune", "builtin", "--name", "c"])
    assert damaged.exit_code != 0 and "reinstall edge-ssl" in " ".join(damaged.output.split())
    shutil.rmtree(shipped)
    missing = runner.invoke(app, ["study", "builtin"])
    assert missing.exit_code != 0 and "has no built-in pretext" in " ".join(missing.output.split())
