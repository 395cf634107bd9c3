"""A few Prometheus metrics kept in memory and written in the text exposition format (version 0.0.4).

Small on purpose (counters, gauges, histograms with fixed buckets); thread-safe, no global registry, so every
app instance and every test has its own.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

Labels = tuple[tuple[str, str], ...]


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._help: dict[str, tuple[str, str]] = {}  # name -> (type, help)
        self._values: dict[str, dict[Labels, float]] = {}
        self._hist: dict[str, tuple[tuple[float, ...], dict[Labels, list[float]]]] = {}
        self._gauges: dict[str, Callable[[], float]] = {}

    def counter(self, name: str, help: str) -> None:
        self._help[name] = ("counter", help)
        self._values.setdefault(name, {})

    def histogram(self, name: str, help: str, buckets: tuple[float, ...]) -> None:
        self._help[name] = ("histogram", help)
        self._hist.setdefault(name, (tuple(sorted(buckets)), {}))

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> None:
        """A gauge read when /metrics is scraped (index size, queue length)."""
        self._help[name] = ("gauge", help)
        self._gauges[name] = read

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = _key(labels)
        with self._lock:
            series = self._values[name]
            series[key] = series.get(key, 0.0) + amount

    def observe(self, name: str, value: float, **labels: str) -> None:
        buckets, series = self._hist[name]
        key = _key(labels)
        with self._lock:
            counts = series.setdefault(key, [0.0] * (len(buckets) + 2))  # per bucket, +Inf, sum
            counts[bisect.bisect_left(buckets, value)] += 1
            counts[-1] += value

    def value(self, name: str, **labels: str) -> float:
        """Current value of a counter series (0 if never incremented); for tests and health output."""
        with self._lock:
            return self._values.get(name, {}).get(_key(labels), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, (kind, help) in sorted(self._help.items()):
                lines += [f"# HELP {name} {help}", f"# TYPE {name} {kind}"]
                if kind == "counter":
                    lines += [f"{name}{_fmt_labels(k)} {_num(v)}" for k, v in sorted(self._values[name].items())]
                elif kind == "gauge":
                    lines.append(f"{name} {_num(self._gauges[name]())}")
                else:
                    lines += _render_histogram(name, *self._hist[name])
        return "\n".join(lines) + "\n"


def _render_histogram(name: str, buckets: tuple[float, ...], series: dict[Labels, list[float]]) -> list[str]:
    lines = []
    for key, counts in sorted(series.items()):
        cumulative = 0.0
        for bound, count in zip((*buckets, math.inf), counts[:-1], strict=True):
            cumulative += count
            le = "+Inf" if bound == math.inf else repr(float(bound))
            lines.append(f"{name}_bucket{_fmt_labels((*key, ('le', le)))} {_num(cumulative)}")
        lines.append(f"{name}_sum{_fmt_labels(key)} {_num(counts[-1])}")
        lines.append(f"{name}_count{_fmt_labels(key)} {_num(cumulative)}")
    return lines


def _key(labels: dict[str, str]) -> Labels:
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


def _fmt_labels(key: Labels) -> str:
    if not key:
        return ""
    esc = (v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for _, v in key)
    return "{" + ",".join(f'{k}="{v}"' for (k, _), v in zip(key, esc, strict=True)) + "}"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))
