"""ONNX export and the ONNX Runtime embedder: the exported graph computes what Keras computes, the cache is used
only when it matches, int8 is its own stamp, and runtime="auto" measures once per machine.

Most checks run on a small Keras model made of the same layer kinds as VGG16 (Conv2D, MaxPooling2D, Flatten,
Dense, GlobalAveragePooling2D; 32x32 input): milliseconds per call instead of ~0.3 s per VGG16 image."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from imgidx.indexer.embedders import choice as ch
from imgidx.indexer.embedders import make, stamp_of, vgg16
from imgidx.indexer.embedders import onnx_export as ox
from imgidx.indexer.embedders.onnx_runtime import OnnxEmbedder, quantize, session
from imgidx.indexer.embedders.weights import WeightsSpec
from imgidx.indexer.errors import StampMismatch
from imgidx.indexer.records import Stamp
from imgidx.indexer.store import Store

SIZE = 32
RANDOM0 = WeightsSpec("random", seed=0, has_top=True, fingerprint="random:0")


def small_model(head: str, seed: int = 0):
    """VGG16's layer kinds at toy size: conv/pool blocks, then Flatten + Dense (like fc2) or GAP (like block5)."""
    from imgidx.indexer.embedders.keras_env import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(seed)
    L = keras.layers
    inp = keras.Input((SIZE, SIZE, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="b1_conv")(inp)
    x = L.MaxPooling2D(2, strides=2, name="b1_pool")(x)
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="b2_conv")(x)
    x = L.MaxPooling2D(2, strides=2, name="b2_pool")(x)
    if head == "dense":
        x = L.Flatten(name="flatten")(x)
        x = L.Dense(24, activation="relu", name="fc1")(x)
        x = L.Dense(12, activation="relu", name="fc2")(x)
    else:
        x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, x, name=f"small_{head}")


