"""Ray engine vs local engine: the same shared photos built by `imgidx build --from-dir` with each engine, in
alternating rounds, each into a fresh data home; photos/s of each and the Ray/local ratio (goal >= 0.8).

Usage: python -m bench.scale_ray [--photos 200] [--rounds 2] [--layer block5_pool] [--runtime keras]
                                 [--batch-size 64] [--json bench/out/scale_ray.json]

Three ways per round: `local`; `ray` (a local Ray started by the build itself: its start-up is part of the
build); `ray (running cluster)` (`--ray-address` of a Ray head this bench started once, as on a cluster that is
already up). Every build loads the model once (local: in the process; Ray: in its actor): that is in each time.
Photos/s is the build report's (photos embedded / seconds of the build, from the first download to the last
commit); `wall` adds the process start. Needs the `ray` extra and the shared photos (skips with the reason).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import OUT, WEIGHTS, Options, Skip, machine, photo_files, table

WAYS = ("local", "ray", "ray (running cluster)")


def _photo_dir(root: Path, n: int) -> Path:
    """n shared photos (cats and dogs interleaved) linked into cats/ and dogs/ collections."""
    folder = root / "photos"
    for f in photo_files(n):
        target = folder / f.parent.name / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(f)
    return folder


def _head(root: Path) -> tuple[subprocess.Popen, str]:
    """A Ray head with this machine's cores, in its own session (ended by its process group, never by name)."""
    port = "6390"
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={port}"]
    cmd += [f"--num-cpus={os.cpu_count() or 1}", "--include-dashboard=false", f"--temp-dir={root / 'ray'}"]
    log = root / "ray-head.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    end = time.monotonic() + 180
    while time.monotonic() < end:
        if "Ray runtime started" in log.read_text():
            return proc, f"127.0.0.1:{port}"
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    _end(proc)
    raise RuntimeError(f"the Ray head did not start:\n{log.read_text()[-2000:]}")


def _end(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # --ray-address alone says where
    # `ray start` (2.60) turns token authentication on; its drivers must then ask for it too
    return env | {"RAY_AUTH_MODE": "token", "TF_CPP_MIN_LOG_LEVEL": "2"} | extra


def _build(args: list[str], home: Path) -> dict:
    env = _env(IMGIDX_HOME=str(home))
    load = os.getloadavg()[0]  # the build's own processes are children and grandchildren: only the load before
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "imgidx", *args], env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError(f"imgidx {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    return {
        "photos_per_second": report["photos_per_second"],
        "embedded": report["embedded"] + report["reused"],
        "build_seconds": report["seconds"],
        "wall_seconds": round(wall, 1),
        "load_average_before": round(load, 1),
    }


def measure(photos: int, rounds: int, layer: str, runtime: str, batch_size: int, weights: str | None) -> dict:
    try:
        import ray.data  # noqa: F401
    except ImportError as e:
        raise Skip(f"needs the ray extra (pip install -e '.[ray]'): {e}") from None
    if weights is None:
        weights = str(WEIGHTS) if WEIGHTS.exists() and layer == "block5_pool" else "random:0"
    with tempfile.TemporaryDirectory(prefix="scale_ray-") as tmp:
        root = Path(tmp)
        folder = _photo_dir(root, photos)
        common = ["build", "--from-dir", str(folder), "--layer", layer, "--weights", weights]
        common += ["--runtime", runtime, "--batch-size", str(batch_size), "--json"]
        head, address = _head(root)
        try:
            runs: dict[str, list[dict]] = {w: [] for w in WAYS}
            for r in range(rounds):  # alternating, so a change in the machine's load falls on every way alike
                for way in WAYS:
                    extra = {"local": [], "ray": ["--engine", "ray"]}.get(
                        way, ["--engine", "ray", "--ray-address", address]
                    )
                    got = _build([*common, *extra], root / f"home-{r}-{WAYS.index(way)}")
                    print(f"[scale_ray] round {r + 1} {way}: {got}", file=sys.stderr, flush=True)
                    runs[way].append(got)
        finally:
            _end(head)
    rate = {w: statistics.median(x["photos_per_second"] for x in runs[w]) for w in WAYS}
    return {
        "photos": photos,
        "rounds": rounds,
        "layer": layer,
        "weights": "shared ImageNet conv weights" if weights == str(WEIGHTS) else weights,
        "runtime": runtime,
        "batch_size": batch_size,
        "photos_per_second": {w: round(v, 2) for w, v in rate.items()},
        "ratio_ray_to_local": round(rate["ray"] / rate["local"], 2),
        "ratio_running_cluster_to_local": round(rate["ray (running cluster)"] / rate["local"], 2),
        "runs": runs,
        "machine": machine(),
    }


def render(d: dict) -> str:
    m = d["machine"]
    rows = [
        (
            w,
            d["photos_per_second"][w],
            f"{d['photos_per_second'][w] / d['photos_per_second']['local']:.2f}",
            statistics.median(x["wall_seconds"] for x in d["runs"][w]),
            max(x["load_average_before"] for x in d["runs"][w]),
        )
        for w in WAYS
    ]
    title = (
        f"Ray vs local engine: {d['photos']} shared photos, {d['layer']} ({d['weights']}), {d['runtime']}, batch "
        f"{d['batch_size']}, median of {d['rounds']} alternating rounds; {m['cpu']}, {m['cores']} cores"
    )
    return table(title, ["engine", "photos/s", "vs local", "wall s", "max load avg before"], rows)


def run(opts: Options) -> tuple[dict, str]:
    """bench.run part: 200 photos (60 with --quick), 2 rounds."""
    data = measure(60 if opts.quick else 200, 2, "block5_pool", "keras", 64, None)
    return data, render(data)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale_ray", description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--layer", default="block5_pool")
    p.add_argument("--weights", default=None, help="default: the shared ImageNet conv weights for block5_pool")
    p.add_argument("--runtime", default="keras", choices=("keras", "onnx"))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", default=str(OUT / "scale_ray.json"))
    args = p.parse_args(argv)
    try:
        data = measure(args.photos, args.rounds, args.layer, args.runtime, args.batch_size, args.weights)
    except Skip as e:
        print(f"scale_ray: skipped ({e})")
        return 0
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(data, indent=2))
    print(render(data))
    print(f"results: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
