"""The names and titles of the study's methods, without TensorFlow: the CLI's option parsing
and help, and `edge-ssl study`'s config, need them before any model is built."""

from __future__ import annotations

SSL_FINETUNE, SSL_PROBE, SCRATCH, SCRATCH_SHALLOW, RANDOM_PROBE, COLOUR = (
    "ssl_finetune", "ssl_probe", "scratch", "scratch_shallow", "random_probe", "colour")
METHODS = (SSL_FINETUNE, SSL_PROBE, SCRATCH, SCRATCH_SHALLOW, RANDOM_PROBE, COLOUR)
TITLES = {SSL_FINETUNE: "SSL fine-tune", SSL_PROBE: "SSL linear probe", SCRATCH: "from scratch",
          SCRATCH_SHALLOW: "from scratch, shallow", RANDOM_PROBE: "random-init probe",
          COLOUR: "colour histogram"}
