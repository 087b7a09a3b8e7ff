"""Requests' images gathered into batches for one Runner: what `edge-ssl serve` runs on.

A batch is what is queued, plus what arrives within `max_wait` of its first image while other
requests are still being read or decoded (`arriving`), up to `batch_size` images; a request is
never split, and each gets its own rows back. The batch runs in a worker thread so that the
event loop keeps accepting requests.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edge_ssl.runtime.parallel import Runner


@dataclass
class Counts:
    """What the service has done since it started, for /health."""

    requests: int = 0
    images: int = 0
    batches: int = 0
    refused: int = 0


@dataclass
class Batcher:
    """Gathers the images of concurrent requests into batches for one Runner.

    A batch waits for more images only while other requests are on their way (`arriving`:
    accepted, still being read or decoded), so a lone client is never kept waiting.
    """

    runner: Runner
    batch_size: int
    max_wait: float  # seconds
    counts: Counts = field(default_factory=Counts)
    arriving: int = 0
    _queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = field(
        default_factory=asyncio.Queue)
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="edge-ssl-infer"))

    async def classify(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities `[n, C]` of one request's decoded images `[n, S, S, 3]`."""
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put((pixels, future))
        return await future

    async def run(self) -> None:
        """Serve the queue forever: a batch is what is queued, and what arrives within
        `max_wait` of its first image while requests are arriving, up to `batch_size` images
        (a request is never split)."""
        loop = asyncio.get_running_loop()
        while True:
            items = [await self._queue.get()]
            count = len(items[0][0])
            deadline = loop.time() + self.max_wait
            while count < self.batch_size:
                if self._queue.empty() and self.arriving == 0:
                    break
                try:
                    item = (self._queue.get_nowait() if self.max_wait == 0 else
                            await asyncio.wait_for(self._queue.get(),
                                                   max(0.0, deadline - loop.time())))
                except (asyncio.QueueEmpty, TimeoutError):
                    break
                items.append(item)
                count += len(item[0])
            await self._run_batch(items)

    async def _run_batch(self, items: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]
                         ) -> None:
        batch = np.concatenate([pixels for pixels, _ in items])
        try:
            probabilities = await asyncio.get_running_loop().run_in_executor(
                self._executor, self.runner.run, batch)
        except Exception as exc:  # noqa: BLE001  (each waiting request gets the error)
            for _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        self.counts.batches += 1
        self.counts.images += len(batch)
        start = 0
        for pixels, future in items:
            if not future.done():  # a client that went away leaves a cancelled future
                future.set_result(probabilities[start:start + len(pixels)])
            start += len(pixels)

    def close(self) -> None:
        self._executor.shutdown()
