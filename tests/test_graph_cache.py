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
from edge_ssl.runtime.model import Device, open_session
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
    assert provider == graph_cache.CPU
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
    models = [onnx_models.build_model(tmp_path / f"{i}.onnx", onnx_models.colour_weights(gain=g))
              for i, g in enumerate([5.0, 6.0, 7.0])]
    for i, model in enumerate(models):
        answers(model, opened)
        os.utime(graph_cache.graph_file(model), ns=(i, i))  # oldest first, whatever the clock
    answers(models[0], opened)  # used again: the newest, saved once more
    assert kept(cache) == sorted(graph_cache.graph_file(m) for m in models[::2])
