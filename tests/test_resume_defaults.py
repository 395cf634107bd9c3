"""Kill/resume on the path users run (issue 18.5): a plain `imgidx build --from-dir DIR` with every default this
machine picks (runtime auto: measured once per machine and kept by the index; the default batch size, precision and
layer fc2), SIGKILLed at a random point after its first commit. The kill must land mid-build (photos committed
strictly between 0 and all, read from the store), the same command resumes, and the home equals a clean build's:
ids, metadata, files, vectors bit for bit (README "Crash safety"). Nothing is embedded twice after the resume: the
resume embeds exactly the photos the kill left uncommitted, and vectors.bin (append-only) has as many rows as the
clean build's.

The weights are a test-made VGG16 file (ImageNet weights cannot be downloaded here) named by IMGIDX_WEIGHTS, so the
command line stays the plain one. The photo count is just above one batch of the default size: the first batch
commits, the kill lands in the second (the last, padded to a whole batch like every batch). One seed in make test,
six in make test-long (see SEEDS).

The three homes (clean, killed, resumed) start with the same photos, so on an int8 machine the killed build copies
the clean build's quantized model from the user cache's memo (same calibration pixels, same bytes) instead of
calibrating again: the default path, and what keeps a seed within make test's time."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest

from imgidx.indexer.embedders import default_batch_size
from imgidx.indexer.embedders.keras_env import accelerator
from tests.conftest import pattern_image
from tests.subproc import count, imgidx_env, run, snapshot, start, wait_for

pytestmark = pytest.mark.slow
BATCH = default_batch_size(accelerator())  # what a plain build picks on this machine
N = BATCH + 3
SEEDS = [0, *(pytest.param(s, marks=pytest.mark.long) for s in range(1, 6))]  # make test: seed 0


def plain_env(home: Path, shared: Path, weights: Path) -> dict[str, str]:
    env = imgidx_env(home, IMGIDX_WEIGHTS=str(weights), KERAS_HOME=str(shared / "keras"))
    env.pop("IMGIDX_RUNTIME")  # the default: auto
    # one machine-wide cache for the runtime choice and the ONNX export, shared by every build of this module (as
    # two builds on one machine share it), inside the test's temporary folder
    env["XDG_CACHE_HOME"] = str(shared / "cache")
    env["IMGIDX_SAVE_EVERY"] = "0"
    return env


@pytest.fixture(scope="module")
def world(tmp_path_factory, random_weights_file):
    root = tmp_path_factory.mktemp("resume-defaults")
    photos = root / "photos"
    for i in range(N):
        kind = ("stripes", "rings", "checks")[i % 3]
        folder = photos / kind
        folder.mkdir(parents=True, exist_ok=True)
        pattern_image(1000 + i, size=(200, 150), kind=kind).save(folder / f"{kind}_{i:03d}.jpg", quality=90)
    clean_home = root / "clean"
    env = plain_env(clean_home, root, random_weights_file)
    proc = start(["build", "--from-dir", photos, "--json"], env)
    # how long the last batch takes here (between the two commits), to aim the kills inside the build
    assert wait_for(proc, lambda: count(clean_home, "SELECT COUNT(*) FROM vectors") >= 1, 900)
    first = time.monotonic()
    wait_for(proc, lambda: count(clean_home, "SELECT COUNT(*) FROM vectors") >= N, 900)  # or the build ended
    batch_seconds = time.monotonic() - first
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    report = json.loads(out)
    assert report["embedded"] == N, report
    return {
        "root": root,
        "photos": photos,
        "weights": random_weights_file,
        "clean": snapshot(clean_home),
        "rows": (clean_home / "vectors.bin").stat().st_size,
        "batch_seconds": batch_seconds,
    }


@pytest.mark.parametrize("seed", SEEDS)
def test_kill_a_default_build_mid_way_then_resume_equals_a_clean_build(world, tmp_path, seed):
    rng = random.Random(seed)
    home = tmp_path / "home"
    env = plain_env(home, world["root"], world["weights"])
    build = ["build", "--from-dir", world["photos"], "--json"]
    proc = start(build, env)
    # after the first batch's commit, somewhere in the second (a build on a less loaded machine runs faster)
    wait_for(proc, lambda: count(home, "SELECT COUNT(*) FROM vectors") >= 1, 600)
    time.sleep(rng.uniform(0, 0.5 * world["batch_seconds"]))
    running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    committed = count(home, "SELECT COUNT(*) FROM vectors")
    assert running and 0 < committed < N, (running, committed)

    resumed = run(build, env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    report = json.loads(resumed.stdout)
    # nothing embedded twice: the resume embeds the uncommitted photos only, and the vector file gains no extra row
    assert report["already_indexed"] == committed and report["embedded"] + report["reused"] == N - committed
    assert (home / "vectors.bin").stat().st_size == world["rows"]
    got, want = snapshot(home), world["clean"]
    assert got["meta"] == want["meta"]  # stamp (fc2, default precision), runtime the machine chose, weights
    assert [p["id"] for p in got["photos"]] == [p["id"] for p in want["photos"]]
    assert got["photos"] == want["photos"] and got["collections"] == want["collections"]
    assert got["vectors"] == want["vectors"]  # bit for bit: the README's promise on one machine
    assert got["index"] == got["vectors"] and got["index_ids_unique"]
    assert got["files"] == want["files"]
    ok = run(["verify", "--json"], env, timeout=300)
    assert ok.returncode == 0 and json.loads(ok.stdout)["problems"] == [], ok.stdout
    print(f"seed {seed}: killed with {committed}/{N} committed; runtime {got['meta'].get('runtime')}")
