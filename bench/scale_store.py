"""`python -m bench.scale_store [--n 1000000] [--home DIR] [--keep]`: a store of N synthetic photos, and the time
and peak memory of each everyday command on it, each a real `imgidx` subprocess.

The store is filled through the real write path (Catalog.add_photos, Store.insert_vectors: the vector file, then
SQLite) in batches of one 4,000-photo collection, without the model: the vectors are fc2-like (a few hundred
random ReLU centres + noise, ReLU, unit length), so an approximate index's recall means something. The FAISS
index is then built once (`Store.rebuild_index`, what `imgidx reindex` does). Writes bench/out/scale_store.json
and prints a table. Run the 1M fill under `nice -n 5`; it needs ~10 GB of disk in --home.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import OUT, ROOT, machine, table

COLLECTION = 4000
CENTRES = 300
DIM = 4096
GOAL_S, GOAL_RSS_GB, GOAL_DISK_GB = 2.0, 8.0, 10.0
TIME = "/usr/bin/time"


def synthetic(start: int, n: int, centres: np.ndarray, seed: int) -> np.ndarray:
    """Rows start..start+n: photo i belongs to collection i // COLLECTION, whose centre is one of `centres`; 5%
    of each collection come from another centre (the outliers clean should find)."""
    rng = np.random.default_rng(seed + start)
    ids = np.arange(start, start + n)
    centre = (ids // COLLECTION) % len(centres)
    stray = rng.random(n) < 0.05
    centre[stray] = rng.integers(0, len(centres), int(stray.sum()))
    v = centres[centre] + rng.standard_normal((n, DIM), dtype=np.float32) * np.float32(0.6)
    np.maximum(v, 0, out=v)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def centres_for(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((CENTRES, DIM), dtype=np.float32)
    return np.maximum(c, 0) * np.float32(1.5)  # sparse-ish, like fc2 after ReLU


def fill(home: Path, n: int, *, seed: int = 0) -> dict:
    from imgidx.indexer.records import Photo, Stamp
    from imgidx.indexer.store import Store

    photo = home / "photo.jpg"  # every synthetic photo points at one small real file (export links it)
    home.mkdir(parents=True, exist_ok=True)
    _tiny_jpeg(photo)
    centres = centres_for(seed)
    t0 = time.perf_counter()
    with Store(home) as s:
        s.ensure_stamp(Stamp(model="vgg16", layer="fc2", weights="random:0", dim=DIM, precision="fp32"))
        for start in range(0, n, COLLECTION):
            m = min(COLLECTION, n - start)
            name = f"c{start // COLLECTION:04d}"
            photos = [
                Photo(
                    source="folder",
                    origin=str(home),
                    source_id=f"{i}.jpg",
                    collection=name,
                    path=str(photo),
                    title=f"photo {i}",
                    owner="bench",
                    license=4,
                )
                for i in range(start, start + m)
            ]
            ids = s.add_photos(photos)
            v = synthetic(start, m, centres, seed)
            s.insert_vectors([(pid, str(photo), f"{pid:064x}") for pid in ids], v)
            if start // COLLECTION % 25 == 0:
                print(f"[scale] {start + m:,}/{n:,} photos, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        filled = time.perf_counter() - t0
        t1 = time.perf_counter()
        s.rebuild_index()
        indexed = time.perf_counter() - t1
        kind = s.index_kind
    return {"fill_s": round(filled, 1), "index_s": round(indexed, 1), "requested_kind": kind}


def _tiny_jpeg(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (64, 48), (120, 90, 60)).save(path, "JPEG")


def run_cli(home: Path, *args: str, importtime: bool = False, python: str | None = None, output: bool = False) -> dict:
    """Wall time and peak RSS of one `imgidx` subprocess (os.wait4: that child's own rusage). python: another
    environment's interpreter (another version of imgidx); output: keep the command's stdout in the result."""
    env = {**os.environ, "IMGIDX_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2"}
    if python is None:
        env["PYTHONPATH"] = str(ROOT)  # this checkout; another interpreter imports its own
    # /usr/bin/time's %M: a child forked from a big parent inherits its RSS high-water mark until exec
    cmd = [TIME, "-f", "maxrss_kb %M", python or sys.executable, *(["-X", "importtime"] if importtime else [])]
    cmd += ["-m", "imgidx"]
    cmd += args
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as errf:
        busy0 = _busy_seconds()
        start = time.perf_counter()
        # another interpreter runs from a neutral folder: `-m` puts the working folder first on sys.path
        cwd = None if python is None else tempfile.gettempdir()
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=errf, cwd=cwd)
        _, status, usage = os.wait4(p.pid, 0)  # this child's own peak RSS (RUSAGE_CHILDREN is a max over all)
        wall = time.perf_counter() - start
        others = max(0.0, (_busy_seconds() - busy0 - usage.ru_utime - usage.ru_stime) / wall)
        p.returncode = rc = os.waitstatus_to_exitcode(status)
        errf.seek(0)
        err = errf.read()
        out.seek(0)
        stdout = out.read() if output else b""
    tail = err.decode(errors="replace").strip().splitlines()
    rss = int(tail.pop().split()[-1]) if tail and tail[-1].startswith("maxrss_kb") else usage.ru_maxrss
    err = "\n".join(tail).encode()
    result = {"s": round(wall, 2), "peak_rss_gb": round(rss / 2**20, 2), "rc": rc, "others_cores": round(others, 1)}
    if rc != 0:
        result["error"] = (err.decode(errors="replace").strip().splitlines() or ["?"])[-1][:300]
    if output:
        result["stdout"] = stdout
    if importtime:
        text = err.decode(errors="replace")
        result["imports_tensorflow"] = any(
            line.split("|")[-1].strip().split(".")[0] in ("tensorflow", "keras") for line in text.splitlines()[1:]
        )
    return result


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (from /proc/stat): minus the child's own, what others used."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def measure(home: Path, n: int, save, before_verify) -> dict:
    from imgidx.indexer.store import Store

    with Store(home, readonly=True) as s:
        some = s.db.execute("SELECT photo_id FROM vectors ORDER BY photo_id LIMIT 1 OFFSET ?", (n // 2,)).fetchone()[0]
        names = s.collection_names()
    a, b = names[len(names) // 2], names[len(names) // 2 + 1]
    export_dir = home.parent / f"{home.name}-export"
    shutil.rmtree(export_dir, ignore_errors=True)
    cases = {  # the whole-store verify last: the others are the everyday commands
        "info": ("info",),
        "similar --id": ("similar", "--id", str(some), "--json"),
        f"similar --id --in (one {COLLECTION:,}-photo collection)": ("similar", "--id", str(some), "--in", a),
        "duplicates (one collection)": ("duplicates", a, "--no-pixel-check"),
        "train (two collections)": ("train", "bench", a, b),
        "export (one collection)": ("export", str(export_dir), a),
        "clean (one collection)": ("clean", a, "--classifier", "none"),
        "verify (whole store)": ("verify",),
    }
    out: dict = {}
    for name, args in cases.items():
        if name.startswith("verify"):
            before_verify()
        first = name in ("info", "similar --id")
        out[name] = run_cli(home, *args, importtime=first)
        print(f"[scale] {name}: {out[name]}", file=sys.stderr)
        save(out)  # a partial result survives an interrupted run
    shutil.rmtree(export_dir, ignore_errors=True)
    return out


def index_facts(home: Path) -> dict:
    """The index's kind and recall@10 against exact search (100 stored vectors as queries, as `reindex` reports;
    streams every stored vector once), and float16's cosine error on these vectors and on real fc2 ones."""
    from imgidx.indexer import ann
    from imgidx.indexer.store import Store
    from imgidx.indexer.store.vectorfile import cosine_error

    t0 = time.perf_counter()
    with Store(home, readonly=True) as s:
        facts = {"index": ann.describe(s.index), "vector_dtype": s.vector_dtype}
        facts["recall_at_10"] = round(ann.recall_at_k(s.index, s.vector_ids(), s.vectors), 3)
    facts["recall_s"] = round(time.perf_counter() - t0, 1)
    real = np.load(ROOT / "tests" / "data" / "fc2_random0_reference.npy")
    facts["float16_cosine_error"] = {
        "synthetic_20k": cosine_error(synthetic(0, 20_000, centres_for(0), 0)),
        "fc2_random0_reference": cosine_error(real),
    }
    return facts


