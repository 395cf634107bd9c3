"""MicroBatcher on a plain function (no model): grouping, errors, cancellation, back-pressure, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from imgidx.service.batcher import Busy, MicroBatcher


class Recorder:
    """A batch function that remembers each call; `gate` lets a test hold the worker inside a call."""

    def __init__(self, fail_on: object = None):
        self.calls: list[list] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: list) -> list:
        self.entered.set()
        self.gate.wait(5)
        self.calls.append(list(items))
        if self.fail_on in items:
            raise ValueError(f"cannot embed {self.fail_on}")
        return [x * 10 for x in items]


def test_items_that_arrive_together_share_one_call():
    fn = Recorder()
    fn.gate.clear()  # hold the worker in its first call while the others queue up
    b = MicroBatcher(fn, max_batch=8, max_wait_s=0.0)
    first = b.submit(0)
    assert fn.entered.wait(5)
    rest = [b.submit(i) for i in range(1, 6)]
    fn.gate.set()
    assert [f.result(5) for f in [first, *rest]] == [0, 10, 20, 30, 40, 50]
    assert fn.calls == [[0], [1, 2, 3, 4, 5]]
    b.close()


def test_a_batch_never_exceeds_max_batch_and_order_is_kept():
    fn = Recorder()
    fn.gate.clear()
    b = MicroBatcher(fn, max_batch=3, max_wait_s=0.0)
    futures = [b.submit(i) for i in range(8)]
    fn.gate.set()
    assert [f.result(5) for f in futures] == [i * 10 for i in range(8)]
    assert all(len(c) <= 3 for c in fn.calls) and sum(fn.calls, []) == list(range(8))
    b.close()


def test_a_lone_item_waits_at_most_max_wait():
    b = MicroBatcher(Recorder(), max_batch=32, max_wait_s=0.02)
    start = time.perf_counter()
    assert b.submit(4).result(5) == 40
    assert time.perf_counter() - start < 1.0
    b.close()


def test_a_failing_batch_fails_its_callers_and_the_worker_goes_on():
    fn = Recorder(fail_on=2)
    fn.gate.clear()
    b = MicroBatcher(fn, max_batch=4, max_wait_s=0.05)
    futures = [b.submit(i) for i in (1, 2, 3)]
    fn.gate.set()
    for f in futures:
        with pytest.raises(ValueError, match="cannot embed 2"):
            f.result(5)
    assert b.submit(5).result(5) == 50
    b.close()


def test_a_wrong_number_of_results_is_an_error_not_a_misalignment():
    b = MicroBatcher(lambda items: items[:-1], max_batch=4, max_wait_s=0.05)
    futures = [b.submit(i) for i in range(3)]
    for f in futures:
        with pytest.raises(RuntimeError, match="results for"):
            f.result(5)
    b.close()


def test_cancelled_callers_are_skipped():
    fn = Recorder()
    fn.gate.clear()
    b = MicroBatcher(fn, max_batch=8, max_wait_s=0.0)
    blocker = b.submit(0)
    assert fn.entered.wait(5)
    gone, kept = b.submit(1), b.submit(2)
    assert gone.cancel()
    fn.gate.set()
    assert kept.result(5) == 20 and blocker.result(5) == 0
    assert fn.calls == [[0], [2]]
    b.close()


def test_a_full_queue_says_busy():
    fn = Recorder()
    fn.gate.clear()
    b = MicroBatcher(fn, max_batch=1, max_wait_s=0.0, max_queue=2)
    b.submit(0)
    assert fn.entered.wait(5)  # the worker holds item 0
    b.submit(1)
    b.submit(2)
    with pytest.raises(Busy, match="already waiting"):
        b.submit(3)
    fn.gate.set()
    b.close()


def test_close_finishes_what_is_queued_then_refuses():
    b = MicroBatcher(Recorder(), max_batch=2, max_wait_s=0.0)
    futures = [b.submit(i) for i in range(5)]
    b.close()
    assert [f.result(0) for f in futures] == [0, 10, 20, 30, 40]
    with pytest.raises(RuntimeError, match="closed"):
        b.submit(9)


def test_awaiting_from_asyncio_batches_concurrent_coroutines():
    fn = Recorder()
    b = MicroBatcher(fn, max_batch=16, max_wait_s=0.05)

    async def main():
        return await asyncio.gather(*(b(i) for i in range(10)))

    assert asyncio.run(main()) == [i * 10 for i in range(10)]
    assert len(fn.calls) < 10
    b.close()


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"max_batch": 0}, "max_batch must be > 0; received 0"), ({"max_wait_s": -1}, "max_wait_s must be >= 0")],
)
def test_bad_settings_are_refused_at_construction(kwargs, words):
    with pytest.raises(ValueError, match=words):
        MicroBatcher(Recorder(), **kwargs)
