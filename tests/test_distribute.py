"""tf.distribute: linear scaling with warm-up, and real strategies on the CPU.

Two logical CPU devices give a real MirroredStrategy, two processes on 127.0.0.1 with TF_CONFIG a
real MultiWorkerMirroredStrategy. Both need a fresh process (devices are fixed when TensorFlow
starts). The default run fits a three-layer network under each (tests/strategy_fit.py); the
slow ones run the CLI as users do, on MobileNetV2, up to the export.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

keras = pytest.importorskip("keras")

from edge_ssl import contract as C  # noqa: E402
from edge_ssl.cli import app  # noqa: E402
from edge_ssl.errors import ConfigError  # noqa: E402
from edge_ssl.stats import Rate  # noqa: E402
from edge_ssl.train import demo_data, distribute  # noqa: E402
from edge_ssl.train.config import StrategyName  # noqa: E402

TINY = ["--width", "0.35", "--image-size", "32", "--batch-size", "8", "--finetune-steps", "0",
        "--pretext-epochs", "1", "--finetune-epochs", "1"]
# Restores Python's Ctrl-C handler (a background test runner ignores SIGINT in its children).
START = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
         "from edge_ssl.cli import main; main()")


# Scaling and warm-up ------------------------------------------------------------------------


def test_linear_scaling_with_a_short_warmup() -> None:
    one = distribute.Scaling(32, 1, 1e-3)
    assert (one.global_batch, one.learning_rate, one.warmup_steps(500)) == (32, 1e-3, 0)
    four = distribute.Scaling(32, 4, 1e-3)
    assert (four.global_batch, four.learning_rate) == (128, pytest.approx(4e-3))
    assert four.warmup_steps(50) == 50  # the first epoch...
    assert four.warmup_steps(10**6) == distribute.WARMUP_MAX_STEPS  # ...or its first 1,000 steps
    assert four.to_json(50)["warmup_steps"] == 50


class RecordRate(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.rates.append(float(self.model.optimizer.learning_rate.numpy()))


def test_warmup_rises_linearly_then_leaves_the_rate_alone() -> None:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x, y = np.zeros((10, 2), np.float32), np.zeros((10, 1), np.float32)
    record = RecordRate()
    model.fit(x, y, batch_size=1, epochs=1, verbose=0,
              callbacks=[distribute.WarmUp(0.1, 0.5, 4), record])
    assert record.rates[:6] == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.5, 0.5])
    model.optimizer.learning_rate = 0.25  # as ReduceLROnPlateau would
    record.rates.clear()
    model.fit(x, y, batch_size=1, epochs=1, verbose=0,  # resumed: step 10 > 4
              callbacks=[distribute.WarmUp(0.1, 0.5, 4), record])
    assert record.rates == pytest.approx([0.25] * 10)


def test_warmup_counts_updates_not_micro_batches() -> None:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1, gradient_accumulation_steps=2), "mse")
    x, y = np.zeros((8, 2), np.float32), np.zeros((8, 1), np.float32)
    record = RecordRate()
    model.fit(x, y, batch_size=1, epochs=1, verbose=0,
              callbacks=[distribute.WarmUp(0.1, 0.5, 2, accumulation=2), record])
    assert record.rates == pytest.approx([0.3, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])


def test_multi_worker_needs_a_usable_tf_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(distribute.TF_CONFIG, raising=False)
    with pytest.raises(ConfigError, match="needs the TF_CONFIG environment variable"):
        distribute.connect(StrategyName.multi_worker, None)
    monkeypatch.setenv(distribute.TF_CONFIG, '{"cluster": {"worker": ["a:1", "b:2"]}, '
                                             '"task": {"type": "worker", "index": 5}}')
    with pytest.raises(ConfigError, match="TF_CONFIG is not usable"):
        distribute.connect(StrategyName.multi_worker, None)
    monkeypatch.setenv(distribute.TF_CONFIG, "not json")
    with pytest.raises(ConfigError, match="TF_CONFIG is not usable"):
        distribute.connect(StrategyName.auto, None)


# Real strategies, on a three-layer network (tests/strategy_fit.py) ----------------------------

STRATEGY_FIT = Path(__file__).with_name("strategy_fit.py")


def strategy_fit(out: Path, args: list[str], env: dict[str, str] | None = None,
                 log: Path | None = None) -> subprocess.Popen[str]:
    out.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, **(env or {})}
    return subprocess.Popen([sys.executable, str(STRATEGY_FIT), str(out), *args],
                            stdout=log.open("w") if log else subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=environment)


def test_mirrored_on_two_logical_cpus_scales_warms_up_and_resumes(tmp_path: Path) -> None:
    """A real MirroredStrategy over two logical CPU devices: global batch and rate doubled, the
    warm-up climbs to the doubled rate, and a fit interrupted after its first epoch resumes
    at the second on a freshly built model."""
    process = strategy_fit(tmp_path, ["mirrored", "--cpu-replicas", "2",
                                      "--stop-after-epoch", "0"])
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out
    result = json.loads((tmp_path / "result-local.json").read_text())
    assert (result["strategy"], result["replicas"], len(result["devices"])) == ("mirrored", 2, 2)
    assert (result["global_batch"], result["learning_rate"]) == (16, pytest.approx(2e-3))
    steps = result["steps_per_epoch"]
    assert steps == 32 // (2 * 2) and result["warmup_steps"] == steps
    assert result["interrupted"] and result["first_epoch"] == 1 and result["epochs_run"] == 3
    # Resumed after the warm-up: the doubled rate (then the cosine schedule's decay) from the
    # first step, never the single-replica rate again.
    assert result["rates"][0] == pytest.approx(2e-3 * (0.01 + 0.99 * 0.5 * (1 + np.cos(
        np.pi / 2))), rel=1e-4)
    assert len(result["rates"]) == 2 * steps
    assert result["rates"][steps] == pytest.approx(2e-3 * 0.01, rel=1e-4)  # the last epoch
    assert _epochs(tmp_path / "history.csv") == [0, 1, 2]


def test_two_workers_on_localhost_train_in_sync(tmp_path: Path) -> None:
    """A real MultiWorkerMirroredStrategy from TF_CONFIG: two processes on 127.0.0.1, each with
    its shard of the data, end with the same weights; only the chief wrote the history."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    processes = [strategy_fit(tmp_path, ["multi-worker", "--epochs", "2"], {
        distribute.TF_CONFIG: json.dumps({"cluster": cluster,
                                          "task": {"type": "worker", "index": index}})},
        tmp_path / f"worker{index}.log") for index in range(2)]
    for index, process in enumerate(processes):
        assert finish(process, 300) == 0, (tmp_path / f"worker{index}.log").read_text()
    chief, other = (json.loads((tmp_path / f"result-worker-{i}.json").read_text())
                    for i in range(2))
    assert (chief["strategy"], chief["workers"], chief["replicas"]) == ("multi-worker", 2, 2)
    assert chief["global_batch"] == 16 and chief["steps_per_epoch"] == 32 // (2 * 2)
    assert chief["epochs_run"] == other["epochs_run"] == 2
    assert chief["weights"] == pytest.approx(other["weights"], rel=1e-6)
    assert _epochs(tmp_path / "history.csv") == [0, 1]


