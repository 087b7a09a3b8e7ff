"""The Keras model: preprocessing inside, head swap, freezing, BN momentum, mixed precision."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from edge_ssl.errors import ModelError  # noqa: E402
from edge_ssl.train.model import (  # noqa: E402
    BACKBONE_NAME,
    FEATURES_NAME,
    RESCALE_SYMMETRIC,
    ModelSpec,
    Preprocess,
    build_backbone,
    build_classifier,
    build_model,
    predict,
    recompute_batchnorm_statistics,
)

SPEC = ModelSpec(image_size=32, width=0.35, bn_momentum=0.9)


def test_recomputed_batchnorm_statistics_are_the_mean_over_batches() -> None:
    inputs = keras.Input((2,))
    trained = keras.layers.BatchNormalization(momentum=0.9, name="trained")
    frozen = keras.layers.BatchNormalization(name="frozen")
    frozen.trainable = False
    model = keras.Model(inputs, frozen(trained(inputs)))
    pixels = np.concatenate([np.full((4, 2), 1.0), np.full((4, 2), 3.0), np.full((2, 2), 8.0)])
    pixels[::2] += 1.0  # every batch of 4 has a spread: batch means 1.5, 3.5, 8.5

    recompute_batchnorm_statistics(model, pixels.astype("float32"), batch_size=4)

    np.testing.assert_allclose(np.asarray(trained.moving_mean), [(1.5 + 3.5 + 8.5) / 3] * 2,
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(trained.moving_variance), [0.25] * 2, rtol=1e-4)
    assert trained.momentum == 0.9  # restored for any later training
    np.testing.assert_array_equal(np.asarray(frozen.moving_mean), [0.0, 0.0])


@pytest.fixture()
def mixed_precision() -> Iterator[None]:
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_preprocess_casts_resizes_and_rescales() -> None:
    layer = Preprocess(4, **RESCALE_SYMMETRIC)
    images = np.full((2, 9, 7, 3), 255, np.uint8)
    out = np.asarray(layer(images))
    assert out.shape == (2, 4, 4, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, 1.0, atol=1e-6)
    assert Preprocess.from_config(layer.get_config()).get_config() == layer.get_config()


def test_preprocess_resizes_like_the_runtime() -> None:
    # The runtime's rule (Pillow's antialiased BILINEAR, rounded to 8 bits) within rounding.
    from edge_ssl.images import resize_array

    layer = Preprocess(16, scale=1.0, offset=0.0)
    rng = np.random.default_rng(0)
    for shape in [(128, 96, 3), (16, 16, 3), (9, 40, 3)]:
        frame = rng.integers(0, 256, shape, dtype=np.uint8)
        out = np.asarray(layer(frame[None]))[0]
        assert np.max(np.abs(out - resize_array(frame, 16))) <= 1.0, shape
    native = rng.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)  # the size training feeds
    np.testing.assert_array_equal(np.asarray(layer(native)), native.astype(np.float32))


def test_model_takes_uint8_of_any_size_and_sets_bn_momentum() -> None:
    model = build_model(SPEC, 4, "pretext")
    assert model.input.dtype == "uint8"
    for shape in [(1, 32, 32, 3), (2, 37, 91, 3)]:
        probs = model.predict_on_batch(np.zeros(shape, np.uint8))
        assert probs.shape == (shape[0], 4)
        np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    bns = [layer for layer in model.get_layer(BACKBONE_NAME).layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(layer.momentum == 0.9 for layer in bns)
    # The head's BatchNorm is always new, so it keeps the random-init momentum on an ImageNet
    # backbone (0.999) too.
    slow = build_model(replace(SPEC, bn_momentum=0.999), 4, "pretext")
    assert slow.get_layer("features_bn").momentum == 0.9


def test_classifier_shares_the_backbone_up_to_the_cut_and_freezes() -> None:
    pretext = build_model(SPEC, 4, "pretext")
    classifier = build_classifier(pretext, "block_9_add", 3, freeze_backbone=True)
    assert classifier.output.shape[-1] == 3
    cut = classifier.get_layer(BACKBONE_NAME)
    assert cut.layers[-1].name == "block_9_add"
    assert "block_10_expand" not in {layer.name for layer in cut.layers}  # smaller on device
    assert cut.get_layer("Conv1") is pretext.get_layer(BACKBONE_NAME).get_layer("Conv1")
    trainable = {w.path.split("/")[0] for w in classifier.trainable_weights}
    assert trainable == {"head"}
    images = np.zeros((2, 40, 40, 3), np.uint8)
    np.testing.assert_allclose(np.asarray(classifier(images)).sum(axis=1), 1.0, rtol=1e-5)


def test_classifier_at_the_last_layer_is_the_whole_backbone() -> None:
    pretext = build_model(SPEC, 4, "pretext")
    classifier = build_classifier(pretext, "out_relu", 2)
    assert classifier.get_layer(BACKBONE_NAME) is pretext.get_layer(BACKBONE_NAME)
    assert {w.path.split("/")[0] for w in classifier.trainable_weights} >= {"head"}


def test_a_backbone_that_ends_at_the_cut_is_the_whole_networks_first_layers() -> None:
    """A pretext trained only up to the cut: the same layers, random init and BatchNorm momentum
    as the whole network up to there, and nothing after, so the from-scratch and random-init
    baselines built from one seed are the same networks whichever depth the pretext had."""
    keras.utils.set_random_seed(3)
    full = build_backbone(SPEC)
    keras.utils.set_random_seed(3)
    short = build_backbone(replace(SPEC, top="block_9_add"))
    assert short.name == BACKBONE_NAME and short.layers[-1].name == "block_9_add"
    names = {layer.name for layer in short.layers}
    assert "block_10_expand" not in names and short.count_params() < full.count_params() / 5
    for layer in short.layers[1:]:  # after the input layer, whose name Keras numbers
        for mine, theirs in zip(layer.get_weights(), full.get_layer(layer.name).get_weights(),
                                strict=True):
            np.testing.assert_array_equal(mine, theirs)
        if isinstance(layer, keras.layers.BatchNormalization):
            assert layer.momentum == 0.9
    pretext = build_model(replace(SPEC, top="block_9_add"), 4, "pretext")
    assert build_classifier(pretext, "block_9_add", 2).get_layer(BACKBONE_NAME) is \
        pretext.get_layer(BACKBONE_NAME)
    with pytest.raises(ModelError, match="no layer 'block_12_add'"):
        build_classifier(pretext, "block_12_add", 2)


def test_random_init_spec_never_loads_the_weights_file(tmp_path: Path) -> None:
    """--baseline with --backbone-weights: the scratch network is random, not ImageNet."""
    donor = build_backbone(SPEC)
    weights = tmp_path / "backbone.weights.h5"
    donor.save_weights(weights)
    spec = replace(SPEC, backbone_weights=weights)
    loaded = build_backbone(spec)
    fresh = build_backbone(replace(spec, load_weights=False))
    kernel = "Conv1"
    np.testing.assert_array_equal(loaded.get_layer(kernel).get_weights()[0],
                                  donor.get_layer(kernel).get_weights()[0])
    assert not np.allclose(fresh.get_layer(kernel).get_weights()[0],
                           donor.get_layer(kernel).get_weights()[0])
    assert replace(spec, load_weights=False).rescale == spec.rescale  # same preprocessing


def test_mixed_precision_keeps_preprocess_and_softmax_float32(mixed_precision: None) -> None:
    model = build_model(SPEC, 2, "classifier")
    assert model.get_layer(BACKBONE_NAME).compute_dtype == "float16"
    assert model.get_layer("preprocess").compute_dtype == "float32"
    assert model.output.dtype == "float32"


def test_predict_runs_bounded_batches_of_a_graph_and_keeps_no_model_alive() -> None:
    import gc
    import weakref

    model = build_model(SPEC, 4, "pretext")
    x = np.random.default_rng(0).integers(0, 256, (300, 32, 32, 3), dtype=np.uint8)
    # 300 images at 32 px: a batch of 256, then one of 44; the same answers as the model.
    np.testing.assert_allclose(predict(model, x), np.asarray(model(x, training=False)),
                               atol=1e-6)
    big = np.zeros((3, 224, 224, 3), np.uint8)  # frames of another size: the same graph
    assert predict(model, big).shape == (3, 4)
    owner = weakref.ref(model)
    del model
    gc.collect()
    assert owner() is None


def test_pretext_head_units_stay_alive_under_large_updates() -> None:
    # A plain Dense(128, ReLU) kept 5 of its 128 units alive after these updates (123 of 128
    # were dead after a real 5-epoch pretext); the BatchNorm before the ReLU keeps most firing.
    keras.utils.set_random_seed(0)
    model = build_model(SPEC, 4, "pretext")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, rng.integers(0, 4, 64), batch_size=16, epochs=5, verbose=0)
    features = predict(keras.Model(model.input, model.get_layer(FEATURES_NAME).output), x)
    assert (features.max(axis=0) > 0).sum() >= 32
