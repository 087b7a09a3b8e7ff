"""The names and titles of the study's methods, without TensorFlow: the CLI's option parsing
and help, and `edge-ssl study`'s config, need them before any model is built."""

from __future__ import annotations

SSL_FINETUNE, SSL_PROBE, SCRATCH, SCRATCH_SHALLOW, RANDOM_PROBE, COLOUR = (
    "ssl_finetune", "ssl_probe", "scratch", "scratch_shallow", "random_probe", "colour")
S4L_FINETUNE, S4L_SCRATCH, TINY_IMAGES = "s4l_finetune", "s4l_scratch", "tiny_images"
METHODS = (SSL_FINETUNE, S4L_FINETUNE, SSL_PROBE, S4L_SCRATCH, SCRATCH, SCRATCH_SHALLOW,
           RANDOM_PROBE, TINY_IMAGES, COLOUR)
# Methods that learn from the task's unlabelled images (the pretext's, or a rotation loss during
# the fine-tune); the others, the baselines, learn from the labels alone.
SELF_SUPERVISED = (SSL_FINETUNE, S4L_FINETUNE, SSL_PROBE, S4L_SCRATCH)
LABELS_ONLY = (SCRATCH, SCRATCH_SHALLOW, RANDOM_PROBE, TINY_IMAGES, COLOUR)
FROM_PRETEXT = (SSL_FINETUNE, S4L_FINETUNE)  # networks that start from the pretext's weights
WITH_ROTATION = (S4L_FINETUNE, S4L_SCRATCH)  # networks with the rotation loss in the fine-tune
TITLES = {SSL_FINETUNE: "SSL fine-tune", S4L_FINETUNE: "SSL fine-tune + rotation",
          SSL_PROBE: "SSL linear probe", S4L_SCRATCH: "from scratch + rotation",
          SCRATCH: "from scratch", SCRATCH_SHALLOW: "from scratch, shallow",
          RANDOM_PROBE: "random-init probe", TINY_IMAGES: "tiny-image ridge",
          COLOUR: "colour histogram"}
