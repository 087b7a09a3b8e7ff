"""What the inference benchmarks need from TensorFlow, computed in a process of its own.

usage: python keras_side.py RUN

Writes into RUN/peers/: Keras' probabilities for the run's validation images (the answers every
runtime must reproduce) and the LiteRT conversions of its classifier (FP32, and INT8 calibrated
on the images the ONNX INT8 export calibrated on). The suite runs this once per cached run:
TensorFlow's thread pools, once started, live as long as their process and take cores from
whichever runtime is being timed beside them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import bench_models
import bench_runtimes
import numpy as np


def main(run: Path) -> None:
    from edge_ssl import contract
    from edge_ssl.export.litert import to_litert
    from edge_ssl.train.config import load_run_config
    from edge_ssl.train.model import load_model

    model = load_model(run / contract.CLASSIFIER_MODEL)
    image_size = load_run_config(run).image_size
    out = run / bench_models.PEERS_DIR
    out.mkdir(exist_ok=True)
    (keras,) = [r for r in bench_runtimes.keras_runtimes(model, image_size, threads=1)
                if r.name == "keras-predict_on_batch"]
    prepared = keras.prepare(bench_models.CHECK_BATCH,
                             keras.layouts(bench_models.CHECK_BATCH)[0])
    images, _ = bench_models.validation(run)
    np.save(out / bench_models.REFERENCE_FILE,
            bench_runtimes.predict_all(prepared.predict, images, bench_models.CHECK_BATCH))
    for precision, calibration in (("fp32", None), ("int8", bench_models.calibration(run))):
        bench_models.litert_file(run, precision).write_bytes(
            to_litert(model, image_size, calibration))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
