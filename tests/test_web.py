"""`edge-ssl web`: the page and its module, run in a real headless Chromium with onnxruntime-web.

Needs node, Debian's chromium (or $CHROMIUM) and `npm ci --prefix tests/web`; without them the
browser test skips and says which is missing, unless EDGE_SSL_BROWSER_TEST=required (as .ci/run
sets), where it fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import export_fixtures
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edge_ssl.cli import app
from edge_ssl.runtime.web import ISOLATION_HEADERS, ORT_WEB_FILES, serve_site

TOOLS = Path(__file__).parent / "web"
ORT_WEB = TOOLS / "node_modules" / "onnxruntime-web" / "dist"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
TOLERANCE = 1e-4


def browser_or_skip() -> None:
    missing = [what for what, present in (
        ("node", shutil.which("node") is not None),
        (f"chromium at {CHROMIUM} (apt install chromium)", Path(CHROMIUM).is_file()),
        ("tests/web/node_modules (npm ci --prefix tests/web)",
         (TOOLS / "node_modules" / "puppeteer-core").is_dir() and ORT_WEB.is_dir()),
    ) if not present]
    if not missing:
        return
    reason = "the browser test needs " + ", ".join(missing)
    if os.environ.get("EDGE_SSL_BROWSER_TEST") == "required":
        pytest.fail(reason)
    pytest.skip(reason)


def web(*args: str | Path) -> Any:
    return CliRunner().invoke(app, ["web", *map(str, args)])


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder, and the URL where it is served with the isolation headers."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("placeholder")
    server = serve_site(site, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def png_images(folder: Path, n: int = 6) -> list[Path]:
    """PNG (lossless, so the browser decodes the pixels Pillow wrote) at the model's size."""
    folder.mkdir()
    pixels, _ = export_fixtures.images(np.random.default_rng(5), n)
    paths = [folder / f"image-{i}.png" for i in range(n)]
    for path, image in zip(paths, pixels, strict=True):
        Image.fromarray(image).save(path)
    return paths


