"""The ONNX Runtime runtime: runs the Keras model exported by onnx_export (fp32) or its static int8 quantization.

Same stamp as the Keras runtime at the same precision (embedders.stamp_of): on the shared photos with the real
conv weights, ORT fp32 and TensorFlow fp32 vectors agree to cosine >= 0.99999 (README "Performance"; tests/
test_onnx.py), so an index may hold vectors from both. int8 is a precision of its own ("int8" in the stamp).

Determinism: intra_op_num_threads is fixed to threads.machine_threads() (the machine's CPUs, not this process's
affinity mask), so a build pinned to one CPU runs the same kernels with the same partitioning as an unpinned one; every
batch is padded to batch_size rows (embedders.pad_rows), so a photo's vector does not depend on its neighbours.

int8: onnxruntime.quantization.quantize_static, QDQ format, per-channel int8 weights (reduce_range: 7 bits),
uint8 activations, MinMax ranges calibrated on CALIBRATION_PHOTOS real photos: the first photos of the index
by id (for a new index, the first photos of the build being run) — the user's own photos, so the ranges fit
what is indexed. The quantized file is kept under the data home beside the fp32 export and serves every later
build and query of that home, so all its int8 vectors come from one quantized model; with IMGIDX_INT8_SHARED=1
it is also kept in the user cache (~/.cache/imgidx/onnx, per weights fingerprint, layer, recipe version,
calibration size and ONNX Runtime version) and a new data home copies it instead of calibrating. What
calibrated it is in the sidecar and `info`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError
from ..records import Stamp
from ..threads import machine_threads
from . import check_images, embed_in_batches, stamp_of
from . import onnx_export as ox
from . import vgg16 as _vgg16
from .weights import WeightsSpec

ONNX_PRECISIONS = ("fp32", "int8")
# The fewest photos whose ranges kept every outcome of the precision gate within 0.005 of fp32 (README "Precision
# by CPU kind"): a fixed cost, whatever the size of the build.
CALIBRATION_PHOTOS = 32
CALIBRATION_BATCH = 8  # photos per calibration run: every intermediate tensor of a batch is held at once
MEMO_KEEP = 2  # quantized models kept by their calibration photos (each the size of the int8 model)
QUANT_VERSION = 2  # bump when the quantization recipe below changes


def session(path: Path | str | bytes, n_threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = n_threads or machine_threads()  # bitwise-equal vectors pinned or not
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # warnings about unused initializers etc. are not the user's business
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), so, providers=["CPUExecutionProvider"])


class OnnxEmbedder:
    """An Embedder (see embedders.Embedder) over ONNX Runtime on the CPU.

    home: the data home whose cache/onnx holds the exported files. calibration: called only when an int8 file
    must be made; returns up to CALIBRATION_PHOTOS uint8 (n, 224, 224, 3) photos. shared: a user cache folder
    whose quantized files every data home of this user reuses (None: each home calibrates its own). memo: a user
    cache folder keeping the last MEMO_KEEP quantized models by their calibration photos: a home whose calibration
    photos are the same pixels as an earlier home's copies that model, byte for byte what calibrating would make,
    instead of calibrating (None: never)."""

    runtime = "onnx"

    def __init__(
        self,
        layer: str,
        weights: WeightsSpec,
        *,
        precision: str = "fp32",
        batch_size: int = 32,
        model: ModuleType = _vgg16,
        home: Path | str | None = None,
        calibration: Callable[[], npt.NDArray[np.uint8]] | None = None,
        n_threads: int | None = None,
        shared: Path | str | None = None,
        memo: Path | str | None = None,
    ):
        if layer not in model.LAYERS:
            raise ValueError(f"layer must be one of {list(model.LAYERS)}; received {layer!r}")
        if precision not in ONNX_PRECISIONS:
            raise ValueError(f"ONNX Runtime runs precision {' or '.join(ONNX_PRECISIONS)}; received {precision!r}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0; received {batch_size}")
        self.model = model
        self.name, self.input_size, self.preprocess = model.NAME, model.INPUT_SIZE, model.PREPROCESS
        self.layers = dict(model.LAYERS)
        self.layer, self.weights, self.precision, self.batch_size = layer, weights, precision, batch_size
        self.dim = model.LAYERS[layer]
        self.home = Path(home) if home is not None else _default_home()
        self.calibration = calibration
        self.n_threads = n_threads
        self.shared = Path(shared) if shared is not None else None
        self.memo = Path(memo) if memo is not None else None
        self._session = None

    @property
    def stamp(self) -> Stamp:
        return stamp_of(self.model, self.layer, self.weights, self.precision)

    def _meta(self, precision: str) -> dict:
        # int8: the recipe. The calibration size and the ONNX Runtime version name the shared file (_shared_tag),
        # not the home's copy: an upgrade must not swap the model under an index's existing vectors.
        extra = {"quant_version": QUANT_VERSION} if precision == "int8" else {}
        return ox.expected_meta(
            model=self.name, layer=self.layer, precision=precision, fingerprint=self.weights.fingerprint, **extra
        )

    def _path(self, precision: str) -> Path:
        return ox.cache_path(
            self.home, model=self.name, layer=self.layer, precision=precision, fingerprint=self.weights.fingerprint
        )

    def fp32_file(self) -> Path:
        """The exported fp32 graph, from the cache when it matches, else exported now from the Keras model."""
        return ox.get_or_build(self._path("fp32"), self._meta("fp32"), self._export)

    def int8_file(self) -> Path:
        """The quantized graph of this home, made once from CALIBRATION_PHOTOS of its photos, or copied from the
        user cache: with a shared folder, the one model there for the same weights, layer, recipe, calibration size
        and ONNX Runtime (made by an earlier build, in any home); else the memo's model calibrated on the same
        pixels (the calibration is deterministic: the same bytes calibrating would make). A model made here is left
        in that cache too. The home keeps its own copy, so every int8 vector of an index comes from one quantized
        model even after the user cache is cleared."""
        meta = self._meta("int8")
        path = self._path("int8")
        if ox.cached(path, meta):
            return path
        pixels, cache = None, None
        where = {"model": self.name, "layer": self.layer, "fingerprint": self.weights.fingerprint, "tag": _shared_tag()}
        if self.shared is not None:
            cache = ox.shared_path(self.shared, **where)
        elif self.memo is not None:  # named by the pixels: read them first
            pixels = self._calibration_pixels()
            cache = ox.memo_path(self.memo, **where, pixels=calibration_fingerprint(pixels))
        if cache is not None and ox.cached(cache, meta):
            ox.touch(cache)
            ox.copy(cache, path, {**meta, "calibration": ox.sidecar(cache).get("calibration", {})})
            return path
        data, calibration = self._quantize(pixels)
        ox.write(path, data, {**meta, "calibration": calibration})
        if cache is not None:
            ox.copy(path, cache, {**meta, "calibration": calibration})
            if self.shared is None:
                ox.keep_newest(cache.parent, MEMO_KEEP)
        return path

    def calibration_record(self) -> dict | None:
        """How this home's int8 model was calibrated (photos, their fingerprint, when, seconds), for `info`;
        None for fp32 or before the model is made."""
        if self.precision != "int8" or not ox.cached(self._path("int8"), self._meta("int8")):
            return None
        return ox.sidecar(self._path("int8")).get("calibration") or None

    def model_file(self) -> Path:
        return self.int8_file() if self.precision == "int8" else self.fp32_file()

    def load(self) -> OnnxEmbedder:
        if self._session is None:
            self._session = session(self.model_file(), self.n_threads)
        return self

    def embed(self, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """(n, 224, 224, 3) uint8 RGB -> (n, dim) float32 unit vectors, in batches of batch_size."""
        check_images(images, self.input_size)
        self.load()
        return embed_in_batches(images, self.batch_size, self.dim, self.raw)

    def raw(self, chunk: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        self.load()
        return self._session.run(None, {ox.INPUT: np.ascontiguousarray(chunk, dtype=np.uint8)})[0]

    # ---- making the files ------------------------------------------------------------------------------------

    def _export(self) -> bytes:
        from .keras_env import dtype_policy, quiet_stderr

        with quiet_stderr(), dtype_policy("fp32"):
            keras_model = self.model.keras_model(self.layer, self.weights)
        return ox.to_onnx(
            keras_model, input_size=self.input_size, mean_bgr=self.model.CAFFE_MEAN_BGR
        ).SerializeToString()

    def _calibration_pixels(self) -> npt.NDArray[np.uint8]:
        """Up to CALIBRATION_PHOTOS photos from `calibration`, checked."""
        if self.calibration is None:
            raise ConfigError(
                "int8 needs a few of the index's own photos to calibrate the quantization, and none were "
                "given; build the index with precision int8 first (it calibrates on the first photos it embeds)"
            )
        pixels = np.asarray(self.calibration(), dtype=np.uint8)[:CALIBRATION_PHOTOS]
        if len(pixels) == 0:
            raise ConfigError("int8 calibration needs at least one photo that decodes; none did")
        check_images(pixels, self.input_size)
        return pixels

    def _quantize(self, pixels: npt.NDArray[np.uint8] | None = None) -> tuple[bytes, dict]:
        """The int8 model from CALIBRATION_PHOTOS photos (`pixels`, else read now), and what to record about them."""
        import time

        start = time.perf_counter()
        pixels = self._calibration_pixels() if pixels is None else pixels
        data = quantize(self.fp32_file(), pixels)
        return data, {
            "photos": len(pixels),
            "pixels_sha256": calibration_fingerprint(pixels),
            "when": time.strftime("%Y-%m-%d %H:%M:%S"),
            "seconds": round(time.perf_counter() - start, 1),
        }


# The quantization recipe (bench/precision_gate.py measures its alternatives): per-channel signed int8 weights
# limited to 7 bits, unsigned int8 activations, MinMax ranges, every layer quantized.
RECIPE = {"reduce_range": True, "weights": "s8", "fp32_nodes": ()}


def quantize(fp32_path: Path, pixels: npt.NDArray[np.uint8], **recipe) -> bytes:
    """Static int8 quantization of the fp32 graph: QDQ, per-channel weights, uint8 activations, MinMax ranges from
    `pixels`; `recipe` overrides RECIPE's entries (reduce_range: 7-bit weights; weights: "s8" or "u8"; fp32_nodes:
    names of nodes left in fp32). Returns the quantized model's bytes (written to a temp file by ORT, then read)."""
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    unknown = set(recipe) - set(RECIPE)
    if unknown:
        raise ValueError(f"unknown quantization options: {sorted(unknown)}")
    r = {**RECIPE, **recipe}

    class Reader(CalibrationDataReader):
        """Batches of CALIBRATION_BATCH photos; set_range lets the calibrator take them one batch at a time."""

        def __init__(self):
            self.batches = [
                np.ascontiguousarray(pixels[i : i + CALIBRATION_BATCH])
                for i in range(0, len(pixels), CALIBRATION_BATCH)
            ]
            self.set_range(0, len(self.batches))

        def __len__(self) -> int:
            return len(self.batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.todo = iter(self.batches[start_index:end_index])

        def get_next(self):
            b = next(self.todo, None)
            return None if b is None else {ox.INPUT: b}

    with tempfile.TemporaryDirectory(prefix="imgidx-quant-") as tmp, _quiet_quantizer():
        out, src = Path(tmp) / "int8.onnx", Path(tmp) / "fp32.onnx"
        # the quantizer writes <input>-inferred.onnx beside its input: a private link keeps two processes that
        # quantize at once (and the shared cache folder) out of each other's way
        os.symlink(Path(fp32_path).resolve(), src)
        quantize_static(
            str(src),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QUInt8 if r["weights"] == "u8" else QuantType.QInt8,
            reduce_range=r["reduce_range"],  # 7-bit weights: AVX2 without VNNI saturates u8*s8 pair sums
            nodes_to_exclude=list(r["fp32_nodes"]),
            # min/max of one batch at a time, merged: by default the calibrator keeps every intermediate tensor of
            # every batch to the end (~110 MB per photo through block5: ~30 GB for 300 photos)
            extra_options={"CalibStridedMinMax": 1},
        )
        return out.read_bytes()


@contextlib.contextmanager
def _quiet_quantizer():
    """ONNX Runtime's quantizer logs "Please consider to run pre-processing before quantization" through the root
    logger (it reaches the user's stderr at every int8 build): our graph is already what pre-processing would make
    of it (shapes fixed by the exporter, nothing to fold), so the advice is noise here."""
    import logging

    class Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-processing before quantization" not in record.getMessage()

    drop, root = Drop(), logging.getLogger()  # it calls logging.warning(): the root logger's own filters apply
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def calibration_fingerprint(pixels: npt.NDArray[np.uint8]) -> str:
    """sha256 of the calibration pixels: the same photos give the same ranges, hence the same int8 model."""
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()[:16]


def _ort_version() -> str:
    from importlib.metadata import version

    return version("onnxruntime")


def _shared_tag() -> str:
    return f"q{QUANT_VERSION}-c{CALIBRATION_PHOTOS}-ort{_ort_version()}"


def _default_home() -> Path:
    from ..config import Settings

    return Settings.from_env().home
