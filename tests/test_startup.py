"""Commands that need no model never import TensorFlow (or Keras, JAX, PyTorch): they start in well under a
second (bench/run.py --only coldstart measures it). Each runs in a fresh interpreter, as a user would start it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imgidx.indexer.records import Photo, Stamp
from imgidx.indexer.store import Store

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("tensorflow", "keras", "jax", "torch")
PROBE = """
import json, sys
from imgidx.cli.app import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)
"""


def run_fresh(home: Path, *args: str) -> tuple[str, list[str]]:
    env = {**os.environ, "IMGIDX_HOME": str(home), "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout, json.loads(r.stderr.strip().splitlines()[-1])


@pytest.fixture
def home(tmp_path):
    rng = np.random.default_rng(0)
    with Store(tmp_path / "home") as s:
        s.ensure_stamp(Stamp(model="vgg16", layer="block5_pool", weights="random:0", dim=512))
        ids = s.add_photos([Photo(source="folder", source_id=f"{i}.jpg", collection="cd"[i % 2]) for i in range(50)])
        v = rng.normal(size=(50, 512)).astype(np.float32)
        s.add_vectors([(i, "", f"s{i}") for i in ids], v / np.linalg.norm(v, axis=1, keepdims=True))
        s.save_index()
    return tmp_path / "home"


def test_importing_the_cli_loads_no_model_framework():
    r = subprocess.run(
        [sys.executable, "-c", f"import sys, imgidx.cli.app; print([m for m in {HEAVY!r} if m in sys.modules])"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("info", "--json"),
        ("info", "--failures"),
        ("reindex", "--kind", "ivf", "--json"),
        ("similar", "--id", "3"),
        ("clean", "c", "--json"),
        ("audit", "c", "d", "--json"),
        ("train", "m", "c", "d", "--json"),
        ("verify", "--json"),
    ],
)
def test_commands_that_need_no_model_never_import_tensorflow(home, args):
    out, heavy = run_fresh(home, *args)
    assert out and heavy == [], f"imgidx {' '.join(args)} imported {heavy}"


def test_without_gpu_device_files_choosing_the_device_imports_no_framework(tmp_path):
    """make_embedder picks precision and batch size for the device; on Linux with no GPU device file that is the
    CPU, known without importing TensorFlow (seconds): a Ray build's driver, which runs no model, never pays it."""
    probe = f"""
import json, sys
from imgidx.indexer.embedders import default_batch_size, default_precision, keras_env
keras_env.GPU_DEVICE_FILES = ({str(tmp_path / "nvidia*")!r},)  # none there: as on a machine without a GPU
from imgidx.indexer.compose import make_embedder
from imgidx.indexer.config import Settings
e = make_embedder(Settings.from_env(), "block5_pool", "random:0", runtime="keras")
want = (default_precision("cpu", None, layer="block5_pool", runtime="keras"), default_batch_size("cpu"))
print(json.dumps([e.precision, e.batch_size, *want, [m for m in {HEAVY!r} if m in sys.modules]]))
"""
    env = {**os.environ, "IMGIDX_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    precision, batch, want_precision, want_batch, heavy = json.loads(r.stdout.strip().splitlines()[-1])
    assert (precision, batch) == (want_precision, want_batch) and heavy == []


def test_gpu_device_files_are_looked_for(tmp_path, monkeypatch):
    from imgidx.indexer.embedders import keras_env

    monkeypatch.setattr(keras_env, "GPU_DEVICE_FILES", (str(tmp_path / "nvidia*"), str(tmp_path / "kfd")))
    monkeypatch.setattr(keras_env.sys, "platform", "linux")
    assert not keras_env.gpu_device_files()
    (tmp_path / "kfd").touch()
    assert keras_env.gpu_device_files()
    monkeypatch.setattr(keras_env.sys, "platform", "darwin")  # no device file to look for: ask the backend
    (tmp_path / "kfd").unlink()
    assert keras_env.gpu_device_files()
