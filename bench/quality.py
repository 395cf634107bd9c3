"""`make quality`: imgidx's clean/classify/audit proven on the 2,000 real cat/dog photos in ../shared.

Every photo is embedded once with the real ImageNet conv weights (block5_pool, fp32) and cached by file sha256
(bench/embed_cache.py, shared with the duplicates bench); the indexes below are built from those vectors through
the Store (what `imgidx build --from-dir` stores for the same files), then the CLI runs against them. Reported on
stdout and in bench/out/quality.json:
  - held-out accuracy of a linear classifier on a random 70/30 split (target >= 0.98);
  - kNN precision@10 over all photos (target >= 0.95);
  - clean (`imgidx clean maybe_cat --json`), 5 draws each: `maybe_cat` = 500 cats + 25 dogs, or 500 cats + 25
    generated non-animal pictures, next to `cat` and `dog` collections of 500 each (held out from maybe_cat):
    ROC AUC of the ranking and precision/recall of the automatically flagged set, for the seed's loop
    (--method centroid), the default cut (other collections), and the default cut with a saved cat/dog
    classifier (`imgidx train pets cat dog`). Targets: dogs AUC >= 0.98, P and R >= 0.85; non-animals AUC 1.0,
    P >= 0.9;
  - audit: 5% of labels swapped between cats and dogs, how many it recovers.
Usage: python -m bench.quality [--home DIR] [--precision fp32|bf16] [--draws 5]
Warm the cache first (hours of CPU at 3-4 photos/s are spent once): nice python -m bench.embed_cache DIR...
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from bench.embed_cache import photo_files

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PHOTOS = SHARED / "photos" / "catsdogs"
WEIGHTS = SHARED / "weights" / "vgg16_notop_imagenet.weights.h5"
OUT = ROOT / "bench" / "out"


SCENES = ("landscape", "shapes")


def imgidx_here(home: Path, *args: str) -> str:
    """`imgidx --home HOME ARGS…` run in this process (the same typer app; no interpreter start-up per call)."""
    from typer.testing import CliRunner

    from imgidx.cli.app import app

    done = CliRunner().invoke(app, ["--home", str(home), *args])
    if done.exit_code != 0:
        raise SystemExit(f"imgidx {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def draw_scene(family: str, seed: int, size: tuple[int, int] = (400, 300)):
    """A synthetic non-animal picture: the demo's patterns (stripes, rings, checks), or a landscape (sky gradient,
    sun, layered hills) or a still life of random shapes on a shaded background."""
    from PIL import Image, ImageDraw, ImageFilter

    from imgidx.search.demo import FAMILIES, draw

    if family in FAMILIES:
        return draw(family, seed, size)
    rng = np.random.default_rng(seed)
    w, h = size
    top, bottom = rng.uniform(40, 230, 3), rng.uniform(40, 230, 3)
    t = np.linspace(0, 1, h)[:, None, None]
    img = Image.fromarray(np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3)).astype(np.uint8), "RGB")
    pen = ImageDraw.Draw(img)
    colour = lambda: tuple(int(c) for c in rng.integers(0, 256, 3))  # noqa: E731
    if family == "landscape":
        r = int(rng.integers(15, 45))
        cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h // 2))
        pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, int(rng.integers(180, 250)), 80))
        for layer in range(int(rng.integers(2, 5))):
            base = h * (0.45 + 0.15 * layer)
            xs = np.linspace(0, w, 9)
            ys = base + rng.normal(0, h * 0.08, len(xs))
            pen.polygon([(0, h), *zip(xs.tolist(), ys.tolist(), strict=True), (w, h)], fill=colour())
    else:  # shapes
        for _ in range(int(rng.integers(4, 10))):
            x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
            box = [x0, y0, x0 + int(rng.integers(30, w // 2)), y0 + int(rng.integers(30, h // 2))]
            (pen.ellipse if rng.random() < 0.5 else pen.rectangle)(box, fill=colour(), outline=colour(), width=3)
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(1)), dtype=np.float32) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def non_animal_files(folder: Path, per_family: int = 8) -> list[Path]:
    """per_family pictures of each of the 5 non-animal families, written once (same seeds: same files)."""
    from imgidx.search.demo import FAMILIES

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for f_i, family in enumerate((*FAMILIES, *SCENES)):
        for i in range(per_family):
            path = folder / f"{family}_{i:02d}.jpg"
            if not path.is_file():
                draw_scene(family, 5000 + 100 * f_i + i).save(path, quality=90)
            out.append(path)
    return out


def build_index(home: Path, precision: str) -> None:
    """An index of the shared photos (collections cats, dogs) and the generated non-animals (non_animal)."""
    t = time.monotonic()
    groups = {
        "cats": photo_files(PHOTOS / "cats"),
        "dogs": photo_files(PHOTOS / "dogs"),
        "non_animal": non_animal_files(OUT / "non_animals"),
    }
    n = cached_home(home, groups, precision)
    print(f"index: {n} photos from cached vectors ({time.monotonic() - t:.0f} s)", file=sys.stderr)


def cached_home(home: Path, groups: dict[str, list[Path]], precision: str = "fp32") -> int:
    """A fresh index in ``home`` with one collection per group of files, from bench/embed_cache vectors: the
    rows `imgidx build --from-dir` would store for the same files (folder photos, same stamp), without the
    hours of embedding."""
    import shutil

    from bench import embed_cache
    from imgidx.indexer.records import Photo
    from imgidx.indexer.store import Store

    shutil.rmtree(home, ignore_errors=True)
    embedder = embed_cache.embedder_for("block5_pool", WEIGHTS, precision)
    with Store(home) as store:
        store.ensure_stamp(embedder.stamp)
        for name, files in groups.items():
            vectors = embed_cache.vectors(files, precision=precision, log=False)
            ids = store.add_photos(
                Photo("folder", f.name, name, origin=str(f.parent), path=str(f), title=f.stem) for f in files
            )
            store.add_vectors(
                [(pid, str(f), embed_cache.sha256(f)) for pid, f in zip(ids, files, strict=True)], vectors
            )
        store.save_index()
        return len(store.vector_ids())


def load(home: Path) -> dict[str, tuple[list[int], np.ndarray]]:
    from imgidx.indexer.store import Store

    with Store(home, readonly=True) as store:
        return {
            name: (ids, store.vectors(ids))
            for name in ("cats", "dogs", "non_animal")
            for ids in [store.vector_ids(name)]
        }


def classify_70_30(cats: np.ndarray, dogs: np.ndarray, seed: int = 0) -> float:
    from imgidx.search.classifier import train_classifier

    labels = ["cat"] * len(cats) + ["dog"] * len(dogs)
    return train_classifier(np.concatenate([cats, dogs]), labels, test_size=0.3, seed=seed).accuracy


def knn_precision_at_10(cats: np.ndarray, dogs: np.ndarray) -> float:
    from imgidx.search.audit import nearest_neighbours

    labels = np.array([0] * len(cats) + [1] * len(dogs))
    nn = nearest_neighbours(np.concatenate([cats, dogs]), 10)
    return float((labels[nn] == labels[:, None]).mean())


METHODS = {  # what each clean run is called in the report, and the CLI options that ask for it
    "seed_loop": ("--method", "centroid"),
    "other_collections": ("--classifier", "none"),
    "other_collections_and_classifier": (),  # after `imgidx train pets cat dog`: auto finds it
}


def clean_draws(
    cats: list[Path], dogs: list[Path], outliers: list[Path], tag: str, draws: int = 5, size: int = 500, odd: int = 25
) -> dict:
    """`imgidx clean maybe_cat` in an index of cat (``size`` cats), dog (``size`` dogs) and maybe_cat (``size``
    other cats + ``odd`` of ``outliers``: dogs not in `dog` when ``outliers`` is ``dogs``), ``draws`` draws."""
    runs: dict[str, list[dict]] = {m: [] for m in METHODS}
    for seed in range(draws):
        rng = np.random.default_rng(seed)
        c, d = rng.permutation(len(cats)), rng.permutation(len(dogs))
        dog = [dogs[i] for i in d[:size]]
        strays = (
            [dogs[i] for i in d[size : size + odd]]
            if outliers is dogs
            else [outliers[i] for i in rng.permutation(len(outliers))[:odd]]
        )
        maybe_cat = [cats[i] for i in c[size : 2 * size]] + strays
        home = OUT / "quality-clean" / f"{tag}-{seed}"
        cached_home(home, {"cat": [cats[i] for i in c[:size]], "dog": dog, "maybe_cat": maybe_cat})
        truth = {str(f) for f in strays}
        for method, options in METHODS.items():
            if method == "other_collections_and_classifier":
                imgidx_here(home, "train", "pets", "cat", "dog", "--json")
            report = json.loads(imgidx_here(home, "clean", "maybe_cat", *options, "--json"))
            runs[method].append(clean_scores(report, truth))
    return {method: _summary(r) for method, r in runs.items()}


def clean_scores(report: dict, truth: set[str]) -> dict:
    """ROC AUC of the ranking (rank 1 = most typical) and precision/recall of the flagged photos."""
    from collections import Counter

    from sklearn.metrics import roc_auc_score

    rows = report["photos"]
    is_odd = np.array([r["path"] in truth for r in rows])
    flagged = np.array([r["flagged"] for r in rows])
    tp = int((flagged & is_odd).sum())
    # the first clause of each reason ("nearer to dog", "classifier says dog", "z 4.1 from the centre"), counted
    # each clause of the flagged rows' reasons without its numbers: "nearer to dog", "of neighbours in dog", …
    kinds = Counter(
        " ".join(re.sub(r"\(.*?\)|[\d.]+", "", clause).split())
        for r in rows
        if r["flagged"]
        for clause in r["reason"].split("; ")
    )
    return {
        "photos": len(rows),
        "outliers": int(is_odd.sum()),
        "auc": round(float(roc_auc_score(is_odd, [r["rank"] for r in rows])), 4),
        "flagged": int(flagged.sum()),
        "flagged_precision": round(tp / max(1, int(flagged.sum())), 4),
        "flagged_recall": round(tp / int(is_odd.sum()), 4),
        "method": report.get("method"),
        "rivals": report.get("rivals"),
        "allies": report.get("allies"),
        "reasons": dict(kinds),
        "missed": [
            f"z {r['z']:.1f}, margin {r.get('margin')}, {r.get('neighbours_elsewhere')} neighbours elsewhere"
            for r in rows
            if r["path"] in truth and not r["flagged"]
        ],
        "false_flags": [r["reason"] for r in rows if r["flagged"] and r["path"] not in truth],
    }


def _summary(runs: list[dict]) -> dict:
    summary = {
        f"{key}_mean": round(float(np.mean([r[key] for r in runs])), 4)
        for key in ("auc", "flagged_precision", "flagged_recall")
    }
    return {**summary, "auc_min": min(r["auc"] for r in runs), "draws": runs}


def audit_swaps(cats: np.ndarray, dogs: np.ndarray, share: float = 0.05, seed: int = 0) -> dict:
    from imgidx.search.audit import audit_labels

    rng = np.random.default_rng(seed)
    labels = np.array(["cat"] * len(cats) + ["dog"] * len(dogs), dtype=object)
    swapped = rng.choice(len(labels), size=int(share * len(labels)), replace=False)
    labels[swapped] = np.where(labels[swapped] == "cat", "dog", "cat")
    result = audit_labels(np.concatenate([cats, dogs]), list(labels))
    flagged = {p.index for p in result.suspects}
    found = len(flagged & set(swapped.tolist()))
    return {
        "swapped": len(swapped),
        "recovered": found,
        "recall": round(found / len(swapped), 4),
        "flagged": len(flagged),
        "precision": round(found / max(1, len(flagged)), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=OUT / "quality-home")
    parser.add_argument("--precision", default="fp32", help="of the cached vectors (bench/embed_cache.py)")
    parser.add_argument("--draws", type=int, default=5, help="random draws of each clean scenario")
    parser.add_argument("--only-clean", action="store_true", help="only the clean scenarios")
    args = parser.parse_args(argv)
    if not (PHOTOS.is_dir() and WEIGHTS.is_file()):
        print(f"skipped: needs {PHOTOS} and {WEIGHTS} (see ../shared/README.md)")
        return 0
    cat_files, dog_files = photo_files(PHOTOS / "cats"), photo_files(PHOTOS / "dogs")
    non_animals = non_animal_files(OUT / "non_animals")
    report: dict = {}
    if not args.only_clean:
        build_index(args.home, args.precision)
        data = load(args.home)
        cats, dogs, others = data["cats"][1], data["dogs"][1], data["non_animal"][1]
        report.update(
            photos={"cats": len(cats), "dogs": len(dogs), "non_animal": len(others)},
            classifier_70_30_accuracy=round(classify_70_30(cats, dogs), 4),
            knn_precision_at_10=round(knn_precision_at_10(cats, dogs), 4),
            audit_5pct_swapped=audit_swaps(cats, dogs),
        )
    t = time.monotonic()
    report["clean_500_cats_25_dogs"] = clean_draws(cat_files, dog_files, dog_files, "dogs", args.draws)
    report["clean_500_cats_25_non_animals"] = clean_draws(cat_files, dog_files, non_animals, "non_animals", args.draws)
    report["clean_seconds"] = round(time.monotonic() - t, 1)
    report["non_animal_pictures"] = (
        "demo.draw stripes/rings/checks + landscape/shapes scenes, 8 each (bench/quality.py)"
    )
    report["targets"] = {
        "classifier": 0.98,
        "knn_precision_at_10": 0.95,
        "clean_dogs": {"auc": 0.98, "precision": 0.85, "recall": 0.85},
        "clean_non_animals": {"auc": 1.0, "precision": 0.9},
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "quality.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"written to {OUT / 'quality.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
