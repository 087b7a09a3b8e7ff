"""What the benchmarks run on: a trained, exported run and a folder of JPEGs, built once and cached.

The run is made by `edge-ssl train` and `edge-ssl export`, as a user would type them, so the
benchmarks time the files a user gets; keras_side.py then adds what the suite needs from
TensorFlow (Keras' reference answers, the LiteRT conversions). All three run in processes of
their own, so that no TensorFlow thread pool is alive in the suite while other runtimes are
timed. A full run (`pytest --benchmark-only`) trains the benchmark model (MobileNetV2 width 1.0,
64×64) on the demo data for a few epochs, which takes 2–3 minutes on two cores: long enough for
a classifier whose INT8 accuracy loss means something. A smoke run (plain `pytest`) trains a
width-0.35, 32×32 model for one epoch. Both are cached under `.benchmarks/model-cache/`, keyed by
their settings, the library versions and the source of edge-ssl's training and export stages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image

import edge_ssl
from edge_ssl import contract, images

THREADS_ENV = "EDGE_SSL_BENCH_THREADS"
CACHE_DIR = Path(".benchmarks", "model-cache")
JPEG_QUALITY = 90
PRECISIONS = ("fp32", "int8", "fp16")
CHECK_BATCH = 32  # every runtime is checked against Keras on the validation set at this batch
PEERS_DIR = "peers"  # in the cached run: keras_side.py's files
REFERENCE_FILE = "keras-reference.npy"


@dataclass(frozen=True)
class Settings:
    """How big a benchmark run is. `full` is `pytest --benchmark-only`; otherwise a smoke run."""

    full: bool
    threads: int
    width: float
    image_size: int
    demo_per_class: int
    pretext_epochs: int
    finetune_epochs: int
    train_batch: int
    jpegs_per_class: int  # the classify folder
    pipeline_files: int  # files per input-pipeline epoch (the first `pipeline_files` JPEGs)
    rounds: int  # timed rounds of the benchmarks that take seconds per call

    def model_key(self) -> dict[str, object]:
        """Everything the trained run depends on (not `threads`: it changes no weight)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("full", "threads", "rounds")}


def settings(full: bool) -> Settings:
    """The benchmark model for a full run; else the smallest model that exercises every path."""
    threads = int(os.environ.get(THREADS_ENV) or os.cpu_count() or 1)
    if threads < 1:
        raise ValueError(f"{THREADS_ENV}={threads}; use 1 or more threads")
    if full:
        return Settings(full, threads, width=1.0, image_size=64, demo_per_class=500,
                        pretext_epochs=2, finetune_epochs=3, train_batch=32,
                        jpegs_per_class=512, pipeline_files=512, rounds=5)
    return Settings(full, threads, width=0.35, image_size=32, demo_per_class=16,
                    pretext_epochs=1, finetune_epochs=3, train_batch=16,
                    jpegs_per_class=8, pipeline_files=16, rounds=1)


def cached_run(setup: Settings, root: Path) -> Path:
    """The trained and exported run directory for `setup`, built on first use.

    It is built in a temporary folder and renamed into the cache, so an interrupted build
    leaves nothing half-written behind; a rebuild (new code or versions) drops the stale copy.
    Under `pytest -n`, one worker builds it while the others wait for it (a file lock).
    """
    settings_key, code_key = _digests(setup)
    target = root / CACHE_DIR / f"run-{settings_key}-{code_key}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.parent / f"run-{settings_key}.lock"):
        if (target / contract.EXPORTS_DIR / contract.EXPORT_REPORT).is_file():
            return target
        staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
        try:
            _train_and_export(setup, staging / "run")
            _replace(staging / "run", target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for stale in target.parent.glob(f"run-{settings_key}-*"):
            if stale != target:
                shutil.rmtree(stale, ignore_errors=True)
    return target


def _train_and_export(setup: Settings, run: Path) -> None:
    command = edge_ssl_command()
    batch = str(setup.train_batch)
    _run([*command, "train", "--width", str(setup.width), "--image-size", str(setup.image_size),
          "--demo-per-class", str(setup.demo_per_class),
          "--pretext-epochs", str(setup.pretext_epochs),
          "--finetune-epochs", str(setup.finetune_epochs), "--finetune-steps", "0",
          "--batch-size", batch, "--finetune-batch-size", batch,
          "--runs-dir", str(run.parent), "--name", run.name])
    # The variants' gates are off here: the benchmarks measure the accuracy drop and report it
    # against its target rather than stopping at it.
    _run([*command, "export", str(run), "--int8", "--fp16", "--min-int8-agreement", "0",
          "--max-fp32-nodes", "0", "--fp16-tolerance", "0.999"])
    _run([sys.executable, str(Path(__file__).with_name("keras_side.py")), str(run)])


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n"
                           f"{(done.stderr or done.stdout)[-3000:]}")


