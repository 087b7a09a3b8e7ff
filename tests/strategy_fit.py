"""A small pretext fit under a real tf.distribute strategy, in a process of its own.

The strategy fixes the devices (and, with TF_CONFIG, starts a server) when TensorFlow starts, so
tests run this script in a fresh interpreter. It goes through the trainer's own pieces
(`distribute.connect`, `PretextInput`, `fit_stage` with the warm-up and BackupAndRestore) on a
three-layer network, so that the strategy, not MobileNetV2's graph, is what the test times.

    python strategy_fit.py OUT STRATEGY [--cpu-replicas N] [--stop-after-epoch K]

With --stop-after-epoch the first fit is interrupted after that epoch (as Ctrl-C would) and a
second fit, on a freshly built model, resumes from the backup. Writes OUT/result-TASK.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("strategy")
    parser.add_argument("--cpu-replicas", type=int)
    parser.add_argument("--stop-after-epoch", type=int)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    from edge_ssl.train import distribute
    from edge_ssl.train.config import StrategyName

    cluster = distribute.connect(StrategyName(args.strategy), args.cpu_replicas)

    import keras

    from edge_ssl.train import demo_data, pipeline
    from edge_ssl.train.config import Rotations
    from edge_ssl.train.sources import ImageSet
    from edge_ssl.train.stages import Checkpoints, Recipe, fit_stage

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if epoch == args.stop_after_epoch:
                raise KeyboardInterrupt

    class Record(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.first_epoch: int | None = None
            self.rates: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if self.first_epoch is None:
                self.first_epoch = epoch

        def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self.rates.append(float(self.model.optimizer.learning_rate.numpy()))

    def network() -> keras.Model:
        images = keras.Input((32, 32, 3), dtype="uint8")
        x = keras.layers.Rescaling(1 / 255)(images)
        x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(images, keras.layers.Dense(4, activation="softmax",
                                                      dtype="float32")(x))

    pixels, _ = demo_data.generate(16, seed=1, image_size=32)  # 64 images
    source = pipeline.PretextInput(ImageSet(pixels=pixels), 32, 8, Rotations.all, seed=0,
                                   replicas=cluster.replicas, skipped=pipeline.SkippedFiles(),
                                   cache_dirs=lambda _: None)
    scaling = distribute.Scaling(8, cluster.replicas, 1e-3)
    steps = source.steps_per_epoch
    train = cluster.strategy.distribute_datasets_from_function(source.dataset)
    task = cluster.task.replace(" ", "-")
    checkpoints = args.out / "checkpoints"

    def fit(callbacks: list[keras.callbacks.Callback]) -> tuple[keras.Model, Any]:
        with cluster.scope():
            model = network()
            recipe = Recipe(
                args.epochs, scaling.learning_rate, patience=1, lr_patience=1,
                warmup=(1e-3, scaling.warmup_steps(steps)) if scaling.replicas > 1 else None)
            files = (Checkpoints(checkpoints, args.out / "history.csv") if cluster.is_chief
                     else Checkpoints(args.out / f"scratch-{task}", restore_from=checkpoints))
            stage = fit_stage(model, train, None, recipe, files,
                              samples_per_batch=source.samples_per_step, steps_per_epoch=steps,
                              extra_callbacks=callbacks)
        return model, stage

    interrupted = False
    if args.stop_after_epoch is not None:
        try:
            fit([Stop()])
        except KeyboardInterrupt:
            interrupted = True
    record = Record()
    model, stage = fit([record])
    result = {**cluster.describe(), **scaling.to_json(steps), "steps_per_epoch": steps,
              "interrupted": interrupted, "first_epoch": record.first_epoch,
              "epochs_run": stage.epochs_run, "rates": record.rates,
              "weights": float(sum(abs(w).sum() for w in model.get_weights()))}
    (args.out / f"result-{task}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
