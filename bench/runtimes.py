"""Every runtime x precision this machine offers for the bare model (fc2, random weights: the same FLOPs as the
ImageNet ones), against the sgemm limit: what a float32 matrix multiply of conv-like size reaches here with
numpy's BLAS on all cores, divided by VGG16's 30.9 GFLOP per image (to fc2). Rates are measured alternating,
round after round, so background load on a shared machine hits every variant alike; each records the cores
other processes used meanwhile."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from .common import OUT, Others, Skip, photo_files, rate


def vgg16_convs() -> list[tuple[str, int, int, int]]:
    """(layer name, side, input channels, output channels) of each VGG16 3x3 convolution on a 224-px image."""
    convs, side, cin = [], 224, 3
    for block, (cout, n) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], start=1):
        for i in range(1, n + 1):
            convs.append((f"block{block}_conv{i}", side, cin, cout))
            cin = cout
        side //= 2  # 2x2 max pooling after each block
    return convs


def vgg16_gflop() -> float:
    """FLOPs of one 224-px image through VGG16 to fc2, 2 per multiply-add (15.47 G multiply-adds: the "15.5
    GFLOPs" often quoted for VGG16, and used by this bench before, counts multiply-adds, which halved every
    "of the limit" figure measured against a FLOP/s rate)."""
    macs = sum(side * side * cin * cout * 3 * 3 for _, side, cin, cout in vgg16_convs())
    macs += 7 * 7 * 512 * 4096 + 4096 * 4096  # fc1 (7x7x512 after block5's pooling -> 4096), fc2
    return 2 * macs / 1e9


GFLOP_PER_IMAGE = round(vgg16_gflop(), 1)  # 30.9
# block3's 3x3 conv as a GEMM on 4 images: (4*56*56) x (3*3*256) times (3*3*256) x 256
SGEMM_SHAPE = (4 * 56 * 56, 3 * 3 * 256, 256)


def sgemm_gflops(seconds: float = 3.0) -> float:
    """Best GFLOP/s of a float32 matmul of conv-like size over `seconds` (best: the machine's limit, not its load)."""
    m, k, n = SGEMM_SHAPE
    rng = np.random.default_rng(0)
    a, b = rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)
    a @ b
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * m * k * n / (time.perf_counter() - start) / 1e9)
    return best


def offered() -> list[tuple[str, str]]:
    """(runtime, precision) pairs this machine runs natively (bf16 only where the CPU has AMX-BF16 or AVX512_BF16;
    int8 everywhere, at full speed where it has VNNI)."""
    from imgidx.indexer.embedders import native

    pairs = [("keras", "fp32")]
    if native("bf16"):
        pairs.append(("keras", "bf16"))
    return [*pairs, ("onnx", "fp32"), ("onnx", "int8")]


def calibration_pixels(n: int = 32) -> np.ndarray:
    from imgidx.indexer.images import prepare

    try:  # (the speed of int8 does not depend on which photos set its ranges: --quick uses fewer)
        files = photo_files(n)
    except Skip:  # no shared photos: speed does not depend on what the ranges were calibrated on
        return np.random.default_rng(0).integers(0, 256, (64, 224, 224, 3), dtype=np.uint8)
    return np.stack([prepare(f.read_bytes()) for f in files])


def embedder(runtime: str, precision: str, batch_size: int, home: Path, calibration: int = 32):
    from imgidx.indexer.embedders import make
    from imgidx.indexer.embedders.weights import resolve

    spec = resolve("random:0", "fc2", Path("/nonexistent"), "")
    extra = {"home": home, "shared": home / "user-cache", "calibration": lambda: calibration_pixels(calibration)}
    extra = extra if runtime == "onnx" else {}
    return make("vgg16", "fc2", spec, precision=precision, batch_size=batch_size, runtime=runtime, **extra).load()


def measure(x: np.ndarray, rounds: int, min_seconds: float, calibration: int = 32) -> tuple[dict, dict]:
    """{"runtime precision": embedder}, {"runtime precision": {"img_per_s": [...], "others": [...]}}"""
    home = OUT / f"runtimes-home-cal{calibration}"  # exported/quantized files cached across runs of the bench
    embs = {f"{rt} {p}": embedder(rt, p, len(x), home, calibration) for rt, p in offered()}
    for e in embs.values():
        e.embed(x)  # warm-up: traces, allocations
    got = {name: {"img_per_s": [], "others": []} for name in embs}
    for _ in range(rounds):
        for name, e in embs.items():
            with Others() as o:
                got[name]["img_per_s"].append(round(rate(lambda e=e: len(e.embed(x)), min_seconds=min_seconds), 2))
            got[name]["others"].append(round(o.cores, 2))
    for g in got.values():
        g["median"] = statistics.median(g["img_per_s"])
    return embs, got
