"""`edge-ssl classify` through the CLI: outputs, every kind of bad input, and no TensorFlow."""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx_models
import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from edge_ssl.cli import app
from edge_ssl.runtime import decode as decode_module
from edge_ssl.runtime.classify import ClassifyConfig, find_images

# Solid colours and the label the colour model gives them.
RED, GREEN, BLUE = (200, 40, 30), (30, 190, 60), (20, 50, 210)
EXPECTED = {RED: "red", GREEN: "green", BLUE: "blue"}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return onnx_models.build_model(tmp_path_factory.mktemp("model") / "classifier.onnx")


@pytest.fixture(scope="module")
def pretext(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return onnx_models.rotation_model(tmp_path_factory.mktemp("model") / "pretext.onnx")


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, ["classify", *map(str, args)])


def solid(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (24, 20)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def good_folder(folder: Path) -> dict[str, str]:
    """Three good images; returns file name → expected label."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {"a_red.jpg": RED, "b_green.png": GREEN, "c_blue.bmp": BLUE}
    for name, colour in names.items():
        solid(folder / name, colour)
    return {name: EXPECTED[colour] for name, colour in names.items()}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_table_lists_every_image_and_a_summary(tmp_path: Path, model: Path) -> None:
    expected = good_folder(tmp_path / "imgs")

    result = invoke(tmp_path / "imgs", "--model", model)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for name, label in expected.items():
        row = next(line for line in lines if name in line)
        assert row.split()[1] == label
    assert "mean confidence" in result.stdout
    assert "classified 3 of 3 images" in result.stdout
    assert "CPUExecutionProvider" in result.stdout or "CUDAExecutionProvider" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "WEBP", "GIF", "TIFF"])
def test_every_format_pillow_reads(tmp_path: Path, model: Path, fmt: str) -> None:
    path = tmp_path / f"image.{fmt.lower()}"
    if fmt == "GIF":  # the first frame counts
        frames = [Image.new("RGB", (16, 16), c) for c in (GREEN, RED)]
        frames[0].save(path, save_all=True, append_images=frames[1:])
    else:
        Image.new("RGB", (16, 16), GREEN).save(path, format=fmt)

    result = invoke(path, "--model", model, "--output", tmp_path / "out.csv")

    assert result.exit_code == 0, result.output
    assert [r["label"] for r in read_csv(tmp_path / "out.csv")] == ["green"]


def test_csv_has_one_row_per_good_file_with_top_k(tmp_path: Path, model: Path) -> None:
    expected = good_folder(tmp_path / "imgs")
    out = tmp_path / "preds.csv"

    result = invoke(tmp_path / "imgs", "--model", model, "--output", out, "--top-k", "2",
                    "--batch-size", "2")

    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert [Path(r["path"]).name for r in rows] == sorted(expected)
    assert list(rows[0]) == ["path", "label", "confidence", "label_2", "confidence_2", "error"]
    for row in rows:
        assert row["label"] == expected[Path(row["path"]).name]
        assert 1.0 >= float(row["confidence"]) >= float(row["confidence_2"]) >= 0.0
        assert row["label_2"] != row["label"] and row["error"] == ""
    assert f"wrote 3 rows (3 predictions) to {out}" in result.stdout
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # temp file renamed
    assert "a_red.jpg" not in result.stdout  # the file replaces the per-image table


def test_jsonl_has_one_object_per_good_file(tmp_path: Path, model: Path) -> None:
    expected = good_folder(tmp_path / "imgs")
    out = tmp_path / "sub" / "preds.jsonl"

    result = invoke(tmp_path / "imgs", "--model", model, "-o", out, "--top-k", "3")

    assert result.exit_code == 0, result.output
    rows = read_jsonl(out)
    assert len(rows) == 3
    for row in rows:
        assert row["label"] == expected[Path(row["path"]).name]
        top = row["top_k"]
        assert top[0]["label"] == row["label"]
        assert sorted(t["label"] for t in top) == sorted(onnx_models.COLOURS)
        assert sum(t["confidence"] for t in top) == pytest.approx(1.0, abs=1e-5)


def test_confidences_are_the_models_probabilities(tmp_path: Path, model: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "noise.png")

    invoke(tmp_path / "noise.png", "--model", model, "-o", tmp_path / "p.jsonl", "--top-k", "3")

    (row,) = read_jsonl(tmp_path / "p.jsonl")
    expected = onnx_models.expected_probabilities(pixels[None], onnx_models.colour_weights())[0]
    got = {t["label"]: t["confidence"] for t in row["top_k"]}
    for label, p in zip(onnx_models.COLOURS, expected, strict=True):
        assert got[label] == pytest.approx(float(p), abs=2e-6)


# --- bad input: each is reported with its reason, and the good files are still classified ---

def _truncated_jpeg(path: Path) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, format="JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _bomb(path: Path) -> None:
    # A valid PNG header claiming 20,000 × 20,000 pixels: Pillow refuses it at open.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def _unreadable(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (24, 20), RED).save(path, format="PNG")
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: make edge_ssl.images see what others would
        real_open = Path.open

        def denied(self: Path, *args: Any, **kwargs: Any) -> Any:
            if self == path:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", denied)


BAD_FILES: dict[str, tuple[Callable[[Path, pytest.MonkeyPatch], object], str]] = {
    "truncated": (lambda p, _: _truncated_jpeg(p), "corrupt or truncated image"),
    "zero-byte": (lambda p, _: p.touch(), "empty file"),
    "text": (lambda p, _: p.write_text("hello, not a picture\n"), "not an image Pillow can read"),
    "bomb": (lambda p, _: _bomb(p), "decompression-bomb limit"),
    "unreadable": (_unreadable, "permission denied"),
    "broken-link": (lambda p, _: p.symlink_to(p.parent / "deleted.jpg"), "broken symbolic link"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_a_bad_file_is_reported_and_skipped(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    make, reason = BAD_FILES[kind]
    expected = good_folder(tmp_path / "imgs")
    bad = tmp_path / "imgs" / "0_bad.jpg"  # sorts first: it must not cost the others
    make(bad, monkeypatch)
    out = tmp_path / "preds.csv"

    result = invoke(tmp_path / "imgs", "--model", model, "--output", out)

    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("skipped ") and str(bad) in line and reason in line
    rows = read_csv(out)
    # The unreadable file is a row too, in input order, with its reason and no label.
    assert [Path(r["path"]).name for r in rows] == ["0_bad.jpg", *sorted(expected)]
    assert rows[0]["label"] == rows[0]["confidence"] == "" and reason in rows[0]["error"]
    assert str(bad) not in rows[0]["error"]  # the path is in its own column
    assert {Path(r["path"]).name: r["label"] for r in rows[1:]} == expected
    assert "classified 3 of 4 images" in result.stdout and "1 skipped" in result.stdout


def test_an_unexpected_decoder_error_costs_only_that_file(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = good_folder(tmp_path / "imgs")
    bad = solid(tmp_path / "imgs" / "0_plugin_bug.png", RED)
    real_load = decode_module.load_rgb

    def load(path: Path, size: int | None = None) -> np.ndarray:
        if path == bad:
            raise struct.error("unpack requires a buffer of 4 bytes")
        return real_load(path, size)

    monkeypatch.setattr(decode_module, "load_rgb", load)

    result = invoke(tmp_path / "imgs", "--model", model, "-o", tmp_path / "p.jsonl")

    assert result.exit_code == 1
    assert "0_plugin_bug.png: cannot decode (error: unpack requires" in result.stderr
    rows = read_jsonl(tmp_path / "p.jsonl")
    assert rows[0] == {"path": str(bad),
                       "error": "cannot decode (error: unpack requires a buffer of 4 bytes)"}
    assert [r["label"] for r in rows[1:]] == [expected[n] for n in sorted(expected)]


def test_a_missing_path_argument_is_a_failure_like_any_other(tmp_path: Path, model: Path) -> None:
    ok = solid(tmp_path / "ok.png", BLUE)

    result = invoke(tmp_path / "missing.jpg", ok, "--model", model)

    assert result.exit_code == 1
    assert "missing.jpg: file not found" in result.stderr
    assert "ok.png" in result.stdout


def test_nothing_classifiable_exits_3(tmp_path: Path, model: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").touch()
    (tmp_path / "imgs" / "b.png").write_text("nope")
    out = tmp_path / "preds.csv"

    result = invoke(tmp_path / "imgs", "--model", model, "-o", out)

    assert result.exit_code == 3
    assert result.stderr.count("skipped ") == 2
    assert "none of the 2 files could be classified" in result.stderr
    assert [(Path(r["path"]).name, r["error"]) for r in read_csv(out)] == [
        ("a.jpg", "empty file"), ("b.png", "not an image Pillow can read")]


def test_empty_folder_exits_3_and_says_so(tmp_path: Path, model: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image name")

    result = invoke(tmp_path / "empty", "--model", model)

    assert result.exit_code == 3
    assert f"no images found in {tmp_path / 'empty'}" in result.stderr
    assert "--recursive" in result.stderr


def test_recursive_finds_images_in_subfolders(tmp_path: Path, model: Path) -> None:
    good_folder(tmp_path / "top" / "nested" / "deeper")

    assert invoke(tmp_path / "top", "--model", model).exit_code == 3
    result = invoke(tmp_path / "top", "--model", model, "--recursive", "-o", tmp_path / "p.csv")

    assert result.exit_code == 0, result.output
    assert len(read_csv(tmp_path / "p.csv")) == 3


# --- model problems: one clear line, exit 4 (the model or its runtime) ---

@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "nope.onnx", "nope.onnx: no such file"),
    (lambda d: onnx_models.not_onnx(d / "text.onnx"), "not an ONNX model"),
    (lambda d: onnx_models.build_model(d / "bare.onnx", meta={}), "no edge-ssl metadata"),
    (lambda d: onnx_models.build_model(d / "float.onnx", input_type=onnx_models.TensorProto.FLOAT),
     "not image: uint8 [N, H, W, 3]"),
], ids=["missing", "not-onnx", "no-metadata", "float-input"])
def test_unusable_models_are_named(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    good_folder(tmp_path / "imgs")

    result = invoke(tmp_path / "imgs", "--model", make(tmp_path))

    assert result.exit_code == 4
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.output


def test_default_model_missing_says_to_train_and_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good_folder(tmp_path / "imgs")
    monkeypatch.chdir(tmp_path)

    result = invoke("imgs")

    assert result.exit_code == 4
    assert "runs/latest/exports/classifier.onnx" in result.stderr
    assert "edge-ssl train" in result.stderr and "edge-ssl export" in result.stderr


def test_bad_options_are_usage_errors(tmp_path: Path, model: Path) -> None:
    good_folder(tmp_path / "imgs")

    wrong_suffix = invoke(tmp_path / "imgs", "--model", model, "-o", tmp_path / "p.txt")
    too_many = invoke(tmp_path / "imgs", "--model", model, "--top-k", "4")

    assert wrong_suffix.exit_code == 2 and ".csv or .jsonl" in wrong_suffix.output
    assert too_many.exit_code == 2 and "more than the model's 3 labels" in too_many.stderr


# --- decoding rules: EXIF orientation and odd modes classify like their RGB twin ---

def test_rotation_model_reports_each_images_rotation(tmp_path: Path, pretext: Path) -> None:
    upright = np.zeros((32, 32, 3), np.uint8)
    upright[:16] = 240  # bright sky on top
    for k in range(4):
        Image.fromarray(np.rot90(upright, k).copy()).save(tmp_path / f"turned_{k * 90:03d}.png")

    result = invoke(tmp_path, "--model", pretext, "-o", tmp_path / "r.csv")

    assert result.exit_code == 0, result.output
    assert [r["label"] for r in read_csv(tmp_path / "r.csv")] == ["0", "90", "180", "270"]
    assert "rotation" in result.stdout


def test_exif_orientation_is_applied(tmp_path: Path, pretext: Path) -> None:
    upright = np.zeros((48, 32, 3), np.uint8)  # taller than wide, bright top
    upright[:24] = 230
    Image.fromarray(upright).save(tmp_path / "twin.png")
    # A camera held sideways stores the pixels turned and says so in EXIF (6: rotate 90° CW).
    stored = Image.fromarray(np.rot90(upright, 1).copy())
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "exif.jpg", quality=95, exif=exif)
    stored.save(tmp_path / "no_exif.jpg", quality=95)

    invoke(tmp_path, "--model", pretext, "-o", tmp_path / "r.jsonl", "--top-k", "4")

    rows = {Path(r["path"]).name: r for r in read_jsonl(tmp_path / "r.jsonl")}
    assert rows["twin.png"]["label"] == rows["exif.jpg"]["label"] == "0"
    assert rows["no_exif.jpg"]["label"] == "90"  # proof that the test can tell
    assert rows["exif.jpg"]["confidence"] == pytest.approx(rows["twin.png"]["confidence"],
                                                           abs=0.01)


def _odd_modes(rgb: np.ndarray) -> dict[str, tuple[Image.Image, np.ndarray]]:
    """Images in odd modes, each with the RGB pixels it must decode to."""
    grey = rgb[:, :, 0]
    grey3 = np.repeat(grey[:, :, None], 3, axis=2)
    half = len(rgb) // 2
    alpha = np.full(grey.shape, 255, np.uint8)
    alpha[:half] = 0  # transparent top half: flattened onto white
    on_white = rgb.copy()
    on_white[:half] = 255
    palette = Image.fromarray(rgb).quantize(15)  # indices 0-14; 15 is the transparent one
    indexed = np.asarray(palette).copy()
    indexed[:half] = 15
    palette_t = Image.fromarray(indexed, "P")
    palette_t.putpalette((palette.getpalette() or [])[: 15 * 3] + [0, 0, 0])
    palette_t.info["transparency"] = 15
    palette_rgb = np.asarray(palette_t.convert("RGB")).copy()
    palette_rgb[:half] = 255
    wide = (grey.astype(np.uint16) * 257).astype(np.uint16)
    return {
        "L": (Image.fromarray(grey, "L"), grey3),
        "LA": (Image.fromarray(np.dstack([grey, np.full_like(grey, 255)]), "LA"), grey3),
        "P": (palette_t, palette_rgb),
        "RGBA": (Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), on_white),
        "CMYK": (Image.fromarray(rgb).convert("CMYK"), rgb),
        "I;16": (Image.fromarray(wide), grey3),  # uint16 arrays become I;16
    }


def test_odd_modes_classify_like_their_rgb_twin(tmp_path: Path, model: Path) -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    for mode, (image, twin) in _odd_modes(rgb).items():
        assert image.mode == mode
        name = mode.replace(";", "")
        image.save(tmp_path / f"{name}.{'tif' if mode == 'CMYK' else 'png'}")
        Image.fromarray(twin).save(tmp_path / f"{name}_twin.png")

    result = invoke(tmp_path, "--model", model, "-o", tmp_path / "p.jsonl", "--top-k", "3")

    assert result.exit_code == 0, result.output
    rows = {Path(r["path"]).stem: r for r in read_jsonl(tmp_path / "p.jsonl")}
    assert len(rows) == 12
    for mode in ("L", "LA", "P", "RGBA", "CMYK", "I16"):
        assert rows[mode]["top_k"] == rows[f"{mode}_twin"]["top_k"], mode


# --- the library ---

def test_find_images_keeps_named_files_and_expands_folders(tmp_path: Path) -> None:
    good_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "notes.txt").write_text("x")
    named = tmp_path / "picture.data"

    found = find_images([tmp_path / "imgs", named])

    assert [p.name for p in found] == ["a_red.jpg", "b_green.png", "c_blue.bmp", "picture.data"]


@pytest.mark.parametrize(("field", "value"), [
    ("batch_size", 0), ("top_k", 0), ("threads", 0), ("output", Path("p.txt")),
])
def test_config_names_the_bad_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        ClassifyConfig((Path("imgs"),), **{field: value})  # type: ignore[arg-type]


# --- the runtime never needs TensorFlow (nor the onnx package) ---

def test_classify_never_imports_tensorflow(tmp_path: Path, model: Path) -> None:
    good_folder(tmp_path / "imgs")
    code = f"""
import sys
import edge_ssl.runtime, edge_ssl.runtime.latency, edge_ssl.runtime.classify
import edge_ssl.commands.render_runtime
from edge_ssl.cli import main
sys.argv = ["edge-ssl", "classify", {str(tmp_path / "imgs")!r}, "--model", {str(model)!r}]
try:
    main()
except SystemExit as exc:
    assert exc.code in (0, None), f"exit code {{exc.code}}"
loaded = {{m.split(".")[0] for m in sys.modules}}
heavy = sorted(loaded & {{"tensorflow", "keras", "tf2onnx", "onnx"}})
assert not heavy, f"imported {{heavy}}"
print("clean")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert "clean" in done.stdout and "c_blue.bmp" in done.stdout
