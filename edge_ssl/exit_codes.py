"""Exit status of the runtime commands (`classify`, `evaluate`), one meaning each.

Scripts can tell "fix the command line" from "fix the data" from "fix the model or the device".
0 means every image was processed.
"""

SOME_SKIPPED = 1  # some files could not be read; every other file was processed
USAGE = 2  # a bad option or argument (click's own code for usage errors)
NOTHING_DONE = 3  # no image could be processed: none found, none readable, or unusable data
MODEL_FAILURE = 4  # the model or its device: unusable file, missing provider, onnxruntime failed
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); rows finished before it are kept
TERMINATED = 143  # SIGTERM (128 + 15), e.g. `kill` or a job scheduler; rows kept as for Ctrl-C