def keras_features(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(vgg16.preprocess(x), training=False), dtype=np.float32)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def photos(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """Smooth random 'photos' (blurred noise + gradients): activations like real images', not white noise."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, size // 8, size // 8, 3)).astype(np.float32)
    big = np.repeat(np.repeat(small, 8, axis=1), 8, axis=2)
    ramp = np.linspace(0, 60, size, dtype=np.float32)[None, :, None, None]
    return np.clip(big * 0.8 + ramp, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("head", ["dense", "gap"])
def test_the_exported_graph_computes_what_keras_computes(head):
    model = small_model(head)
    x = photos(5)
    onnx_model = ox.to_onnx(model, input_size=SIZE)
    got = session(onnx_model.SerializeToString()).run(None, {ox.INPUT: x})[0]
    want = keras_features(model, x)
    # Flatten's (h, w, c) order and the RGB->BGR reversal folded into conv 1 would show here as a large error
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))
    assert np.sum(unit(got) * unit(want), axis=1).min() >= 0.999999


def test_layers_the_exporter_does_not_know_are_refused():
    from imgidx.indexer.embedders.keras_env import import_keras

    keras = import_keras()
    inp = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inp, keras.layers.BatchNormalization(name="bn")(inp))
    with pytest.raises(ValueError, match="bn"):
        ox.to_onnx(model, input_size=SIZE)


# ---- cache ------------------------------------------------------------------------------------------------------


def test_the_cache_is_reused_and_rebuilt_when_missing_stale_or_mismatching(tmp_path):
    meta = ox.expected_meta(model="vgg16", layer="block5_pool", precision="fp32", fingerprint="sha256:aa")
    path = ox.cache_path(tmp_path, model="vgg16", layer="block5_pool", precision="fp32", fingerprint="sha256:aa")
    builds: list[bytes] = []

    def build() -> bytes:
        builds.append(b"model %d" % len(builds))
        return builds[-1]

    assert ox.get_or_build(path, meta, build) == path and path.read_bytes() == b"model 0"
    ox.get_or_build(path, meta, build)
    assert len(builds) == 1  # reused

    path.unlink()  # missing
    ox.get_or_build(path, meta, build)
    assert len(builds) == 2 and path.read_bytes() == b"model 1"

    path.write_bytes(b"model 1 but changed")  # bytes that do not hash to the sidecar's sha256
    ox.get_or_build(path, meta, build)
    assert len(builds) == 3 and path.read_bytes() == b"model 2"

    other_weights = {**meta, "weights": "sha256:bb"}  # a sidecar made for other weights is never trusted
    ox.get_or_build(path, other_weights, build)
    assert len(builds) == 4 and json.loads(path.with_suffix(".json").read_text())["weights"] == "sha256:bb"

    stale = {**meta, "exporter_version": ox.EXPORTER_VERSION + 1}  # an exporter that writes another graph
    ox.get_or_build(path, stale, build)
    assert len(builds) == 5

    path.with_suffix(".json").write_text("{not json")
    ox.get_or_build(path, stale, build)
    assert len(builds) == 6
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave no debris


def test_cache_names_separate_weights_layers_and_precisions(tmp_path):
    names = {
        ox.cache_path(tmp_path, model="vgg16", layer=layer, precision=p, fingerprint=w).name
        for layer in ("fc2", "block5_pool")
        for p in ("fp32", "int8")
        for w in ("sha256:" + "a" * 64, "sha256:" + "b" * 64, "random:0")
    }
    assert len(names) == 12
    assert all(p.parent == tmp_path / "cache" / "onnx" for p in [ox.cache_path(tmp_path, **_k())])


def _k() -> dict:
    return {"model": "vgg16", "layer": "fc2", "precision": "fp32", "fingerprint": "random:0"}


# ---- stamps -----------------------------------------------------------------------------------------------------


def test_runtime_is_not_in_the_stamp_but_int8_is(tmp_path):
    keras_fp32 = make("vgg16", "block5_pool", RANDOM0, precision="fp32", runtime="keras")
    onnx_fp32 = make("vgg16", "block5_pool", RANDOM0, precision="fp32", runtime="onnx", home=tmp_path)
    onnx_int8 = make("vgg16", "block5_pool", RANDOM0, precision="int8", runtime="onnx", home=tmp_path)
    assert keras_fp32.stamp == onnx_fp32.stamp == stamp_of(vgg16, "block5_pool", RANDOM0, "fp32")
    assert onnx_int8.stamp.precision == "int8" and onnx_int8.stamp != onnx_fp32.stamp
    with Store(tmp_path / "home") as store:
        store.ensure_stamp(keras_fp32.stamp)
        store.ensure_stamp(onnx_fp32.stamp)  # ORT fp32 vectors may join a TF fp32 index
        with pytest.raises(StampMismatch, match="int8"):
            store.ensure_stamp(onnx_int8.stamp)
    with pytest.raises(ValueError, match="int8"):
        make("vgg16", "block5_pool", RANDOM0, precision="int8", runtime="keras")
    with pytest.raises(ValueError, match="bf16"):
        make("vgg16", "block5_pool", RANDOM0, precision="bf16", runtime="onnx", home=tmp_path)
    assert Stamp.from_dict(onnx_int8.stamp.as_dict()) == onnx_int8.stamp


def test_int8_keeps_the_small_models_vectors_and_needs_calibration_photos(tmp_path):
    model = small_model("gap")
    fp32 = tmp_path / "fp32.onnx"
    fp32.write_bytes(ox.to_onnx(model, input_size=SIZE).SerializeToString())
    q = quantize(fp32, photos(48, seed=1))
    x = photos(16, seed=2)
    a = session(fp32).run(None, {ox.INPUT: x})[0]
    b = session(q).run(None, {ox.INPUT: x})[0]
    assert b"QuantizeLinear" in q and b"DequantizeLinear" in q  # QDQ format
    assert np.sum(unit(a) * unit(b), axis=1).min() >= 0.99

    emb = OnnxEmbedder("block5_pool", RANDOM0, precision="int8", home=tmp_path)
    with pytest.raises(Exception, match="calibrate"):
        emb.int8_file()


# ---- runtime choice ---------------------------------------------------------------------------------------------


class _Timed:
    """A stand-in model call that takes a known time per row (the choice only needs raw())."""

    def __init__(self, seconds_per_row: float, made: list[str], name: str):
        self.seconds_per_row = seconds_per_row
        made.append(name)

    def load(self):
        return self

    def raw(self, x):
        import time

        time.sleep(self.seconds_per_row * len(x))
        return np.zeros((len(x), 4), np.float32)


def test_auto_measures_once_per_machine_and_uses_the_faster(tmp_path):
    made: list[str] = []
    speed = {"keras": 0.004, "onnx": 0.001}

    def make_one(name):
        return _Timed(speed[name], made, name)

    got, info = ch.choose(tmp_path, "fc2", "fp32", 64, make_one, cpu="Test CPU A", rows=4)
    assert got == "onnx" and info["why"] == "measured now" and sorted(made) == ["keras", "onnx"]
    assert info["img_per_s"]["onnx"] > info["img_per_s"]["keras"]
    made.clear()
    got, info = ch.choose(tmp_path, "fc2", "fp32", 64, make_one, cpu="Test CPU A", rows=4)
    assert got == "onnx" and made == [] and info["why"] == "measured before on this machine"

    speed.update(keras=0.001, onnx=0.004)  # another CPU: measured again, and there Keras wins
    got, _ = ch.choose(tmp_path, "fc2", "fp32", 64, make_one, cpu="Test CPU B", rows=4)
    assert got == "keras" and len(made) == 2
    cached = json.loads(ch.cache_file(tmp_path).read_text())
    assert sorted(v["runtime"] for v in cached.values()) == ["keras", "onnx"]
    assert all("Test CPU" in k and f"cpus={os.cpu_count()}" in k and "onnxruntime=" in k for k in cached)

    made.clear()  # precisions only one runtime offers are not measured
    assert ch.choose(tmp_path, "fc2", "int8", 64, make_one)[0] == "onnx"
    assert ch.choose(tmp_path, "fc2", "bf16", 64, make_one)[0] == "keras"
    assert made == []


# ---- determinism ------------------------------------------------------------------------------------------------

_PINNED = """
import os, sys, numpy as np
if sys.argv[2] == "pin":
    os.sched_setaffinity(0, {0})
from imgidx.indexer.embedders.onnx_runtime import session
x = np.load(sys.argv[1] + "/x.npy")
np.save(sys.argv[1] + "/" + sys.argv[2] + ".npy", session(sys.argv[1] + "/m.onnx").run(None, {"images": x})[0])
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_vectors_do_not_depend_on_cpu_pinning(tmp_path):
    """The thread count comes from the machine (os.cpu_count), not the affinity mask: a process pinned to one CPU
    runs the same partitioning, so its vectors are bitwise those of an unpinned one."""
    (tmp_path / "m.onnx").write_bytes(ox.to_onnx(small_model("dense"), input_size=SIZE).SerializeToString())
    np.save(tmp_path / "x.npy", photos(8))
    for how in ("pin", "free"):
        subprocess.run([sys.executable, "-c", _PINNED, str(tmp_path), how], check=True, timeout=120)
    assert np.load(tmp_path / "pin.npy").tobytes() == np.load(tmp_path / "free.npy").tobytes()


# ---- the real VGG16 graph ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_vgg16_block5_round_trip_on_random_weights(tmp_path):
    """VGG16 to block5_pool (+GAP) exported, run by ORT, against the Keras runtime: batch of 4; then the cached file
    is reused by a second embedder (no export) and a changed sidecar makes it rebuild."""
    x = np.stack([np.asarray(photos(1, 224, seed=s)[0]) for s in range(4)])
    keras_v = make("vgg16", "block5_pool", RANDOM0, precision="fp32", batch_size=4, runtime="keras").embed(x)
    emb = OnnxEmbedder("block5_pool", RANDOM0, precision="fp32", batch_size=4, home=tmp_path)
    onnx_v = emb.embed(x)
    assert np.sum(keras_v * onnx_v, axis=1).min() >= 0.999999  # README: across runtimes, cosine >= 0.999999
    path = emb.fp32_file()
    mtime = path.stat().st_mtime_ns
    again = OnnxEmbedder("block5_pool", RANDOM0, precision="fp32", batch_size=4, home=tmp_path)
    assert again.fp32_file() == path and path.stat().st_mtime_ns == mtime  # reused
    assert again.embed(x).tobytes() == onnx_v.tobytes()
    side = path.with_suffix(".json")
    side.write_text(side.read_text().replace("random:0", "random:1"))
    assert again.fp32_file() == path and path.stat().st_mtime_ns != mtime  # never trusted: exported again


# ---- a bf16 index on a CPU without AMX-BF16 (and the reverse), decided from the flags passed in ------------------

AMX = frozenset({"avx2", "avx512f", "amx_tile", "amx_bf16"})
AVX2 = frozenset({"avx2", "fma"})


def test_queries_on_a_bf16_index_run_fp32_where_bf16_is_emulated(tmp_path):
    from imgidx.indexer.compose import embedder_for_index
    from imgidx.indexer.config import Settings
    from imgidx.indexer.embedders import query_precision

    assert query_precision("bf16", flags=AMX) == "bf16" and query_precision("bf16", flags=AVX2) == "fp32"
    assert query_precision("bf16", "gpu", flags=AVX2) == "bf16"
    assert query_precision("fp32", flags=AVX2) == "fp32" and query_precision("int8", flags=AVX2) == "int8"
    settings = Settings(home=tmp_path / "home", runtime="keras")
    bf16 = stamp_of(vgg16, "block5_pool", RANDOM0, "bf16")
    with Store(settings.home) as store:
        store.ensure_stamp(bf16)
        on_avx2 = embedder_for_index(store, settings, flags=AVX2)
        on_amx = embedder_for_index(store, settings, flags=AMX)
    assert on_avx2.precision == "fp32" and on_avx2.stamp == stamp_of(vgg16, "block5_pool", RANDOM0, "fp32")
    assert on_amx.precision == "bf16" and on_amx.stamp == bf16


def test_extending_a_bf16_index_where_bf16_is_emulated_is_a_choice():
    from imgidx.indexer.embedders import extend_precision
    from imgidx.indexer.errors import ConfigError, EmulatedPrecision

    assert extend_precision("bf16", None, flags=AMX) == "bf16"  # where it was built: as before
    with pytest.raises(EmulatedPrecision, match="only emulates") as e:
        extend_precision("bf16", None, flags=AVX2)
    assert isinstance(e.value, ConfigError) and "explicitly" in str(e.value) and "amx_bf16" in str(e.value)
    assert extend_precision("bf16", "bf16", flags=AVX2) == "bf16"  # asked for: proceed, slowly
    assert extend_precision("fp32", None, flags=AVX2) == extend_precision("fp32", None, flags=AMX) == "fp32"
    assert extend_precision("int8", None, flags=AMX) == "int8"


# ---- the build, end to end --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.long  # a calibrated int8 build: make test-long (CI runs it)
def test_int8_build_calibrates_on_the_index_own_photos_then_onnx_and_keras_fp32_share_an_index(photo_dir, tmp_path):
    from typer.testing import CliRunner

    from imgidx.cli.app import app

    def run(*args, flags: str = "", shared: str = ""):
        env = {"IMGIDX_CPU_FLAGS": flags, "IMGIDX_INT8_SHARED": shared}
        result = CliRunner().invoke(app, [str(a) for a in args], env=env)
        assert result.exit_code == 0, result.stdout + result.stderr
        return result

    common = ["--weights", "random:0", "--layer", "block5_pool", "--batch-size", "4", "--json"]
    int8_home = tmp_path / "int8"
    built = run("--home", int8_home, "build", "--from-dir", photo_dir / "stripes", "--precision", "int8", *common)
    assert "pre-processing" not in built.stderr and "note:" not in built.stderr
    side = json.loads(next((int8_home / "cache" / "onnx").glob("*int8*.json")).read_text())
    assert side["precision"] == "int8" and side["weights"] == "random:0"
    info = json.loads(run("--home", int8_home, "info", "--json").stdout)
    assert info["photos"] == 6 and info["stamp"]["precision"] == "int8"
    calibration = info["int8_calibration"]
    assert calibration["photos"] == 6 and len(calibration["pixels_sha256"]) == 16  # all it had: 6 < 32
    assert "int8 calibration" in run("--home", int8_home, "info").stdout

    # extended where int8 has no VNNI: it works, and says so once; with VNNI, nothing to say
    rings = photo_dir / "rings"
    extended = run("--home", int8_home, "build", "--from-dir", rings, *common, flags="avx2 fma")
    assert extended.stderr.count("note:") == 1 and "VNNI" in extended.stderr
    assert json.loads(extended.stdout)["notes"] and json.loads(extended.stdout)["index"]["photos"] == 12
    quiet = run("--home", int8_home, "build", "--from-dir", rings, *common, flags="avx2 avx512_vnni")
    assert "note:" not in quiet.stderr

    # by default each data home calibrates on its own first photos; IMGIDX_INT8_SHARED=1 shares one model
    other = tmp_path / "int8-other"
    run("--home", other, "build", "--from-dir", rings, "--precision", "int8", *common, shared="1")
    own = json.loads(run("--home", other, "info", "--json").stdout)["int8_calibration"]
    assert own["pixels_sha256"] != calibration["pixels_sha256"]  # rings, not stripes
    third = tmp_path / "int8-third"
    run("--home", third, "build", "--from-dir", photo_dir / "stripes", "--precision", "int8", *common, shared="1")
    assert json.loads(run("--home", third, "info", "--json").stdout)["int8_calibration"] == own  # not calibrated
    target = photo_dir / "stripes" / "stripes_2.jpg"  # the query is embedded by the cached int8 model
    hits = json.loads(run("--home", int8_home, "similar", target, "-k", 3, "--json").stdout)["hits"]
    assert hits[0]["source_id"] == "stripes_2.jpg" and hits[0]["score"] >= 0.99 and len(hits) == 3

    home = tmp_path / "mixed"  # ORT fp32 first, then Keras fp32 adds to the same index: one stamp
    run(
        "--home",
        home,
        "build",
        "--from-dir",
        photo_dir / "stripes",
        "--runtime",
        "onnx",
        "--precision",
        "fp32",
        *common,
    )
    run("--home", home, "build", "--from-dir", photo_dir / "rings", "--runtime", "keras", *common)
    info = json.loads(run("--home", home, "info", "--json").stdout)
    assert info["photos"] == 12 and info["stamp"]["precision"] == "fp32"


# ---- int8 calibration: few photos, once per weights/layer/recipe/ORT, shared by every data home ------------------


def _toy(model):
    """A model module (see embedders/vgg16.py) over the small Keras model: the OnnxEmbedder's real code paths."""
    from types import SimpleNamespace

    return SimpleNamespace(
        NAME="toy",
        INPUT_SIZE=SIZE,
        PREPROCESS="caffe",
        LAYERS={"gap": 16},
        CAFFE_MEAN_BGR=ox.CAFFE_MEAN_BGR,
        keras_model=lambda layer, weights: model,
    )


def test_int8_calibrates_once_and_every_home_reuses_it_deterministically(tmp_path, caplog, capfd):
    from imgidx.indexer.embedders.onnx_runtime import CALIBRATION_PHOTOS

    toy, calls = _toy(small_model("gap")), []

    def calibration(seed: int = 1):
        calls.append(seed)
        return photos(CALIBRATION_PHOTOS + 8, seed=seed)  # more than it needs: only the first are used

    def embedder(home: str, cache: str = "cache", calib=calibration):
        where = {"home": tmp_path / home, "shared": tmp_path / cache}
        return OnnxEmbedder("gap", RANDOM0, precision="int8", model=toy, calibration=calib, **where)

    first = embedder("a")
    model_a = first.int8_file().read_bytes()
    record = first.calibration_record()
    assert calls == [1] and record["photos"] == CALIBRATION_PHOTOS and record["seconds"] >= 0
    assert "pre-processing" not in caplog.text + capfd.readouterr().err  # ORT's advice never reaches the user
    x = photos(4, seed=3)
    vectors_a = first.embed(x)

    second = embedder("b")  # another data home, same weights and layer: no calibration, the same model
    assert second.int8_file().read_bytes() == model_a and calls == [1]
    assert second.calibration_record() == record
    np.testing.assert_array_equal(second.embed(x), vectors_a)

    third = embedder("c", cache="cache2")  # no shared file: calibrated again on the same photos, same bytes
    assert third.int8_file().read_bytes() == model_a and calls == [1, 1]
    assert third.calibration_record()["pixels_sha256"] == record["pixels_sha256"]

    other = embedder("d", cache="cache3", calib=lambda: calibration(seed=2))  # other photos: recorded as such
    other.int8_file()
    assert other.calibration_record()["pixels_sha256"] != record["pixels_sha256"]

    (tmp_path / "cache").joinpath("onnx").rename(tmp_path / "gone")  # the home keeps its own copy
    assert embedder("a").int8_file().read_bytes() == model_a and calls == [1, 1, 2]


def test_a_home_calibrated_on_photos_seen_before_copies_that_model_from_the_memo(tmp_path):
    """The default (no shared model): each home calibrates on its own first photos, except that a home whose
    calibration photos are the same pixels as one of the last MEMO_KEEP homes' gets that model from the user cache
    (a rebuild from scratch, a second home of the same folder): the same bytes calibrating would make, without the
    fp32 export or the quantizer. Other photos calibrate; older entries leave the memo; a damaged one is not used."""
    from imgidx.indexer.embedders.onnx_export import memo_folder
    from imgidx.indexer.embedders.onnx_runtime import CALIBRATION_PHOTOS, MEMO_KEEP

    toy, memo = _toy(small_model("gap")), tmp_path / "user-cache"

    def embedder(home: str, seed: int = 1):
        return OnnxEmbedder(
            "gap",
            RANDOM0,
            precision="int8",
            model=toy,
            calibration=lambda: photos(CALIBRATION_PHOTOS, seed=seed),
            home=tmp_path / home,
            memo=memo,
        )

    def exported(home: str) -> bool:  # the quantizer's input: made only when a home calibrates
        return any((tmp_path / home / "cache" / "onnx").glob("*-fp32-*.onnx"))

    def memoised() -> list:
        return sorted(memo_folder(memo).glob("*.onnx"))

    first = embedder("a")
    model_a, record = first.int8_file().read_bytes(), first.calibration_record()
    assert exported("a") and len(memoised()) == 1
    assert memoised()[0].stat().st_ino == first.int8_file().stat().st_ino  # a link: no second copy on disk

    again = embedder("b")  # the same photos in another home: copied, not calibrated
    assert again.int8_file().read_bytes() == model_a and not exported("b")
    assert again.calibration_record() == record  # when and how long the model's one calibration took
    x = photos(4, seed=5)
    np.testing.assert_array_equal(again.embed(x), first.embed(x))

    other = embedder("c", seed=2)  # other photos: calibrated, another model
    assert other.int8_file().read_bytes() != model_a and exported("c")
    assert other.calibration_record()["pixels_sha256"] != record["pixels_sha256"]
    for i, seed in enumerate(range(3, 3 + MEMO_KEEP)):  # newer homes push seed 1's model out of the memo
        embedder(f"n{i}", seed=seed).int8_file()
    assert len(memoised()) == MEMO_KEEP
    assert embedder("a").int8_file().read_bytes() == model_a  # the home's own copy outlives the memo's
    late = embedder("e")
    assert late.int8_file().read_bytes() == model_a and exported("e")  # calibrated again: the same bytes

    newest = max(memoised(), key=lambda p: p.with_suffix(".json").stat().st_mtime)
    newest.write_bytes(b"not a model")  # damaged in the cache: never trusted, calibrated instead
    damaged = embedder("f")
    assert damaged.int8_file().read_bytes() == model_a and exported("f")
