"""`edge-ssl evaluate`: metrics with intervals, artifacts, models side by side, bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx_models
import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from edge_ssl.cli import app
from edge_ssl.runtime.metrics import confusion_matrix, macro, per_class

RED, GREEN, BLUE = (200, 40, 30), (30, 190, 60), (20, 50, 210)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    weights = onnx_models.colour_weights()
    return {
        "colour": onnx_models.build_model(folder / "classifier.onnx"),
        # The same answers, its labels in another order: matched by name, not by index.
        "reordered": onnx_models.build_model(folder / "classifier.reordered.onnx",
                                             weights[:, ::-1], labels=("blue", "green", "red")),
        # Says "green" for red and "red" for green.
        "swapped": onnx_models.build_model(folder / "swapped.onnx", weights[:, [1, 0, 2]]),
    }


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, ["evaluate", *map(str, args)])


def labelled(root: Path, counts: dict[str, list[tuple[int, int, int]]]) -> Path:
    """root/<class>/NN.png, one solid image per colour listed."""
    for name, colours in counts.items():
        (root / name).mkdir(parents=True)
        for i, colour in enumerate(colours):
            Image.new("RGB", (20, 14), colour).save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    # 3 + 3 + 2 images; one "red" image is green: 7 of 8 right for the colour model.
    return labelled(tmp_path / "data", {"red": [RED, RED, GREEN], "green": [GREEN] * 3,
                                        "blue": [BLUE] * 2})


def test_metrics_artifacts_and_side_by_side(data: Path, models: dict[str, Path],
                                           tmp_path: Path) -> None:
    out = tmp_path / "eval"
    (data / "unlabeled").mkdir()  # as demo-data writes it: never a class
    Image.new("RGB", (8, 8), BLUE).save(data / "unlabeled" / "x.png")

    result = invoke(models["colour"], models["reordered"], models["swapped"], "--data", data,
                    "--output-dir", out)

    assert result.exit_code == 0, result.output
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["data"]["images"] == 8 and saved["data"]["kind"] == "folder"
    colour, reordered, swapped = saved["models"]
    assert colour["accuracy"]["hits"] == 7 and colour["accuracy"]["n"] == 8
    low, high = colour["accuracy"]["ci95"]
    assert 52.8 < low < 53.0 and 97.7 < high < 97.9  # Wilson 95 % of 7/8
    by_class = {c["label"]: c for c in colour["classes"]}
    assert by_class["red"] == {"label": "red", "precision": 1.0, "recall": pytest.approx(2 / 3),
                               "f1": pytest.approx(0.8), "support": 3, "predicted": 2}
    assert by_class["green"]["precision"] == pytest.approx(0.75)
    assert colour["confusion"]["matrix"] == [[2, 1, 0], [0, 3, 0], [0, 0, 2]]
    assert reordered["accuracy"] == colour["accuracy"]  # labels matched by name
    assert reordered["confusion"]["matrix"] == [[2, 0, 0], [0, 3, 0], [0, 1, 2]]  # its order
    assert swapped["accuracy"]["hits"] == 3  # only the blue images, and the green "red" one
    agreement = {tuple(a["models"]): a["top1_agreement"] for a in saved["agreement"]}
    assert agreement[("classifier", "classifier.reordered")]["percent"] == 100.0
    assert agreement[("classifier", "swapped")]["hits"] == 2
    assert colour["inference_ms_per_image"] > 0
    with (out / "classifier.misclassified.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert Path(row["path"]) == data / "red" / "02.png"
    assert (row["true"], row["predicted"]) == ("red", "green")
    assert float(row["confidence"]) > 0.5 > float(row["true_probability"])
    for name in ("classifier", "classifier.reordered", "swapped"):
        with Image.open(out / f"{name}.confusion.png") as png:
            assert png.format == "PNG" and png.width > 150 and png.height > 150
    text = " ".join(result.stdout.split())
    assert "classifier 87.5% (52.9–97.8) 0.886" in text  # accuracy, interval, macro F1
    assert "classifier vs swapped 25.0% (7.1–59.1) 6" in text
    assert result.stderr == ""


def test_an_unknown_folder_class_is_an_error(data: Path, models: dict[str, Path],
                                             tmp_path: Path) -> None:
    labelled(data, {"purple": [RED]})

    result = invoke(models["colour"], "--data", data, "-o", tmp_path / "eval")

    assert result.exit_code == 3
    message = " ".join(result.stderr.split())
    assert "class 'purple' is not one of the model's labels (red, green, blue)" in message
    assert "--classes" in message and not (tmp_path / "eval").exists()


def test_classes_restricts_the_evaluation(data: Path, models: dict[str, Path],
                                          tmp_path: Path) -> None:
    labelled(data, {"purple": [RED]})

    result = invoke(models["colour"], "--data", data, "--classes", "green,blue", "-o",
                    tmp_path / "eval")

    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert saved["data"]["images"] == 5 and saved["models"][0]["accuracy"]["percent"] == 100.0
    red = saved["models"][0]["classes"][0]
    assert red["support"] == 0 and red["recall"] is None  # a model class with no images


def test_models_must_know_every_class(data: Path, models: dict[str, Path], tmp_path: Path
                                      ) -> None:
    two = onnx_models.build_model(tmp_path / "two.onnx", onnx_models.colour_weights()[:, :2],
                                  labels=("red", "green"))

    result = invoke(models["colour"], two, "--data", data, "-o", tmp_path / "eval")

    assert result.exit_code == 3 and "two.onnx has no label 'blue'" in result.stderr


def test_unreadable_files_are_skipped_and_listed(data: Path, models: dict[str, Path],
                                                 tmp_path: Path) -> None:
    (data / "blue" / "broken.png").write_bytes(b"not a png")

    result = invoke(models["colour"], "--data", data, "-o", tmp_path / "eval")

    assert result.exit_code == 1
    assert "skipped" in result.stderr and "broken.png: not an image Pillow can read" in \
        result.stderr
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert saved["data"]["images"] == 8
    assert saved["data"]["skipped"] == {str(data / "blue" / "broken.png"):
                                        "not an image Pillow can read"}


def test_nothing_readable_exits_3(tmp_path: Path, models: dict[str, Path]) -> None:
    (tmp_path / "data" / "red").mkdir(parents=True)
    (tmp_path / "data" / "red" / "a.png").write_bytes(b"")

    result = invoke(models["colour"], "--data", tmp_path / "data", "-o", tmp_path / "eval")

    assert result.exit_code == 3 and "none of the 1 images" in result.stderr


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "nope", "no such folder"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no class folders"),
    (lambda d: labelled(d / "bare", {"red": []}), "no labelled images"),
], ids=["missing", "no-classes", "no-images"])
def test_folders_without_labelled_images(tmp_path: Path, models: dict[str, Path],
                                         make: object, message: str) -> None:
    result = invoke(models["colour"], "--data", make(tmp_path), "-o",  # type: ignore[operator]
                    tmp_path / "eval")

    assert result.exit_code == 3 and message in result.stderr


def test_an_existing_output_folder_needs_overwrite(data: Path, models: dict[str, Path],
                                                   tmp_path: Path) -> None:
    out = tmp_path / "eval"
    out.mkdir()
    (out / "notes.txt").write_text("mine")

    refused = invoke(models["colour"], "--data", data, "-o", out)
    allowed = invoke(models["colour"], "--data", data, "-o", out, "--overwrite")

    assert refused.exit_code == 2 and "pass --overwrite" in refused.stderr
    assert allowed.exit_code == 0 and (out / "evaluation.json").is_file()
    assert (out / "notes.txt").read_text() == "mine"


def test_an_unusable_model_exits_4(data: Path, tmp_path: Path) -> None:
    result = invoke(onnx_models.not_onnx(tmp_path / "text.onnx"), "--data", data)

    assert result.exit_code == 4 and "not an ONNX model" in result.stderr


def test_default_output_folder_is_timestamped(data: Path, models: dict[str, Path],
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    assert invoke(models["colour"], "--data", data).exit_code == 0

    (run,) = (tmp_path / "evaluations").iterdir()
    assert (run / "evaluation.json").is_file() and run.name[:2] == "20"


def tiny_imagenet(root: Path) -> Path:
    """A Tiny ImageNet layout: wnids.txt, words.txt, val/images and val_annotations.txt."""
    colours = {"n0000001": RED, "n0000002": GREEN, "n0000003": BLUE, "n0000004": RED}
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(colours) + "\n")
    (root / "words.txt").write_text("n0000001\tred, crimson\nn0000002\tgreen\n"
                                    "n0000003\tazure, blue\nn0000004\tscarlet\n")
    lines = []
    for i, (wnid, colour) in enumerate(colours.items()):
        for k in range(2):
            name = f"val_{2 * i + k}.JPEG"
            Image.new("RGB", (16, 16), colour).save(root / "val" / "images" / name,
                                                    format="JPEG")
            lines.append(f"{name}\t{wnid}\t0\t0\t15\t15")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def test_tiny_imagenet_val_with_names_from_words(tmp_path: Path,
                                                 models: dict[str, Path]) -> None:
    root = tiny_imagenet(tmp_path / "tiny")

    result = invoke(models["colour"], "--data", root, "-o", tmp_path / "eval")

    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    # red = n0000001 (first name), green = n0000002, blue = n0000003 (a synonym); the scarlet
    # class is not one the model knows, so its images are not evaluated.
    assert saved["data"]["classes"] == {"red": "n0000001", "green": "n0000002",
                                        "blue": "n0000003"}
    assert saved["data"]["kind"] == "tiny-imagenet" and saved["data"]["images"] == 6
    assert saved["models"][0]["accuracy"]["percent"] == 100.0


def test_tiny_imagenet_classes_the_model_does_not_know(tmp_path: Path) -> None:
    root = tiny_imagenet(tmp_path / "tiny")
    other = onnx_models.build_model(tmp_path / "duck.onnx", onnx_models.colour_weights()[:, :2],
                                    labels=("duck", "fish"))

    unknown = invoke(other, "--data", root)
    restricted = invoke(onnx_models.build_model(tmp_path / "c.onnx"), "--data", root,
                        "--classes", "scarlet")

    assert unknown.exit_code == 3 and "none of the model's labels (duck, fish)" in \
        unknown.stderr
    assert restricted.exit_code == 3 and "'scarlet (n0000004)' is not one of" in \
        restricted.stderr


def test_real_tiny_imagenet_slice(tiny_imagenet_mini: Path, tmp_path: Path) -> None:
    # Labels as `edge-ssl train --data` gives them: the first name in words.txt.
    model = onnx_models.build_model(tmp_path / "m.onnx", onnx_models.colour_weights()[:, :2],
                                    labels=("goldfish", "goose"))

    result = invoke(model, "--data", tiny_imagenet_mini, "-o", tmp_path / "eval")

    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert saved["data"]["classes"] == {"goldfish": "n01443537", "goose": "n01855672"}
    supports = [c["support"] for c in saved["models"][0]["classes"]]
    assert min(supports) > 0 and sum(supports) == saved["data"]["images"]


def test_metrics_leave_undefined_values_undefined() -> None:
    matrix = confusion_matrix(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0]), 3)
    metrics = per_class(matrix, ["a", "b", "c"])

    assert matrix.tolist() == [[2, 0, 0], [2, 0, 0], [0, 0, 0]]
    assert (metrics[0].precision, metrics[0].recall) == (0.5, 1.0)
    assert metrics[1].precision is None and metrics[1].recall == 0.0 and metrics[1].f1 is None
    assert metrics[2].support == 0 and metrics[2].recall is None
    # Macro over the classes with images; b was never predicted: it counts as 0.
    assert macro(metrics, "recall") == pytest.approx(0.5)
    assert macro(metrics, "precision") == pytest.approx(0.25)


def test_evaluate_never_imports_tensorflow(data: Path, models: dict[str, Path],
                                           tmp_path: Path) -> None:
    code = f"""
import sys
from edge_ssl.cli import main
sys.argv = ["edge-ssl", "evaluate", {str(models["colour"])!r}, {str(models["swapped"])!r},
            "--data", {str(data)!r}, "-o", {str(tmp_path / "eval")!r}]
try:
    main()
except SystemExit as exc:
    assert exc.code in (0, None), f"exit code {{exc.code}}"
loaded = {{m.split(".")[0] for m in sys.modules}}
heavy = sorted(loaded & {{"tensorflow", "keras", "tf2onnx", "onnx", "matplotlib"}})
assert not heavy, f"imported {{heavy}}"
print("clean")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert "clean" in done.stdout and (tmp_path / "eval" / "swapped.confusion.png").is_file()


def test_models_of_different_native_sizes(data: Path, models: dict[str, Path],
                                          tmp_path: Path) -> None:
    small = onnx_models.build_model(tmp_path / "small.onnx", onnx_models.colour_weights(6),
                                    size=6)

    result = invoke(models["colour"], small, "--data", data, "-o", tmp_path / "eval")

    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert [m["accuracy"]["hits"] for m in saved["models"]] == [7, 7]
    assert saved["agreement"][0]["top1_agreement"]["percent"] == 100.0
