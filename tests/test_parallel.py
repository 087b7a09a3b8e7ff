"""Data-parallel inference: the layouts worth timing, a batch split among sessions, calibration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx_models
import pytest
from typer.testing import CliRunner

from edge_ssl.cli import app
from edge_ssl.errors import InferenceError, ModelError
from edge_ssl.runtime import layout_cache, parallel, user_cache
from edge_ssl.runtime.model import Device
from edge_ssl.runtime.parallel import Layout, candidate_layouts, open_layout, open_runner


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return onnx_models.build_model(tmp_path_factory.mktemp("model") / "classifier.onnx")


def images(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    size = onnx_models.SIZE
    return rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize(("sessions", "threads", "batch", "cores", "expected"), [
    # What the user sets is kept; --threads alone is one session, as it always was.
    (3, 2, 32, 2, [Layout(3, 2)]),
    (2, None, 32, 8, [Layout(2, 4)]),
    (4, None, 32, 2, [Layout(4, 1)]),
    (None, 2, 32, 8, [Layout(1, 2)]),
    # Otherwise one default session and every split of the cores the batch can feed.
    (None, None, 32, 2, [Layout(1, None), Layout(2, 1)]),
    (None, None, 32, 16, [Layout(1, None), Layout(16, 1), Layout(8, 2), Layout(4, 4),
                          Layout(2, 8)]),
    (None, None, 4, 16, [Layout(1, None), Layout(4, 4), Layout(2, 8)]),
    (None, None, 1, 16, [Layout(1, None)]),
    (None, None, 32, 1, [Layout(1, None)]),
])
def test_candidate_layouts(sessions: int | None, threads: int | None, batch: int, cores: int,
                           expected: list[Layout]) -> None:
    assert candidate_layouts(sessions, threads, batch, cores) == expected


def test_layout_reads_as_words() -> None:
    assert str(Layout(2, 1)) == "2 sessions × 1 thread"
    assert str(Layout(1, None)) == "1 session × default threads"
    assert Layout(4, 2).to_json() == {"sessions": 4, "threads": 2}


@pytest.mark.parametrize("count", [1, 2, 3, 7, 32])
def test_a_split_batch_gives_every_image_its_own_answer_in_order(model: Path,
                                                                 count: int) -> None:
    pixels = images(count, seed=count)
    runner = open_layout(model, Device.CPU, Layout(3, 1))
    try:
        assert runner.sessions == 3
        probabilities = runner.run(pixels)
    finally:
        runner.close()
    expected = onnx_models.expected_probabilities(pixels, onnx_models.colour_weights())
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_an_empty_batch_has_no_rows(model: Path) -> None:
    with open_runner(model, Device.CPU, sessions=2) as runner:
        assert runner.run(images(0)).shape == (0, len(onnx_models.COLOURS))


@pytest.mark.parametrize("sessions", [1, 3])
def test_a_stream_of_batches_gives_each_its_answers_in_order(model: Path,
                                                             sessions: int) -> None:
    batches = [images(count, seed=count) for count in (5, 0, 1, 7, 32, 2, 3)]
    runner = open_layout(model, Device.CPU, Layout(sessions, 1))
    try:
        streamed = list(runner.stream((i, pixels) for i, pixels in enumerate(batches)))
    finally:
        runner.close()
    assert [key for key, _ in streamed] == list(range(len(batches)))
    for pixels, (_, probabilities) in zip(batches, streamed, strict=True):
        assert probabilities.shape == (len(pixels), len(onnx_models.COLOURS))
        if not len(pixels):
            continue
        np.testing.assert_allclose(
            probabilities,
            onnx_models.expected_probabilities(pixels, onnx_models.colour_weights()), atol=1e-5)


def test_a_stream_stops_at_the_first_failing_batch(model: Path) -> None:
    size = onnx_models.SIZE
    good, bad = images(4), np.zeros((4, size, size, 4), np.uint8)
    answered = []
    with open_runner(model, Device.CPU, sessions=2) as runner, \
            pytest.raises(InferenceError, match=r"classifier\.onnx: onnxruntime failed"):
        for key, _ in runner.stream(iter([("first", good), ("bad", bad), ("after", good)])):
            answered.append(key)
    assert answered == ["first"]


def test_a_stream_closed_early_leaves_no_thread_behind(model: Path) -> None:
    import threading

    runner = open_layout(model, Device.CPU, Layout(2, 1))
    try:
        stream = runner.stream((i, images(8, seed=i)) for i in range(20))
        assert next(stream)[0] == 0
        assert any(t.name.startswith("edge-ssl-stream") for t in threading.enumerate())
        stream.close()  # as a KeyboardInterrupt in the caller's loop does
        assert not any(t.name.startswith("edge-ssl-stream") for t in threading.enumerate())
    finally:
        runner.close()


def test_a_session_that_fails_to_open_fails_the_layout(
        model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[int] = []
    real_open = parallel.open_session

    def second_fails(*args: Any, **kwargs: Any) -> Any:
        opened.append(1)
        if len(opened) == 2:
            raise ModelError("the second session could not open")
        return real_open(*args, **kwargs)

    monkeypatch.setattr(parallel, "open_session", second_fails)
    with pytest.raises(ModelError, match="second session"):
        open_layout(model, Device.CPU, Layout(3, 1))


def test_calibration_keeps_one_of_the_candidates_and_its_answers(model: Path) -> None:
    pixels = images(16)
    with open_runner(model, Device.CPU, batch_size=16, cores=2) as runner:
        assert runner.layout in candidate_layouts(None, None, 16, 2)
        assert runner.sessions == runner.layout.sessions
        np.testing.assert_allclose(
            runner.run(pixels),
            onnx_models.expected_probabilities(pixels, onnx_models.colour_weights()), atol=1e-5)


def test_a_calibrated_layout_is_remembered_for_the_same_model_and_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = onnx_models.build_model(tmp_path / "classifier.onnx")
    with open_runner(path, Device.CPU, batch_size=16, cores=2) as runner:
        chosen = runner.layout
    assert layout_cache.cache_file().is_file()
    timed: list[int] = []
    real_fastest = parallel.fastest

    def counting(*args: Any, **kwargs: Any) -> Any:
        timed.append(1)
        return real_fastest(*args, **kwargs)

    monkeypatch.setattr(parallel, "fastest", counting)
    with open_runner(path, Device.CPU, batch_size=16, cores=2) as runner:
        assert runner.layout == chosen and runner.sessions == chosen.sessions
    assert not timed
    # Another batch size, or another model written to the same path, is timed again.
    with open_runner(path, Device.CPU, batch_size=8, cores=2):
        pass
    onnx_models.build_model(path, weights=onnx_models.colour_weights() * 2)
    with open_runner(path, Device.CPU, batch_size=16, cores=2):
        pass
    assert len(timed) == 2


@pytest.mark.parametrize("spin", [True, False])
def test_calibration_pauses_only_for_spinning_threads(
        spin: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = onnx_models.build_model(tmp_path / "classifier.onnx")
    settles: list[float] = []
    real_fastest = parallel.fastest

    def recording(*args: Any, **kwargs: Any) -> Any:
        settles.append(kwargs["settle"])
        return real_fastest(*args, **kwargs)

    monkeypatch.setattr(parallel, "fastest", recording)
    with open_runner(path, Device.CPU, batch_size=16, cores=2, spin=spin):
        pass
    assert settles == [parallel.SPIN_SETTLE_SECONDS if spin else 0.0]


def test_a_broken_layout_cache_costs_only_the_calibration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: Path) -> None:
    layout_cache.cache_file().parent.mkdir(parents=True, exist_ok=True)
    layout_cache.cache_file().write_text("{not json")
    with open_runner(model, Device.CPU, batch_size=16, cores=2) as runner:
        chosen = runner.layout
    assert json.loads(layout_cache.cache_file().read_text())  # rewritten whole
    assert layout_cache.load(layout_cache.key(model, "cpu", 16, 2, True)) == chosen
    # A cache folder that cannot be created: the job runs all the same.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(user_cache.CACHE_ENV, str(blocker / "cache"))
    with open_runner(model, Device.CPU, batch_size=16, cores=2) as runner:
        assert runner.layout in candidate_layouts(None, None, 16, 2)


def test_without_calibration_one_default_session_runs(model: Path) -> None:
    with open_runner(model, Device.CPU, batch_size=16, calibrate=False, cores=2) as runner:
        assert runner.layout == Layout(1, None)


def test_a_failing_run_names_the_model(model: Path) -> None:
    size = onnx_models.SIZE
    four_channels = np.zeros((4, size, size, 4), np.uint8)
    with open_runner(model, Device.CPU, sessions=2) as runner, \
            pytest.raises(InferenceError, match=r"classifier\.onnx: onnxruntime failed"):
        runner.run(four_channels)


def test_classify_runs_in_the_layout_asked_for_and_says_so(model: Path,
                                                           tmp_path: Path) -> None:
    from PIL import Image

    for i, colour in enumerate([(200, 40, 30), (30, 190, 60), (20, 50, 210)] * 3):
        Image.new("RGB", (20, 16), colour).save(tmp_path / f"{i}.png")
    out = tmp_path / "rows.csv"
    result = CliRunner().invoke(app, ["classify", str(tmp_path), "--model", str(model),
                                      "--sessions", "2", "--threads", "1", "--batch-size", "4",
                                      "--device", "cpu", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 sessions × 1 thread" in " ".join(result.output.split())
    rows = out.read_text().splitlines()[1:]
    assert [row.split(",")[1] for row in rows] == ["red", "green", "blue"] * 3


def test_zero_sessions_are_refused(model: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["classify", str(tmp_path), "--model", str(model),
                                      "--sessions", "0"])
    assert result.exit_code != 0
    assert "--sessions" in result.output


class FakeClock:
    """`parallel`'s `time` module, whose clock only the fake engines' calls and sleeps advance."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize("slows_at", [0.03, 0.1, 0.15, 0.25])
