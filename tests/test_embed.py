"""The embedder through the real Keras VGG16 graph: random weights, weight files made here, the Keras cache path,
the download path (from a local server), and the real ImageNet conv weights from ../shared when present."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from imgidx.indexer.config import Settings
from imgidx.indexer.embedders.keras_runtime import KerasEmbedder as Embedder
from imgidx.indexer.embedders.vgg16 import TOP_FILE, preprocess
from imgidx.indexer.embedders.weights import resolve
from imgidx.indexer.errors import ConfigError
from imgidx.indexer.images import prepare
from tests.conftest import SHARED_PHOTOS, SHARED_WEIGHTS, jpeg_bytes, pattern_image

pytestmark = pytest.mark.slow


def images(n=4, seed=0):
    return np.stack([prepare(jpeg_bytes(pattern_image(seed + i, kind=("stripes", "rings")[i % 2]))) for i in range(n)])


def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="module")
def random_fc2():
    return Embedder("fc2", resolve("random:0", "fc2", Path("/nonexistent"), ""), batch_size=3).load()


def test_fc2_vectors_are_4096_d_unit_and_deterministic(random_fc2):
    x = images(5)
    a = random_fc2.embed(x)
    assert a.shape == (5, 4096) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    again = Embedder("fc2", resolve("random:0", "fc2", Path("/x"), ""), batch_size=5).embed(x)
    np.testing.assert_allclose(a, again, atol=1e-5)  # same seed, new graph, same vectors
    assert random_fc2.stamp.weights == "random:0" and random_fc2.stamp.dim == 4096


def test_preprocess_copies_its_input():
    x = images(1)
    before = x.copy()
    y = preprocess(x)
    assert np.array_equal(x, before)
    # caffe mode: RGB -> BGR and ImageNet means subtracted
    assert y[0, 0, 0, 0] == pytest.approx(float(x[0, 0, 0, 2]) - 103.939, abs=1e-3)


def test_imagenet_resolves_from_the_keras_cache(random_weights_file, monkeypatch, tmp_path):
    models = tmp_path / "keras" / "models"
    models.mkdir(parents=True)
    (models / TOP_FILE).symlink_to(random_weights_file)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    s = settings()
    spec = resolve("imagenet", "fc2", s.keras_home, s.weights_url, s.cache_dir)
    assert spec.path == models / TOP_FILE and spec.fingerprint.startswith("sha256:")
    via_cache = Embedder("fc2", spec, batch_size=2).embed(images(2))  # batch_size: short batches are padded
    via_path = Embedder("fc2", resolve(str(random_weights_file), "fc2", s.keras_home, ""), batch_size=2).embed(
        images(2)
    )
    np.testing.assert_array_equal(via_cache, via_path)
    random0 = Embedder("fc2", resolve("random:0", "fc2", s.keras_home, ""), batch_size=2).embed(images(2))
    assert not np.allclose(via_cache, random0, atol=1e-3)  # the file's weights were really loaded


def test_imagenet_offline_fails_with_one_line_naming_the_file():
    s = settings()
    with pytest.raises(ConfigError) as e:
        resolve("imagenet", "fc2", s.keras_home, s.weights_url)
    msg = str(e.value)
    assert TOP_FILE in msg and str(s.keras_home / "models") in msg and "\n" not in msg


def test_a_download_that_is_not_the_official_file_is_refused_and_not_kept(random_weights_file, tmp_path):
    """The md5 check (SECURITY.md): a server at any IMGIDX_WEIGHTS_URL (a mirror, here a local one) serving
    another file under the official name: refused with one line, nothing left in the Keras cache (a file there
    under that name would be trusted by the next run)."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(random_weights_file, served / TOP_FILE)
    asked = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            asked.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    s = settings()
    try:
        for _ in range(2):  # the second run finds nothing cached and asks again
            with pytest.raises(ConfigError) as e:
                resolve("imagenet", "fc2", s.keras_home, f"http://127.0.0.1:{server.server_port}/", s.cache_dir)
            assert "md5" in str(e.value) and TOP_FILE in str(e.value) and "\n" not in str(e.value)
    finally:
        server.shutdown()
        server.server_close()
    assert asked == [f"/{TOP_FILE}"] * 2  # the whole file was served both times
    assert list((s.keras_home / "models").iterdir()) == []


