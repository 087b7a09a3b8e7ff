"""Fair comparisons: every network method takes the same optimizer steps; the rotation loss of
the S4L methods learns; the tiny-image baseline chooses its thumbnails from the labels alone."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from edge_ssl.errors import ConfigError  # noqa: E402
from edge_ssl.train import demo_data, joint, methods, pipeline, probe  # noqa: E402
from edge_ssl.train import method_names as names  # noqa: E402
from edge_ssl.train.config import RotationLoss  # noqa: E402
from edge_ssl.train.finetune_options import DEFAULT_FINETUNE_STEPS, FinetuneOptions  # noqa: E402
from edge_ssl.train.model import ModelSpec, build_model  # noqa: E402

SPEC = ModelSpec(image_size=32, width=0.35, bn_momentum=0.9)
NETWORKS = (names.SSL_FINETUNE, names.S4L_FINETUNE, names.S4L_SCRATCH, names.SCRATCH,
            names.SCRATCH_SHALLOW)


def _task(per_class: int, unlabelled: int = 0) -> methods.Labelled:
    x, y = demo_data.generate(per_class, seed=1, image_size=32)
    test_x, test_y = demo_data.generate(6, seed=2, image_size=32)
    extra = demo_data.generate(unlabelled, seed=3, image_size=32)[0] if unlabelled else None
    return methods.Labelled(fit=tf.data.Dataset.from_tensor_slices((x, y)).cache(),
                            fit_size=len(y), selection=None, test=(test_x, test_y),
                            num_classes=2, unlabelled=extra)


@pytest.mark.parametrize("labels_per_class", [1, 5, 10, 25, 50, 100])
def test_every_network_takes_the_same_steps_whatever_the_budget(labels_per_class: int) -> None:
    settings = methods.FitSettings(FinetuneOptions(), patience=10, lr_patience=4, batch_size=32,
                                   seed=0)
    steps = {method: settings.epochs(method) * settings.steps_per_epoch(
        method, 2 * labels_per_class) for method in NETWORKS}
    assert set(steps.values()) == {DEFAULT_FINETUNE_STEPS}, steps
    assert settings.epochs(names.SSL_FINETUNE) > settings.epochs(names.SCRATCH)  # head first


def test_many_labels_get_a_pass_an_epoch_and_zero_keeps_the_old_passes() -> None:
    many = methods.FitSettings(FinetuneOptions(), 10, 4, batch_size=32, seed=0)
    steps = {m: many.epochs(m) * many.steps_per_epoch(m, 5000) for m in NETWORKS}
    passes = 40 * 157  # 5,000 labels in batches of 32, 40 epochs
    assert all(passes <= s < passes + many.epochs(m) for m, s in steps.items()), steps
    old = methods.FitSettings(FinetuneOptions(finetune_steps=0), 10, 4, batch_size=32, seed=0)
    assert old.steps_per_epoch(names.SSL_FINETUNE, 100) == 4


def test_the_finetune_batch_is_its_own_and_older_configs_keep_the_run_batch() -> None:
    from edge_ssl.train.config import TrainConfig
    from edge_ssl.train.finetune_stage import fit_settings
    from edge_ssl.train.study import StudyConfig

    config = TrainConfig(batch_size=128)  # a pretext at 128, as the shipped backbone's
    assert fit_settings(config, 0).batch_size == 32
    saved = config.to_dict()
    del saved["finetune_batch_size"]  # a run saved before the option: its fine-tune at 128
    assert fit_settings(TrainConfig.from_dict(saved), 0).batch_size == 128
    study = StudyConfig(run=Path("run")).to_json()
    assert StudyConfig.from_json(study).finetune_batch(128) == 32
    del study["finetune_batch_size"]
    assert StudyConfig.from_json(study).finetune_batch(128) == 128
    with pytest.raises(ConfigError, match="--finetune-batch-size 30 is not allowed"):
        FinetuneOptions(finetune_batch_size=30)


class Steps(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.count += 1


def test_training_runs_exactly_the_budgeted_steps(tmp_path: Path) -> None:
    """Measured, not computed: a callback counts the optimizer steps of a fit with head-only
    epochs first and of a rotation-loss fit without them."""
    task = _task(12)
    options = FinetuneOptions(finetune_epochs=2, head_epochs=1, finetune_steps=12)
    settings = methods.FitSettings(options, 5, 2, batch_size=8, seed=0)
    pretext = build_model(SPEC, 4, "pretext")
    counted = {}
    for method in (names.SSL_FINETUNE, names.S4L_SCRATCH):
        steps = Steps()
        methods.measure(method, pretext, SPEC, task, settings, tmp_path / f"{method}.csv",
                        tmp_path / method, [steps])
        counted[method] = steps.count
    assert counted == dict.fromkeys(counted, 12)


def _column(path: Path, name: str) -> list[float]:
    with path.open() as f:
        return [float(row[name]) for row in csv.DictReader(f)]


def test_the_joint_objective_learns_rotation_and_keeps_one_output(tmp_path: Path) -> None:
    task = _task(10, unlabelled=60)
    options = FinetuneOptions(finetune_epochs=4, finetune_steps=80, learning_rate=3e-3)
    settings = methods.FitSettings(options, 5, 2, batch_size=16, seed=0)
    result = methods.measure(names.S4L_SCRATCH, build_model(SPEC, 4, "pretext"), SPEC, task,
                             settings, tmp_path / "s4l.csv", tmp_path / "s4l")
    rotation = _column(tmp_path / "s4l.csv", "rotation_loss")
    assert len(rotation) == 4 and rotation[-1] < 0.85 * rotation[0], rotation
    # Without --pseudo-labels there is no pseudo-labelled share to log.
    assert "pseudo_labelled" not in (tmp_path / "s4l.csv").read_text().splitlines()[0]
    assert min(_column(tmp_path / "s4l.csv", "loss")) > 0  # the class loss, logged beside it
    assert result.model is not None and not isinstance(result.model, joint.JointRotation)
    assert result.model.count_params() and len(result.model.outputs) == 1
    assert result.model.output_shape == (None, 2)
    assert result.predicted is not None and len(result.predicted) == 12


def test_pseudo_labels_count_only_the_confident_upright_images() -> None:
    """The loss of the confident upright quarter of a rotated batch, averaged over the quarter,
    as numpy computes it from the classifier's own probabilities."""
    images = keras.Input((8, 8, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(images)
    x = keras.layers.GlobalAveragePooling2D()(x)
    classifier = keras.Model(images, keras.layers.Dense(2, activation="softmax")(x))
    classifier.layers[-1].set_weights([np.array([[40.0, -40.0], [0, 0], [0, 0]]),
                                       np.array([-20.0, 20.0])])
    model = joint.JointRotation(classifier, classifier, pseudo_labels=0.9)
    upright = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    upright[:2, ..., 0] = 255  # red: confidently class 0
    upright[2:4, ..., 0] = 0  # no red: confidently class 1
    upright[4:, ..., 0] = 128  # half red: about 50/50, below the threshold
    rotated, _ = (t.numpy() for t in pipeline.rotate_all(tf.constant(upright)))
    kept, loss = (float(t) for t in model._pseudo_label_loss(tf.constant(rotated)))
    p = classifier.predict(upright, verbose=0)
    confident = p.max(1) >= 0.9
    assert confident.tolist() == [True] * 4 + [False] * 2
    assert kept == pytest.approx(4 / 6)
    assert loss == pytest.approx(-np.log(p.max(1))[confident].sum() / 6, rel=1e-4)


def test_a_fit_with_pseudo_labels_logs_the_share_it_kept(tmp_path: Path) -> None:
    # One fit: the joint-objective test above checks that a fit without them logs no share.
    task = _task(6, unlabelled=20)
    options = FinetuneOptions(finetune_epochs=2, finetune_steps=4, pseudo_labels=0.5)
    settings = methods.FitSettings(options, 5, 2, batch_size=8, seed=0)
    methods.measure(names.S4L_SCRATCH, build_model(SPEC, 4, "pretext"), SPEC, task, settings,
                    tmp_path / "history.csv", tmp_path / "run")
    # Two classes: the most confident class probability is never below one half.
    assert _column(tmp_path / "history.csv", "pseudo_labelled") == [1.0, 1.0]
    with pytest.raises(ConfigError, match="--pseudo-labels 1.0 is not allowed"):
        FinetuneOptions(pseudo_labels=1.0)


def test_the_pretext_head_goes_on_predicting_rotations(tmp_path: Path) -> None:
    """From a pretext cut where the classifier is, the rotation head is the pretext's own (its
    weights copied, not shared); a whole-network pretext gets a new head on the cut."""
    top = build_model(replace(SPEC, top="block_9_add"), 4, "pretext")
    task = _task(4)
    options = FinetuneOptions(finetune_epochs=1, finetune_steps=1, head_epochs=0)
    settings = methods.FitSettings(options, 5, 2, batch_size=8, seed=0)
    network = methods.copy_model(top)
    classifier = methods.build_classifier(network, "block_9_add", 2)
    rotation = joint.rotation_model(network, classifier)
    pixels = task.test[0]
    np.testing.assert_allclose(rotation.predict(pixels, verbose=0),
                               top.predict(pixels, verbose=0), atol=1e-5)
    whole = build_model(SPEC, 4, "pretext")
    fresh = joint.rotation_model(whole, methods.build_classifier(whole, "block_9_add", 2))
    assert "rotation_head" in {layer.name for layer in fresh.layers}
    before = [w.copy() for w in top.get_weights()]
    methods.measure(names.S4L_FINETUNE, top, SPEC, task, settings, tmp_path / "a.csv",
                    tmp_path / "a")
    for now, then in zip(top.get_weights(), before, strict=True):
        np.testing.assert_array_equal(now, then)  # the pretext, head included, is untouched


def test_tiny_images_picks_its_thumbnail_size_on_the_labels() -> None:
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(40) % 2
    coarse[labels == 1, :16] = 250  # a class told apart by its top half: any size sees it
    assert probe.best_thumbnail_side(coarse, labels) == 8  # the smaller on a tie
    # A checkerboard of 2×2 cells, in one phase or the other: 16×16 thumbnails keep the cells,
    # 8×8 ones average each 4×4 block of two bright and two dark cells to the same grey.
    rows, cols = np.mgrid[0:32, 0:32]
    board = (rows // 2 + cols // 2) % 2 == 1
    fine = np.zeros((40, 32, 32, 3), np.uint8)
    for image, label, light in zip(fine, labels, rng.integers(0, 60, 40), strict=True):
        image[:] = 100 + light  # every image a brightness of its own, whatever its class
        image[board if label else ~board] = 195 + light
    assert probe.best_thumbnail_side(fine, labels) == 16
    assert probe.thumbnails(fine, 16).shape == (40, 768)


def test_a_probe_chooses_its_features_on_the_labels_alone() -> None:
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 2
    noise = rng.normal(size=(60, 8)).astype(np.float32)
    signal = noise.copy()
    signal[:, 0] += 3.0 * labels  # one feature that tells the classes apart
    assert probe.best_features({"a": noise, "b": signal, "c": noise[:, :4]}, labels) == "b"
    assert probe.best_features({"a": noise, "b": signal}, np.array([0, 1] + [0] * 58)) == "a"


def test_both_probes_choose_a_block_up_to_the_cut() -> None:
    task = _task(12)
    settings = methods.FitSettings(FinetuneOptions(cut="block_5_add"), 5, 2, batch_size=8, seed=0)
    pretext = build_model(SPEC, 4, "pretext")
    for method in (names.SSL_PROBE, names.RANDOM_PROBE):
        result = methods.measure(method, pretext, SPEC, task, settings, Path("unused.csv"),
                                 Path("unused"))
        assert result.choice in ("block_2_add", "block_5_add") and result.test.n == 12
    tiny = methods.measure(names.TINY_IMAGES, pretext, SPEC, task, settings, Path("x"), Path("y"))
    assert tiny.choice in ("8x8", "16x16")


def test_images_without_labels_turn_the_rotation_loss_on(tmp_path: Path) -> None:
    """By default (auto), a run whose task has images without labels ships the rotation-loss
    fine-tune as classifier.keras, trained on the labelled images and those --labels-per-class
    left out, and config.json says so; export sees one output as ever."""
    from edge_ssl import contract as C
    from edge_ssl.rundir import create_run_dir
    from edge_ssl.train.config import TrainConfig, load_run_config
    from edge_ssl.train.run import train

    run = create_run_dir(tmp_path, "r", overwrite=False)
    config = TrainConfig(demo_per_class=12, labels_per_class=4, image_size=32, width=0.35,
                         batch_size=8, pretext_epochs=1, finetune_epochs=2, finetune_steps=4,
                         head_epochs=0)
    assert config.rotation_loss is RotationLoss.auto
    report = train(config, run)
    assert list(report["methods"]) == [names.S4L_FINETUNE]
    assert load_run_config(run).rotation_loss is RotationLoss.on
    assert report["protocol"]["rotation_loss_unlabelled_images"] == 2 * (12 - 4)
    assert "rotation_loss" in (run / C.HISTORY_FINETUNE).read_text().splitlines()[0]
    classifier = keras.models.load_model(run / C.CLASSIFIER_MODEL)
    assert classifier.output_shape == (None, 2)
    assert not (run / C.PLAIN_CLASSIFIER_MODEL).exists()


def test_auto_is_off_without_unlabelled_images_and_old_runs_keep_theirs() -> None:
    from edge_ssl.train.config import TrainConfig

    auto = TrainConfig()
    assert auto.resolve_rotation_loss(0).rotation_loss is RotationLoss.off
    assert auto.resolve_rotation_loss(1).rotation_loss is RotationLoss.on
    forced = TrainConfig(rotation_loss=RotationLoss.off)
    assert forced.resolve_rotation_loss(450).rotation_loss is RotationLoss.off
    saved = TrainConfig(rotation_loss=RotationLoss.on).to_dict()
    assert TrainConfig.from_dict(saved).rotation_loss is RotationLoss.on
    assert TrainConfig.from_dict({**saved, "rotation_loss": True}).rotation_loss is RotationLoss.on
    del saved["rotation_loss"]  # a run from before the option: no rotation loss
    assert TrainConfig.from_dict(saved).rotation_loss is RotationLoss.off
