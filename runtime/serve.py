"""`edge-ssl serve`: an exported model behind HTTP, concurrent requests batched together.

`POST /classify` takes one image as the body (`Content-Type: image/*`) or several as
`multipart/form-data` files and answers each with its label and probabilities; `GET /model` gives
the model's metadata, `GET /health` says the service is up and what it has done. Images are
decoded by the same rule as `classify` (edge_ssl.images) on worker threads. The first image of a
batch waits at most `--max-wait-ms` for others, up to `--batch-size` images, and the batch runs on
the runtime's sessions (edge_ssl.runtime.parallel) in a worker thread, so the event loop keeps
accepting requests. Every bad request gets a 4xx JSON `{"error": ...}` naming the problem and the
service keeps serving. Starlette and uvicorn come with the `[serve]` extra and are imported
inside `app` and `serve`, so that the CLI starts without them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_ssl.errors import ConfigError, ImageDecodeError
from edge_ssl.options import INPUT, OUTPUT, RUNTIME, option
from edge_ssl.runtime.batching import Batcher
from edge_ssl.runtime.model import SessionOptions, require_positive
from edge_ssl.runtime.output import top_labels

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from edge_ssl.runtime.parallel import Runner

MB = 1024 * 1024


@dataclass(frozen=True)
class ServeConfig(SessionOptions):
    """What to serve, where, and how requests are batched and bounded."""

    model: Path | None = option(
        None, "ONNX model written by `edge-ssl export` (default: the classifier of "
        "runs/latest).", "MODEL", argument=True, show_default=False)
    host: str = option("127.0.0.1", "Address to listen on; 0.0.0.0 opens the service to the "
                       "network.", "HOST", INPUT)
    port: int = option(8000, "TCP port to listen on.", "PORT", INPUT, minimum=1)
    batch_size: int = option(32, "Most images per inference call, from however many requests.",
                             "N", RUNTIME, minimum=1)
    max_wait_ms: float = option(
        5.0, "How long the first image of a batch waits for others to join it; 0 runs what has "
        "arrived at once.", "MS", RUNTIME)
    max_body_mb: float = option(20.0, "Largest request body accepted, in MiB.", "MB", INPUT)
    max_files: int = option(64, "Most images in one multipart request.", "N", INPUT, minimum=1)
    top_k: int = option(1, "Also give the next best labels, up to this many in all.", "K",
                        OUTPUT, minimum=1)
    decode_threads: int = option(4, "Threads that decode uploaded images.", "N", RUNTIME,
                                 minimum=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self, "port", "batch_size", "max_files", "top_k", "decode_threads")
        if not 0 <= self.max_wait_ms <= 1000:
            raise ConfigError(f"max_wait_ms is {self.max_wait_ms}; give 0 to 1000 ms")
        if not self.max_body_mb > 0:
            raise ConfigError(f"max_body_mb is {self.max_body_mb}; give a positive size")
        if self.port > 65535:
            raise ConfigError(f"port is {self.port}; give 1 to 65535")


class BadRequest(Exception):
    """A request the service refuses: `status` (4xx) and one sentence naming the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def app(config: ServeConfig, runner: Runner) -> Starlette:
    """The ASGI application serving `runner`'s model (opened and closed by the caller)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    decoder = ThreadPoolExecutor(config.decode_threads, thread_name_prefix="edge-ssl-decode")
    batcher = Batcher(runner, config.batch_size, config.max_wait_ms / 1000.0)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(batcher.run())
        try:
            yield
        finally:
            task.cancel()
            batcher.close()
            decoder.shutdown()

    async def classify(request: Request) -> JSONResponse:
        batcher.counts.requests += 1
        batcher.arriving += 1
        try:
            try:
                named = await _uploads(request, config)
                decoded, failures = await _decode(named, runner.info.image_size, decoder)
                if not decoded:
                    raise BadRequest(400, "; ".join(failures.values()))
            finally:
                batcher.arriving -= 1  # and, with no await in between, queued below
            probabilities = await batcher.classify(np.stack([p for _, p in decoded]))
        except BadRequest as refused:
            batcher.counts.refused += 1
            return _error(refused.status, str(refused))
        rows = _rows([name for name, _ in named], decoded, probabilities, failures,
                     runner.info.labels, config.top_k)
        return _json({"model": runner.info.path.name, "results": rows})

    async def model(_: Request) -> JSONResponse:
        info = runner.info
        return _json({"file": info.path.name, "task": info.task, "labels": list(info.labels),
                      "image_size": info.image_size, "input": info.input,
                      "precision": info.precision,
                      "version": info.version, "run": info.run,
                      "exported_at": info.exported_at, "provider": runner.provider,
                      "layout": runner.layout.to_json(), "batch_size": config.batch_size,
                      "max_wait_ms": config.max_wait_ms})

    async def health(_: Request) -> JSONResponse:
        counts = batcher.counts
        return _json({"status": "ok", "requests": counts.requests, "refused": counts.refused,
                      "images": counts.images, "batches": counts.batches})

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, f"{exc.detail}; the service answers POST /classify, "
                      "GET /model and GET /health.")

    return Starlette(routes=[Route("/classify", classify, methods=["POST"]),
                             Route("/model", model, methods=["GET"]),
                             Route("/health", health, methods=["GET"])],
                     exception_handlers={HTTPException: http_error}, lifespan=lifespan)


async def _uploads(request: Request, config: ServeConfig) -> list[tuple[str, bytes]]:
    """(name, bytes) of each uploaded image: the body, or each file of a multipart form.

    Raises:
        BadRequest: a wrong content type, a body over the limit, an empty body or form.
    """
    limit = int(config.max_body_mb * MB)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"the body is {int(declared):,} bytes, over the "
                              f"{config.max_body_mb:g} MiB limit (--max-body-mb); send "
                              "smaller images or fewer at a time.")
    if kind == "multipart/form-data":
        from starlette.datastructures import UploadFile

        try:
            form = await request.form(max_files=config.max_files, max_part_size=limit)
        except Exception as exc:  # noqa: BLE001  (python-multipart's and Starlette's errors)
            raise BadRequest(400, f"unreadable multipart form ({exc}); send each image as a "
                                  "file field.") from None
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not files:
            raise BadRequest(400, "the form has no files; send each image as a file field, "
                                  "e.g. curl -F image=@photo.jpg.")
        return [(file.filename or f"file {i + 1}", await file.read())
                for i, file in enumerate(files)]
    if kind.startswith("image/") or kind == "application/octet-stream":
        body = await _read_body(request, limit, config.max_body_mb)
        if not body:
            raise BadRequest(400, "the body is empty; send the image's bytes.")
        return [("body", body)]
    raise BadRequest(415, f"Content-Type {kind or '(none)'} is not an image; send the image's "
                          "bytes with Content-Type image/jpeg (any image/* type), or "
                          "multipart/form-data files.")


async def _read_body(request: Request, limit: int, limit_mb: float) -> bytes:
    """The body, read as it streams in and refused as soon as it passes `limit` bytes (a
    chunked upload declares no length)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"the body is over the {limit_mb:g} MiB limit "
                                  "(--max-body-mb); send smaller images or fewer at a time.")
        chunks.append(chunk)
    return b"".join(chunks)


