"""`make quality`: imgidx's clean/classify/audit proven on the 2,000 real cat/dog photos in ../shared.

Builds (or reuses) an index of ../shared/photos/catsdogs with the real ImageNet conv weights (block5_pool) through
the normal `imgidx build --from-dir` path, then reports, on stdout and in bench/out/quality.json:
  - held-out accuracy of a linear classifier on a random 70/30 split (target >= 0.98);
  - kNN precision@10 over all photos (target >= 0.95);
  - clean: 500 cats + 25 dogs, and 500 cats + 25 generated non-animal pictures: ROC AUC of the distance ranking
    (target >= 0.97) and precision/recall of the automatically flagged set;
  - audit: 5% of labels swapped between cats and dogs, how many it recovers.
Usage: python -m bench.quality [--home DIR] [--precision fp32|bf16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PHOTOS = SHARED / "photos" / "catsdogs"
WEIGHTS = SHARED / "weights" / "vgg16_notop_imagenet.weights.h5"
OUT = ROOT / "bench" / "out"


def imgidx(home: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "imgidx", "--home", str(home), *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return done.stdout


SCENES = ("landscape", "shapes")


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


def build_index(home: Path, extra: list[str]) -> None:
    """Index the shared photos and the generated non-animal pictures (an already built home is reused)."""
    from imgidx.search.demo import FAMILIES, draw

    others = home.parent / "non_animals" / "non_animal"
    others.mkdir(parents=True, exist_ok=True)
    for i in range(25):
        draw(FAMILIES[i % 3], 5000 + i).save(others / f"pattern_{i:02d}.jpg", quality=90)
    args = ["--weights", str(WEIGHTS), "--layer", "block5_pool", "--json", *extra]
    t = time.monotonic()
    report = json.loads(imgidx(home, "build", "--from-dir", str(PHOTOS), *args))
    report2 = json.loads(imgidx(home, "build", "--from-dir", str(others.parent), *args))
    print(
        f"index: {report['index']['photos']} photos ({report['embedded'] + report2['embedded']} embedded now, "
        f"{time.monotonic() - t:.0f} s)",
        file=sys.stderr,
    )


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


def clean_scores(inliers: np.ndarray, outliers: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score

    from imgidx.search.cleanup import clean_ranking

    vectors = np.concatenate([inliers, outliers])
    truth = np.array([0] * len(inliers) + [1] * len(outliers))
    result = clean_ranking(vectors)
    flagged = result.flagged
    tp = int((flagged & (truth == 1)).sum())
    return {
        "photos": len(vectors),
        "outliers": len(outliers),
        "auc": round(float(roc_auc_score(truth, result.distances)), 4),
        "flagged": int(flagged.sum()),
        "flagged_precision": round(tp / max(1, int(flagged.sum())), 4),
        "flagged_recall": round(tp / len(outliers), 4),
        "passes": result.iterations_run,
    }


def over_draws(cats: np.ndarray, outliers: np.ndarray, draws: int = 5) -> dict:
    """clean_scores on several random draws: one draw of 25 outliers is noisy (AUC 0.955-0.981 seen here)."""
    runs = []
    for seed in range(draws):
        rng = np.random.default_rng(seed)
        picked = outliers[rng.choice(len(outliers), 25, replace=False)] if len(outliers) > 25 else outliers
        runs.append(clean_scores(cats[rng.choice(len(cats), 500, replace=False)], picked))
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
    parser.add_argument("--precision", default=None, help="passed to imgidx build when the build supports it")
    args = parser.parse_args(argv)
    if not (PHOTOS.is_dir() and WEIGHTS.is_file()):
        print(f"skipped: needs {PHOTOS} and {WEIGHTS} (see ../shared/README.md)")
        return 0
    build_index(args.home, ["--precision", args.precision] if args.precision else [])
    data = load(args.home)
    cats, dogs, others = data["cats"][1], data["dogs"][1], data["non_animal"][1]
    report = {
        "photos": {"cats": len(cats), "dogs": len(dogs), "non_animal": len(others)},
        "classifier_70_30_accuracy": round(classify_70_30(cats, dogs), 4),
        "knn_precision_at_10": round(knn_precision_at_10(cats, dogs), 4),
        "clean_500_cats_25_dogs": over_draws(cats, dogs),
        "clean_500_cats_25_non_animals": over_draws(cats, others),
        "audit_5pct_swapped": audit_swaps(cats, dogs),
        "targets": {"classifier": 0.98, "knn_precision_at_10": 0.95, "clean_auc": 0.97},
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "quality.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"written to {OUT / 'quality.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
