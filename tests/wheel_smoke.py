"""`make test-wheel`: the package as users get it. The tracked files are copied out of the checkout, installed with
a plain `pip install` (not editable) into a fresh venv, and used from a folder outside the checkout: the version,
every module of the tree present in the installed package, `imgidx build --from-dir` (random weights, said
explicitly), `imgidx similar`, and `imgidx serve`'s page over HTTP.

Run with any Python 3.10+ (it needs only the standard library): `python3 tests/wheel_smoke.py`. pip's cache and
the configured wheel folders make the install download-free where `make install` has run before. Exit 0 = passed;
the temp folder is removed unless IMGIDX_KEEP_WHEEL_SMOKE=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"imgidx": "imgidx", "indexer": "imgidx/indexer", "search": "imgidx/search"}  # repo folder -> installed
ANNOUNCE = "imgidx serve: listening on "  # imgidx/service/server.py
PHOTOS = """
import sys
from pathlib import Path
import numpy as np
from PIL import Image
for c, name in enumerate(("cat", "dog")):
    (Path(sys.argv[1]) / name).mkdir(parents=True)
    for i in range(6):
        rng = np.random.default_rng(10 * c + i)
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        small[..., c] = 255  # each collection its own tint
        Image.fromarray(small).resize((160, 120)).save(Path(sys.argv[1]) / name / f"{i}.jpg", quality=90)
"""
INSTALLED = """
import imgidx, importlib.metadata, json, pathlib
print(json.dumps({"file": imgidx.__file__, "version": imgidx.__version__,
                  "metadata": importlib.metadata.version("imgidx")}))
"""


def tracked_copy(dest: Path) -> None:
    """The files a fresh clone has (tracked, plus new ones git does not ignore): what the wheel is built from."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, names):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            (dest / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / os.fsdecode(name))


def step(what: str, args: list, **kw) -> subprocess.CompletedProcess:
    start = time.monotonic()
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    print(f"  {what}: {time.monotonic() - start:.1f} s", flush=True)
    if done.returncode != 0:
        sys.exit(f"FAILED: {what} (exit {done.returncode})\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def check(ok: bool, what: str) -> None:
    if not ok:
        sys.exit(f"FAILED: {what}")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="imgidx-wheel-", dir="/tmp"))
    try:
        run_in(work)
    finally:
        if os.environ.get("IMGIDX_KEEP_WHEEL_SMOKE") != "1":
            shutil.rmtree(work, ignore_errors=True)
    print("wheel smoke test passed")


def run_in(work: Path) -> None:
    src, venv, photos, home = work / "src", work / "venv", work / "photos", work / "home"
    tracked_copy(src)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env |= {"TF_CPP_MIN_LOG_LEVEL": "2", "NO_PROXY": "127.0.0.1,localhost", "XDG_CACHE_HOME": str(work / "cache")}
    env |= {"IMGIDX_HOME": str(home), "KERAS_HOME": str(work / "keras"), "IMGIDX_RUNTIME": "keras"}
    python, imgidx = venv / "bin" / "python", venv / "bin" / "imgidx"
    print(f"wheel smoke test in {work}", flush=True)
    step("fresh venv", [sys.executable, "-m", "venv", venv], env=env, cwd=work)
    step("pip install . (not editable)", [python, "-m", "pip", "install", "-q", src], env=env, cwd=work)
    modules = [  # what the copy held: the checkout may change while this runs
        (folder, py.relative_to(src / folder))
        for folder in FOLDERS
        for py in (src / folder).rglob("*.py")
        if "__pycache__" not in py.parts
    ]
    shutil.rmtree(src)  # nothing below may read the source tree

    facts = json.loads(step("import imgidx", [python, "-c", INSTALLED], env=env, cwd=work).stdout)
    package = Path(facts["file"]).parent
    check(package.is_relative_to(venv), f"imgidx imported from {package}, not from the fresh venv")
    check(facts["version"] == facts["metadata"], f"imgidx.__version__ {facts['version']} != {facts['metadata']}")
    missing = [f"{f}/{rel}" for f, rel in modules if not (package.parent / FOLDERS[f] / rel).is_file()]
    check(missing == [], f"modules missing from the installed package: {missing}")
    check((package / "service" / "static" / "index.html").is_file(), "the web page is missing from the package")

    step("make photos", [python, "-c", PHOTOS, photos], env=env, cwd=work)
    build = ["build", "--from-dir", photos, "--weights", "random", "--layer", "block5_pool", "--json"]
    report = json.loads(step("imgidx build --from-dir --weights random", [imgidx, *build], env=env, cwd=work).stdout)
    check(report["embedded"] + report["reused"] == 12, f"build did not index the 12 photos: {report}")
    query = photos / "cat" / "0.jpg"
    done = step("imgidx similar", [imgidx, "similar", query, "-k", "3", "--json"], env=env, cwd=work)
    hits = json.loads(done.stdout)["hits"]
    check(len(hits) == 3 and Path(hits[0]["path"]).name == "0.jpg", f"similar: the photo itself first: {hits}")
    serve_page(imgidx, env, work)


def serve_page(imgidx: Path, env: dict, work: Path) -> None:
    start = time.monotonic()
    args = [imgidx, "serve", "--port", "0"]
    proc = subprocess.Popen(args, env=env, cwd=work, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        address, seen = None, []
        for line in proc.stderr:
            seen.append(line)
            if ANNOUNCE in line:
                address = line.split(ANNOUNCE, 1)[1].split()[0].rstrip("/")
                break
        check(address is not None, f"serve never announced its address: {''.join(seen)[-2000:]}")
        with urllib.request.urlopen(f"{address}/", timeout=60) as page:
            body = page.read().decode()
            check(page.status == 200 and "<html" in body.lower(), f"serve's page: {page.status} {body[:200]!r}")
        with urllib.request.urlopen(f"{address}/healthz", timeout=60) as info:
            check(info.status == 200, f"serve's /healthz: {info.status}")
        print(f"  imgidx serve + its page: {time.monotonic() - start:.1f} s", flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