def _epochs(path: Path) -> list[int]:
    with path.open() as f:
        return [int(line.split(",")[0]) for line in f.readlines()[1:]]


# Real strategies, through the CLI (slow: MobileNetV2's graph under a strategy takes a minute) --


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A class-per-folder tree of JPEG demo scenes: files to decode, shard and cache."""
    root = tmp_path_factory.mktemp("folder")
    pixels, labels = demo_data.generate(24, seed=5, image_size=32)
    for i, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        (root / demo_data.CLASSES[label]).mkdir(exist_ok=True)
        Image.fromarray(image).save(root / demo_data.CLASSES[label] / f"{i:03d}.jpg", quality=95)
    return root


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch(args: list[str], env: dict[str, str] | None = None,
           log: Path | None = None) -> subprocess.Popen[str]:
    """`edge-ssl train ARGS` in a fresh interpreter, its output unbuffered into `log`."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    out = log.open("w") if log else subprocess.PIPE
    return subprocess.Popen([sys.executable, "-c", START, "train", *args], stdout=out,
                            stderr=subprocess.STDOUT, text=True, env=environment)


def workers(args: list[str], tmp: Path, tag: str) -> list[subprocess.Popen[str]]:
    """Two workers of one job on 127.0.0.1; worker 1 gets its own TMPDIR."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    processes = []
    for index in range(2):
        tmpdir = tmp / f"tmp{index}"
        tmpdir.mkdir(exist_ok=True)
        env = {distribute.TF_CONFIG: json.dumps({"cluster": cluster,
                                                 "task": {"type": "worker", "index": index}}),
               "TMPDIR": str(tmpdir)}
        processes.append(launch(args, env, tmp / f"{tag}-worker{index}.log"))
    return processes


def finish(process: subprocess.Popen[str], timeout: float = 600) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def run_cli(args: list[str], timeout: float = 600) -> str:
    process = launch(args)
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out
    return out


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_writes_a_run_that_exports(folder: Path,
                                                                  tmp_path: Path) -> None:
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    out = run_cli(["--data", str(folder), *TINY, "--strategy", "mirrored", "--cpu-replicas", "2",
                   "--cache-dir", str(cache), "--runs-dir", str(runs), "--name", "m"])
    assert "Strategy: mirrored, 2 replicas" in out
    run = runs / "m"
    config = json.loads((run / C.CONFIG_FILE).read_text())
    pretext = config["distribution"]["pretext"]
    assert config["distribution"]["replicas"] == 2 and len(config["distribution"]["devices"]) == 2
    assert (pretext["global_batch"], pretext["learning_rate"]) == (16, pytest.approx(2e-3))
    assert pretext["warmup_steps"] == pretext["steps_per_epoch"] > 0
    assert config["distribution"]["finetune"]["devices"] == 1
    report = json.loads((run / C.REPORT_FILE).read_text())
    assert report["complete"] and report["pretext"]["distribution"]["replicas"] == 2
    assert report["pretext"]["input"]["cache"] == "disk"  # --cache-dir: on disk, whatever fits
    assert report["peak_rss_mb"] > 100
    assert list(cache.iterdir()) == []  # the cache lives as long as the stage
    exported = CliRunner().invoke(app, ["export", str(run)])
    assert exported.exit_code == 0, exported.output
    assert (run / C.EXPORTS_DIR / C.CLASSIFIER_ONNX).is_file()


@pytest.mark.slow
def test_two_workers_on_localhost_train_one_run(folder: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    args = ["--data", str(folder), *TINY, "--strategy", "multi-worker", "--memory-cache-gb", "0",
            "--runs-dir", str(runs), "--name", "mw"]
    chief, worker = workers(args, tmp_path, "mw")
    assert finish(chief) == 0, (tmp_path / "mw-worker0.log").read_text()
    assert finish(worker) == 0, (tmp_path / "mw-worker1.log").read_text()
    assert "worker 1: pretext done" in (tmp_path / "mw-worker1.log").read_text()
    run = runs / "mw"
    report = json.loads((run / C.REPORT_FILE).read_text())
    assert report["complete"] and report["pretext"]["distribution"]["workers"] == 2
    assert report["pretext"]["input"]["cache"] == "disk"  # --memory-cache-gb 0
    # The chief alone wrote: one run directory, no cache left in it; the other worker's cache
    # went to its own temporary folder and is gone too.
    assert sorted(p.name for p in runs.iterdir()) == [C.LATEST, "mw"]
    assert not (run / "cache").exists() and not (run / C.CHECKPOINTS_DIR).exists()
    assert not any((tmp_path / "tmp1").rglob("*.index"))
    assert (run / C.CLASSIFIER_MODEL).is_file() and (run / C.HISTORY_PRETEXT).is_file()


# Learning and fault tolerance -----------------------------------------------------------------


def rotation_rate(run: Path) -> Rate:
    held = json.loads((run / C.REPORT_FILE).read_text())["pretext"]["heldout_rotation"]
    return Rate(held["hits"], held["n"])


def within_noise(a: Rate, b: Rate) -> bool:
    """The 95 % interval of the difference of two proportions contains 0."""
    p, q = a.hits / a.n, b.hits / b.n
    return abs(p - q) <= 1.96 * np.sqrt(p * (1 - p) / a.n + q * (1 - q) / b.n)


@pytest.mark.slow
def test_distributed_runs_learn_as_well_as_one_device(tmp_path: Path) -> None:
    """The same pretext on one device, on two mirrored replicas and on two workers, long
    enough for all three to settle.

    Two replicas take half as many steps per epoch (16 here), and BatchNorm's moving averages,
    updated once a step, need a few dozen steps before inference mode follows the training
    weights: after 2 epochs both distributed runs still answered one class for every held-out
    image (83 % in training mode), after 4 they were at 92-96 % against 97.5 % on one device
    (64 steps against 132). Eight epochs give them 128 steps.
    """
    runs = tmp_path / "runs"
    common = ["--demo-per-class", "150", "--width", "0.35", "--image-size", "32",
              "--pretext-epochs", "8", "--finetune-epochs", "1", "--runs-dir", str(runs)]
    run_cli([*common, "--strategy", "default", "--name", "one"])
    run_cli([*common, "--strategy", "mirrored", "--cpu-replicas", "2", "--name", "two"])
    chief, worker = workers([*common, "--strategy", "multi-worker", "--name", "mw"], tmp_path,
                            "learn")
    assert finish(chief) == 0 and finish(worker) == 0
    one, two, mw = (rotation_rate(runs / name) for name in ("one", "two", "mw"))
    assert one.percent > 60, one
    for other in (two, mw):
        assert other.percent > 60 and within_noise(one, other), (one, other)


@pytest.mark.slow
def test_a_killed_worker_is_resumed(folder: Path, tmp_path: Path) -> None:
    """Worker 1 is killed in the middle of the second epoch; the chief stops with one line;
    both started again with --resume continue from the first epoch's backup."""
    runs = tmp_path / "runs"
    args = ["--data", str(folder), *TINY[:-4], "--pretext-epochs", "3", "--finetune-epochs",
            "1", "--strategy", "multi-worker", "--runs-dir", str(runs), "--name", "k"]
    chief, worker = workers(args, tmp_path, "first")
    backup = runs / "k" / C.CHECKPOINTS_DIR / "pretext" / "backup" / "training_metadata.json"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not backup.exists() and chief.poll() is None:
        time.sleep(0.2)
    assert backup.exists(), (tmp_path / "first-worker0.log").read_text()
    time.sleep(1.0)  # into the second epoch
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert finish(chief, 300) == 1
    chief_log = (tmp_path / "first-worker0.log").read_text()
    assert "another worker of the multi-worker job stopped" in " ".join(chief_log.split())
    assert "Traceback" not in chief_log
    assert not (runs / "k" / C.PRETEXT_MODEL).exists()

    chief, worker = workers(["--resume", str(runs / "k")], tmp_path, "again")
    assert finish(chief) == 0, (tmp_path / "again-worker0.log").read_text()
    assert finish(worker) == 0, (tmp_path / "again-worker1.log").read_text()
    resumed = (tmp_path / "again-worker0.log").read_text()
    assert "Epoch 1/3" not in resumed and "Epoch 3/3" in resumed
    with (runs / "k" / C.HISTORY_PRETEXT).open() as f:
        assert [int(line.split(",")[0]) for line in f.readlines()[1:]] == [0, 1, 2]
    assert json.loads((runs / "k" / C.REPORT_FILE).read_text())["complete"]
