"""The contracts every stage agrees on: ONNX names and metadata keys, run-directory file names.

The runtime reads exported models with only these constants, so they live outside the stages.
"""

from __future__ import annotations

# ONNX graph: one uint8 NHWC RGB input, one float32 [batch, classes] output.
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"

# metadata_props keys; every value is JSON.
META_TASK = "edge_ssl.task"  # "rotation" | "classification"
META_LABELS = "edge_ssl.labels"  # list[str]
META_IMAGE_SIZE = "edge_ssl.image_size"  # int, the square training size
META_RESCALE = "edge_ssl.rescale"  # {"scale": float, "offset": float}
META_INTERPOLATION = "edge_ssl.interpolation"  # "bilinear"
META_VERSION = "edge_ssl.version"  # edge-ssl version that exported the model
META_RUN = "edge_ssl.run"  # run directory name
META_EXPORTED_AT = "edge_ssl.exported_at"  # ISO-8601 UTC
META_PRECISION = "edge_ssl.precision"  # "fp32" | "int8" | "fp16"
# "any": any image size, resized inside the graph; "fixed": [N, S, S, 3] only, no Resize (the
# host resizes). Files exported before the fixed variant existed lack it and take any size.
META_INPUT = "edge_ssl.input"
INPUT_ANY = "any"
INPUT_FIXED = "fixed"

TASK_ROTATION = "rotation"
TASK_CLASSIFICATION = "classification"
ROTATION_LABELS = ("0", "90", "180", "270")  # label k = k * 90 degrees counter-clockwise

# Run directory layout (README.md, "The run directory").
RUNS_DIR = "runs"
LATEST = "latest"
CONFIG_FILE = "config.json"
PRETEXT_MODEL = "pretext.keras"
CLASSIFIER_MODEL = "classifier.keras"
BASELINE_MODEL = "baseline.keras"
BASELINE_SHALLOW_MODEL = "baseline_shallow.keras"
# --baseline's rotation-loss fine-tunes (S4L): from the pretext, and from random initialisation.
ROTATION_CLASSIFIER_MODEL = "classifier_rotation.keras"
ROTATION_BASELINE_MODEL = "baseline_rotation.keras"
# With the rotation loss on, that fine-tune is classifier.keras; --baseline's plain one:
PLAIN_CLASSIFIER_MODEL = "classifier_no_rotation.keras"
HISTORY_PRETEXT = "history_pretext.csv"
HISTORY_FINETUNE = "history_finetune.csv"
HISTORY_BASELINE = "history_baseline.csv"
HISTORY_BASELINE_SHALLOW = "history_baseline_shallow.csv"
HISTORY_FINETUNE_ROTATION = "history_finetune_rotation.csv"
HISTORY_BASELINE_ROTATION = "history_baseline_rotation.csv"
HISTORY_PLAIN_FINETUNE = "history_finetune_no_rotation.csv"
CURVES_PNG = "curves.png"
METHODS_PNG = "methods.png"  # test accuracy of the fine-tune and every baseline, with intervals
SAMPLES_PNG = "pretext_samples.png"
REPORT_FILE = "report.json"
CHECKPOINTS_DIR = "checkpoints"
EXPORTS_DIR = "exports"
TENSORBOARD_DIR = "tensorboard"  # with --tensorboard: one folder of event files per stage
EXPORT_REPORT = "export_report.json"
PRETEXT_ONNX = "pretext.onnx"
CLASSIFIER_ONNX = "classifier.onnx"
FIXED_TAG = "fixed"  # classifier.onnx → classifier.fixed.onnx, classifier.int8.onnx → …fixed.int8…

# Held-out pixels saved by `train` so that export can verify and calibrate from the run directory
# alone, even after the training data has moved. Arrays are uint8 [N, S, S, 3] at the training
# size S, decoded with edge_ssl.images (the runtime's own rule).
HELDOUT_FILE = "heldout.npz"
HELDOUT_CLASSIFIER_IMAGES = "classifier_images"  # the fine-tune's test images
HELDOUT_CLASSIFIER_LABELS = "classifier_labels"  # int64 [N], indices into config.json "labels"
# Labelled training images (none of them calibration images) on which export decides whether an
# INT8/FP16 variant keeps FP32's answers and which nodes stay FP32: a choice, so not test images.
HELDOUT_GATE_IMAGES = "gate_images"
HELDOUT_GATE_LABELS = "gate_labels"  # int64 [N]
HELDOUT_PRETEXT_IMAGES = "pretext_images"  # pretext held-out images, upright (not rotated)
HELDOUT_CALIBRATION_IMAGES = "calibration_images"  # training images for INT8 calibration

# Top-level keys of config.json that later stages read.
CONFIG_LABELS = "labels"  # list[str], the classifier's class names in output order
CONFIG_IMAGE_SIZE = "image_size"  # int
CONFIG_RESCALE = "rescale"  # {"scale": float, "offset": float}
CONFIG_NAME = "name"  # the run's name