def test_calibration_is_not_fooled_by_a_machine_that_slows_down(
        slows_at: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine runs 1.4× slower from `slows_at` seconds on (a shared VM's drift): timed one
    after the other, the slower engine wins whenever it ran before the change and the faster
    after it; timed alternately, the faster one always wins."""
    clock = FakeClock()
    monkeypatch.setattr(parallel, "time", clock)
    calls: list[str] = []

    class Engine:
        def __init__(self, name: str, seconds_per_call: float) -> None:
            self.name, self.cost, self.closed = name, seconds_per_call, False

        def __call__(self, images: np.ndarray) -> np.ndarray:
            calls.append(self.name)
            clock.now += self.cost * (1.0 if clock.now < slows_at else 1.4)
            return images

        def close(self) -> None:
            self.closed = True

    slow, fast = Engine("slow", 0.010), Engine("fast", 0.008)

    chosen = parallel.fastest(slow, [lambda: fast], images(4), seconds=0.15)

    assert chosen is fast and slow.closed and not fast.closed
    # Alternate blocks: each engine's calls come in CALIBRATION_ROUNDS separate runs.
    runs = [name for i, name in enumerate(calls) if i == 0 or calls[i - 1] != name]
    assert runs == ["slow", "fast"] * parallel.CALIBRATION_ROUNDS


def test_calibration_lets_the_other_engines_threads_stop_spinning(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A spinning onnxruntime session keeps its threads busy for tens of milliseconds after a
    run; an engine timed straight after it would share the cores with them. Each block starts
    `settle` seconds after the other engine's last call ended."""
    clock = FakeClock()
    monkeypatch.setattr(parallel, "time", clock)
    calls: list[tuple[str, float, float]] = []  # (engine, start, end)

    class Engine:
        def __init__(self, name: str) -> None:
            self.name = name

        def __call__(self, images: np.ndarray) -> np.ndarray:
            start = clock.now
            clock.now += 0.01
            calls.append((self.name, start, clock.now))
            return images

        def close(self) -> None:
            pass

    parallel.fastest(Engine("one"), [lambda: Engine("two")], images(4), seconds=0.15,
                     settle=parallel.SPIN_SETTLE_SECONDS)

    switches = [(before, after) for before, after in zip(calls, calls[1:], strict=False)
                if before[0] != after[0]]
    assert len(switches) == 2 * parallel.CALIBRATION_ROUNDS - 1
    assert all(after[1] - before[2] >= parallel.SPIN_SETTLE_SECONDS - 1e-9
               for before, after in switches)
