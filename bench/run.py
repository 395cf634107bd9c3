"""`make bench` / `python -m bench.run [--only PART ...] [--quick]`: print a table per part and write
bench/results.json (generated: git-ignored). Parts run in the order given; each can run alone.

  model      every runtime x precision (bare, with the quality gate's verdict) and the build pipeline
  build      `imgidx build --from-dir` of 64 and 320 photos in fresh homes: the default build vs bare Keras fp32
  prep       image preparation img/s: ours vs the seeds' recipes, 1 core vs all cores
  download   photos/s from a local server adding 50 ms per photo vs the concurrency bound
  search     latency p50/p99, recall@10, memory per vector, per index kind at 10k / 100k / 1M
  coldstart  wall time of `imgidx info`, `imgidx similar --id`, `imgidx similar PHOTO`
  precision  bf16/fp16 vs fp32: cosine and quality (needs ../shared weights + photos)
  draft      draft vs plain JPEG decode: embedding cosine (needs ../shared weights + photos)
  scale      1M-photo store: time/RSS/disk per command; Ray vs local build ratio (README "Scaling")
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

from .common import ROOT, Options, Skip, machine

PARTS = ("model", "build", "prep", "download", "search", "coldstart", "precision", "draft", "scale")


def _part(name: str):
    from . import build_rate, coldstart, download, model, precision, prep, scale, search

    return {
        "model": model.run,
        "build": build_rate.run_part,
        "prep": prep.run,
        "download": download.run,
        "search": search.run,
        "coldstart": coldstart.run,
        "precision": precision.run_precision,
        "draft": precision.run_draft,
        "scale": scale.run,
    }[name]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run (default: all)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (10k/50k search, fewer photos)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.json"), help="JSON results (merged by part)")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    opts = Options(quick=args.quick)
    try:
        with open(args.out) as f:
            results = json.load(f)
    except (OSError, ValueError):
        results = {}
    results["machine"] = machine()
    for name in args.only:
        start = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            data, text = _part(name)(opts)
        except Skip as e:
            data, text = {"skipped": str(e)}, f"{name}: skipped ({e})\n"
        except Exception as e:  # noqa: BLE001 - one part's failure must not lose the others' results
            traceback.print_exc()
            data, text = {"failed": f"{type(e).__name__}: {e}"}, f"{name}: FAILED ({type(e).__name__}: {e})\n"
        data["seconds"] = round(time.perf_counter() - start, 1)
        data["quick"] = args.quick
        data["when"] = time.strftime("%Y-%m-%d %H:%M:%S")
        results[name] = data
        print(text, flush=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2, default=str)
    print(f"results: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