def classify_rows(images: Path, model: Path, out: Path) -> dict[str, dict[str, float]]:
    result = CliRunner().invoke(app, ["classify", str(images), "--model", str(model), "-o",
                                      str(out), "--top-k", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return {Path(row["path"]).name: {t["label"]: t["confidence"] for t in row["top_k"]}
            for row in rows}


@pytest.mark.parametrize("file", ["classifier.onnx", "classifier.int8.onnx"])
def test_page_in_headless_chromium_answers_like_classify(
        exported: tuple[Path, Any], served: tuple[Path, str], tmp_path: Path, file: str) -> None:
    browser_or_skip()
    exports, _ = exported
    site, url = served
    assert web(exports / file, "--out", site, "--onnxruntime-web", ORT_WEB,
               "--overwrite").exit_code == 0
    shutil.copy(exports / "classifier.fixed.onnx", site)  # for the WebGPU probe
    images = png_images(tmp_path / "images")
    expected = classify_rows(tmp_path / "images", exports / file, tmp_path / "p.jsonl")

    done = subprocess.run(["node", str(TOOLS / "check_page.mjs"), f"{url}/index.html",
                           f"{url}/{file}", f"{url}/classifier.fixed.onnx", *map(str, images)],
                          capture_output=True, text=True, timeout=240, cwd=TOOLS)
    assert done.returncode == 0, done.stderr[-3000:]
    page = json.loads(done.stdout.strip().splitlines()[-1])

    assert page["loaded"]["error"] is None, page["log"]
    assert page["loaded"]["providers"] == ["wasm"]  # any-size files: WASM
    assert page["loaded"]["isolated"] is True  # the COOP/COEP headers took effect
    assert [row["file"] for row in page["results"]] == [p.name for p in images]
    for row in page["results"]:
        reference = expected[row["file"]]
        assert row["label"] == max(reference, key=reference.__getitem__)
        browser = {t["label"]: t["probability"] for t in row["topK"]}
        assert max(abs(browser[label] - p) for label, p in reference.items()) <= TOLERANCE
        assert len(row["probabilities"]) == len(export_fixtures.LABELS)
    webgpu = page["webgpu"]
    if webgpu["available"]:
        # The any-size file's antialiased Resize is refused on WebGPU; the fixed one loads.
        assert webgpu[f"{url}/classifier.fixed.onnx"] == "ran", webgpu
        assert "Antialias" in webgpu[f"{url}/{file}"], webgpu
    else:
        print(f"this Chromium has no WebGPU ({webgpu['reason']}): checked the graphs instead")
        import onnx

        ops = {n.op_type for n in onnx.load(exports / "classifier.fixed.onnx").graph.node}
        assert "Resize" not in ops


def test_page_says_what_is_wrong_with_a_model_it_cannot_use(
        exported: tuple[Path, Any], served: tuple[Path, str], tmp_path: Path) -> None:
    browser_or_skip()
    site, url = served
    assert web(exported[0] / "classifier.onnx", "--out", site, "--onnxruntime-web", ORT_WEB,
               "--overwrite").exit_code == 0
    (site / "notes.onnx").write_bytes(b"\x08\x07 not an onnx file at all")
    images = png_images(tmp_path / "images", 1)

    done = subprocess.run(["node", str(TOOLS / "check_page.mjs"),
                           f"{url}/index.html?model=notes.onnx", f"{url}/classifier.onnx",
                           f"{url}/classifier.onnx", *map(str, images)],
                          capture_output=True, text=True, timeout=240, cwd=TOOLS)
    assert done.returncode == 0, done.stderr[-3000:]
    page = json.loads(done.stdout.strip().splitlines()[-1])
    assert "notes.onnx" in page["loaded"]["error"] and "edge-ssl export" in page["loaded"]["error"]
    assert "Could not load notes.onnx" in page["loaded"]["status"]


# `edge-ssl web` without a browser --------------------------------------------------------------


def test_web_writes_the_page_with_the_model(exported: tuple[Path, Any], tmp_path: Path) -> None:
    ort_web = tmp_path / "dist"
    ort_web.mkdir()
    for name in ORT_WEB_FILES:
        (ort_web / name).write_text(name)
    out = tmp_path / "page"

    result = web(exported[0] / "classifier.int8.onnx", "--out", out, "--onnxruntime-web",
                 ort_web)

    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "classifier.int8.onnx", "edge-ssl.js", "index.html", "ort"]
    html = (out / "index.html").read_text()
    assert '"onnxruntime-web": "./ort/ort.min.mjs"' in html and '"classifier.int8.onnx"' in html
    assert sorted(p.name for p in (out / "ort").iterdir()) == sorted(ORT_WEB_FILES)
    # Without a local copy, the page loads the release it was tested with from the CDN.
    assert web(exported[0] / "classifier.onnx", "--out", out, "--overwrite").exit_code == 0
    assert "cdn.jsdelivr.net/npm/onnxruntime-web@1.31.1/dist/ort.min.mjs" in (
        out / "index.html").read_text()
    assert not (out / "ort").exists() and not list(tmp_path.glob(".page-*"))


def test_web_refuses_what_it_cannot_write(exported: tuple[Path, Any], tmp_path: Path) -> None:
    model = exported[0] / "classifier.onnx"
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep me")
    cases = [
        (web(model, "--out", tmp_path / "taken"), "already exists; pass --overwrite"),
        (web(exported[0] / "classifier.ort", "--out", tmp_path / "a"), "give the .onnx file"),
        (web(tmp_path / "nope.onnx", "--out", tmp_path / "b"), "nope.onnx"),
        (web(model, "--out", tmp_path / "c", "--onnxruntime-web", tmp_path),
         "lacks ort.min.mjs"),
    ]
    for result, message in cases:
        assert result.exit_code == 1, result.output
        assert message in " ".join(result.stderr.split())
    assert (tmp_path / "taken" / "mine.txt").read_text() == "keep me"
    assert not any((tmp_path / name).exists() for name in "abc")


def test_served_folder_is_cross_origin_isolated(served: tuple[Path, str]) -> None:
    site, url = served
    (site / "m.wasm").write_bytes(b"\0asm")
    with urllib.request.urlopen(f"{url}/m.wasm") as response:
        assert response.headers["Content-Type"] == "application/wasm"
        for name, value in ISOLATION_HEADERS.items():
            assert response.headers[name] == value
