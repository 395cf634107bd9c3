"""Composition helpers shared by the commands: build the heavy parts once and hand them in."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import layout
from .config import Settings
from .embedders import (
    DEFAULT_MODEL,
    PRECISIONS,
    Embedder,
    default_batch_size,
    default_precision,
    make,
    model_module,
    query_precision,
)
from .embedders.choice import RUNTIME_CHOICES, choose, only_runtime
from .embedders.keras_env import accelerator
from .embedders.onnx_runtime import CALIBRATION_PHOTOS
from .embedders.vgg16 import INPUT_SIZE as TARGET_SIZE
from .embedders.weights import resolve
from .errors import ConfigError, EmptyIndex, InvalidArgument, LockedError, StampMismatch
from .store import Store, stamp_mismatch_message

if TYPE_CHECKING:
    from .fetch import Fetcher  # imported by make_fetcher: requests and urllib3 cost ~0.1 s, and only builds fetch


def make_embedder(
    settings: Settings,
    layer: str,
    weights: str,
    *,
    precision: str | None = None,
    batch_size: int | None = None,
    model: str = DEFAULT_MODEL,
    runtime: str | None = None,
    flags: frozenset[str] | None = None,
    calibration: Callable[[], np.ndarray] | None = None,
) -> Embedder:
    """precision/batch_size None: chosen for the device the model will run on (see embedders.default_precision).
    runtime None: settings.runtime (auto: measured once per machine, embedders/choice.py). flags: the CPU's
    feature flags (None: settings.cpu_flags, else this CPU's). calibration: photos for an int8 quantization,
    called only if one is made."""
    if precision is not None and precision not in PRECISIONS:
        raise InvalidArgument(f"precision must be one of {'|'.join(PRECISIONS)}; received {precision!r}")
    if batch_size is not None and batch_size <= 0:
        raise InvalidArgument(f"batch_size must be > 0; received {batch_size}")
    explicit, runtime = runtime is not None, runtime or settings.runtime
    if runtime not in RUNTIME_CHOICES:
        raise InvalidArgument(f"runtime must be one of {'|'.join(RUNTIME_CHOICES)}; received {runtime!r}")
    flags = settings.cpu_flags if flags is None else flags
    mod = model_module(model)
    spec = resolve(weights, layer, settings.keras_home, settings.weights_url, settings.cache_dir, model=mod)
    device = accelerator() if precision is None or batch_size is None else "cpu"
    precision = precision or default_precision(device, flags, layer=layer, runtime=runtime)
    batch_size = batch_size or default_batch_size(device)
    fixed = only_runtime(precision)
    if fixed and not explicit:  # a preference from the environment yields to the one runtime that can run it
        runtime = fixed
    if fixed and runtime not in ("auto", fixed):
        raise ConfigError(f"precision {precision} runs on the {fixed} runtime only; received runtime {runtime!r}")

    built: dict[str, Embedder] = {}

    def build(rt: str) -> Embedder:
        if rt not in built:
            shared = settings.cache_dir if settings.int8_shared else None
            # memo: a home whose calibration photos an earlier home had (a rebuild from scratch, a test's second
            # home) copies that model instead of calibrating again
            extra = {"home": settings.home, "calibration": calibration, "shared": shared, "memo": settings.cache_dir}
            extra = extra if rt == "onnx" else {}
            built[rt] = make(model, layer, spec, precision=precision, batch_size=batch_size, runtime=rt, **extra)
        return built[rt]

    if runtime == "auto":
        # ONNX Runtime is run on the CPU only: on a GPU machine the Keras backend's GPU is the fast path
        runtime = (
            "keras"
            if device != "cpu" and not fixed
            else choose(settings.cache_dir, layer, precision, batch_size, build)[0]
        )
    return build(runtime)


def calibration_photos(store: Store, fetcher: Fetcher, n: int = CALIBRATION_PHOTOS) -> np.ndarray:
    """The first `n` photos of the index by id that decode (for a new index: the first photos of the build being
    run), through the build's own loader: a photo downloaded here is kept and not fetched again by the build."""
    from .pipeline import Job, Loader

    loader = Loader(store.home, fetcher)
    rows = store.calibration_rows(2 * n)  # the index's own photos, oldest first; failed ones calibrate nothing
    pixels = []
    for r in rows:
        got = loader(Job(r["id"], r["source"], r["source_id"], r["url"], r["path"]))
        if got.pixels is not None:
            pixels.append(got.pixels)
        if len(pixels) >= n:
            break
    return np.stack(pixels) if pixels else np.zeros((0, TARGET_SIZE, TARGET_SIZE, 3), np.uint8)


def embedder_for_index(
    store: Store,
    settings: Settings,
    *,
    layer: str | None = None,
    weights: str | None = None,
    batch_size: int = 32,
    flags: frozenset[str] | None = None,
    fetcher: Fetcher | None = None,
) -> Embedder:
    """An embedder for queries on the index: the index's own stamp and runtime, except that a precision this CPU
    only emulates (bf16 without AMX-BF16) is replaced by fp32 (embedders.query_precision). Options, when given,
    must agree with the stamp. An int8 index whose quantized model is not cached here is calibrated again on its
    own first photos (files on disk; `fetcher` for photos that must be downloaded)."""
    stamp = store.stamp
    flags = settings.cpu_flags if flags is None else flags
    if stamp is None:
        raise EmptyIndex(f"the index in {store.home} is empty; build it first")
    layer = layer or stamp.layer
    if weights is None:
        candidates = [c for c in (store.meta("weights_source"), settings.weights) if c]
        if stamp.weights.startswith("random:"):
            candidates = [stamp.weights]
    else:
        candidates = [weights]
    last_error: Exception | None = None
    for cand in dict.fromkeys(candidates):
        try:
            emb = make_embedder(
                settings,
                layer,
                cand,
                precision=query_precision(stamp.precision, flags=flags),
                batch_size=batch_size,
                model=stamp.model,
                runtime=store.meta("runtime") or "keras",  # the index's own (recorded by its build; before: Keras)
                flags=flags,
                calibration=lambda: calibration_photos(store, fetcher or make_fetcher(settings, 4)),
            )
        except ConfigError as e:
            last_error = e
            continue
        if replace(emb.stamp, precision=stamp.precision) == stamp:  # the precision may differ: see above
            return emb
        last_error = StampMismatch(stamp_mismatch_message(stamp, emb.stamp, store.home))
    if weights is not None or layer != stamp.layer:
        raise last_error or StampMismatch(f"options disagree with the index in {store.home}")
    raise ConfigError(
        f"the index in {store.home} was built with weights {stamp.weights[:23]}…, which are not "
        f"available here ({last_error}); set the weights to the path of that file"
    )


def make_fetcher(settings: Settings, workers: int) -> Fetcher:
    from .fetch import Fetcher

    return Fetcher(
        workers=workers,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        deadline=settings.download_deadline,
        retries=settings.retries,
        backoff=settings.backoff,
        max_backoff=settings.max_backoff,
        max_bytes=settings.max_bytes,
        allow_private_hosts=settings.allow_private_hosts,
    )


@contextmanager
def build_lock(home: Path) -> Iterator[None]:
    """One build per data home: a second one is refused with a clear message instead of interleaving writes."""
    home.mkdir(parents=True, exist_ok=True)
    path = layout.build_lock_file(home)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise LockedError(
                f"another imgidx build (pid {holder}) is writing to {home}; wait for it to finish "
                "or use another IMGIDX_HOME"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def build_running(home: Path) -> bool:
    """Whether a build holds the lock of `home` right now (asked without waiting and without taking it)."""
    path = layout.build_lock_file(home)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
