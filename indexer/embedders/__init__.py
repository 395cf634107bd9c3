"""Embedders: photos (uint8 RGB, input_size x input_size) -> float32 unit vectors. One interface, plug-ins behind it.

A *model* module (vgg16.py) holds the facts of one backbone: its name in the stamp, input size, preprocessing,
the layers it offers and their dims, its weight files, and its Keras definition. A *runtime* (keras_runtime.py
today; ONNX Runtime next) runs that model at a precision and a batch size. `make()` picks both by name; callers
only see the `Embedder` protocol below. Nothing here imports Keras or TensorFlow.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError, EmulatedPrecision
from ..records import Stamp

if TYPE_CHECKING:
    from .weights import WeightsSpec

PRECISIONS = ("fp32", "bf16", "fp16", "int8")  # int8: ONNX Runtime only (onnx_runtime.py)
BATCH_SIZE = {"cpu": 64, "gpu": 128}  # bf16 fc2 on 2 AMX cores: 33 img/s at 32, 37 at 64, 40 at 128 (2x memory)


@runtime_checkable
class Embedder(Protocol):
    """What the pipeline, the search faces and the service need from a model. `embed` is pure: a photo's vector
    depends on its pixels, the stamp and nothing else (not on the other photos of the batch)."""

    name: str  # the model's name in the stamp, e.g. "vgg16"
    input_size: int  # square side in pixels the images must have (images.prepare makes 224)
    preprocess: str  # what happens to a photo before the model; stored in the stamp
    layers: Mapping[str, int]  # layer name -> vector dim, every layer this model offers
    layer: str
    dim: int
    precision: str  # one of PRECISIONS
    batch_size: int  # photos per model call
    weights: WeightsSpec

    @property
    def stamp(self) -> Stamp: ...

    def load(self) -> Embedder: ...

    def embed(self, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]: ...


# model name -> module with NAME, INPUT_SIZE, PREPROCESS, LAYERS (see vgg16.py)
DEFAULT_MODEL = "vgg16"  # the model of a new index (vgg16.NAME)
MODELS: dict[str, str] = {DEFAULT_MODEL: "imgidx.indexer.embedders.vgg16"}
# runtime name -> "module:factory"; a factory takes (model_module, layer, weights, *, precision, batch_size)
RUNTIMES: dict[str, str | Callable[..., Embedder]] = {
    "keras": "imgidx.indexer.embedders.keras_runtime:KerasEmbedder",
    "onnx": "imgidx.indexer.embedders.onnx_runtime:OnnxEmbedder",
}


def register_runtime(name: str, factory: str | Callable[..., Embedder]) -> None:
    """Add a runtime: a factory or a lazy "module:attribute" reference to one (imported only when used)."""
    RUNTIMES[name] = factory


def model_module(model: str) -> ModuleType:
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; choose one of: {', '.join(MODELS)}")
    return importlib.import_module(MODELS[model])


def make(
    model: str = DEFAULT_MODEL,
    layer: str | None = None,
    weights_spec: WeightsSpec | None = None,
    precision: str = "fp32",
    batch_size: int = 32,
    runtime: str = "keras",
    **options,
) -> Embedder:
    """An embedder of `model` cut at `layer` (default: the model's first layer), run by `runtime`. Nothing heavy
    happens until load() or the first embed(). `options` go to the runtime's factory (onnx: home, calibration)."""
    mod = model_module(model)
    layer = layer or next(iter(mod.LAYERS))
    if layer not in mod.LAYERS:
        raise ConfigError(f"unknown layer {layer!r}; choose one of: {', '.join(mod.LAYERS)}")
    if weights_spec is None:
        raise ConfigError("an embedder needs resolved weights (weights.resolve)")
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    factory = RUNTIMES[runtime]
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
    return factory(layer, weights_spec, precision=precision, batch_size=batch_size, model=mod, **options)


def stamp_of(model: ModuleType, layer: str, weights: WeightsSpec, precision: str) -> Stamp:
    """The stamp every runtime of `model` writes: runtime-independent, so runtimes can share an index."""
    return Stamp(
        model=model.NAME,
        layer=layer,
        weights=weights.fingerprint,
        dim=model.LAYERS[layer],
        precision=precision,
        preprocess=model.PREPROCESS,
    )


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where there is no /proc/cpuinfo)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