def disk_usage(home: Path) -> dict:
    files = {str(p.relative_to(home)): p.stat().st_blocks * 512 for p in home.rglob("*") if p.is_file()}
    big = {k: round(v / 2**30, 3) for k, v in sorted(files.items(), key=lambda kv: -kv[1])[:4]}
    return {"total_gb": round(sum(files.values()) / 2**30, 2), "largest_gb": big}


def default_home(n: int) -> Path:
    """Outside the repo: $IMGIDX_SCALE_HOME or the temp dir (the 1M home needs ~9 GB)."""
    return Path(os.environ.get("IMGIDX_SCALE_HOME") or tempfile.gettempdir()) / f"imgidx-scale-n{n}"


def run_store(n: int, home: Path | None = None, *, keep: bool = False, out: Path = OUT / "scale_store.json"):
    """Fill (or reuse, with keep) a home of n photos and time the commands on it: (result, table text)."""
    home = home or default_home(n)
    result: dict = {"n": n, "home": str(home), "machine": machine()}
    try:
        if (home / "imgidx.sqlite").exists() and keep:
            result["fill"] = {"reused": True}
        else:
            shutil.rmtree(home, ignore_errors=True)
            result["fill"] = fill(home, n)
        result["disk"] = disk_usage(home)

        def save(commands: dict) -> None:
            result["commands"] = commands
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2) + "\n")

        def facts() -> None:
            result["index"] = index_facts(home)
            print(f"[scale] index: {result['index']}", file=sys.stderr)

        result["commands"] = measure(home, n, save, facts)
    finally:
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        (name, r["s"], r["peak_rss_gb"], "ok" if r["rc"] == 0 else f"rc {r['rc']}: {r.get('error', '')}")
        for name, r in result["commands"].items()
    ]
    title = f"scale: {n:,} photos, store {result['disk']['total_gb']} GB ({result['machine']['cpu']})"
    return result, table(title, ["command", "s", "peak RSS GB", "result"], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scale_store", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="photos (default 1,000,000)")
    ap.add_argument("--home", type=Path, help="data home to fill (default $IMGIDX_SCALE_HOME or the temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the filled home (reused by the next run)")
    ap.add_argument("--out", type=Path, default=OUT / "scale_store.json")
    args = ap.parse_args(argv)
    result, text = run_store(args.n, args.home, keep=args.keep, out=args.out)
    print(text)
    print(json.dumps({k: result[k] for k in ("fill", "disk", "index") if k in result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
