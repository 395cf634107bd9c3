"""Shared fixtures: an isolated environment per test, images made on the fly, real stores, real embedders.

Only the remote world is faked (tests/fake_flickr: a local Flickr REST server and photo host). The ingester,
the embedder (the real Keras graph) and the store (real SQLite + FAISS) are the real code.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest_plugins = ["tests.fake_flickr.fixtures", "tests.serving"]

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_WEIGHTS = SHARED / "weights" / "vgg16_notop_imagenet.weights.h5"
SHARED_PHOTOS = SHARED / "photos" / "catsdogs"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
LONG = os.environ.get("IMGIDX_LONG_TESTS") == "1"
# the live Flickr test's key (tests/test_flickr_live.py), read before the isolation below removes it
LIVE_FLICKR = (os.environ.get("FLICKR_API_KEY", ""), os.environ.get("FLICKR_API_SECRET", ""))

# Fixtures that build the VGG16 graph (or a server that loads it): a test using one is `slow` (make test-fast).
MODEL_FIXTURES = frozenset(
    {
        "random_weights_file",
        "random_fc2",
        "notop_file",
        "served_index",
        "server",
        "client",
        "world",
        "world_fc2",
        "fc2_random0",
        "store_ids",
        "built_once",
    }
)
# what a test run could write outside its temp homes by mistake (the defaults of IMGIDX_HOME, XDG_CACHE_HOME,
# KERAS_HOME): compared before and after the session
USER_PATHS = (Path("data").resolve(), Path("~/.cache/imgidx").expanduser(), Path("~/.keras").expanduser())
REMOVED_ENV = (
    "IMGIDX_WEIGHTS",
    "FLICKR_API_KEY",
    "FLICKR_API_SECRET",
    "IMGIDX_FLICKR_REST_URL",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
)


def isolate(setenv, delenv, root: Path) -> None:
    """Point every home and cache at `root`, pick the runtime, never reach the internet."""
    setenv("IMGIDX_HOME", str(root / "home"))
    setenv("KERAS_HOME", str(root / "keras"))
    setenv("XDG_CACHE_HOME", str(root / "cache"))
    # the runtime choice (auto) measures both runtimes once per data home: tests pick theirs explicitly
    setenv("IMGIDX_RUNTIME", "keras")
    setenv("NO_PROXY", "127.0.0.1,localhost")
    setenv("IMGIDX_ALLOW_PRIVATE_HOSTS", "1")  # the fake Flickr's photo host is on loopback
    for var in REMOVED_ENV:
        delenv(var)
    # an unreachable download address: tests never touch the internet, even by accident
    setenv("IMGIDX_WEIGHTS_URL", "http://127.0.0.1:9/vgg16/")


def _snapshot() -> dict[str, tuple[int, int]]:
    files = {}
    for top in USER_PATHS:
        for path in [top, *top.rglob("*")] if top.exists() else []:
            st = path.lstat()
            files[str(path)] = (st.st_size, st.st_mtime_ns)
    return files


def pytest_configure(config):
    """Before any fixture (session and module ones included) runs: the whole session's environment points at a
    temp folder, so only a test's own autouse isolation (below) ever replaces it."""
    root = Path(tempfile.mkdtemp(prefix="imgidx-session-"))
    config._imgidx_session_root = root
    config._imgidx_user_paths = _snapshot()
    isolate(os.environ.__setitem__, lambda var: os.environ.pop(var, None), root)


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if anything it ran wrote into the user's data home, ~/.cache/imgidx or ~/.keras."""
    config = session.config
    before = getattr(config, "_imgidx_user_paths", None)
    if before is None:
        return
    after = _snapshot()
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    if changed:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(
                "error: the tests wrote outside their temp homes (a fixture or test without the isolation?): "
                + ", ".join(changed[:10]),
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    shutil.rmtree(config._imgidx_session_root, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    """`slow` for every test that uses a model fixture; `long` tests repeat what make test covers at a larger
    size (make test-long): skipped unless asked for."""
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())) and "slow" not in item.keywords:
            item.add_marker(pytest.mark.slow)
    if LONG:
        return
    skip = pytest.mark.skip(reason="long: IMGIDX_LONG_TESTS=1 (make test-long)")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    """Every test gets its own data home, Keras cache and XDG cache; no proxies for loopback."""
    root = tmp_path_factory.mktemp("env")
    isolate(monkeypatch.setenv, lambda var: monkeypatch.delenv(var, raising=False), root)
    return root


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def pattern_image(seed: int, size=(320, 240), kind: str = "stripes") -> Image.Image:
    """Deterministic, visually distinct images: families share a layout, members differ in colour and noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    if kind == "stripes":
        base = (np.sin(x / (6 + seed % 5)) > 0).astype(np.float32)
    elif kind == "rings":
        base = (np.sin(np.hypot(x - w / 2, y - h / 2) / (5 + seed % 4)) > 0).astype(np.float32)
    else:
        base = ((x // 24 + y // 24) % 2).astype(np.float32)
    colour = rng.uniform(40, 215, size=3)
    arr = base[..., None] * colour + (1 - base[..., None]) * (255 - colour)
    arr += rng.normal(0, 12, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


@pytest.fixture
def photo_dir(tmp_path) -> Path:
    """A folder with two sub-folders (collections) of distinct pattern images, plus one top-level file."""
    return make_photo_dir(tmp_path)


def make_photo_dir(parent: Path) -> Path:
    root = parent / "photos"
    for kind, n in (("stripes", 6), ("rings", 6)):
        (root / kind).mkdir(parents=True)
        for i in range(n):
            pattern_image(100 * len(kind) + i, kind=kind).save(root / kind / f"{kind}_{i}.jpg", quality=90)
    pattern_image(7, kind="checks").save(root / "loose.jpg")
    return root


@pytest.fixture(scope="session")
def random_weights_file(tmp_path_factory) -> Path:
    """A randomly initialised full VGG16 saved in the legacy Keras .h5 format of Keras' published file."""
    from imgidx.indexer.embedders.keras_env import import_keras

    keras = import_keras()
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(123)
    model = keras.applications.VGG16(include_top=True, weights=None)
    path = tmp_path_factory.mktemp("weights") / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path
