"""Fault injection and rate limiting for the fake Flickr.

A fault is queued for a target and consumed by the next matching request:

- REST targets: an API method name (``"flickr.photos.search"``) or ``"rest"`` (any method).
- Static targets: ``"static"`` (any photo URL) or ``"static:<photo_id>"``.

Faults can be given as ``Fault`` objects, as ints (``105`` → stat=fail 105, ``503`` → HTTP 503) or as
strings:

=====================  =====================================================================
``"stat:105"``         stat=fail with Flickr's message for that code (REST only)
``"http:429"``         that HTTP status with an HTML body; ``"http:429:retry_after=30"`` adds Retry-After
``"delay:2.5"``        sleep, then answer normally (a client timeout fires first)
``"close"``            close the connection without any response
``"short_body"``       Content-Length larger than the body, then close (alias ``"length_mismatch"``)
``"truncated_json"``   200 with the first half of the real JSON body (REST)
``"html_200"``         200 with an HTML page (REST)
``"slow_drip:0.05"``   send the body in 256-byte chunks, waiting that many seconds between chunks
``"stall:30"``         send the headers, then nothing for that many seconds, then close
``"reset"``            send half of the body, then a TCP reset
``"truncated_body"``   a consistent Content-Length, but only the first half of the image
``"redirect_chain:3"`` that many 302 hops via the second host, then the real URL (static)
``"redirect_loop"``    302s that never end (static)
=====================  =====================================================================
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

REST_KINDS = {"stat", "http", "delay", "close", "short_body", "truncated_json", "html_200"}
STATIC_KINDS = {
    "http", "delay", "close", "short_body", "slow_drip", "stall", "reset", "truncated_body",
    "redirect_chain", "redirect_loop",
}  # fmt: skip
REASONS = {
    403: "Forbidden", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}  # fmt: skip


@dataclass(frozen=True)
class Fault:
    kind: str
    code: int = 0  # stat code or HTTP status
    seconds: float = 0.0  # delay, stall, or drip interval
    retry_after: str | None = None
    hops: int = 0
    message: str | None = None  # stat=fail message override

    def __str__(self) -> str:
        """The canonical string form, e.g. "stat:105", "http:429:retry_after=7", "delay:3", "reset"."""
        if self.kind in ("stat", "http"):
            retry = f":retry_after={self.retry_after}" if self.retry_after is not None else ""
            return f"{self.kind}:{self.code}{retry}"
        if self.kind in ("delay", "stall", "slow_drip"):
            return f"{self.kind}:{self.seconds:g}"
        return f"{self.kind}:{self.hops}" if self.kind == "redirect_chain" else self.kind


def parse_fault(spec: Fault | int | str) -> Fault:
    if isinstance(spec, Fault):
        return spec
    if isinstance(spec, int):
        return Fault("http", code=spec) if spec >= 400 else Fault("stat", code=spec)
    kind, _, rest = str(spec).partition(":")
    kind = {"length_mismatch": "short_body"}.get(kind, kind)
    if kind == "stat":
        return Fault("stat", code=int(rest))
    if kind == "http":
        status, _, opt = rest.partition(":")
        retry = opt.split("=", 1)[1] if opt.startswith(("retry_after=", "retry-after=")) else None
        return Fault("http", code=int(status), retry_after=retry)
    if kind in ("delay", "stall", "slow_drip"):
        default = {"delay": 5.0, "stall": 30.0, "slow_drip": 0.05}[kind]
        return Fault(kind, seconds=float(rest) if rest else default)
    if kind == "redirect_chain":
        return Fault(kind, hops=int(rest) if rest else 3)
    if kind in REST_KINDS | STATIC_KINDS:
        return Fault(kind)
    raise ValueError(f"unknown fault; received {spec!r}")


class FaultBook:
    """Per-target FIFO queues of faults; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Fault]] = defaultdict(deque)

    def add(self, target: str, faults: Iterable[Fault | int | str]) -> None:
        parsed = [parse_fault(f) for f in faults]
        allowed = STATIC_KINDS if target.startswith("static") else REST_KINDS
        for fault in parsed:
            if fault.kind not in allowed:
                raise ValueError(f"fault {fault.kind!r} does not apply to target {target!r}")
        with self._lock:
            self._queues[target].extend(parsed)

    def take(self, *targets: str) -> Fault | None:
        """Pop the next fault of the first target (most specific first) that has one."""
        with self._lock:
            for target in targets:
                queue = self._queues.get(target)
                if queue:
                    return queue.popleft()
        return None

    def pending(self) -> dict[str, int]:
        with self._lock:
            return {t: len(q) for t, q in self._queues.items() if q}

    def clear(self) -> None:
        with self._lock:
            self._queues.clear()


class ManualClock:
    """An injectable clock for the rate limiter: ``clock.advance(3600)`` moves an hour on instantly."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


class RateLimiter:
    """At most ``limit`` REST calls per key in any ``window`` seconds of ``clock`` (off when limit is None).

    action "429": calls past the limit get HTTP 429 (HTML body, Retry-After); "disable": the key is
    marked expired, so every later call gets stat=fail 100.
    """

    def __init__(self, limit: int | None = None, window: float = 3600.0, action: str = "429",
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        if limit is not None and limit < 1:
            raise ValueError(f"rate limit must be >= 1 or None; received {limit}")
        if action not in ("429", "disable"):
            raise ValueError(f"rate limit action must be '429' or 'disable'; received {action!r}")
        self.limit, self.window, self.action, self.clock = limit, window, action, clock
        self._calls: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        if self.limit is None:
            return True
        now = self.clock()
        with self._lock:
            calls = self._calls[key]
            while calls and calls[0] <= now - self.window:
                calls.popleft()
            if len(calls) >= self.limit:
                return False
            calls.append(now)
            return True

    def retry_after(self, key: str) -> int:
        with self._lock:
            calls = self._calls.get(key)
            if not calls:
                return 0
            return max(1, int(calls[0] + self.window - self.clock()) + 1)

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()


def html_page(status: int, detail: str = "") -> bytes:
    reason = REASONS.get(status, "Error")
    return (
        f"<!DOCTYPE html>\n<html><head><title>{status} {reason}</title></head>\n"
        f"<body><h1>{reason}</h1><p>{detail or 'Flickr is having a little trouble.'}</p></body></html>\n"
    ).encode()
