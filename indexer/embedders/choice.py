"""`runtime="auto"`: which runtime (Keras/TensorFlow or ONNX Runtime) runs a precision fastest on this machine,
decided by measuring both once, never by guessing from the CPU's name.

Only fp32 has a choice: int8 runs on ONNX Runtime only, bf16/fp16 on Keras only (ONNX Runtime's CPU provider
has no fast bf16 kernels). The measurement (one warm-up batch, then a couple of timed batches per runtime,
alternating, median) is cached per machine (`~/.cache/imgidx/runtime-choice.json`) under a key made of the CPU
model, the CPU count, the library versions, the layer, the precision and the batch size: a new CPU, a library upgrade
or another layer measures again.
"""

from __future__ import annotations

import contextlib
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import atomic
from ..threads import machine_threads
from .vgg16 import INPUT_SIZE

RUNTIME_CHOICES = ("auto", "keras", "onnx")
TIMED_BATCHES = 2
MEASURE_ROWS = 16  # rows per timed batch: enough to be in the kernels' steady state, cheap on 2 cores


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("tensorflow", "keras", "onnxruntime", "onnx"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def machine_key(layer: str, precision: str, batch_size: int, *, cpu: str | None = None) -> str:
    v = versions()
    libs = ",".join(f"{k}={v[k]}" for k in sorted(v))
    return f"{cpu or cpu_model()}|cpus={machine_threads()}|{libs}|{layer}|{precision}|batch={batch_size}"


def only_runtime(precision: str) -> str | None:
    """The one runtime that offers `precision`, or None when both do (then measure)."""
    if precision == "int8":
        return "onnx"
    if precision in ("bf16", "fp16"):
        return "keras"
    return None


def cache_file(folder: Path) -> Path:
    """One answer per machine, not per data home: two new indexes on one machine must pick the same runtime, or
    their vectors would differ in the last bits (README "Crash safety")."""
    return Path(folder) / "runtime-choice.json"


def read_cache(home: Path) -> dict:
    try:
        data = json.loads(cache_file(home).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_cache(home: Path, key: str, entry: dict) -> None:
    data = read_cache(home)
    data[key] = entry
    path = cache_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(data, indent=1, sort_keys=True))


def measure(candidates: dict[str, Callable[[np.ndarray], object]], rows: int, *, batches: int = TIMED_BATCHES) -> dict:
    """img/s of each candidate's raw call on `rows` black images: one warm-up call each, then `batches` timed calls
    each, alternating (so a burst of background load hits both), median per candidate."""
    x = np.zeros((rows, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    for call in candidates.values():
        call(x)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(batches):
        for name, call in candidates.items():
            start = time.perf_counter()
            call(x)
            times[name].append(time.perf_counter() - start)
    return {name: round(rows / statistics.median(t), 3) for name, t in times.items()}


def choose(
    home: Path,
    layer: str,
    precision: str,
    batch_size: int,
    make: Callable[[str], object],
    *,
    cpu: str | None = None,
    rows: int = MEASURE_ROWS,
) -> tuple[str, dict]:
    """(runtime, info): the cached answer for this machine when there is one, else measure both runtimes' raw
    calls (built by make(runtime)) and cache the faster. info says how it was decided."""
    fixed = only_runtime(precision)
    if fixed:
        return fixed, {"runtime": fixed, "why": f"only {fixed} runs {precision}"}
    key = machine_key(layer, precision, batch_size, cpu=cpu)
    hit = read_cache(home).get(key)
    if isinstance(hit, dict) and hit.get("runtime") in ("keras", "onnx"):
        return hit["runtime"], {**hit, "why": "measured before on this machine", "key": key}
    embedders = {name: make(name).load() for name in ("keras", "onnx")}
    rates = measure({name: e.raw for name, e in embedders.items()}, min(rows, batch_size))
    best = max(rates, key=rates.get)
    entry = {"runtime": best, "img_per_s": rates, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_cache(home, key, entry)
    return best, {**entry, "why": "measured now", "key": key}
