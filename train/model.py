"""The Keras models: uint8 images in, probabilities out, preprocessing inside.

Cast, resize and rescale are a layer of the model so the exported ONNX graph contains them;
random augmentation is not (it lives in tf.data and must never run at inference).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from edge_ssl.errors import ModelError
from edge_ssl.train.config import DEFAULT_BN_MOMENTUM_RANDOM, TrainConfig

# Rescaling: [0, 1] as in the study for random initialisation, [-1, 1] for ImageNet weights.
RESCALE_UNIT = {"scale": 1.0 / 255.0, "offset": 0.0}
RESCALE_SYMMETRIC = {"scale": 1.0 / 127.5, "offset": -1.0}

BACKBONE_NAME = "backbone"
FEATURES_NAME = "features"
HEAD_NAME = "head"


@keras.saving.register_keras_serializable(package="edge_ssl")
class Preprocess(keras.layers.Layer):
    """uint8 `[N, H, W, 3]` of any size → float32 `[N, S, S, 3]`: cast, bilinear resize, rescale.

    The resize is antialiased (a triangle filter widened by the downscale factor), the rule
    Pillow's BILINEAR applies when training and the runtime decode files, so that a client feeding
    camera frames of any size to the exported graph gets the answers the runtime gives. A named
    layer rather than a Lambda so that models load with Keras' safe mode on. It always computes in
    float32, also under a mixed-precision policy.
    """

    def __init__(self, image_size: int, scale: float, offset: float, **kwargs: Any) -> None:
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.scale = float(scale)
        self.offset = float(offset)

    def call(self, images: Any) -> Any:
        x = keras.ops.cast(images, "float32")
        # Exact identity at S×S, the size training feeds; tf2onnx exports it through
        # edge_ssl.export.convert as ONNX Resize with antialias.
        x = keras.ops.image.resize(x, (self.image_size, self.image_size),
                                   interpolation="bilinear", antialias=True)
        return x * self.scale + self.offset

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], self.image_size, self.image_size, 3)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(image_size=self.image_size, scale=self.scale, offset=self.offset)
        return config


@dataclass(frozen=True)
class ModelSpec:
    """What it takes to build the network, taken from a TrainConfig (`model_spec`)."""

    image_size: int
    width: float
    bn_momentum: float = DEFAULT_BN_MOMENTUM_RANDOM
    backbone_weights: Path | None = None
    # False: the same architecture and preprocessing as with the weights file, but random init
    # (the from-scratch baseline of a run that starts from ImageNet weights).
    load_weights: bool = True
    # The backbone ends at this layer (None: MobileNetV2's own end). The layers up to it are
    # built, initialised and loaded exactly as in the whole network.
    top: str | None = None

    @property
    def rescale(self) -> dict[str, float]:
        return RESCALE_SYMMETRIC if self.backbone_weights else RESCALE_UNIT


def model_spec(config: TrainConfig) -> ModelSpec:
    """The network a run trains, as its options describe it."""
    return ModelSpec(config.image_size, config.width, config.effective_bn_momentum,
                     config.backbone_weights, top=config.pretext_top)


def scratch_spec(config: TrainConfig) -> ModelSpec:
    """The from-scratch baselines' network: the run's architecture and preprocessing, never
    loaded weights, and the random-init BatchNorm momentum unless one was given."""
    return replace(model_spec(config), load_weights=False,
                   bn_momentum=config.bn_momentum or DEFAULT_BN_MOMENTUM_RANDOM)


def build_backbone(spec: ModelSpec) -> keras.Model:
    """MobileNetV2 without its top, up to `spec.top`, with `spec.bn_momentum` on every
    BatchNorm layer."""
    try:
        backbone = keras.applications.MobileNetV2(
            input_shape=(spec.image_size, spec.image_size, 3),
            alpha=spec.width,
            include_top=False,
            weights=str(spec.backbone_weights) if spec.backbone_weights and spec.load_weights
            else None,
        )
    except (ValueError, OSError) as exc:
        if spec.backbone_weights:
            raise ModelError(
                f"{spec.backbone_weights}: cannot load these MobileNetV2 weights for width "
                f"{spec.width} ({exc}); pass the no-top .h5 file matching --width."
            ) from None
        raise
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = spec.bn_momentum
    if spec.top is None or spec.top == backbone.layers[-1].name:
        backbone.name = BACKBONE_NAME
        return backbone
    return keras.Model(backbone.input, backbone.get_layer(spec.top).output, name=BACKBONE_NAME)


def build_model(spec: ModelSpec, num_classes: int, name: str) -> keras.Model:
    """The pretext network: uint8 images → Preprocess → MobileNetV2 → GAP → Dense(128) →
    BatchNorm → ReLU → Dense(C, softmax).

    The BatchNorm keeps the 128 ReLU units alive. Without it, Adam's first steps switch most of
    them off for good, the backbone's gradient passes through the few left, and whether a run
    learns depends on how many survive (docs/training-recipe.md, "The pretext head").
    """
    images = keras.Input(shape=(None, None, 3), dtype="uint8", name="image")
    x = Preprocess(spec.image_size, **spec.rescale, name="preprocess")(images)
    x = build_backbone(spec)(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(128, use_bias=False, name="features_dense")(x)
    # Always new weights, also on an ImageNet backbone (whose own BatchNorms keep 0.999): the
    # random-init momentum, so that its moving statistics catch up within a short pretext.
    x = keras.layers.BatchNormalization(momentum=DEFAULT_BN_MOMENTUM_RANDOM,
                                        name="features_bn")(x)
    x = keras.layers.ReLU(name=FEATURES_NAME)(x)
    outputs = _head(num_classes)(x)
    return keras.Model(images, outputs, name=name)


def _head(num_classes: int) -> keras.layers.Dense:
    # float32 softmax: under mixed_float16 a float16 softmax saturates and the loss goes NaN.
    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name=HEAD_NAME)


def cut_backbone(model: keras.Model, cut: str) -> keras.Model:
    """The backbone of `model` up to layer `cut`, sharing its weights (named "backbone")."""
    backbone = model.get_layer(BACKBONE_NAME)
    if cut == backbone.layers[-1].name:
        return backbone
    try:
        output = backbone.get_layer(cut).output
    except ValueError:
        raise ModelError(f"the backbone has no layer {cut!r} to cut at") from None
    return keras.Model(backbone.input, output, name=BACKBONE_NAME)


def copy_model(model: keras.Model) -> keras.Model:
    """The same network and weights in new layers: training the copy leaves `model` untouched,
    so that every fine-tune of a study starts from the pretext itself and the SSL probe sees
    the pretext's features, not those of the fine-tune before it."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def build_classifier(source: keras.Model, cut: str, num_classes: int,
                     freeze_backbone: bool = False) -> keras.Model:
    """uint8 images → `source`'s Preprocess → its backbone cut at `cut` → GAP → Dense(C, softmax).

    The layers up to `cut` are shared with `source` (the pretext network, or a freshly built one
    for the from-scratch baseline), so they start from its weights. The head is linear on the
    pooled features: the pretext's Dense(128) was fitted to the last block, which a middle cut
    drops. Frozen, the backbone is called with training=False so its BatchNorm stays in
    inference mode even if it is later unfrozen (Keras' transfer-learning guide).
    """
    backbone = cut_backbone(source, cut)
    backbone.trainable = not freeze_backbone
    images = keras.Input(shape=(None, None, 3), dtype="uint8", name="image")
    x = source.get_layer("preprocess")(images)
    x = backbone(x, training=False) if freeze_backbone else backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(images, _head(num_classes)(x), name="classifier")


