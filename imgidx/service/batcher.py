"""Micro-batching: requests that arrive together share one call of a batch function (one model call).

A single worker thread owns the batch function (and so the model): it takes the first waiting item, then every
item already queued, then waits at most ``max_wait_s`` for more, up to ``max_batch`` items, and calls the
function once. Under load the queue fills while the model runs, so batches grow by themselves; when idle a lone
request waits only ``max_wait_s``. Callers get a ``concurrent.futures.Future`` (``await batcher(item)`` in
asyncio). Pure threading: no model, no web framework.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
logger = logging.getLogger(__name__)
_STOP = object()


class Busy(Exception):
    """The queue is full: the caller should answer 503 and let the client retry."""


# items waiting before submit() refuses (the service answers 503 with Retry-After): below server.MAX_CONNECTIONS,
# or the queue could never fill and a flood would meet the connection limit's 503, without Retry-After
MAX_QUEUE = 512


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        max_queue: int = MAX_QUEUE,
        name: str = "batcher",
        on_batch: Callable[[int, float], None] | None = None,
    ):
        if max_batch <= 0:
            raise ValueError(f"max_batch must be > 0; received {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0; received {max_wait_s}")
        if max_queue <= 0:
            raise ValueError(f"max_queue must be > 0; received {max_queue}")
        self.fn, self.max_batch, self.max_wait_s = fn, max_batch, max_wait_s
        self.on_batch = on_batch  # called with (batch size, seconds the call took), for metrics
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        self._thread.start()

    def submit(self, item: T) -> Future[R]:
        if self._closed:
            raise RuntimeError("the batcher is closed")
        fut: Future[R] = Future()
        try:
            self._queue.put_nowait((item, fut))
        except queue.Full:
            raise Busy(f"{self._queue.maxsize} requests are already waiting for the model; retry shortly") from None
        return fut

    async def __call__(self, item: T) -> R:
        return await asyncio.wrap_future(self.submit(item))

    def close(self, timeout: float = 10.0) -> None:
        """Finish the queued items, then stop the worker."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join(timeout)

    # ---- worker ----------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = self._collect(first)
            self._call(batch)
            if stop:
                return

    def _collect(self, first: tuple) -> tuple[list[tuple], bool]:
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()  # everything already waiting joins at once
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _call(self, batch: list[tuple]) -> None:
        live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]  # skip cancelled callers
        if not live:
            return
        start = time.perf_counter()
        try:
            results = self.fn([item for item, _ in live])
            if len(results) != len(live):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(live)} items")
        except Exception as e:  # every caller of this batch gets the error; the worker keeps going
            logger.exception("batch of %d failed", len(live))
            for _, fut in live:
                fut.set_exception(e)
            return
        finally:
            if self.on_batch is not None:
                self.on_batch(len(live), time.perf_counter() - start)
        for (_, fut), result in zip(live, results, strict=True):
            fut.set_result(result)
