"""Two overlapping, bounded stages in front of the caller: fetch (I/O threads) -> decode (CPU threads) -> caller.

Downloads wait on the network, so there are many fetch threads; decoding needs a core, so there is about one
decode thread per core, and the caller (the model) gets the batches. The stages run concurrently with the
caller: while the model embeds one batch, the next ones are downloaded and decoded. At most `window` items are
between submission and the caller taking them, so memory stays bounded however many items there are. Results
come in completion order. A failure inside a stage function (they are meant never to raise) is re-raised on the
caller's thread; leaving the loop early cancels what has not started and waits for what has.

Decode threads may run at a lower CPU priority (`decode_nice`, Linux): on a CPU-bound model they then use the
model's idle moments instead of slowing its threads down (a model thread delayed by a decoder holds up the
whole layer). Measured on 2 cores, in-pipeline model speed / bare: ~0.93 at nice 0, ~0.95 at nice 10, while
the model stays busy 97% of the time (README "Performance").
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class _Fed:  # the feeder submitted `count` items and stopped
    count: int


@dataclass(frozen=True)
class _Raised:
    error: BaseException


def cores() -> int:
    """CPU cores this process may use (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def two_stage(
    items: Iterable[Any],
    fetch: Callable[[Any], Any],
    decode: Callable[[Any], Any],
    *,
    fetch_workers: int,
    decode_workers: int,
    window: int,
    needs_decode: Callable[[Any], bool] = lambda _: True,
    decode_nice: int = 0,
) -> Iterator[Any]:
    """Yield decode(fetch(item)) for every item (fetch(item) alone where needs_decode says no), as they finish."""
    for name, value in (("fetch_workers", fetch_workers), ("decode_workers", decode_workers), ("window", window)):
        if value <= 0:
            raise ValueError(f"{name} must be > 0; received {value}")
    out: queue.SimpleQueue = queue.SimpleQueue()
    slots = threading.Semaphore(window)
    stop = threading.Event()
    fetch_pool = ThreadPoolExecutor(fetch_workers, thread_name_prefix="imgidx-fetch")
    decode_pool = ThreadPoolExecutor(
        decode_workers, thread_name_prefix="imgidx-decode", initializer=_nicer, initargs=(decode_nice,)
    )

    def deliver(f: Future) -> None:
        if not f.cancelled():
            out.put(_Raised(f.exception()) if f.exception() else f.result())

    def after_fetch(f: Future) -> None:
        if f.cancelled():
            return
        if f.exception() is None and not stop.is_set() and needs_decode(f.result()):
            try:
                decode_pool.submit(decode, f.result()).add_done_callback(deliver)
                return
            except RuntimeError:  # the pool is shutting down: the caller has left
                return
        deliver(f)

    def feed() -> None:
        count = 0
        try:
            for item in items:
                while not slots.acquire(timeout=0.1):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                fetch_pool.submit(fetch, item).add_done_callback(after_fetch)
                count += 1
        except BaseException as e:  # noqa: BLE001 - re-raised on the caller's thread
            out.put(_Raised(e))
        finally:
            out.put(_Fed(count))

    feeder = threading.Thread(target=feed, name="imgidx-feed", daemon=True)
    feeder.start()
    received, total = 0, None
    try:
        while total is None or received < total:
            got = out.get()
            if isinstance(got, _Fed):
                total = got.count
                continue
            if isinstance(got, _Raised):
                raise got.error
            received += 1
            yield got
            slots.release()  # the caller is done with it (it asks for the next)
    finally:
        stop.set()
        feeder.join()
        fetch_pool.shutdown(wait=True, cancel_futures=True)
        decode_pool.shutdown(wait=True, cancel_futures=True)


def _nicer(increment: int) -> None:
    """Lower the calling thread's CPU priority by `increment` (Linux: each thread has its own nice value)."""
    if increment <= 0:
        return
    with contextlib.suppress(AttributeError, OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