async def _decode(named: Sequence[tuple[str, bytes]], size: int, decoder: ThreadPoolExecutor
                  ) -> tuple[list[tuple[int, np.ndarray]], dict[int, str]]:
    """(position, pixels) of each image that decodes, and the reason for each that does not."""
    from edge_ssl.images import decode_rgb

    loop = asyncio.get_running_loop()

    async def one(name: str, data: bytes) -> np.ndarray | str:
        try:
            return await loop.run_in_executor(decoder, decode_rgb, data, size, name)
        except ImageDecodeError as exc:
            return str(exc)

    outcomes = await asyncio.gather(*(one(name, data) for name, data in named))
    decoded = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, np.ndarray)]
    failures = {i: o for i, o in enumerate(outcomes) if isinstance(o, str)}
    return decoded, failures


def _rows(names: list[str], decoded: list[tuple[int, np.ndarray]], probabilities: np.ndarray,
          failures: dict[int, str], labels: Sequence[str], top_k: int) -> list[dict[str, Any]]:
    """One JSON row per upload, in order: its label, confidence, top-k and probabilities, or
    the reason it could not be read."""
    rows: list[dict[str, Any]] = [{"file": name} for name in names]
    for (position, _), row, top in zip(decoded, probabilities.tolist(),
                                       top_labels(probabilities, labels, top_k), strict=True):
        rows[position].update(
            label=top[0][0], confidence=top[0][1],
            top_k=[{"label": label, "confidence": p} for label, p in top],
            probabilities=dict(zip(labels, row, strict=True)))
    for position, message in failures.items():
        rows[position]["error"] = message
    return rows


def _json(content: dict[str, Any]) -> JSONResponse:
    from starlette.responses import JSONResponse

    return JSONResponse(content)


def _error(status: int, message: str) -> JSONResponse:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


def serve(config: ServeConfig, on_ready: Any = None) -> None:
    """Open the model, then serve until interrupted (Ctrl-C or SIGTERM stop it cleanly).

    Raises:
        ConfigError: Starlette or uvicorn is missing.
        ModelError, DeviceError: the model cannot be used (see `open_session`).
    """
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("edge-ssl serve needs Starlette and uvicorn: pip install "
                          "'edge-ssl[serve]'.") from None
    from edge_ssl.runtime.model import resolve_model
    from edge_ssl.runtime.parallel import open_runner

    _check_port(config.host, config.port)
    with open_runner(resolve_model(config.model), config.device, config.sessions,
                     config.threads, config.batch_size, spin=False) as runner:
        if on_ready is not None:
            on_ready(runner)
        uvicorn.run(app(config, runner), host=config.host, port=config.port,
                    log_level="warning", server_header=False)



def _check_port(host: str, port: int) -> None:
    """Refuse a host and port nothing can listen on now, in one sentence (uvicorn would log a
    traceback-like error); the socket is closed again for uvicorn to take."""
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick "
                          "another --port, or stop what uses it.") from None
