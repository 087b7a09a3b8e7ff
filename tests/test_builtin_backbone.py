"""The self-supervised backbone shipped in the package: present, intact, and worth shipping."""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from edge_ssl import rundir  # noqa: E402
from edge_ssl.train import demo_data, methods, pipeline  # noqa: E402
from edge_ssl.train.model import ModelSpec, load_model  # noqa: E402


@pytest.fixture(scope="module")
def shipped() -> tuple[dict, keras.Model]:
    folder = rundir.builtin_pretext()  # raises unless the file matches its recorded sha256
    provenance = json.loads((folder / rundir.PROVENANCE_FILE).read_text())
    return provenance, load_model(folder / rundir.PRETEXT_MODEL)


def test_the_provenance_says_how_it_was_made(shipped: tuple[dict, keras.Model]) -> None:
    provenance, model = shipped
    assert provenance["labels_used"] is False and len(provenance["classes_seen"]) == 55
    assert provenance["epochs"] >= 30 and provenance["wall_seconds"] > 0
    assert 0.25 < provenance["heldout_rotation"]["percent"] / 100 <= 1
    assert provenance["command"].startswith("edge-ssl train ")
    assert model.output_shape == (None, pipeline.NUM_ROTATIONS)
    assert provenance["bytes"] < 10_000_000  # a few MB in the wheel


def _rotation_accuracy(model: keras.Model, pixels: np.ndarray) -> float:
    rotated, turns = (t.numpy() for t in pipeline.rotate_all(pixels))
    return float((methods.predict(model, rotated).argmax(1) == turns).mean())


def test_it_sees_which_way_is_up_where_a_random_network_cannot(
        shipped: tuple[dict, keras.Model]) -> None:
    """Scenes it has never seen (drawn ducks and fish, sky above water or grass): the shipped
    pretext tells their four rotations apart far above chance; the same network at random
    initialisation does not."""
    provenance, model = shipped
    pixels, _ = demo_data.generate(30, seed=5, image_size=provenance["image_size"])
    spec = ModelSpec(provenance["image_size"], provenance["width"], 0.9,
                     top=provenance["backbone_ends_at"])
    control = methods.random_init_network(spec, seed=0)
    shipped_accuracy = _rotation_accuracy(model, pixels)
    control_accuracy = _rotation_accuracy(control, pixels)
    # 240 rotated images: chance is 25 % ± 3 points (one standard error).
    assert shipped_accuracy > 0.5 and shipped_accuracy > control_accuracy + 0.2, (
        shipped_accuracy, control_accuracy)
