"""`edge-ssl serve`: a real service on 127.0.0.1 answering as `classify` does, batching, and
every kind of bad request answered with a 4xx JSON error while it keeps serving."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnx_models
import pytest
from PIL import Image
from typer.testing import CliRunner

from edge_ssl.cli import app as cli
from edge_ssl.runtime.classify import ClassifyConfig, classify
from edge_ssl.runtime.model import Device

pytest.importorskip("starlette", reason="pip install 'edge-ssl[serve]'")
uvicorn = pytest.importorskip("uvicorn", reason="pip install 'edge-ssl[serve]'")

from edge_ssl.runtime.batching import Batcher  # noqa: E402
from edge_ssl.runtime.parallel import Layout, open_layout  # noqa: E402
from edge_ssl.runtime.serve import ServeConfig, app  # noqa: E402

COLOURS = {"red": (200, 40, 30), "green": (30, 190, 60), "blue": (20, 50, 210)}


def png(colour: tuple[int, int, int], size: tuple[int, int] = (24, 20)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return onnx_models.build_model(tmp_path_factory.mktemp("model") / "classifier.onnx")


@pytest.fixture(scope="module")
def service(model: Path) -> Iterator[str]:
    """The service on a free port of 127.0.0.1, in a thread of this process."""
    port = free_port()
    config = ServeConfig(model=model, port=port, device=Device.CPU, batch_size=8,
                         max_wait_ms=20, max_body_mb=0.25, max_files=4, top_k=2)
    runner = open_layout(model, Device.CPU, Layout(2, 1))
    server = uvicorn.Server(uvicorn.Config(app(config, runner), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the service did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    runner.close()


def request(url: str, body: bytes | None = None, content_type: str | None = None,
            method: str | None = None) -> tuple[int, dict[str, Any]]:
    """(status, JSON) of one request; error statuses are answers too."""
    headers = {"Content-Type": content_type} if content_type else {}
    call = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(call, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body with one `image` file field per file, and its content type."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
                     f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                     .encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


def test_health_and_model(service: str, model: Path) -> None:
    status, health = request(f"{service}/health")
    assert status == 200 and health["status"] == "ok"
    status, meta = request(f"{service}/model")
    assert status == 200
    assert meta["file"] == model.name and meta["labels"] == list(onnx_models.COLOURS)
    assert meta["image_size"] == onnx_models.SIZE and meta["layout"] == {"sessions": 2,
                                                                         "threads": 1}


def test_an_image_body_gets_its_label_and_probabilities(service: str) -> None:
    status, answer = request(f"{service}/classify", png(COLOURS["green"]), "image/png")
    assert status == 200
    (row,) = answer["results"]
    assert row["label"] == "green" and row["file"] == "body"
    assert row["top_k"][0]["label"] == "green" and len(row["top_k"]) == 2
    assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_multipart_files_answer_in_order_and_a_bad_one_is_reported(service: str) -> None:
    body, kind = multipart([("r.png", png(COLOURS["red"])), ("junk.png", b"not an image"),
                            ("b.png", png(COLOURS["blue"]))])
    status, answer = request(f"{service}/classify", body, kind)
    assert status == 200
    rows = answer["results"]
    assert [r["file"] for r in rows] == ["r.png", "junk.png", "b.png"]
    assert rows[0]["label"] == "red" and rows[2]["label"] == "blue"
    assert "junk.png: not an image" in rows[1]["error"] and "label" not in rows[1]


def truncated_png() -> bytes:
    data = png(COLOURS["red"], (64, 64))
    return data[:len(data) // 2]


@pytest.mark.parametrize(("body", "content_type", "status", "message"), [
    (b"hello", "text/plain", 415, "Content-Type text/plain is not an image"),
    (png(COLOURS["red"]), None, 415, "is not an image"),
    (b"", "image/png", 400, "the body is empty"),
    (b"\x89PNG but not really", "image/png", 400, "body: not an image Pillow can read"),
    (truncated_png(), "image/png", 400, "body: corrupt or truncated image"),
    (b"\0" * (300 * 1024), "image/jpeg", 413, "over the 0.25 MiB limit"),
])
def test_bad_requests_get_a_4xx_naming_the_problem(service: str, body: bytes,
                                                    content_type: str | None, status: int,
                                                    message: str) -> None:
    got, answer = request(f"{service}/classify", body, content_type, method="POST")
    assert got == status and message in answer["error"]
    assert request(f"{service}/health")[0] == 200  # and it keeps serving


def test_a_decompression_bomb_is_refused(service: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    status, answer = request(f"{service}/classify", png(COLOURS["red"], (100, 100)),
                             "image/png")
    assert status == 400 and "decompression-bomb limit" in answer["error"]


def test_a_form_without_files_or_with_too_many(service: str) -> None:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n'
            f"--{boundary}--\r\n").encode()
    status, answer = request(f"{service}/classify", body,
                             f"multipart/form-data; boundary={boundary}")
    assert status == 400 and "the form has no files" in answer["error"]
    body, kind = multipart([(f"{i}.png", png(COLOURS["red"])) for i in range(5)])
    status, answer = request(f"{service}/classify", body, kind)
    assert status == 400 and "unreadable multipart form" in answer["error"]


def test_unknown_routes_and_methods_get_json_errors(service: str) -> None:
    status, answer = request(f"{service}/nothing")
    assert status == 404 and "POST /classify" in answer["error"]
    status, answer = request(f"{service}/classify")
    assert status == 405 and "POST /classify" in answer["error"]


def test_concurrent_clients_get_what_classify_answers(service: str, model: Path,
                                                      tmp_path: Path) -> None:
    """A bounded load: 6 clients × 8 requests, each answer checked against `classify`."""
    rng = np.random.default_rng(0)
    files = []
    for i in range(12):
        pixels = rng.integers(0, 256, (18 + i, 22, 3), dtype=np.uint8)
        path = tmp_path / f"{i:02d}.png"
        Image.fromarray(pixels).save(path)
        files.append(path)
    expected = {}
    classify(ClassifyConfig((tmp_path,), model=model, device=Device.CPU, top_k=2),
             on_rows=lambda rows: expected.update((r.path.name, r) for r in rows))

    def client(number: int) -> list[tuple[str, dict[str, Any]]]:
        answers = []
        for k in range(8):
            path = files[(number * 8 + k) % len(files)]
            status, answer = request(f"{service}/classify", path.read_bytes(), "image/png")
            assert status == 200, answer
            answers.append((path.name, answer["results"][0]))
        return answers

    with ThreadPoolExecutor(6) as pool:
        answered = [a for answers in pool.map(client, range(6)) for a in answers]
    assert len(answered) == 48
    for name, row in answered:
        want = expected[name]
        assert row["label"] == want.label
        assert row["confidence"] == pytest.approx(want.confidence, abs=1e-6)
        assert [t["label"] for t in row["top_k"]] == [label for label, _ in want.top_k]


class RecordingRunner:
    """Stands in for a Runner: records each batch's size, answers one row per image."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def run(self, pixels: np.ndarray) -> np.ndarray:
        self.sizes.append(len(pixels))
        return np.arange(len(pixels), dtype=np.float32)[:, None]


