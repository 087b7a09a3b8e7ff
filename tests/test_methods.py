"""The fine-tune's baselines, the kNN monitor and the study, on tiny generated data."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from edge_ssl.train import demo_data, methods, probe  # noqa: E402
from edge_ssl.train import method_names as names  # noqa: E402
from edge_ssl.train.cuts import SHALLOW_CUT  # noqa: E402
from edge_ssl.train.finetune_options import FinetuneBatchNorm, FinetuneOptions  # noqa: E402
from edge_ssl.train.model import ModelSpec, build_classifier, build_model  # noqa: E402
from edge_ssl.train.monitor import KnnMonitor  # noqa: E402

SPEC = ModelSpec(image_size=32, width=0.35, bn_momentum=0.9)
OPTIONS = FinetuneOptions(cut="block_9_add", finetune_epochs=2, finetune_steps=0,
                          learning_rate=1e-3, head_epochs=0,
                          finetune_batchnorm=FinetuneBatchNorm.train)
SETTINGS = methods.FitSettings(OPTIONS, patience=5, lr_patience=2, batch_size=8, seed=0)


def changed(settings: methods.FitSettings, **changes: object) -> methods.FitSettings:
    """`settings` with some fine-tune options (or the run's own settings) changed."""
    own = {k: v for k, v in changes.items() if k in ("freeze_backbone", "seed", "patience")}
    options = {k: v for k, v in changes.items() if k not in own}
    return replace(settings, options=replace(settings.options, **options), **own)


@pytest.fixture(scope="module")
def task() -> methods.Labelled:
    """Demo ducks and fish: 12 labelled images per class, 10 test images per class."""
    x, y = demo_data.generate(12, seed=1, image_size=32)
    test_x, test_y = demo_data.generate(10, seed=2, image_size=32)
    return methods.Labelled(fit=tf.data.Dataset.from_tensor_slices((x, y)).cache(),
                            fit_size=len(y), selection=None, test=(test_x, test_y),
                            num_classes=2)


def test_colour_histogram_sums_to_one_and_separates_colours() -> None:
    red = np.zeros((3, 8, 8, 3), np.uint8)
    red[..., 0] = 250
    hist = probe.colour_histogram(np.concatenate([red, 255 - red]))
    assert hist.shape == (6, 64)
    np.testing.assert_allclose(hist.sum(axis=1), 1.0)
    predicted = probe.linear_probe(hist, np.array([0, 0, 0, 1, 1, 1]), hist)
    assert predicted.tolist() == [0, 0, 0, 1, 1, 1]


def test_knn_leave_one_out_never_counts_the_image_itself() -> None:
    # Each point's nearest other point has the opposite label: LOO must get every one wrong,
    # while counting itself (k=1, no LOO) would get every one right.
    features = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    labels = np.array([0, 1, 0, 1])
    assert (probe.knn_predict(features, labels, features, k=1) == labels).all()
    loo = probe.knn_predict(features, labels, features, k=1, leave_one_out=True)
    assert (loo != labels).all()


def test_every_method_runs_and_reports_an_interval(task: methods.Labelled) -> None:
    pretext = build_model(SPEC, 4, "pretext")
    results = methods.run_in_memory(names.METHODS, pretext, SPEC, task, SETTINGS)
    assert list(results) == list(names.METHODS)
    for result in results.values():
        low, high = result.test.ci95
        assert result.test.n == 20 and low <= result.test.percent <= high
        assert result.model is None  # a study keeps numbers, not networks
    for method in (names.SSL_FINETUNE, names.SCRATCH, names.SCRATCH_SHALLOW):  # networks
        assert results[method].stage is not None
        assert results[method].stage.schedule == "fixed"
        assert results[method].stage.epochs_run == 2


def test_fine_tune_starts_from_the_pretext_and_leaves_it_untouched(task: methods.Labelled,
                                                                    tmp_path: Path) -> None:
    pretext = build_model(SPEC, 4, "pretext")
    before = [w.copy() for w in pretext.get_weights()]
    still = changed(SETTINGS, learning_rate=1e-9)  # a fine-tune that barely moves its weights
    tuned = methods.train_network(names.SSL_FINETUNE, pretext, task, still,
                                  tmp_path / "a.csv", tmp_path / "a")
    assert tuned.model is not None
    tuned_conv = tuned.model.get_layer("backbone").get_layer("Conv1")
    conv = pretext.get_layer("backbone").get_layer("Conv1")
    assert tuned_conv is not conv
    np.testing.assert_allclose(tuned_conv.get_weights()[0], conv.get_weights()[0], atol=1e-5)
    methods.train_network(names.SSL_FINETUNE, pretext, task, SETTINGS, tmp_path / "b.csv",
                          tmp_path / "b")
    for now, then in zip(pretext.get_weights(), before, strict=True):
        np.testing.assert_array_equal(now, then)  # BatchNorm statistics included
    fresh = methods.random_init_network(SPEC, seed=5)
    scratch = methods.train_network(names.SCRATCH, fresh, task, still,
                                    tmp_path / "c.csv", tmp_path / "c")
    assert scratch.model is not None
    scratch_conv = scratch.model.get_layer("backbone").get_layer("Conv1").get_weights()[0]
    assert not np.allclose(scratch_conv, conv.get_weights()[0], atol=1e-3)


def _backbone_layers(model: keras.Model) -> set[str]:
    return {layer.name for layer in model.get_layer("backbone").layers}


def test_shallow_scratch_is_the_same_random_network_cut_early(task: methods.Labelled,
                                                              tmp_path: Path) -> None:
    """`scratch_shallow` differs from `scratch` in its cut alone: the same random init, the same
    labels, its backbone ending at SHALLOW_CUT whatever the settings' cut."""
    fresh = methods.random_init_network(SPEC, seed=5)
    still = changed(SETTINGS, learning_rate=1e-9)
    deep = methods.train_network(names.SCRATCH, fresh, task, still, tmp_path / "d.csv",
                                 tmp_path / "d").model
    shallow = methods.train_network(names.SCRATCH_SHALLOW, fresh, task, still,
                                    tmp_path / "s.csv", tmp_path / "s").model
    assert deep is not None and shallow is not None
    assert {"block_2_add", "block_9_add"} <= _backbone_layers(deep)
    assert SHALLOW_CUT == "block_2_add"
    assert "block_2_add" in _backbone_layers(shallow)
    assert not {"block_3_expand", "block_9_add"} & _backbone_layers(shallow)
    assert shallow.count_params() < deep.count_params() / 4
    np.testing.assert_allclose(  # the same random start, scarcely moved at this learning rate
        shallow.get_layer("backbone").get_layer("Conv1").get_weights()[0],
        deep.get_layer("backbone").get_layer("Conv1").get_weights()[0], atol=1e-5)
    assert changed(SETTINGS, cut="block_5_add").cut_for(names.SCRATCH_SHALLOW) == "block_2_add"


def test_a_study_cell_trains_alike_without_the_per_epoch_backup(task: methods.Labelled,
                                                                 tmp_path: Path) -> None:
    def fit(resumable: bool, folder: str) -> methods.MethodResult:
        return methods.train_network(
            names.SCRATCH_SHALLOW, methods.random_init_network(SPEC, seed=2), task, SETTINGS,
            tmp_path / f"{folder}.csv", tmp_path / folder, resumable=resumable)

    backed_up, cell = fit(True, "run"), fit(False, "cell")
    assert (tmp_path / "run" / "backup").is_dir() and not (tmp_path / "cell" / "backup").exists()
    assert cell.test == backed_up.test and cell.stage is not None
    assert cell.stage.epochs_run == SETTINGS.options.finetune_epochs


class Snapshots(keras.callbacks.Callback):
    """The backbone's and the head's weights at the start and end of every fit."""

    def __init__(self) -> None:
        super().__init__()
        self.fits: list[dict[str, list[np.ndarray]]] = []

    def _take(self, when: str) -> None:
        if when == "begin":
            self.fits.append({})
        for part in ("backbone", "head"):
            weights = [w.copy() for w in self.model.get_layer(part).get_weights()]
            self.fits[-1][f"{part}_{when}"] = weights

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._take("begin")

    def on_train_end(self, logs: dict | None = None) -> None:
        self._take("end")


def _moved(before: list[np.ndarray], after: list[np.ndarray]) -> float:
    return max(float(np.abs(a - b).max()) for a, b in zip(before, after, strict=True))


def test_head_epochs_train_the_head_alone_then_every_layer(task: methods.Labelled,
                                                           tmp_path: Path) -> None:
    pretext = build_model(SPEC, 4, "pretext")
    snapshots = Snapshots()
    result = methods.train_network(names.SSL_FINETUNE, pretext, task,
                                   changed(SETTINGS, head_epochs=2), tmp_path / "h.csv",
                                   tmp_path / "h", extra_callbacks=[snapshots])
    head_only, every_layer = snapshots.fits
    # The backbone, its BatchNorm statistics included, is untouched while the head learns.
    assert _moved(head_only["backbone_begin"], head_only["backbone_end"]) == 0.0
    assert _moved(head_only["head_begin"], head_only["head_end"]) > 1e-3
    assert _moved(every_layer["head_begin"], head_only["head_end"]) == 0.0  # it goes on from there
    assert _moved(every_layer["backbone_begin"], every_layer["backbone_end"]) > 1e-4
    assert result.stage is not None and result.stage.epochs_run == SETTINGS.options.finetune_epochs
    frozen = Snapshots()
    methods.train_network(names.SSL_FINETUNE, pretext, task,
                          changed(SETTINGS, head_epochs=2, freeze_backbone=True),
                          tmp_path / "f.csv", tmp_path / "f", extra_callbacks=[frozen])
    assert len(frozen.fits) == 1  # a frozen backbone has no head-only phase to add
    scratch = Snapshots()
    methods.train_network(names.SCRATCH, methods.random_init_network(SPEC, seed=3), task,
                          changed(SETTINGS, head_epochs=2), tmp_path / "s.csv", tmp_path / "s",
                          extra_callbacks=[scratch])
    assert len(scratch.fits) == 1  # from scratch, every layer trains from the start


def _batchnorm_and_conv(model: keras.Model) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The backbone's BatchNorm weights (scale, shift, statistics) and its other weights."""
    batchnorm, other = [], []
    for layer in model.get_layer("backbone").layers:
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        (batchnorm if is_bn else other).extend(w.copy() for w in layer.get_weights())
    return batchnorm, other


def test_frozen_batchnorm_keeps_the_pretext_statistics_while_the_backbone_learns(
        task: methods.Labelled, tmp_path: Path) -> None:
    pretext = build_model(SPEC, 4, "pretext")
    pretext_bn, pretext_other = _batchnorm_and_conv(
        build_classifier(pretext, SETTINGS.options.cut, 2))  # the layers the classifier starts from
    settings = changed(SETTINGS, head_epochs=1,
                     finetune_batchnorm=FinetuneBatchNorm.frozen)
    tuned = methods.train_network(names.SSL_FINETUNE, pretext, task, settings,
                                  tmp_path / "f.csv", tmp_path / "f")
    assert tuned.model is not None
    tuned_bn, tuned_other = _batchnorm_and_conv(tuned.model)
    assert _moved(pretext_bn, tuned_bn) == 0.0  # statistics not even recomputed afterwards
    assert _moved(pretext_other, tuned_other) > 1e-4  # the convolutions did train
    trained = methods.train_network(names.SSL_FINETUNE, pretext, task,
                                    changed(settings, finetune_batchnorm=FinetuneBatchNorm.train),
                                    tmp_path / "t.csv", tmp_path / "t")
    assert trained.model is not None
    assert _moved(pretext_bn, _batchnorm_and_conv(trained.model)[0]) > 1e-4
    # A random-init network has no statistics worth keeping: from scratch trains them anyway.
    source = methods.random_init_network(SPEC, seed=3)
    source_bn, _ = _batchnorm_and_conv(build_classifier(source, SETTINGS.options.cut, 2))
    scratch = methods.train_network(names.SCRATCH, source, task, settings,
                                    tmp_path / "s.csv", tmp_path / "s")
    assert scratch.model is not None
    assert _moved(source_bn, _batchnorm_and_conv(scratch.model)[0]) > 1e-4


def test_a_study_cell_does_not_leak_into_the_next(task: methods.Labelled) -> None:
    """Every cell's fine-tune starts from the pretext, and the SSL probe scores the pretext's
    own features, whatever ran before it."""
    pretext = build_model(SPEC, 4, "pretext")
    before = [w.copy() for w in pretext.get_weights()]
    probe_alone = methods.run_in_memory([names.SSL_PROBE], pretext, SPEC, task, SETTINGS)
    cell = methods.run_in_memory([names.SSL_FINETUNE, names.SSL_PROBE], pretext, SPEC, task,
                                 SETTINGS)
    assert cell[names.SSL_PROBE].test == probe_alone[names.SSL_PROBE].test
    for now, then in zip(pretext.get_weights(), before, strict=True):
        np.testing.assert_array_equal(now, then)  # what the next cell's fine-tune starts from


def test_collapsed_network_is_flagged_not_scored(task: methods.Labelled, tmp_path: Path) -> None:
    pretext = build_model(SPEC, 4, "pretext")

    class Collapse(keras.callbacks.Callback):
        """Drives the head to one class, as a network whose BatchNorm is broken would."""

        def on_train_end(self, logs: dict | None = None) -> None:
            head = self.model.get_layer("head")
            kernel, bias = head.get_weights()
            head.set_weights([np.zeros_like(kernel), np.array([5.0, -5.0], np.float32)])

    result = methods.train_network(names.SCRATCH, pretext, task, SETTINGS, tmp_path / "c.csv",
                                   tmp_path / "c", extra_callbacks=[Collapse()])
    assert result.collapsed


def test_probe_that_predicts_one_class_is_flagged(task: methods.Labelled) -> None:
    # Every image the same grey: the colour histogram cannot tell the classes apart, so the
    # ridge probe answers one class for every test image, which is not a score.
    grey = np.full((12, 32, 32, 3), 128, np.uint8)
    labels = np.array([0, 1] * 6)
    same = methods.Labelled(fit=tf.data.Dataset.from_tensor_slices((grey, labels)), fit_size=12,
                            selection=None, test=(grey[:6], labels[:6]), num_classes=2)
    assert methods.colour_floor(same).collapsed
    assert not methods.colour_floor(task).collapsed


def test_knn_monitor_follows_the_backbone_weights() -> None:
    x, y = demo_data.generate(20, seed=3, image_size=32)
    model = build_model(SPEC, 4, "pretext")
    monitor = KnnMonitor(x, y, "block_9_add", k=5)
    monitor.set_model(model)
    logs: dict[str, float] = {}
    monitor.on_epoch_end(0, logs)
    features_before = probe.extract(probe.feature_extractor(model, "block_9_add"), x)
    # Leave-one-out kNN of the cut's pooled features, on exactly these images and labels.
    assert logs["knn_accuracy"] == _loo_knn_accuracy(features_before, y)
    rng = np.random.default_rng(0)
    for layer in model.get_layer("backbone").layers:
        if layer.weights and layer.name.startswith("block_"):
            layer.set_weights([rng.normal(size=w.shape).astype(np.float32) if w.ndim > 1
                               else w for w in layer.get_weights()])
    features_after = probe.extract(probe.feature_extractor(model, "block_9_add"), x)
    assert not np.allclose(features_before, features_after)
    monitor.on_epoch_end(1, logs)
    assert monitor._extractor is not None  # reused: it follows the shared weights
    assert np.allclose(probe.extract(monitor._extractor, x), features_after)
    assert logs["knn_accuracy"] == _loo_knn_accuracy(features_after, y)


def _loo_knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Each image voted on by its k most cosine-similar others, votes weighted by similarity:
    the monitor's definition, written out independently."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    correct = 0
    for i, row in enumerate(similarity):
        nearest = np.argsort(-row)[:k]
        votes = np.bincount(labels[nearest], weights=np.clip(row[nearest], 0, None) + 1e-6,
                            minlength=labels.max() + 1)
        correct += votes.argmax() == labels[i]
    return correct / len(labels)


def test_a_study_runs_a_worker_per_core_and_one_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_ssl.errors import ConfigError
    from edge_ssl.train import study_cells
    from edge_ssl.train.study import StudyConfig

    monkeypatch.setattr(study_cells, "usable_cores", lambda: 2)
    assert study_cells.default_workers(on_gpu=False) == 2
    assert study_cells.threads_per_worker(2) == 1 and study_cells.threads_per_worker(1) == 2
    monkeypatch.setattr(study_cells, "usable_cores", lambda: 16)
    assert study_cells.default_workers(on_gpu=False) == study_cells.MAX_WORKERS
    assert study_cells.threads_per_worker(study_cells.MAX_WORKERS) == 4
    assert study_cells.default_workers(on_gpu=True) == 1
    with pytest.raises(ConfigError, match="--workers 0 is not allowed"):
        StudyConfig(run=Path("run"), workers=0)
    # A study saved before the option ran in one process, and resumes so.
    saved = StudyConfig(run=Path("run")).to_json()
    del saved["workers"]
    assert StudyConfig.from_json(saved).workers == 1


@pytest.mark.slow
def test_study_writes_every_cell_and_the_plot(tmp_path: Path) -> None:
    from edge_ssl.rundir import create_run_dir
    from edge_ssl.train.config import TrainConfig
    from edge_ssl.train.run import train
    from edge_ssl.train.study import STUDY_FILE, STUDY_PNG, StudyConfig, prepare, run_study

    run = create_run_dir(tmp_path / "runs", "pre", overwrite=False)
    train(TrainConfig(demo_per_class=16, image_size=32, width=0.35, batch_size=8,
                      pretext_epochs=1, finetune_epochs=1, finetune_steps=0), run)
    config = StudyConfig(run=run, budgets=(2, 4), seeds=2, finetune_epochs=1, head_epochs=1,
                         finetune_steps=4, workers=2,
                         methods=("ssl_finetune", "ssl_probe", "colour"))
    older = {k: v for k, v in config.to_json().items()
             if k not in ("head_epochs", "finetune_batchnorm")}
    assert StudyConfig.from_json(older).head_epochs == 0  # a study saved before the options
    assert StudyConfig.from_json(older).finetune_batchnorm.value == "train"
    assert StudyConfig.from_json(config.to_json()) == config
    out = run / "studies" / "s"
    run_study(prepare(config, out, overwrite=False, resume=False), out)
    study = json.loads((out / STUDY_FILE).read_text())
    assert (out / STUDY_PNG).stat().st_size > 0
    assert sorted((c["seed"], c["budget"]) for c in study["cells"]) == [
        (0, "2"), (0, "4"), (1, "2"), (1, "4")]
    assert study["test_images"] == 8 and study["complete"]
    assert set(study["summary"]) == {"ssl_finetune", "ssl_probe", "colour"}
    row = study["summary"]["colour"]["4"]
    assert row["labels_per_class"] == 4 and row["seeds"] + row["collapsed"] == 2
    colour_cells = [c["results"]["colour"] for c in study["cells"] if c["budget"] == "4"]
    assert row["pooled"]["n"] == 16
    assert row["pooled"]["hits"] == sum(r["hits"] for r in colour_cells)
    assert set(study["margins"]) == {"ssl_finetune", "ssl_probe"}
    for method in ("ssl_finetune", "ssl_probe"):  # colour: the one baseline this study ran
        assert {m["best_baseline"] for m in study["margins"][method].values()} <= {"colour"}
    # Resuming a finished study runs nothing again; an existing one is never replaced silently.
    from edge_ssl.errors import RunDirError

    resumed = prepare(config, out, overwrite=False, resume=True)
    assert run_study(resumed, out)["cells"] == study["cells"]
    with pytest.raises(RunDirError, match="already exists; pass --resume"):
        prepare(config, out, overwrite=False, resume=False)
    # Two worker processes or this one: the same cells, each method trained as long.
    assert study["workers"]["processes"] == 2
    alone = run / "studies" / "alone"
    one = run_study(prepare(replace(config, workers=1), alone, overwrite=False, resume=False),
                    alone)
    assert one["workers"]["processes"] == 1
    for theirs, ours in zip(one["cells"], study["cells"], strict=True):
        assert (theirs["seed"], theirs["budget"]) == (ours["seed"], ours["budget"])
        assert theirs["results"]["colour"] == {**ours["results"]["colour"],
                                               "seconds": theirs["results"]["colour"]["seconds"]}
        assert (theirs["results"]["ssl_finetune"]["epochs_run"]
                == ours["results"]["ssl_finetune"]["epochs_run"])
        assert all(r["seconds"] is not None for r in ours["results"].values())