def jpeg_folder(setup: Settings, root: Path) -> Path:
    """`DIR/<class>/<class>_NNNN.jpg`: demo scenes not seen in training, as JPEG files.

    Unlocked, unlike the run: under `pytest -n` two workers may both write it, in a second at
    smoke size, and the second keeps the first's finished copy (`_replace`)."""
    from edge_ssl.train import demo_data

    target = root / CACHE_DIR / (f"jpegs-{setup.jpegs_per_class}x{len(demo_data.CLASSES)}-"
                                 f"{setup.image_size}px")
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        pixels, labels = demo_data.generate(setup.jpegs_per_class, seed=20_011,
                                            image_size=setup.image_size)
        for index, name in enumerate(demo_data.CLASSES):
            (staging / "jpegs" / name).mkdir(parents=True)
            for i, image in enumerate(pixels[labels == index]):
                Image.fromarray(image).save(staging / "jpegs" / name / f"{name}_{i:04d}.jpg",
                                            quality=JPEG_QUALITY)
        _replace(staging / "jpegs", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def validation(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """The run's held-out images (`uint8 [N, S, S, 3]`) and labels (`int64 [N]`)."""
    with np.load(run / contract.HELDOUT_FILE) as held:
        return (held[contract.HELDOUT_CLASSIFIER_IMAGES],
                held[contract.HELDOUT_CLASSIFIER_LABELS])


def calibration(run: Path) -> np.ndarray:
    """The training images the ONNX INT8 export calibrated on; LiteRT gets the same ones."""
    from edge_ssl.export.config import ExportConfig

    with np.load(run / contract.HELDOUT_FILE) as held:
        images = held[contract.HELDOUT_CALIBRATION_IMAGES]
    return images[:ExportConfig(run).calibration_images]


def reference(run: Path) -> np.ndarray:
    """Keras' probabilities `[N, C]` for `validation(run)`'s images, at CHECK_BATCH."""
    return np.load(run / PEERS_DIR / REFERENCE_FILE)


def litert_file(run: Path, precision: str) -> Path:
    return run / PEERS_DIR / f"classifier.{precision}.tflite"


def onnx_file(run: Path, precision: str) -> Path:
    suffix = "" if precision == "fp32" else f".{precision}"
    return run / contract.EXPORTS_DIR / f"classifier{suffix}.onnx"


def edge_ssl_command() -> list[str]:
    """The `edge-ssl` script pip installed beside this Python, as a user would type it."""
    script = Path(sys.executable).with_name("edge-ssl")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from edge_ssl.cli import main; main()"]


def _replace(staging: Path, target: Path) -> None:
    # Another session may have finished the same build meanwhile; its copy is as good as ours.
    try:
        os.replace(staging, target)
    except OSError:
        if not target.is_dir():
            raise


def _digests(setup: Settings) -> tuple[str, str]:
    """(settings, code): the code digest covers library versions and the source that makes
    the run (decoding rules, contracts, training and export, keras_side.py), so any change
    there rebuilds. Versions come from the installed metadata: importing TensorFlow here would
    start it in the suite's process."""
    settings = hashlib.sha256(json.dumps(setup.model_key(), sort_keys=True).encode())
    versions = [edge_ssl.__version__]
    for package in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert"):
        try:
            versions.append(metadata.version(package))
        except metadata.PackageNotFoundError:
            versions.append(f"no {package}")
    code = hashlib.sha256(" ".join(versions).encode())
    here = Path(__file__)
    sources = [Path(images.__file__), Path(contract.__file__), here,
               here.with_name("keras_side.py"), here.with_name("bench_runtimes.py")]
    for package in ("edge_ssl.train", "edge_ssl.export"):
        folder = Path(importlib.import_module(package).__path__[0])
        sources += sorted(folder.glob("*.py"))
    for path in sources:
        code.update(path.name.encode())
        code.update(path.read_bytes())
    return settings.hexdigest()[:12], code.hexdigest()[:12]