@pytest.fixture(scope="module")
def notop_file(tmp_path_factory):
    from imgidx.indexer.embedders.keras_env import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(5)
    model = keras.applications.VGG16(include_top=False, weights=None)
    path = tmp_path_factory.mktemp("notop") / "vgg16_notop.weights.h5"
    model.save_weights(path)
    return path


def test_notop_file_is_refused_for_fc2_never_randomly_initialised(notop_file):
    with pytest.raises(ConfigError, match="no fc1/fc2 layers"):
        resolve(str(notop_file), "fc2", Path("/x"), "")


def test_notop_file_works_for_block5_pool(notop_file):
    spec = resolve(str(notop_file), "block5_pool", Path("/x"), "")
    v = Embedder("block5_pool", spec, batch_size=2).embed(images(2))
    assert v.shape == (2, 512)


def test_top_file_also_serves_block5_pool(random_weights_file):
    v = Embedder("block5_pool", resolve(str(random_weights_file), "block5_pool", Path("/x"), ""), batch_size=1).embed(
        images(1)
    )
    assert v.shape == (1, 512)


def test_not_a_weights_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "w.h5"
    bad.write_bytes(b"nope")
    with pytest.raises(ConfigError, match="not a readable HDF5"):
        resolve(str(bad), "fc2", Path("/x"), "")


@pytest.mark.long  # embeds real photos with the real conv weights: make test-long (CI runs it)
@pytest.mark.skipif(not SHARED_WEIGHTS.exists(), reason="needs ../shared/weights/vgg16_notop_imagenet.weights.h5")
def test_real_imagenet_conv_weights_put_cats_next_to_cats():
    """~100 real photos, real block5 features: most neighbours of a cat are cats (random weights give ~0.6)."""
    files = sorted((SHARED_PHOTOS / "cats").glob("*.jpg"))[:50] + sorted((SHARED_PHOTOS / "dogs").glob("*.jpg"))[:50]
    labels = np.array([0] * 50 + [1] * 50)
    emb = Embedder("block5_pool", resolve(str(SHARED_WEIGHTS), "block5_pool", Path("/x"), ""), batch_size=25)
    v = emb.embed(np.stack([prepare(f.read_bytes()) for f in files]))
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    nn = np.argsort(-sims, axis=1)[:, :5]
    agreement = (labels[nn] == labels[:, None]).mean()
    assert agreement >= 0.9, f"neighbour label agreement {agreement:.3f}"


@pytest.mark.parametrize("precision", ["bf16", pytest.param("fp16", marks=pytest.mark.long)])  # bf16: AMX's default
def test_reduced_precision_path_gives_unit_float32_vectors_close_to_fp32(precision):
    spec = resolve("random:0", "block5_pool", Path("/x"), "")
    x = images(3)
    low = Embedder("block5_pool", spec, precision=precision, batch_size=2)
    v = low.embed(x)
    assert v.dtype == np.float32 and v.shape == (3, 512) and low.stamp.precision == precision
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    ref = Embedder("block5_pool", spec, precision="fp32", batch_size=2).embed(x)
    assert np.min(np.sum(v * ref, axis=1)) >= 0.9999  # README: a bf16 index queried in fp32, cosine >= 0.9999


def test_compiled_call_preprocesses_in_the_graph_like_keras(random_fc2):
    """The uint8 -> caffe preprocessing inside the tf.function equals Keras' preprocess_input on a copy."""
    x = images(2, seed=3)
    direct = np.asarray(random_fc2._model(preprocess(x), training=False), dtype=np.float32)
    np.testing.assert_allclose(random_fc2.raw(x), direct, rtol=1e-4, atol=1e-4)
