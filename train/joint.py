"""S4L-Rotation (Zhai et al. 2019): the fine-tune's class loss plus the rotation loss.

Each optimizer step takes a batch of labelled images (cross-entropy on their classes) and a
batch of the task's images in their four rotations (cross-entropy on the rotation), labelled
and unlabelled alike, and follows the sum of the two losses. The rotation loss keeps the
backbone learning from every image of the task while the few labels shape the class head.
Only the classifier (one input, one output) is kept: export, classify and the ONNX contract
see the same model as after a plain fine-tune.

With a pseudo-label threshold, the upright copies of that batch also train the class head on
the classes the classifier itself gives them, where it is at least that confident (Lee 2013's
Pseudo-Label, the confident pseudo-labels S4L's best model also learns from).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from edge_ssl.train import pipeline
from edge_ssl.train.config import DEFAULT_BN_MOMENTUM_RANDOM, Rotations
from edge_ssl.train.model import BACKBONE_NAME, HEAD_NAME

# The rotation loss counts as much as the class loss, as in S4L's rotation variant.
ROTATION_WEIGHT = 1.0
# The pretext head's layers after global average pooling (model.build_model).
ROTATION_HEAD = ("features_dense", "features_bn", "features", HEAD_NAME)


@keras.saving.register_keras_serializable(package="edge_ssl")
class JointRotation(keras.Model):
    """Trains `classifier` and `rotation` (which share the preprocessing and the backbone) on
    the sum of their losses; called, and evaluated, it is `classifier` alone, so that early
    stopping and the learning-rate schedule watch the class accuracy as for any fine-tune.

    Not saved: the classifier is what a run keeps. A subclassed model rather than a two-output
    functional one because the two losses take different batches.
    """

    def __init__(self, classifier: keras.Model, rotation: keras.Model,
                 rotation_weight: float = ROTATION_WEIGHT, pseudo_labels: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.classifier = classifier
        self.rotation = rotation
        self.rotation_weight = rotation_weight
        self.pseudo_labels = pseudo_labels
        self.rotation_tracker = keras.metrics.Mean(name="rotation_loss")
        # The share of the task's images confident enough to train on: a threshold that keeps
        # none does nothing, one that keeps all of them from the first step teaches mistakes.
        self.pseudo_tracker = keras.metrics.Mean(name="pseudo_labelled") if pseudo_labels else None
        self.built = True  # its two networks are built: nothing to create on a first call

    def call(self, images: Any, training: bool = False) -> Any:
        return self.classifier(images, training=training)

    def train_step(self, data: Any) -> dict[str, Any]:
        (images, labels), (rotated, turns) = data
        with tf.GradientTape() as tape:
            predicted = self.classifier(images, training=True)
            class_loss = self.compute_loss(x=images, y=labels, y_pred=predicted)
            turned = self.rotation(rotated, training=True)
            rotation_loss = keras.ops.mean(
                keras.losses.sparse_categorical_crossentropy(turns, turned))
            loss = class_loss + self.rotation_weight * rotation_loss
            if self.pseudo_labels:
                kept, pseudo_loss = self._pseudo_label_loss(rotated)
                loss = loss + pseudo_loss
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        # "loss" is the class loss, what the selection split's val_loss compares with.
        for metric in self.metrics:
            if metric is self.rotation_tracker:
                metric.update_state(rotation_loss)
            elif metric.name == "pseudo_labelled":  # only with a threshold
                metric.update_state(kept)
            elif metric.name == "loss":
                metric.update_state(class_loss)
            else:
                metric.update_state(labels, predicted)
        return self.get_metrics_result()

    def _pseudo_label_loss(self, rotated: Any) -> tuple[Any, Any]:
        """The class loss on the confident upright images of a rotated batch, averaged over all
        of them (as FixMatch does: few confident images weigh little), and the share kept."""
        # rotate_all stacks the batch's four rotations in order, the upright quarter first.
        upright = rotated[: keras.ops.shape(rotated)[0] // pipeline.NUM_ROTATIONS]
        predicted = self.classifier(upright, training=True)
        guess = keras.ops.stop_gradient(predicted)
        kept = keras.ops.cast(keras.ops.max(guess, axis=-1) >= self.pseudo_labels, "float32")
        losses = keras.losses.sparse_categorical_crossentropy(
            keras.ops.argmax(guess, axis=-1), predicted)
        return keras.ops.mean(kept), keras.ops.mean(kept * losses)


def rotation_model(source: keras.Model, classifier: keras.Model) -> keras.Model:
    """uint8 images → `classifier`'s preprocessing and backbone → a rotation head.

    The head is `source`'s own (its pretext head, or a random-init network's) when `source`'s
    backbone ends where the classifier's is cut: the rotation task then resumes where the
    pretext left it. Otherwise (a whole-network pretext cut in the middle) a new head of the
    same shape sits on the cut.
    """
    backbone = classifier.get_layer(BACKBONE_NAME)
    reuse = backbone.layers[-1].name == source.get_layer(BACKBONE_NAME).layers[-1].name
    images = keras.Input(shape=(None, None, 3), dtype="uint8", name="image")
    x = classifier.get_layer("preprocess")(images)
    x = keras.layers.GlobalAveragePooling2D(name="rotation_pool")(backbone(x))
    if reuse:
        for name in ROTATION_HEAD:
            x = source.get_layer(name)(x)
    else:
        x = keras.layers.Dense(128, use_bias=False, name="rotation_dense")(x)
        x = keras.layers.BatchNormalization(momentum=DEFAULT_BN_MOMENTUM_RANDOM,
                                            name="rotation_bn")(x)
        x = keras.layers.ReLU(name="rotation_relu")(x)
        x = keras.layers.Dense(pipeline.NUM_ROTATIONS, activation="softmax", dtype="float32",
                               name="rotation_head")(x)
    return keras.Model(images, x, name="rotation")


def joint_dataset(labelled: tf.data.Dataset, pixels: np.ndarray, batch_size: int,
                  seed: int) -> tf.data.Dataset:
    """Endless pairs of (labelled batch, rotated batch): `labelled` (the fine-tune's batches)
    beside `batch_size` rotated samples of `pixels` (the task's images, labelled and
    unlabelled: a quarter of a batch of images, each in its four rotations)."""
    images = tf.data.Dataset.from_tensor_slices(pixels).cache()
    rotated = pipeline.pretext_train_dataset(images, batch_size, Rotations.all, seed + 200,
                                             len(pixels), repeat=True)
    return tf.data.Dataset.zip((labelled, rotated)).prefetch(pipeline.AUTOTUNE)
