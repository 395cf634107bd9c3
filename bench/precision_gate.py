"""The precision gate: does a precision change what users get? (bench, not a test; `make quality` runs it)

Embeds a subset of the shared cat/dog photos, plus edited copies of some of them, with the real ImageNet conv
weights (block5_pool) in each precision this CPU offers, and scores, against fp32 on the same photos:
  - classifier accuracy: a logistic regression (imgidx's own) on 70/30 splits, mean of SPLITS seeds;
  - kNN precision@10 over the subset;
  - clean: `imgidx clean maybe_cat` (the default cut, other collections) in an index of cat, dog and maybe_cat
    (cats + a few dogs), ROC AUC of the ranking and precision/recall of the flags, mean of DRAWS draws;
  - near duplicates: `find_duplicates` at the default cut with the pixel check, precision/recall of the pairs
    made of an original and its edits (bench/duplicates.py's edits: jpeg40, resize60, crop85, watermark);
  - the cosine of each vector to its fp32 vector: min and 1st percentile.
A precision passes where every outcome is within TOLERANCE (0.005) of fp32's.

fp32 vectors come from bench/embed_cache.py (the Keras runtime; ONNX Runtime fp32 agrees to cosine 0.9999999),
so a warm cache embeds only the other precisions. int8 is quantized here from the first `--calibration` photos of
the subset (as a build calibrates on its first photos), with the library's recipe (onnx_runtime.RECIPE) or the
alternatives named by `--recipes`.

Usage: python -m bench.precision_gate [--photos 480] [--edited 40] [--calibration 32] [--recipes default,u8,...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from .common import OUT, Skip, labels_of, need_weights, photo_files

TOLERANCE = 0.005
SPLITS = 5
DRAWS = 3
LAYER = "block5_pool"
# alternatives to onnx_runtime.RECIPE tried on AVX2 (vpmaddubsw adds u8*s8 pairs into saturating int16)
RECIPES = {
    "default": {},
    "8bit": {"reduce_range": False},
    "u8": {"weights": "u8"},
    "conv1_fp32": {"fp32_nodes": ("block1_conv1/conv",)},
    "conv1_fp32_8bit": {"fp32_nodes": ("block1_conv1/conv",), "reduce_range": False},
}


def subset(n: int, seed: int = 0) -> list[Path]:
    """n shared photos, half cats and half dogs, drawn with a fixed seed, cats and dogs interleaved."""
    files = photo_files()
    y = labels_of(files)
    rng = np.random.default_rng(seed)
    cats = sorted(rng.choice(np.flatnonzero(y == 0), n // 2, replace=False).tolist())
    dogs = sorted(rng.choice(np.flatnonzero(y == 1), n // 2, replace=False).tolist())
    return [files[i] for pair in zip(cats, dogs, strict=True) for i in pair]


def edited(files: list[Path], n: int, seed: int = 11) -> tuple[list[bytes], list[int], list[str]]:
    """Edited copies of the first n files (each of bench/duplicates.py's EDITS): bytes, source row, kind."""
    from .duplicates import EDITS, variant

    rng = np.random.default_rng(seed)
    blobs, source, kinds = [], [], []
    for i, f in enumerate(files[:n]):
        data = f.read_bytes()
        for kind in EDITS:
            blobs.append(variant(data, kind, rng))
            source.append(i)
            kinds.append(kind)
    return blobs, source, kinds


# ---- outcomes --------------------------------------------------------------------------------------------------


def classifier_accuracy(v: np.ndarray, y: np.ndarray) -> float:
    from imgidx.search.classifier import train_classifier

    labels = ["cat" if c == 0 else "dog" for c in y]
    return float(np.mean([train_classifier(v, labels, test_size=0.3, seed=s).accuracy for s in range(SPLITS)]))


def knn_p10(v: np.ndarray, y: np.ndarray) -> float:
    from imgidx.search.audit import nearest_neighbours

    nn = nearest_neighbours(v, 10)
    return float((y[nn] == y[:, None]).mean())


def clean_outcomes(files: list[Path], v: np.ndarray, y: np.ndarray, stamp, tag: str) -> dict:
    """`imgidx clean maybe_cat --classifier none` in DRAWS indexes made from these vectors: mean AUC, P, R."""
    from .quality import clean_scores, imgidx_here

    cats, dogs = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    runs = []
    for seed in range(DRAWS):
        rng = np.random.default_rng(seed)
        c, d = rng.permutation(cats), rng.permutation(dogs)
        third, strays = len(c) // 3, max(4, len(d) // 20)
        groups = {"cat": c[:third], "dog": d[: len(d) // 2], "maybe_cat": np.concatenate([c[third:], d[-strays:]])}
        home = OUT / "precision-gate" / f"clean-{tag}-{seed}"
        _home_from_vectors(home, stamp, {k: ([files[i] for i in rows], v[rows]) for k, rows in groups.items()})
        report = json.loads(imgidx_here(home, "clean", "maybe_cat", "--classifier", "none", "--json"))
        runs.append(clean_scores(report, {str(files[i]) for i in d[-strays:]}))
    return {k: float(np.mean([r[k] for r in runs])) for k in ("auc", "flagged_precision", "flagged_recall")}


def _home_from_vectors(home: Path, stamp, groups: dict[str, tuple[list[Path], np.ndarray]]) -> None:
    import shutil

    from imgidx.indexer.records import Photo
    from imgidx.indexer.store import Store

    shutil.rmtree(home, ignore_errors=True)
    with Store(home) as store:
        store.ensure_stamp(stamp)
        for name, (files, vectors) in groups.items():
            ids = store.add_photos(
                Photo("folder", f.name, name, origin=str(f.parent), path=str(f), title=f.stem) for f in files
            )
            shas = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
            rows = [(pid, str(f), sha) for pid, f, sha in zip(ids, files, shas, strict=True)]
            store.add_vectors(rows, vectors)
        store.save_index()


def duplicate_outcomes(blobs: list[bytes], source: np.ndarray, kinds: list[str], v: np.ndarray) -> dict:
    from imgidx.search.duplicates import PhotoFacts

    from .duplicates import _score

    facts = [PhotoFacts(id=i, sha256=hashlib.sha256(b).hexdigest(), size_bytes=len(b)) for i, b in enumerate(blobs)]
    label = np.zeros(len(blobs), int)
    got = _score(np.arange(len(blobs)), v, source, kinds, label, facts, "auto", blobs)
    return {"dup_precision": got["precision"], "dup_recall": got["recall"]}


def outcomes(files, y, v_photos, dup, v_dups, stamp, tag: str) -> dict:
    blobs, source, kinds = dup
    out = {
        "classifier_accuracy": classifier_accuracy(v_photos, y),
        "knn_precision_at_10": knn_p10(v_photos, y),
        **{f"clean_{k}": x for k, x in clean_outcomes(files, v_photos, y, stamp, tag).items()},
        **duplicate_outcomes(blobs, source, kinds, np.concatenate([v_photos, v_dups])),
    }
    return {k: round(x, 4) for k, x in out.items()}


def verdict(got: dict, ref: dict, cos: np.ndarray) -> dict:
    deltas = {k: round(got[k] - ref[k], 4) for k in ref}
    worst = max(abs(d) for d in deltas.values())
    return {
        "outcomes": got,
        "deltas": deltas,
        "worst_delta": worst,
        "cosine_min": round(float(cos.min()), 5),
        "cosine_p01": round(float(np.percentile(cos, 1)), 5),
        "passes": bool(worst <= TOLERANCE),
    }


# ---- embedding -------------------------------------------------------------------------------------------------


def _fp32_file(home: Path, spec) -> Path:
    from imgidx.indexer.embedders.onnx_runtime import OnnxEmbedder

    return OnnxEmbedder(LAYER, spec, precision="fp32", home=home).fp32_file()


def int8_vectors(pixels: np.ndarray, calibration: np.ndarray, spec, recipe: dict) -> tuple[np.ndarray, dict]:
    from imgidx.indexer.embedders import embed_in_batches
    from imgidx.indexer.embedders import onnx_export as ox
    from imgidx.indexer.embedders.onnx_runtime import quantize, session

    t = time.perf_counter()
    model = quantize(_fp32_file(OUT / "precision-gate" / "onnx", spec), calibration, **recipe)
    quant_s = time.perf_counter() - t
    sess = session(model)
    raw = lambda x: sess.run(None, {ox.INPUT: x})[0]  # noqa: E731
    raw(pixels[:16])
    t = time.perf_counter()
    v = embed_in_batches(pixels, 16, 512, raw)
    return v, {"quantize_s": round(quant_s, 1), "img_per_s": round(len(pixels) / (time.perf_counter() - t), 2)}


def keras_vectors(pixels: np.ndarray, spec, precision: str) -> tuple[np.ndarray, dict]:
    from imgidx.indexer.embedders import make

    emb = make("vgg16", LAYER, spec, precision=precision, batch_size=16, runtime="keras").load()
    emb.embed(pixels[:16])
    t = time.perf_counter()
    v = emb.embed(pixels)
    return v, {"img_per_s": round(len(pixels) / (time.perf_counter() - t), 2)}


def onnx_fp32_vectors(pixels: np.ndarray, spec) -> tuple[np.ndarray, dict]:
    from imgidx.indexer.embedders import embed_in_batches
    from imgidx.indexer.embedders import onnx_export as ox
    from imgidx.indexer.embedders.onnx_runtime import session

    sess = session(_fp32_file(OUT / "precision-gate" / "onnx", spec))
    raw = lambda x: sess.run(None, {ox.INPUT: x})[0]  # noqa: E731
    t = time.perf_counter()
    v = embed_in_batches(pixels, 16, 512, raw)
    return v, {"img_per_s": round(len(pixels) / (time.perf_counter() - t), 2)}


def fp32_reference(blobs: list[bytes], pixels: np.ndarray, spec) -> tuple[np.ndarray, int]:
    """fp32 vectors: bench/embed_cache.py's (Keras) where cached, else ONNX Runtime fp32 now (not cached: the
    cache holds Keras vectors; the two agree to cosine 0.9999999). Returns the vectors and how many were new."""
    from . import embed_cache

    folder = embed_cache.CACHE / f"vgg16-{LAYER}-fp32"
    paths = [folder / f"{hashlib.sha256(b).hexdigest()}.npy" for b in blobs]
    out = np.zeros((len(blobs), 512), np.float32)
    todo = []
    for i, p in enumerate(paths):
        if p.is_file():
            out[i] = np.load(p)
        else:
            todo.append(i)
    if todo:
        out[todo] = onnx_fp32_vectors(pixels[todo], spec)[0]
    return out, len(todo)


def offered(recipes: list[str]) -> list[str]:
    """The precisions this CPU runs natively, as gate variants: int8 (ONNX Runtime) recipes, bf16 where native."""
    from imgidx.indexer.embedders import native

    out = [f"int8 {r}" for r in recipes]
    if native("bf16"):
        out += ["bf16 keras"]
    return out


def run(args) -> dict:
    from bench import embed_cache
    from imgidx.indexer.embedders import cpu_flags
    from imgidx.indexer.images import prepare

    weights = need_weights()
    spec = embed_cache.embedder_for(LAYER, weights, "fp32").weights
    files = subset(args.photos)
    y = labels_of(files)
    blobs, source, kinds = edited(files, args.edited)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    pixels = np.stack([prepare(f.read_bytes()) for f in files] + [prepare(b) for b in blobs])
    all_blobs = [f.read_bytes() for f in files] + blobs
    ref_all, fresh = fp32_reference(all_blobs, pixels, spec)
    log(f"gate: {len(files)} photos + {len(blobs)} edited copies; fp32: {len(all_blobs) - fresh} cached, {fresh} now")
    ref_photos, ref_dups = ref_all[: len(files)], ref_all[len(files) :]
    dup = (all_blobs, np.array(list(range(len(files))) + source), ["original"] * len(files) + kinds)
    stamp = embed_cache.embedder_for(LAYER, weights, "fp32").stamp
    ref = outcomes(files, y, ref_photos, dup, ref_dups, stamp, "fp32")
    log(f"gate: fp32 {ref}")
    flags = cpu_flags()
    report = {
        "cpu_flags": sorted(f for f in flags if f.startswith(("avx", "amx"))),
        "photos": len(files),
        "edited_copies": len(blobs),
        "calibration_photos": args.calibration,
        "tolerance": TOLERANCE,
        "fp32": ref,
        "variants": {},
    }
    for name in args.variants or offered(args.recipes.split(",")):
        precision, kind = name.split(" ", 1)
        if precision == "int8":
            v, speed = int8_vectors(pixels, pixels[: args.calibration], spec, RECIPES[kind])
        elif precision == "fp32":
            v, speed = onnx_fp32_vectors(pixels, spec)
        else:
            v, speed = keras_vectors(pixels, spec, precision)
        got = outcomes(files, y, v[: len(files)], dup, v[len(files) :], stamp, name.replace(" ", "-"))
        cos = np.sum(v * ref_all, axis=1)
        report["variants"][name] = {**verdict(got, ref, cos), **speed}
        log(f"gate: {name} {report['variants'][name]}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=480, help="shared photos in the subset (half cats)")
    parser.add_argument("--edited", type=int, default=40, help="photos of the subset given 4 edited copies each")
    parser.add_argument("--calibration", type=int, default=32, help="int8: first photos of the subset calibrating")
    parser.add_argument("--recipes", default="default", help=f"int8 recipes to try: {','.join(RECIPES)}")
    parser.add_argument("--variants", nargs="*", help='e.g. "int8 default" "fp32 onnx" "bf16 keras"')
    parser.add_argument("--json", type=Path, default=OUT / "precision_gate.json")
    args = parser.parse_args(argv)
    try:
        report = run(args)
    except Skip as e:
        print(f"skipped: {e}")
        return 0
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
