"""Where the CLI talks to people: rich consoles, the stages' log lines, errors, exit codes.

The stages never print. They log through `logging.getLogger(__name__)` (loggers under
`edge_ssl`); a command shows those lines with `stage_messages()`: INFO as plain lines on
stdout (or as the text of a spinner), WARNING and above as `warning:` lines on stderr. A Python
caller of the library sees them through whatever logging set-up it has.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar, overload

import typer
from rich.console import Console
from rich.markup import escape
from rich.status import Status

from edge_ssl import exit_codes
from edge_ssl.errors import EdgeSslError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
LOGGER = "edge_ssl"  # the stages' loggers are its children

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int = exit_codes.FAILED) -> typer.Exit:
    """Print `error: message` to stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


@overload
def user_errors(command: Callable[P, R]) -> Callable[P, R]: ...


@overload
def user_errors(*, detailed: bool) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def user_errors(command: Callable[P, R] | None = None, *, detailed: bool = False) -> object:
    """Turn edge-ssl's typed errors into one line on stderr and an exit status.

    `detailed`: exit with the error's own code (the runtime commands' table: usage, data,
    model); otherwise with FAILED for any error. The stages' log lines are shown meanwhile.
    """
    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                with stage_messages():
                    return function(*args, **kwargs)
            except EdgeSslError as exc:
                raise fail(str(exc), exc.exit_code if detailed else exit_codes.FAILED) from None
            except KeyboardInterrupt:
                err_console.print("interrupted")
                sys.exit(exit_codes.INTERRUPTED)

        return wrapper

    return decorate if command is None else decorate(command)


class _ConsoleHandler(logging.Handler):
    """Shows the stages' log records: INFO as a line (or as the spinner's text), warnings on
    stderr."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.status: Status | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            warn(message)
        elif self.status is not None:
            self.status.update(f"{escape(message)}…")
        else:
            console.print(message, markup=False)


_handler = _ConsoleHandler()


@contextmanager
def stage_messages() -> Iterator[None]:
    """Show the stages' log lines on the consoles while a command runs."""
    logger = logging.getLogger(LOGGER)
    if _handler in logger.handlers:  # a command that runs another (demo runs classify)
        yield
        return
    level, propagate = logger.level, logger.propagate
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # shown here, not again by a root handler
    try:
        yield
    finally:
        logger.removeHandler(_handler)
        logger.setLevel(level)
        logger.propagate = propagate


@contextmanager
def spinner(text: str) -> Iterator[None]:
    """A spinner on the terminal whose text follows the stages' INFO lines."""
    with console.status(text) as status:
        _handler.status = status
        try:
            yield
        finally:
            _handler.status = None
