"""Exit status of the commands, one meaning each.

`classify` and `evaluate` use the whole table, so that scripts can tell "fix the command line"
from "fix the data" from "fix the model or the device"; the other commands exit FAILED for any
error (and `export` VARIANT_REJECTED when only a variant was left out). 0 means all was done.
"""

FAILED = 1  # training, export, bench: the job failed (the message says why)
SOME_SKIPPED = 1  # classify, evaluate: some files could not be read; every other was processed
USAGE = 2  # a bad option or argument (click's own code for usage errors)
NOTHING_DONE = 3  # no image could be processed: none found, none readable, or unusable data
VARIANT_REJECTED = 3  # export: the FP32 files were written, an INT8/FP16 variant was left out
MODEL_FAILURE = 4  # the model or its device: unusable file, missing provider, onnxruntime failed
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); rows finished before it are kept
TERMINATED = 143  # SIGTERM (128 + 15), e.g. `kill` or a job scheduler; rows kept as for Ctrl-C