# Flags that make a precision run in hardware, by precision (any one suffices). bf16: AMX-BF16 tiles, or AVX512_BF16
# (Zen 4, Cooper Lake; TensorFlow runs it through oneDNN at ~2x fp32). Without one, TensorFlow runs bf16 through slow
# reference kernels (bf16 fc2 on the 2-core AVX2 EPYC: minutes per batch of 64, against seconds in fp32).
NATIVE_FLAGS: dict[str, tuple[str, ...]] = {"bf16": ("amx_bf16", "avx512_bf16")}
# int8 dot products in one instruction (u8*s8 summed into int32): ONNX Runtime's int8 kernels at full speed. Without
# them (AVX2 only) int8 still runs, through vpmaddubsw's saturating 16-bit pair sums, and slower.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# Whether int8 keeps every outcome within 0.005 of fp32 on a CPU with only AVX2, where its kernels differ from the
# VNNI ones: it does (bench/precision_gate.py on AMD EPYC Zen 3, 400 photos: worst outcome delta 0.0015; README
# "Precision by CPU kind").
INT8_PASSES_ON_AVX2 = True


def _flags(flags: frozenset[str] | None) -> frozenset[str]:
    return cpu_flags() if flags is None else flags


def vnni(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU runs int8 dot products in hardware (VNNI or AMX-INT8)."""
    return any(f in _flags(flags) for f in VNNI_FLAGS)


def cpu_kind(flags: frozenset[str] | None = None) -> str:
    """amx | vnni | bf16 | avx2 | other: the CPU kinds the default precision is decided by (README "Precision by CPU
    kind"), each named by the fastest thing it has: AMX-BF16, VNNI, AVX512_BF16 without VNNI, AVX2 alone."""
    f = _flags(flags)
    if "amx_bf16" in f:
        return "amx"
    if vnni(f):
        return "vnni"
    if native("bf16", flags=f):
        return "bf16"
    return "avx2" if "avx2" in f else "other"


def default_precision(
    device: str = "cpu", flags: frozenset[str] | None = None, *, layer: str | None = None, runtime: str = "auto"
) -> str:
    """The fastest precision that keeps every outcome within 0.005 of fp32 on this CPU kind (the gate:
    bench/precision_gate.py; README "Precision by CPU kind"):
      AMX-BF16 -> bf16 (~10x fp32 on 2 cores);  VNNI (avx512_vnni, avx_vnni) -> int8 on ONNX Runtime (~3.75x);
      AVX512_BF16 without VNNI -> bf16;  AVX2 only -> int8 where INT8_PASSES_ON_AVX2, else fp32 (runtime auto then
      picks ONNX Runtime where it is faster). A Keras runtime asked for has no int8: bf16 where native, else fp32.
    `layer` is accepted for callers that name it; every layer gets its CPU kind's precision.

    On a GPU fp32 stays the default: the model is no longer the bottleneck there (decoding is), so lower
    precision would buy little build speed for a small loss of exactness; pass --precision bf16 to choose it."""
    if device != "cpu":
        return "fp32"
    f = _flags(flags)
    kind = cpu_kind(f)
    if kind in ("amx", "bf16"):
        return "bf16"
    int8 = kind == "vnni" or (kind == "avx2" and INT8_PASSES_ON_AVX2)
    if int8 and runtime != "keras":
        return "int8"
    return "bf16" if native("bf16", device, f) else "fp32"


def native(precision: str, device: str = "cpu", flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU runs `precision` in hardware (always true on a GPU and for fp32/int8)."""
    need = NATIVE_FLAGS.get(precision)
    return device != "cpu" or need is None or any(f in _flags(flags) for f in need)


def query_precision(index_precision: str, device: str = "cpu", flags: frozenset[str] | None = None) -> str:
    """The precision to embed a query for an index built at `index_precision`: the same where this CPU runs it
    natively, else fp32 (a bf16 index queried on an AVX2 CPU: cosine of fp32 to bf16 vectors >= 0.9999, README
    "Performance"; fp32 is the reference both approximate, so nearest neighbours stay nearest). int8 runs on every
    x86 CPU (slower without VNNI), so an int8 index is queried in int8 everywhere."""
    return index_precision if native(index_precision, device, flags) else "fp32"


def extend_precision(
    index_precision: str, asked: str | None, device: str = "cpu", flags: frozenset[str] | None = None
) -> str:
    """The precision to add photos to an index built at `index_precision`. Vectors of one index share one precision,
    so it is the index's; where this CPU only emulates it, adding is refused unless that precision was asked for
    explicitly (`asked`), because it would run orders of magnitude slower than on the machine that built it.
    (int8 is never emulated: without VNNI it runs slower, and slow_precision() says so.)"""
    if asked is not None or native(index_precision, device, flags):
        return asked or index_precision
    need = " or ".join(NATIVE_FLAGS[index_precision])
    raise EmulatedPrecision(
        f"this index was built in {index_precision}, which this CPU (no {need}) only "
        f"emulates: adding photos here would run very slowly (minutes per batch instead of seconds). Ask for "
        f"precision {index_precision} explicitly to add them anyway, add them on a CPU with "
        f"{need}, or build a new fp32 index in another data home. Searching this index "
        "works here as it is (queries are embedded in fp32)."
    )


def slow_precision(precision: str, device: str = "cpu", flags: frozenset[str] | None = None) -> str | None:
    """A one-line note when `precision` runs here, correctly but slower than on the CPU kind it is the default of
    (int8 without VNNI); None otherwise."""
    if precision != "int8" or device != "cpu" or vnni(flags):
        return None
    return (
        "this index is int8 and this CPU has no VNNI (avx512_vnni or avx_vnni): int8 runs here on slower kernels "
        "than on a VNNI CPU (its 7-bit weights keep them from saturating, so the vectors keep their quality)"
    )


def default_batch_size(device: str) -> int:
    return BATCH_SIZE.get(device, BATCH_SIZE["cpu"])


def check_images(images: npt.NDArray[np.uint8], size: int) -> None:
    if images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise TypeError(f"images must have shape (n, {size}, {size}, 3); received {images.shape}")


def pad_rows(chunk: npt.NDArray[np.uint8], rows: int) -> npt.NDArray[np.uint8]:
    """Pad a short batch with black images so that the model always sees `rows` rows.

    Why: a photo's vector must not depend on which other photos shared its batch, or a resumed build (which
    batches differently) would not reproduce an uninterrupted one bit for bit. Measured on TF 2.21 CPU: for a
    fixed batch shape, rows are bitwise independent of their neighbours and position, but fc2 differs in the
    last bits between shapes (oneDNN: 1 row vs more; plain Eigen, TF_ENABLE_ONEDNN_OPTS=0: fewer than 8 rows
    vs more). One shape per --batch-size removes the dependence; the conv layers were batch-invariant anyway.
    The price is the padding of the last, short batch of a run.
    """
    if len(chunk) >= rows:
        return chunk
    return np.concatenate([chunk, np.zeros((rows - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)])


def l2_normalize(v: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v / np.maximum(norms, 1e-12), dtype=np.float32)


def embed_in_batches(
    images: npt.NDArray[np.uint8], batch_size: int, dim: int, raw: Callable[[npt.NDArray[np.uint8]], np.ndarray]
) -> npt.NDArray[np.float32]:
    """Run `raw` (one fixed-shape model call -> un-normalised features) over padded batches; unit float32 rows.

    Features are cast to float32 before normalising (bf16 norms lose digits), so inner product = cosine."""
    out = np.empty((len(images), dim), dtype=np.float32)
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        out[start : start + len(chunk)] = np.asarray(raw(pad_rows(chunk, batch_size)), dtype=np.float32)[: len(chunk)]
    return l2_normalize(out)
