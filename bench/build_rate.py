"""The build as a user meets it: `imgidx build --from-dir` of 64 and of 320 shared photos into two fresh data
homes, the rate of the 256-photo difference (fixed costs — start-up, model load, ONNX export, int8 calibration —
cancel out), for the default build and each precision asked explicitly, against a bare Keras fp32 model call
(same layer, batch 64, in-memory photos) measured in the same run. Rounds alternate the variants, so background
load on a shared machine hits each alike; ratios from one run are what to read.

Every build runs as a real `imgidx` subprocess with one user cache for the whole run (XDG_CACHE_HOME under
bench/out); an int8 home calibrates once (IMGIDX_INT8_SHARED=1 in the environment would share one model across
the homes instead, and then the first home alone pays for it: the difference goes wrong, even negative). The two
homes start with the same photos, so the user cache's memo of models by calibration photos is emptied before each
build: every home pays its calibration, as a user's first home of new photos does. The calibration's own cost is
reported from `imgidx info` (int8_calibration.seconds).

Usage: python -m bench.build_rate [--rounds 2] [--layer fc2] [--weights random:0] [--variants default int8 fp32]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from imgidx.indexer.config import Settings
from imgidx.indexer.embedders.onnx_export import memo_folder

from .common import OUT, Others, photo_files, rate, table

SMALL, LARGE = 64, 320
VARIANTS = {  # name -> extra `imgidx build` options
    "default": [],
    "int8": ["--precision", "int8"],
    "fp32": ["--precision", "fp32"],
    "fp32 onnx": ["--precision", "fp32", "--runtime", "onnx"],
    "bf16": ["--precision", "bf16"],
}


def build_seconds(folder: Path, options: list[str], layer: str, weights: str, env: dict) -> tuple[float, dict]:
    """Wall seconds of one `imgidx build --from-dir folder` into a fresh home, and its `info --json`."""
    home = Path(tempfile.mkdtemp(prefix="home-", dir=OUT))
    try:
        cmd = [sys.executable, "-m", "imgidx", "--home", str(home)]
        build = [*cmd, "build", "--from-dir", str(folder), "--layer", layer, "--weights", weights, *options, "--json"]
        # the same first photos in both homes: without this the second would copy the first's int8 model
        shutil.rmtree(memo_folder(Settings.from_env(env).cache_dir), ignore_errors=True)
        start = time.perf_counter()
        done = subprocess.run(build, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(build)} failed:\n{done.stderr[-2000:]}")
        info = json.loads(subprocess.run([*cmd, "info", "--json"], env=env, capture_output=True, text=True).stdout)
        return seconds, info
    finally:
        shutil.rmtree(home, ignore_errors=True)


@functools.lru_cache
def _keras_fp32(layer: str, weights: str):
    from imgidx.indexer.embedders import make
    from imgidx.indexer.embedders.weights import resolve

    spec = resolve(weights, layer, Path("~/.keras").expanduser(), "")
    return make("vgg16", layer, spec, precision="fp32", batch_size=64, runtime="keras").load()


def bare_keras_fp32(files: list[Path], layer: str, weights: str, seconds: float) -> float:
    """img/s of the bare Keras fp32 model call at batch 64 on in-memory photos (what imgidx ran before)."""
    from imgidx.indexer.images import prepare

    emb = _keras_fp32(layer, weights)
    x = np.stack([prepare(f.read_bytes()) for f in files[:64]])
    emb.embed(x)
    return rate(lambda: len(emb.embed(x)), min_seconds=seconds)


def run(args) -> dict:
    from .model import _folder

    OUT.mkdir(parents=True, exist_ok=True)
    files = photo_files(LARGE)
    small, large = _folder(files[:SMALL]), _folder(files)
    env = {**os.environ, "XDG_CACHE_HOME": str(OUT / "build-rate-cache")}
    got: dict[str, dict] = {v: {"small_s": [], "large_s": [], "rate": [], "load_1m": []} for v in args.variants}
    bare, others, info = [], [], {}
    try:
        for _ in range(args.rounds):
            with Others() as o:
                bare.append(bare_keras_fp32(files, args.layer, args.weights, args.bare_seconds))
            others.append(round(o.cores, 2))
            for v in args.variants:
                s, _ = build_seconds(small, VARIANTS[v], args.layer, args.weights, env)
                t, info[v] = build_seconds(large, VARIANTS[v], args.layer, args.weights, env)
                got[v]["small_s"].append(round(s, 1))
                got[v]["large_s"].append(round(t, 1))
                got[v]["rate"].append(round((LARGE - SMALL) / (t - s), 2))
                got[v]["load_1m"].append(round(os.getloadavg()[0], 1))  # builds are subprocesses: load, not Others
        with Others() as o:
            bare.append(bare_keras_fp32(files, args.layer, args.weights, args.bare_seconds))
        others.append(round(o.cores, 2))
    finally:
        shutil.rmtree(small, ignore_errors=True)
        shutil.rmtree(large, ignore_errors=True)
    keras = statistics.median(bare)
    for v, g in got.items():
        g["median_rate"] = statistics.median(g["rate"])
        g["vs_bare_keras_fp32"] = round(g["median_rate"] / keras, 2)
        g["precision"] = (info[v].get("stamp") or {}).get("precision")
        g["int8_calibration"] = info[v].get("int8_calibration")
    return {
        "layer": args.layer,
        "weights": args.weights,
        "bare_keras_fp32": [round(b, 2) for b in bare],
        "bare_others_cores": others,
        "builds": got,
    }


def run_part(opts) -> tuple[dict, str]:
    """`python -m bench.run --only build` (--quick: one round, the default build only)."""
    args = argparse.Namespace(
        rounds=1 if opts.quick else 2,
        layer="fc2",
        weights="random:0",
        variants=["default"] if opts.quick else ["default", "int8", "fp32 onnx"],
        bare_seconds=5.0 if opts.quick else 10.0,
    )
    result = run(args)
    return result, render(result, args)


def render(result: dict, args) -> str:
    others = " ".join(f"{c:.2f} cores" for c in result["bare_others_cores"])
    rows = [("bare Keras fp32 model call", " ".join(f"{b:.2f}" for b in result["bare_keras_fp32"]), "1", others)]
    for v, g in result["builds"].items():
        rows.append(
            (
                f"build {v} ({g['precision']}): rate of the {LARGE - SMALL}-photo difference",
                " ".join(f"{r:.2f}" for r in g["rate"]),
                f"{g['vs_bare_keras_fp32']:.2f}x",
                " ".join(f"load {c}" for c in g["load_1m"]),
            )
        )
    title = f"build rate: fresh homes of {SMALL} and {LARGE} photos, {args.layer}, weights {args.weights}"
    header = ["what", "img/s per round", "vs bare Keras fp32", "others (bare) / load average (builds)"]
    return table(title, header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--layer", default="fc2")
    parser.add_argument("--weights", default="random:0", help="random:0 has the same FLOPs as imagenet")
    parser.add_argument("--variants", nargs="+", default=["default", "int8", "fp32 onnx"], choices=list(VARIANTS))
    parser.add_argument("--bare-seconds", type=float, default=10.0)
    parser.add_argument("--json", type=Path, default=OUT / "build_rate.json")
    args = parser.parse_args(argv)
    result = run(args)
    args.json.write_text(json.dumps(result, indent=2))
    print(render(result, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
