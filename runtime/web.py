"""`edge-ssl web`: a folder holding a browser page that classifies images with an exported file.

The page (web/index.html) and its ES module (web/edge-ssl.js) ship inside the package; the
module reads the file's `edge_ssl.*` metadata itself and runs it with onnxruntime-web. The
folder is written like every other artifact: staged beside its destination, then renamed.
onnxruntime-web's multi-threaded WASM needs a cross-origin-isolated page, so `--serve` serves
the folder with the COOP/COEP headers that grant it (Python's own http.server: a static folder
needs nothing more).
"""

from __future__ import annotations

import http.server
import shutil
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path

from edge_ssl.atomic import publish_folder, refuse_existing, sibling
from edge_ssl.errors import ConfigError, ModelError, RunDirError
from edge_ssl.options import INPUT, OUTPUT, option

ORT_WEB_VERSION = "1.31.1"  # the release the page and its browser test were checked with
ORT_WEB_CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_WEB_VERSION}/dist/ort.min.mjs"
# ort.min.mjs loads the WASM build with WebGPU and WebNN (JSEP) beside it.
ORT_WEB_FILES = ("ort.min.mjs", "ort-wasm-simd-threaded.jsep.mjs",
                 "ort-wasm-simd-threaded.jsep.wasm")
PAGE_FILES = ("index.html", "edge-ssl.js")
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin",
                     "Cross-Origin-Embedder-Policy": "require-corp"}


@dataclass(frozen=True)
class WebConfig:
    """The page to write, and whether to serve it."""

    model: Path = option(Path("runs/latest/exports/classifier.onnx"),
                         "ONNX file written by `edge-ssl export`.", "MODEL", argument=True)
    out: Path = option(Path("web"), "Folder to write the page, its module and the model into.",
                       "DIR", OUTPUT)
    onnxruntime_web: Path | None = option(
        None, "onnxruntime-web's dist folder (from `npm install onnxruntime-web`) to copy beside "
        "the page, for a page that works offline (default: load it from the jsDelivr CDN).",
        "DIR", INPUT, show_default=False)
    overwrite: bool = option(False, "Replace an existing DIR.", panel=OUTPUT)
    serve: bool = option(False, "Then serve DIR with the COOP/COEP headers multi-threaded WASM "
                         "needs.", panel=OUTPUT)
    host: str = option("127.0.0.1", "Address --serve listens on.", "HOST", OUTPUT)
    port: int = option(8080, "Port --serve listens on.", "PORT", OUTPUT, minimum=1)

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"port is {self.port}; give 1 to 65535")


def write_site(config: WebConfig) -> Path:
    """Write DIR: index.html, edge-ssl.js, the model and (optionally) onnxruntime-web.

    Raises:
        ModelError: the model is missing, not ONNX, not an edge-ssl file, or an .ort file.
        ConfigError: `onnxruntime_web` is not onnxruntime-web's dist folder.
        RunDirError: DIR exists and `overwrite` is off.
    """
    model = config.model
    _check_model(model)
    ort_url = ORT_WEB_CDN
    if config.onnxruntime_web is not None:
        missing = [n for n in ORT_WEB_FILES if not (config.onnxruntime_web / n).is_file()]
        if missing:
            raise ConfigError(f"{config.onnxruntime_web} lacks {', '.join(missing)}: give the "
                              "dist folder of `npm install onnxruntime-web@"
                              f"{ORT_WEB_VERSION}` (node_modules/onnxruntime-web/dist).")
        ort_url = "./ort/ort.min.mjs"
    out = config.out
    refuse_existing(out, config.overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = sibling(out, "new")
    staging.mkdir()
    try:
        page = resources.files("edge_ssl.runtime").joinpath("web")
        # {{name}} markers rather than string.Template: the page's JavaScript is full of ${}.
        html = page.joinpath("index.html").read_text(encoding="utf-8")
        for name, value in (("model_file", model.name), ("ort_url", ort_url)):
            html = html.replace("{{" + name + "}}", value)
        (staging / "index.html").write_text(html, encoding="utf-8")
        (staging / "edge-ssl.js").write_bytes(page.joinpath("edge-ssl.js").read_bytes())
        shutil.copyfile(model, staging / model.name)
        if config.onnxruntime_web is not None:
            (staging / "ort").mkdir()
            for name in ORT_WEB_FILES:
                shutil.copyfile(config.onnxruntime_web / name, staging / "ort" / name)
        publish_folder(staging, out, config.overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _check_model(model: Path) -> None:
    from edge_ssl.runtime.model import Device, open_session

    if model.suffix == ".ort":
        raise ModelError(f"{model}: the page reads ONNX files; give the .onnx file it came from.")
    open_session(model, Device.CPU, threads=1)  # raises ModelError naming what is wrong


def serve_site(folder: Path, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """A server for `folder` with the cross-origin isolation headers; call serve_forever()."""
    if not (folder / "index.html").is_file():
        raise RunDirError(f"{folder} has no index.html; write it with `edge-ssl web MODEL "
                          f"--out {folder}` first.")
    handler = partial(_IsolatedHandler, directory=str(folder))
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another "
                          "--port, or stop what is using it.") from None


class _IsolatedHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with COOP/COEP, and the MIME types browsers insist on for modules and
    WebAssembly."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".js": "text/javascript", ".mjs": "text/javascript",
                      ".wasm": "application/wasm", ".onnx": "application/octet-stream"}

    def end_headers(self) -> None:
        for name, value in ISOLATION_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base's name)
        pass  # a request log per file would bury the one line that matters
