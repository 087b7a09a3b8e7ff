"""How a stage says how far a counted job has come, without drawing anything.

A stage logs the count as a DEBUG record that carries `(done, total)` in its PROGRESS attribute;
the CLI draws those records as a progress bar (edge_ssl/commands/render_runtime.py) and a Python
caller sees them through its own logging set-up, like every other message of the stages.
"""

from __future__ import annotations

import logging

PROGRESS = "edge_ssl_progress"  # LogRecord attribute: (done, total)


def report(logger: logging.Logger, what: str, done: int, total: int) -> None:
    """Log that `done` of `total` items of the job `what` are finished."""
    logger.debug("%s: %d of %d", what, done, total, extra={PROGRESS: (done, total)})
