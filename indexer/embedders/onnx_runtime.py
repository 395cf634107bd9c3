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
what is indexed. The quantized file is cached under the data home beside the fp32 export and reused by every
later build and query of that home, so all its int8 vectors come from one quantized model.
"""

from __future__ import annotations

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
CALIBRATION_PHOTOS = 300
CALIBRATION_BATCH = 8  # photos per calibration run: every intermediate tensor of a batch is held at once
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
    must be made; returns a few hundred uint8 (n, 224, 224, 3) photos."""

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
        self._session = None

    @property
    def stamp(self) -> Stamp:
        return stamp_of(self.model, self.layer, self.weights, self.precision)

    def _meta(self, precision: str) -> dict:
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
        return ox.get_or_build(self._path("int8"), self._meta("int8"), self._quantize)

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

    def _quantize(self) -> bytes:
        if self.calibration is None:
            raise ConfigError(
                "int8 needs a few hundred of the index's own photos to calibrate the quantization, and none were "
                "given; build the index with precision int8 first (it calibrates on the first photos it embeds)"
            )
        pixels = np.asarray(self.calibration(), dtype=np.uint8)
        if len(pixels) == 0:
            raise ConfigError("int8 calibration needs at least one photo that decodes; none did")
        check_images(pixels, self.input_size)
        return quantize(self.fp32_file(), pixels)


def quantize(fp32_path: Path, pixels: npt.NDArray[np.uint8]) -> bytes:
    """Static int8 quantization of the fp32 graph: QDQ, per-channel 7-bit weights, uint8 activations, MinMax ranges
    from `pixels`. Returns the quantized model's bytes (written to a temp file by ORT, then read)."""
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

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

    with tempfile.TemporaryDirectory(prefix="imgidx-quant-") as tmp:
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
            weight_type=QuantType.QInt8,
            reduce_range=True,  # 7-bit weights: AVX2 without VNNI saturates u8*s8 pair sums (README: cosine)
            # min/max of one batch at a time, merged: by default the calibrator keeps every intermediate tensor of
            # every batch to the end (~110 MB per photo through block5: ~30 GB for 300 photos)
            extra_options={"CalibStridedMinMax": 1},
        )
        return out.read_bytes()


def calibration_fingerprint(pixels: npt.NDArray[np.uint8]) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()[:16]


def _default_home() -> Path:
    from ..config import Settings

    return Settings.from_env().home