def load_model(path: Path) -> keras.Model:
    """Load a .keras file written by edge-ssl, in safe mode, or say clearly why not."""
    if not path.is_file():
        raise ModelError(f"{path}: no such model file; run `edge-ssl train` to create it.")
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError/TypeError/OSError/zipfile errors alike
        raise ModelError(
            f"{path}: not a Keras model edge-ssl can load ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); re-run `edge-ssl train`."
        ) from None
    names = [layer.name for layer in getattr(model, "layers", [])]
    if not isinstance(model, keras.Model) or "preprocess" not in names:
        raise ModelError(
            f"{path}: this Keras model was not written by edge-ssl (it has no preprocessing "
            "layer); train it with `edge-ssl train`."
        )
    return model


# Pixels per inference batch: 256 images at 64 px, 20 at 224 px, so that an inference batch
# takes about the same memory at any image size.
INFERENCE_PIXELS = 256 * 64 * 64
_INFERENCE: weakref.WeakKeyDictionary[keras.Model, Callable[[Any], Any]] = (
    weakref.WeakKeyDictionary())


def predict(model: keras.Model, pixels: np.ndarray) -> np.ndarray:
    """`model`'s outputs for uint8 `[N, H, W, 3]`, in inference mode, in bounded batches.

    Through one traced graph per model: an eager call of a functional model keeps every
    layer's output of the batch alive until it returns, tens of GB for a batch of large images
    (docs/training-recipe.md, "Memory"). Not `Model.predict`, which runs
    under the model's distribution strategy: with several workers it would wait for the
    others, and only the chief measures.
    """
    call = _INFERENCE.get(model)
    if call is None:
        owner = weakref.ref(model)  # the cache must not keep the model alive

        def infer(images: Any) -> Any:
            return owner()(images, training=False)  # type: ignore[misc]  # the entry dies with the model

        call = tf.function(infer, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.uint8)])
        _INFERENCE[model] = call
    batch = max(1, min(256, INFERENCE_PIXELS // (pixels.shape[1] * pixels.shape[2])))
    return np.concatenate([np.asarray(call(pixels[i:i + batch]))
                           for i in range(0, len(pixels), batch)])


def mixed_policy(model: keras.Model) -> str | None:
    """The mixed-precision policy some layer computes with (nested ones included), else None."""
    return next((layer.dtype_policy.name for layer in nested_layers(model)
                 if layer.dtype_policy.name.startswith("mixed_")), None)


def nested_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of `model`, a nested model followed by its own layers."""
    out = []
    for layer in model.layers:
        out.append(layer)
        if isinstance(layer, keras.Model):
            out += nested_layers(layer)
    return out


def as_float32(model: keras.Model) -> keras.Model:
    """The same network with the same weights, every layer computing in float32.

    Under mixed precision the weights are float32 already; only the layers' compute dtype is
    float16. Export converts this copy, so that the ONNX graph is float32 throughout, as a
    model trained without mixed precision would be.
    """
    clone = keras.Model.from_config(_float32_policies(model.get_config()))
    clone.set_weights(model.get_weights())
    return clone


def _float32_policies(config: Any) -> Any:
    """`config` with every mixed-precision dtype policy replaced by float32."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and str(
                config.get("config", {}).get("name", "")).startswith("mixed_"):
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {key: _float32_policies(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_policies(value) for value in config]
    return config


def preprocess_of(model: keras.Model) -> Preprocess:
    """The model's preprocessing layer, whose settings go into the ONNX metadata."""
    layer = model.get_layer("preprocess")
    if not isinstance(layer, Preprocess):
        raise ModelError(f"model {model.name!r} has no edge-ssl preprocessing layer")
    return layer


def recompute_batchnorm_statistics(model: keras.Model, pixels: np.ndarray, batch_size: int,
                                   max_batches: int = 100) -> None:
    """Replace every BatchNorm layer's moving statistics by their average over batches of
    `pixels` (training images) under the final weights ("precise BatchNorm").

    A fine-tune on a few labels takes a few dozen steps, so the moving averages mix statistics
    of early weights that no longer exist, and in inference mode a network can answer one class
    for every image (docs/training-recipe.md, "Recomputed BatchNorm statistics"). Keras has no
    such utility; setting momentum k/(k+1) for the k-th batch makes the moving value the plain
    mean of the batch statistics. Frozen BatchNorm layers (trainable False) stay in inference
    mode under Keras 3 and keep their statistics.
    """
    layers = [layer for layer in nested_layers(model)
              if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    if not layers or len(pixels) == 0:
        return
    saved = [layer.momentum for layer in layers]
    try:
        for k, start in enumerate(range(0, len(pixels), batch_size)):
            if k == max_batches:
                break
            for layer in layers:
                layer.momentum = k / (k + 1)
            model(pixels[start:start + batch_size], training=True)
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum
