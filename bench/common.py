"""Shared helpers for the bench parts: where the shared data is, timing, tables, results."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IMGIDX_SHARED") or ROOT.parent / "shared")
PHOTOS = SHARED / "photos" / "catsdogs"
WEIGHTS = SHARED / "weights" / "vgg16_notop_imagenet.weights.h5"
OUT = ROOT / "bench" / "out"  # scratch (git-ignored)


class Skip(Exception):
    """A part cannot run here (missing data, memory); the reason goes into the table and the JSON."""


@dataclass(frozen=True)
class Options:
    quick: bool = False


def photo_files(limit: int | None = None) -> list[Path]:
    """The shared cat/dog photos, cats and dogs interleaved (so any prefix is balanced)."""
    cats, dogs = sorted((PHOTOS / "cats").glob("*.jpg")), sorted((PHOTOS / "dogs").glob("*.jpg"))
    if not cats or not dogs:
        raise Skip(f"needs the shared photos in {PHOTOS}")
    files = [f for pair in zip(cats, dogs, strict=False) for f in pair]
    return files[:limit] if limit else files


def labels_of(files: Sequence[Path]) -> np.ndarray:
    return np.array([0 if f.parent.name == "cats" else 1 for f in files])


def need_weights() -> Path:
    if not WEIGHTS.exists():
        raise Skip(f"needs the real ImageNet conv weights at {WEIGHTS}")
    return WEIGHTS


def rate(fn: Callable[[], int], *, min_seconds: float = 3.0) -> float:
    """Items per second of fn() (which returns how many items it did), repeated for at least min_seconds."""
    done, start = 0, time.perf_counter()
    while True:
        done += fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def mem_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def machine() -> dict:
    from imgidx.indexer.embedders import cpu_flags, cpu_kind
    from imgidx.indexer.flow import cores

    flags = cpu_flags()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {
        "cores": cores(),
        "cpu": next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "?"),
        "amx_bf16": "amx_bf16" in flags,
        "cpu_kind": cpu_kind(flags),
        "python": platform.python_version(),
        "load_average_1m_at_start": load,
        "memory_available_gb": round(mem_available() / 2**30, 1),
    }


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[_fmt(c) for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.rjust(w) if _num(c) else c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells[1:]
    ]
    return "\n".join(lines) + "\n"


def _fmt(c: object) -> str:
    if isinstance(c, float):
        return f"{c:,.0f}" if abs(c) >= 100 else f"{c:.1f}" if abs(c) >= 1 else f"{c:.2g}"
    return f"{c:,}" if isinstance(c, int) and not isinstance(c, bool) else str(c)


def _num(c: str) -> bool:
    return c.replace(".", "").replace(",", "").replace("-", "").isdigit()


class Others:
    """How many cores other processes used while a block ran (from /proc/stat minus this process's own time):
    on a shared machine it says which measurements saw the same background load."""

    def __enter__(self) -> Others:
        self._start = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        (busy0, own0, t0), (busy1, own1, t1) = self._start, self._read()
        self.cores = max(0.0, ((busy1 - busy0) - (own1 - own0)) / os.sysconf("SC_CLK_TCK") / (t1 - t0))

    @staticmethod
    def _read() -> tuple[int, int, float]:
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            with open("/proc/self/stat") as f:
                own = f.read().rsplit(")", 1)[1].split()
            return sum(v) - v[3] - v[4], int(own[11]) + int(own[12]), time.monotonic()
        except (OSError, ValueError, IndexError):
            return 0, 0, time.monotonic()
