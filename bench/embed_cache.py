"""Embed photo files once and keep their vectors in bench/out/embed-cache (shared by the quality benches).

fp32 VGG16 runs at ~3-4 photos/s on this 2-core machine, so every bench that needs real vectors of
../shared/photos reads them from here instead of embedding again. One ``.npy`` per photo, named by the file's
sha256, under a folder named by the model stamp (layer, weights fingerprint, precision): a cache written with
other weights or another layer is never mixed in, and an interrupted run keeps what it finished.

Preprocessing is the pipeline's own (``imgidx.indexer.images.prepare``), so the vectors are the ones
``imgidx build`` stores for the same files.

Usage (warm the cache in the background):
  nice python -m bench.embed_cache ../shared/photos/catsdogs/cats ../shared/photos/catsdogs/dogs
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WEIGHTS = SHARED / "weights" / "vgg16_notop_imagenet.weights.h5"
# IMGIDX_EMBED_CACHE lets several checkouts (worktrees) share one cache.
CACHE = Path(os.environ.get("IMGIDX_EMBED_CACHE") or ROOT / "bench" / "out" / "embed-cache")
SUFFIXES = (".jpg", ".jpeg", ".png")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def photo_files(folder: Path) -> list[Path]:
    """Image files of ``folder``, sorted by name (a stable order for draws)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)


@functools.lru_cache
def embedder_for(layer: str, weights: Path, precision: str):
    from imgidx.indexer import embedders
    from imgidx.indexer.embedders.weights import WeightsSpec, file_has_top, file_sha256

    fingerprint = f"sha256:{file_sha256(weights)}"
    spec = WeightsSpec("file", path=weights, has_top=file_has_top(weights), fingerprint=fingerprint)
    return embedders.make("vgg16", layer, spec, precision=precision, batch_size=16, runtime="keras")


def cache_dir(embedder, weights: Path = WEIGHTS) -> Path:
    """``vgg16-block5_pool-fp32`` for the shared weights (the layout bench/duplicates.py also writes); other
    weights get their fingerprint in the name, so vectors of different weights never mix."""
    s = embedder.stamp
    name = f"{s.model}-{s.layer}-{s.precision}"
    if Path(weights).resolve() != WEIGHTS.resolve():
        name += "-" + s.weights.replace(":", "-")[:23]
    return CACHE / name


def vectors(
    files: Sequence[Path],
    *,
    layer: str = "block5_pool",
    weights: Path = WEIGHTS,
    precision: str = "fp32",
    log: bool = True,
) -> np.ndarray:
    """(len(files), dim) float32 unit vectors, embedding only the files not cached yet."""
    from imgidx.indexer.images import prepare

    embedder = embedder_for(layer, weights, precision)
    folder = cache_dir(embedder, weights)
    folder.mkdir(parents=True, exist_ok=True)
    keys = [sha256(Path(f)) for f in files]
    todo = [i for i, k in enumerate(keys) if not (folder / f"{k}.npy").is_file()]
    t0 = time.monotonic()
    for start in range(0, len(todo), embedder.batch_size):
        # another process filling the same cache may have embedded some of these meanwhile
        batch = [i for i in todo[start : start + embedder.batch_size] if not (folder / f"{keys[i]}.npy").is_file()]
        if not batch:
            continue
        pixels = np.stack([prepare(Path(files[i]).read_bytes()) for i in batch])
        for i, v in zip(batch, embedder.embed(pixels), strict=True):
            _save(folder / f"{keys[i]}.npy", v)
        if log:
            done = start + len(batch)
            rate = done / (time.monotonic() - t0)
            print(f"embed-cache: {done}/{len(todo)} new ({rate:.1f}/s)", file=sys.stderr, flush=True)
    return np.stack([np.load(folder / f"{k}.npy") for k in keys]).astype(np.float32)


def _save(path: Path, v: np.ndarray) -> None:
    # Written aside then renamed: a reader (another bench) never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        np.save(f, v.astype(np.float32))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--layer", default="block5_pool")
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args(argv)
    files = [f for folder in args.folders for f in photo_files(folder)]
    v = vectors(files, layer=args.layer, precision=args.precision)
    print(f"{len(v)} vectors of {v.shape[1]} dims cached", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
