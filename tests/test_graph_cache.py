"""The optimized graph kept per model and CPU: used when valid, rebuilt when not, never a cost."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx_models
import pytest

from edge_ssl.errors import ModelError
from edge_ssl.runtime import graph_cache
from edge_ssl.runtime.model import CPU, Device, open_session
from edge_ssl.runtime.user_cache import CACHE_ENV

pytestmark = pytest.mark.skipif(graph_cache.fingerprint() is None,
                                reason="the CPU's flags cannot be read here: nothing is kept")


def images(count: int = 3) -> np.ndarray:
    size = onnx_models.SIZE
    return np.random.default_rng(1).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


@pytest.fixture(autouse=True)
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files onnxruntime opens sessions from, in order."""
    import onnxruntime as ort

    files: list[str] = []

    class Recording(ort.InferenceSession):  # type: ignore[misc]
        def __init__(self, path: str, *args: Any, **kwargs: Any) -> None:
            files.append(str(path))
            super().__init__(path, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", Recording)
    return files


def answers(model: Path, opened: list[str]) -> tuple[np.ndarray, str]:
    """The model's probabilities of `images()`, and the file the session was opened from."""
    session, _, provider = open_session(model, Device.CPU, threads=1)
    assert provider == CPU
    return session.run(None, {"image": images()})[0], opened[-1]


def kept(cache: Path) -> list[Path]:
    """Everything in the folder of kept graphs."""
    folder = cache / graph_cache.FOLDER
    return sorted(folder.glob("*")) if folder.is_dir() else []


@pytest.fixture()
def cache() -> Path:
    return Path(os.environ[CACHE_ENV])


def test_the_second_session_opens_from_the_kept_graph_with_the_same_answers(
        tmp_path: Path, cache: Path, opened: list[str]) -> None:
    model = onnx_models.build_model(tmp_path / "m.onnx")
    first, opened_from = answers(model, opened)
    assert opened_from == str(model)
    (saved,) = kept(cache)
    assert saved == graph_cache.graph_file(model)
    again, opened_from = answers(model, opened)
    assert opened_from == str(saved)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(
        first, onnx_models.expected_probabilities(images(), onnx_models.colour_weights()),
        atol=1e-5)


def test_a_model_rewritten_in_place_is_never_answered_by_its_old_graph(
        tmp_path: Path, cache: Path, opened: list[str]) -> None:
    model = onnx_models.build_model(tmp_path / "m.onnx")
    answers(model, opened)
    flipped = -onnx_models.colour_weights()
    onnx_models.build_model(model, flipped)
    probabilities, _ = answers(model, opened)
    np.testing.assert_allclose(
        probabilities, onnx_models.expected_probabilities(images(), flipped), atol=1e-5)
    assert len(kept(cache)) == 2


def test_a_damaged_graph_is_dropped_and_saved_again(tmp_path: Path, cache: Path,
                                                    opened: list[str]) -> None:
    model = onnx_models.build_model(tmp_path / "m.onnx")
    first, _ = answers(model, opened)
    (saved,) = kept(cache)
    saved.write_bytes(b"not a graph")
    probabilities, opened_from = answers(model, opened)
    assert opened_from == str(model)
    np.testing.assert_array_equal(first, probabilities)
    assert kept(cache) == [saved] and saved.stat().st_size > 100
    assert answers(model, opened)[1] == str(saved)


def test_a_cache_that_cannot_be_written_costs_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opened: list[str]) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("the cache folder's place is taken by a file")
    monkeypatch.setenv(CACHE_ENV, str(blocked))
    model = onnx_models.build_model(tmp_path / "m.onnx")
    probabilities, opened_from = answers(model, opened)
    assert opened_from == str(model)
    np.testing.assert_allclose(
        probabilities, onnx_models.expected_probabilities(images(), onnx_models.colour_weights()),
        atol=1e-5)


def test_a_broken_model_still_says_what_is_wrong_and_leaves_nothing(
        tmp_path: Path, cache: Path, opened: list[str]) -> None:
    with pytest.raises(ModelError, match="not an ONNX model"):
        open_session(onnx_models.not_onnx(tmp_path / "bad.onnx"), Device.CPU)
    assert kept(cache) == []


def test_only_the_graphs_used_last_are_kept(tmp_path: Path, cache: Path, opened: list[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graph_cache, "MAX_GRAPHS", 2)
    first, second, third = [
        onnx_models.build_model(tmp_path / f"{i}.onnx", onnx_models.colour_weights(gain=g))
        for i, g in enumerate([5.0, 6.0, 7.0])]
    for age, model in enumerate([first, second]):
        answers(model, opened)
        os.utime(graph_cache.graph_file(model), ns=(age, age))  # the first is the oldest
    assert answers(first, opened)[1] == str(graph_cache.graph_file(first))  # used: now newest
    answers(third, opened)
    assert kept(cache) == sorted(graph_cache.graph_file(m) for m in (first, third))


def test_a_cache_folder_that_refuses_files_costs_no_second_optimization(
        tmp_path: Path, cache: Path, opened: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (cache / graph_cache.FOLDER).mkdir(parents=True)

    def read_only(self: Path, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "touch", read_only)
    model = onnx_models.build_model(tmp_path / "m.onnx")
    answers(model, opened)
    assert opened == [str(model)] and kept(cache) == []


def test_a_model_replaced_while_it_opens_leaves_no_graph_under_the_old_key(
        tmp_path: Path, cache: Path) -> None:
    import onnxruntime as ort

    model = onnx_models.build_model(tmp_path / "m.onnx")
    old_key = graph_cache.graph_file(model)

    def load_then_replace(path: Path, options: ort.SessionOptions) -> ort.InferenceSession:
        session = ort.InferenceSession(str(path), options, providers=[CPU])
        onnx_models.build_model(path, -onnx_models.colour_weights())  # a re-export lands
        return session

    graph_cache.open_cpu(model, ort.SessionOptions(), load_then_replace)
    assert old_key is not None and not old_key.exists() and kept(cache) == []


def test_only_fully_optimized_sessions_are_kept(tmp_path: Path, cache: Path) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    model = onnx_models.build_model(tmp_path / "m.onnx")
    graph_cache.open_cpu(model, options, lambda path, opts: ort.InferenceSession(
        str(path), opts, providers=[CPU]))
    assert kept(cache) == []


def test_a_killed_save_leaves_its_temporary_file_only_for_a_while(
        tmp_path: Path, cache: Path, opened: list[str]) -> None:
    folder = cache / graph_cache.FOLDER
    folder.mkdir(parents=True)
    killed, recent = folder / ".old-save.tmp", folder / ".other-job-saving.tmp"
    for temporary in (killed, recent):
        temporary.write_bytes(b"half a graph")
    os.utime(killed, (0, 0))
    model = onnx_models.build_model(tmp_path / "m.onnx")
    answers(model, opened)
    assert kept(cache) == sorted([recent, graph_cache.graph_file(model)])
