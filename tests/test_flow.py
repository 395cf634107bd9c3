"""flow.two_stage: bounded, overlapping fetch -> decode stages."""

from __future__ import annotations

import threading
import time

import pytest

from imgidx.indexer.flow import two_stage


def test_every_item_comes_out_once_through_both_stages():
    out = list(two_stage(range(100), lambda i: i * 10, lambda x: x + 1, fetch_workers=8, decode_workers=2, window=7))
    assert sorted(out) == [i * 10 + 1 for i in range(100)]


def test_items_the_fetch_stage_rejects_skip_the_decoder():
    decoded = []

    def decode(x):
        decoded.append(x)
        return ("ok", x)

    out = list(
        two_stage(
            range(10),
            lambda i: ("err", i) if i % 3 == 0 else i,
            decode,
            fetch_workers=3,
            decode_workers=1,
            window=4,
            needs_decode=lambda r: not isinstance(r, tuple),
        )
    )
    assert sorted(decoded) == [1, 2, 4, 5, 7, 8]
    assert sorted(o[1] for o in out) == list(range(10))


def test_at_most_window_items_are_in_flight_while_the_consumer_is_slow():
    lock = threading.Lock()
    live = {"now": 0, "max": 0}

    def fetch(i):
        with lock:
            live["now"] += 1
            live["max"] = max(live["max"], live["now"])
        return i

    for _ in two_stage(range(60), fetch, lambda x: x, fetch_workers=16, decode_workers=2, window=5):
        time.sleep(0.002)  # the model is slower than the loaders
        with lock:
            live["now"] -= 1
    assert live["max"] <= 5


def test_stage_work_overlaps_the_consumer():
    """Fetches run in parallel and ahead of the consumer. Asserted on what overlapped, not on wall time alone: the
    only timing bound is half the serial time (a loaded 2-core machine keeps it; the overlapped floor is ~0.45 s)."""
    lock = threading.Lock()
    state = {"live": 0, "max_live": 0, "started": 0}

    def slow_fetch(i):
        with lock:
            state["live"] += 1
            state["started"] += 1
            state["max_live"] = max(state["max_live"], state["live"])
        time.sleep(0.05)  # network latency
        with lock:
            state["live"] -= 1
        return i

    started_when_consumed: list[int] = []
    start = time.monotonic()
    for _ in two_stage(range(40), slow_fetch, lambda x: x, fetch_workers=20, decode_workers=2, window=40):
        with lock:
            started_when_consumed.append(state["started"])
        time.sleep(0.01)
    serial = 40 * 0.05 + 40 * 0.01
    assert state["max_live"] > 1  # the fetches overlapped each other
    assert started_when_consumed[0] > 1  # and ran ahead of the consumer
    assert time.monotonic() - start < serial / 2


def test_an_unexpected_stage_error_reaches_the_caller():
    def decode(x):
        if x == 3:
            raise RuntimeError("boom")
        return x

    with pytest.raises(RuntimeError, match="boom"):
        list(two_stage(range(10), lambda i: i, decode, fetch_workers=2, decode_workers=2, window=3))


def test_leaving_early_does_not_hang_or_leave_threads():
    before = threading.active_count()
    gen = two_stage(range(10_000), lambda i: i, lambda x: x, fetch_workers=4, decode_workers=2, window=8)
    assert next(gen) is not None
    gen.close()
    time.sleep(0.1)
    assert threading.active_count() <= before


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="window must be > 0; received 0"):
        list(two_stage([1], lambda i: i, lambda x: x, fetch_workers=1, decode_workers=1, window=0))


def test_decode_threads_can_run_at_a_lower_priority():
    import os

    def nice_of_this_thread(x):
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    base = os.getpriority(os.PRIO_PROCESS, 0)
    got = set(
        two_stage(
            range(8), lambda i: i, nice_of_this_thread, fetch_workers=2, decode_workers=2, window=4, decode_nice=10
        )
    )
    assert got == {min(19, base + 10)}
