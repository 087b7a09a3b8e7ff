"""Time several contenders interleaved, each in a process of its own, so their ratios hold on a
machine whose speed drifts.

A shared 2-core machine changes speed by 40 % for seconds at a time (the same onnxruntime call:
7.5 ms for a few seconds, then 10.5 ms, then back), so two runtimes timed one after the other
compare two moments as much as two runtimes. Here every contender runs in its own process (only
its own thread pools alive; TensorFlow's never in the suite's), and they take turns in short
blocks, in a shuffled order each round: every one sees the same mix of fast and slow moments,
and the ratio of two medians is the ratio of the runtimes. While one runs, the others wait on
their pipe, their threads asleep.

The protocol is a line of JSON each way. A worker (contender.py, bare_onnx.py) builds what it
times and answers `{"checked": {...}}` (what it found while checking its answers) or
`{"skip": reason}`. On `prepare [SESSIONS THREADS]` it readies the timed call (choosing its
layout, or taking the one given; warming up) and answers `{"ready": {"layout": ...}}`. On
`time S` it makes one untimed call, then times calls for S seconds and answers
`{"times": [seconds per call, ...]}`; on `quit` it exits.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any


@dataclass
class Contender:
    """A worker process for one contender, started by `start`."""

    key: str
    command: list[str]
    same_layout_as: str | None = None  # the key of a contender prepared before this one
    checked: dict[str, Any] = field(default_factory=dict)
    ready: dict[str, Any] = field(default_factory=dict)
    skip: str | None = None
    times: list[float] = field(default_factory=list)
    _process: subprocess.Popen[str] | None = None
    _stderr: IO[str] | None = None

    def start(self) -> None:
        # stderr to a file, not a pipe: a worker that logged more than a pipe holds while
        # the suite waits on its stdout would block forever.
        self._stderr = tempfile.TemporaryFile("w+", errors="replace")
        self._process = subprocess.Popen(self.command, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._stderr,
                                         text=True, bufsize=1)

    def wait_checked(self) -> None:
        answer = self._read()
        self.skip = answer.get("skip")
        self.checked = answer.get("checked", {})
        if self.skip:
            self.close()

    def prepare(self, layout: dict[str, int] | None = None) -> None:
        given = "" if layout is None else f" {layout['sessions']} {layout['threads']}"
        self.ready = self._ask("prepare" + given)["ready"]

    def block(self, seconds: float) -> None:
        self.times += self._ask(f"time {seconds}")["times"]

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        # A worker that died already leaves its pipe broken: as Popen.communicate does, a
        # broken pipe while saying goodbye is no error.
        with contextlib.suppress(BrokenPipeError):
            if process.poll() is None and process.stdin is not None:
                process.stdin.write("quit\n")
                process.stdin.flush()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for stream in (process.stdin, process.stdout, self._stderr):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()

    def _ask(self, command: str) -> dict[str, Any]:
        assert self._process is not None and self._process.stdin is not None, self.key
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return self._read()

    def _read(self) -> dict[str, Any]:
        process = self._process
        assert process is not None and process.stdout is not None, self.key
        line = process.stdout.readline()
        if not line:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            error = ""
            if self._stderr is not None:
                self._stderr.seek(0)
                error = self._stderr.read()
            raise RuntimeError(f"{self.key}: its worker ended ({process.returncode}) "
                               f"without answering:\n{error[-3000:]}")
        try:
            answer: dict[str, Any] = json.loads(line)
        except ValueError:
            raise RuntimeError(f"{self.key}: its worker printed {line.strip()[:200]!r} where "
                               "the protocol expects one line of JSON") from None
        return answer


@dataclass
class Local:
    """A contender timed in the suite's own process, one call per block: a call that takes a
    second (classify over a folder) is its own block. Warmed up by one call when prepared."""

    key: str
    call: Callable[[], object]
    times: list[float] = field(default_factory=list)
    skip: str | None = None
    same_layout_as: str | None = None
    checked: dict[str, Any] = field(default_factory=dict)
    ready: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        pass

    def wait_checked(self) -> None:
        pass

    def prepare(self, layout: dict[str, int] | None = None) -> None:
        self.call()

    def block(self, seconds: float) -> None:
        begin = time.perf_counter()
        self.call()
        self.times.append(time.perf_counter() - begin)

    def close(self) -> None:
        pass


def run(contenders: Sequence[Contender | Local], rounds: int, seconds: float,
        seed: int = 0) -> None:
    """Start every contender (side by side: nothing is timed yet), prepare them one at a time
    (each chooses its layout on a quiet machine), then time `rounds` rounds of one block of
    `seconds` each, in a shuffled order; `times` of each contender fills in place. Every worker
    is stopped at the end, whatever happened."""
    try:
        for contender in contenders:
            contender.start()
        for contender in contenders:
            contender.wait_checked()
        # A contender whose answers disagree with Keras is not timed: its test fails on them.
        running = [contender for contender in contenders
                   if contender.skip is None and not contender.checked.get("problems")]
        prepared: dict[str, Contender | Local] = {}
        for contender in list(running):
            leader = prepared.get(contender.same_layout_as or "")
            if contender.same_layout_as and leader is None:
                contender.skip = f"{contender.same_layout_as} was not timed"
                running.remove(contender)
                continue
            contender.prepare(leader.ready["layout"] if leader else None)
            prepared[contender.key] = contender
        order = random.Random(seed)
        for _ in range(rounds):
            for contender in order.sample(running, len(running)):
                contender.block(seconds)
    finally:
        with contextlib.ExitStack() as stack:  # every worker closed, whichever close fails
            for contender in contenders:
                stack.callback(contender.close)


Prepare = Callable[[list[str]], tuple[Callable[[], object], dict[str, Any]]]


def serve(checked: dict[str, Any], prepare: Prepare, out: IO[str] = sys.stdout,
          commands: IO[str] = sys.stdin) -> None:
    """The worker's side: announce `checked`, then answer the main process until `quit`.

    `prepare(arguments)` returns the call to time and what to report about it (its layout).
    """
    def say(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    say({"checked": checked})
    call: Callable[[], object] | None = None
    for line in commands:
        command, _, argument = line.strip().partition(" ")
        if command == "prepare":
            call, ready = prepare(argument.split())
            say({"ready": ready})
        elif command == "time" and call is not None:
            say({"times": timed_calls(call, float(argument))})
        else:
            break


def timed_calls(call: Callable[[], object], seconds: float) -> list[float]:
    """One untimed call (the first after a pause wakes caches and threads), then the duration
    of each call made in the next `seconds` (one at least)."""
    call()
    times: list[float] = []
    start = time.perf_counter()
    while not times or time.perf_counter() - start < seconds:
        begin = time.perf_counter()
        call()
        times.append(time.perf_counter() - begin)
    return times


WARMUP_SECONDS = 0.3  # and at least `calls` calls: first calls allocate and pick kernels


def warm_up(call: Callable[[], object], calls: int = 10,
            seconds: float = WARMUP_SECONDS) -> None:
    """First calls allocate and pick kernels: `calls` of them, and `seconds` at least."""
    start, done = time.perf_counter(), 0
    while done < calls or time.perf_counter() - start < seconds:
        call()
        done += 1
