"""A simulated reviewer teaches `imgidx clean`: flag precision/recall after 0, 10, 20, 30, 50 reviews.

On the 2,000 real cat/dog photos in ../shared (real conv weights, block5_pool, fp32, vectors from
bench/embed_cache.py, stored through the Store as `imgidx build --from-dir` stores them), a noisy collection
``recent_cats`` (cats + a few dogs) is cleaned while a reviewer answers from the truth, round after round of 10:

* **next** (what `imgidx review C --next 10` then `imgidx review C IDS --flag/--keep` do, through the same library
  calls: ``Index.review_next``, ``Index.review_photos``); after each round ``Index.clean`` (the reviews taught).
* **random**: 10 random unreviewed photos per round, the reviews taught the same way.
* **end, override only**: the 10 highest-ranked unreviewed photos of the cut's own ranking per round; each decision
  overrides that photo and nothing else (imgidx before reviews were labels).

For (a) ``recent_cats`` alone in the index (the seeds' loop: no rival collection) and (b) the same next to curated
``cat`` and ``dog`` collections (500 other photos each), over several draws: 300 cats + 20 dogs, and 320 photos with
5 % and 10 % dogs. Each row: precision/recall of ``photos[].flagged`` (every photo, reviewed ones included).

And the time a decision costs in the page (item 4 of issue 20): a 4,000-photo collection (synthetic vectors of the
index's dimension, 512 and 4,096) next to two others, the evidence computed once (what the service caches), then
per decision: store the review, re-judge the collection (``judged_report``) and pick the next batch.

Usage: python -m bench.review_loop [--draws 3] [--timing-only]   (writes bench/out/review_loop.json)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from bench.embed_cache import photo_files
from bench.quality import OUT, PHOTOS, WEIGHTS, cached_home

COUNTS = (0, 10, 20, 30, 50)
BATCH = 10
COLLECTION = "recent_cats"
# (cats, dogs) of recent_cats per draw kind: the case, then 320 photos with 5 % and 10 % noise
MIXES = ((300, 20), (304, 16), (288, 32))
BESIDE = 500  # photos of the curated `cat` and `dog` collections in case (b), none of them in recent_cats


def scores(flagged: dict[int, bool], truth: set[int]) -> dict:
    got = {pid for pid, f in flagged.items() if f}
    tp = len(got & truth)
    return {"flagged": len(got), "precision": round(tp / max(1, len(got)), 4), "recall": round(tp / len(truth), 4)}


def simulate(home: Path, truth: set[int], strategy: str, seed: int) -> list[dict]:
    """Review in rounds of BATCH with ``strategy``; the scores at each of COUNTS."""
    import imgidx

    idx = imgidx.open(home)
    rng = np.random.default_rng(seed)
    base = idx.clean(COLLECTION, use_reviews=False)
    ranking = [r.id for r in base.rows]  # most typical first
    cut = {r.id: r.flagged for r in base.rows}
    reviewed: dict[int, bool] = {}
    out = []
    for count in range(0, COUNTS[-1] + 1, BATCH):
        if count in COUNTS:
            # "end": override only (the cut's flags, each reviewed photo's decision)
            flagged = cut | reviewed if strategy == "end" else {r.id: r.flagged for r in idx.clean(COLLECTION).rows}
            out.append({"reviews": count, **scores(flagged, truth)})
        if count == COUNTS[-1]:
            break
        if strategy == "next":
            ids = [p.id for p in idx.review_next(COLLECTION, BATCH).photos]
        elif strategy == "random":
            open_ids = [pid for pid in ranking if pid not in reviewed]
            ids = [int(i) for i in rng.choice(open_ids, size=BATCH, replace=False)]
        else:
            ids = [pid for pid in reversed(ranking) if pid not in reviewed][:BATCH]
        answers = {pid: pid in truth for pid in ids}
        for decision, flag in (("flag", True), ("keep", False)):
            chosen = [pid for pid, f in answers.items() if f == flag]
            if chosen and strategy != "end":
                idx.review_photos(COLLECTION, chosen, decision, reviewer="simulated")
        reviewed |= answers
    return out


def cached(files: list[Path]) -> list[Path]:
    """The files whose vectors bench/embed_cache.py holds already (to run while it is still filling)."""
    from bench import embed_cache

    folder = embed_cache.cache_dir(embed_cache.embedder_for("block5_pool", WEIGHTS, "fp32"))
    return [f for f in files if (folder / f"{embed_cache.sha256(f)}.npy").is_file()]


def loop_draws(draws: int, beside: int = BESIDE, cached_only: bool = False) -> dict:
    cats, dogs = photo_files(PHOTOS / "cats"), photo_files(PHOTOS / "dogs")
    if cached_only:
        cats, dogs = cached(cats), cached(dogs)
    report: dict = {}
    for case in ("alone", "beside_cat_dog"):
        runs = []
        for n_cats, n_dogs in MIXES:
            for seed in range(draws):
                rng = np.random.default_rng(1000 * n_dogs + seed)
                c, d = rng.permutation(len(cats)), rng.permutation(len(dogs))
                groups = {COLLECTION: [cats[i] for i in c[:n_cats]] + [dogs[i] for i in d[:n_dogs]]}
                if case == "beside_cat_dog":
                    groups |= {"cat": [cats[i] for i in c[-beside:]], "dog": [dogs[i] for i in d[-beside:]]}
                strays = {str(f) for f in groups[COLLECTION][n_cats:]}
                run = {"mix": f"{n_cats} cats + {n_dogs} dogs", "seed": seed}
                for strategy in ("next", "random", "end"):
                    home = OUT / "review-loop" / f"{case}-{n_dogs}-{seed}"
                    cached_home(home, groups)  # fresh: no reviews of the strategy before
                    truth = _ids_of(home, strays)
                    t = time.monotonic()
                    run[strategy] = simulate(home, truth, strategy, seed)
                    run[f"{strategy}_seconds"] = round(time.monotonic() - t, 1)
                    shutil.rmtree(home, ignore_errors=True)
                print(json.dumps(_brief(case, run)), file=sys.stderr, flush=True)
                runs.append(run)
        report[case] = {"draws": runs, "summary": _summary(runs)}
    return report


def _ids_of(home: Path, paths: set[str]) -> set[int]:
    from imgidx.indexer.store import Store

    with Store(home, readonly=True) as store:
        rows = store.photo_rows(store.vector_ids(COLLECTION))
        return {pid for pid, row in rows.items() if str(Path(row["origin"]) / row["source_id"]) in paths}


def _brief(case: str, run: dict) -> dict:
    return {
        "case": case,
        "mix": run["mix"],
        "seed": run["seed"],
        **{s: [(r["precision"], r["recall"]) for r in run[s]] for s in ("next", "random", "end")},
    }


def _summary(runs: list[dict]) -> dict:
    """Per strategy and review count: mean, min and max of precision and recall over the draws."""
    out: dict = {}
    for strategy in ("next", "random", "end"):
        rows = []
        for i, count in enumerate(COUNTS):
            p = [r[strategy][i]["precision"] for r in runs]
            rc = [r[strategy][i]["recall"] for r in runs]
            rows.append(
                {
                    "reviews": count,
                    "precision_mean": round(float(np.mean(p)), 3),
                    "precision_min": min(p),
                    "recall_mean": round(float(np.mean(rc)), 3),
                    "recall_min": min(rc),
                    "both_0.95": sum(a >= 0.95 and b >= 0.95 for a, b in zip(p, rc, strict=True)),
                }
            )
        out[strategy] = rows
    return out


def decision_timing(n: int = 4000, dims: tuple[int, ...] = (512, 4096), decisions: int = 30) -> dict:
    """Per decision on an n-photo collection: store a review, re-judge (judged_report), pick the next 10."""
    from imgidx import ops
    from imgidx.indexer.records import Photo, Stamp
    from imgidx.indexer.store import Store

    out = {}
    for dim in dims:
        home = OUT / "review-timing" / str(dim)
        shutil.rmtree(home, ignore_errors=True)
        rng = np.random.default_rng(dim)
        centres = rng.normal(size=(3, dim)).astype(np.float32)
        with Store(home) as store:
            store.ensure_stamp(Stamp("vgg16", "block5_pool" if dim == 512 else "fc2", "random:0", dim, "fp32"))
            for c, name in enumerate(("big", "other_a", "other_b")):
                size = n if name == "big" else 2000
                vectors = np.abs(centres[c] + rng.normal(size=(size, dim)).astype(np.float32) * 2.0)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                ids = store.add_photos(Photo("folder", f"{name}{i}.jpg", name) for i in range(size))
                store.add_vectors([(pid, f"{name}{pid}.jpg", f"{name}{pid}") for pid in ids], vectors)
            store.save_index()
            t = time.perf_counter()
            evidence = ops.clean_evidence(store, "big")
            once = time.perf_counter() - t
            ids = list(evidence.ids)
            order = rng.permutation(len(ids))
            took, cpu = [], []
            for k in range(decisions):
                t, c = time.perf_counter(), time.process_time()
                ops.review(store, "big", ids[order[k]], "flag" if k % 3 == 0 else "keep", reviewer="bench")
                ops.judged_report(store, evidence)
                ops.review_queue(store, evidence, 10)
                took.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
        shutil.rmtree(home, ignore_errors=True)
        ms = np.array(took) * 1000
        out[f"{dim}-d"] = {
            "photos": n,
            "evidence_once_s": round(once, 2),
            "per_decision_ms_median": round(float(np.median(ms)), 1),
            "per_decision_ms_max": round(float(ms.max()), 1),
            # CPU seconds of this process (all its threads): what a decision costs without other jobs' load
            "per_decision_cpu_ms_median": round(float(np.median(cpu)) * 1000, 1),
            "per_decision_cpu_ms_max": round(float(np.max(cpu)) * 1000, 1),
            "decisions": decisions,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=3, help="draws of each mix")
    parser.add_argument("--timing-only", action="store_true", help="only the per-decision time")
    parser.add_argument("--no-timing", action="store_true", help="only the review loop")
    parser.add_argument("--beside", type=int, default=BESIDE, help="photos of `cat` and of `dog` in case (b)")
    parser.add_argument("--cached-only", action="store_true", help="draw from the photos cached already")
    args = parser.parse_args(argv)
    report: dict = {"cpu": "see README (figures name the CPU they were taken on)"}
    if not args.no_timing:
        report["decision_timing"] = decision_timing()
        print(json.dumps(report["decision_timing"]), file=sys.stderr, flush=True)
    if not args.timing_only:
        if not (PHOTOS.is_dir() and WEIGHTS.is_file()):
            print(f"review loop skipped: needs {PHOTOS} and {WEIGHTS}")
        else:
            report["loop"] = loop_draws(args.draws, args.beside, args.cached_only)
            report["loop_setup"] = {"draws_per_mix": args.draws, "beside": args.beside, "mixes": MIXES}
    OUT.mkdir(parents=True, exist_ok=True)
    name = "review_loop.json" if not args.timing_only else "review_timing.json"
    (OUT / name).write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "loop"}, indent=2))
    for case, data in report.get("loop", {}).items():
        print(case)
        for strategy, rows in data["summary"].items():
            cells = "  ".join(f"{r['reviews']}: {r['precision_mean']:.2f}/{r['recall_mean']:.2f}" for r in rows)
            print(f"  {strategy:7s} {cells}")
    print(f"written to {OUT / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