@pytest.mark.parametrize(("batch_size", "max_wait", "sizes"), [
    (32, 0.5, [5]),  # everyone within the wait joins one batch
    (2, 0.5, [2, 2, 1]),  # up to the batch size
])
def test_concurrent_requests_are_batched(batch_size: int, max_wait: float,
                                         sizes: list[int]) -> None:
    async def scenario() -> tuple[list[int], list[float]]:
        runner = RecordingRunner()
        batcher = Batcher(runner, batch_size, max_wait)  # type: ignore[arg-type]
        task = asyncio.create_task(batcher.run())
        answers = await asyncio.gather(*(batcher.classify(np.zeros((1, 2, 2, 3), np.uint8))
                                         for _ in range(5)))
        task.cancel()
        batcher.close()
        return runner.sizes, [float(a[0, 0]) for a in answers]

    recorded, answers = asyncio.run(scenario())
    assert recorded == sizes
    # Each request gets its own row of the batch back.
    starts = [i for size in sizes for i in range(size)]
    assert answers == starts


def test_a_lone_request_does_not_wait_and_an_arriving_one_is_waited_for() -> None:
    async def scenario() -> tuple[float, list[int]]:
        runner = RecordingRunner()
        batcher = Batcher(runner, 32, max_wait=2.0)  # type: ignore[arg-type]
        task = asyncio.create_task(batcher.run())
        start = time.perf_counter()
        await batcher.classify(np.zeros((1, 2, 2, 3), np.uint8))
        alone = time.perf_counter() - start
        batcher.arriving += 1  # a request still being decoded ...

        async def late() -> np.ndarray:
            await asyncio.sleep(0.1)
            batcher.arriving -= 1
            return await batcher.classify(np.zeros((1, 2, 2, 3), np.uint8))

        await asyncio.gather(batcher.classify(np.zeros((1, 2, 2, 3), np.uint8)), late())
        task.cancel()
        batcher.close()
        return alone, runner.sizes

    alone, sizes = asyncio.run(scenario())
    assert alone < 1.0  # not the 2 s max wait
    assert sizes == [1, 2]  # ... joins the batch of the request that came first


def test_cli_refuses_a_port_in_use_in_one_sentence(model: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", str(model), "--port", str(port)])
    assert result.exit_code != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
