"""VGG16 embedder: the only module that touches the model (and the GPU).

fc2 (4096-d) as in seed 003 §9.5, or block5_pool global-average-pooled (512-d) as in seeds 000/004. Input is
uint8 RGB 224x224 from images.prepare; Keras' caffe preprocessing (RGB->BGR, ImageNet mean) runs inside the
compiled call on TensorFlow and on a float copy elsewhere (preprocess_input works in place). Outputs are cast
to float32 before they are L2-normalised, so inner product = cosine whatever the compute precision.

Speed (README "Performance"): one cached tf.function with a [None, 224, 224, 3] uint8 signature (one trace for
every batch size); `mixed_bfloat16` on CPUs with AMX-BF16 (~10x fp32, cosine to fp32 >= 0.9999);
batches of 64 on CPU, 128 on a GPU. On JAX/PyTorch the jitted predict_on_batch runs at a fixed batch shape.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

import numpy as np
import numpy.typing as npt

from .errors import ConfigError
from .records import Stamp
from .threads import use_machine_threads
from .weights import LAYERS, WeightsSpec

PRECISIONS = ("fp32", "bf16", "fp16")
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils, mode="caffe"
BATCH_SIZE = {"cpu": 64, "gpu": 128}  # bf16 fc2 on 2 AMX cores: 33 img/s at 32, 37 at 64, 40 at 128 (2x memory)


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where there is no /proc/cpuinfo)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def default_precision(device: str = "cpu", flags: frozenset[str] | None = None) -> str:
    """bf16 on CPUs with AMX-BF16 (~10x fp32 on 2 cores here, cosine to fp32 >= 0.9999: README); fp32 elsewhere.

    On a GPU fp32 stays the default: the model is no longer the bottleneck there (decoding is), so lower
    precision would buy little build speed for a small loss of exactness; pass --precision bf16 to choose it."""
    if device != "cpu":
        return "fp32"
    return "bf16" if "amx_bf16" in (cpu_flags() if flags is None else flags) else "fp32"


def accelerator() -> str:
    """'gpu' when the Keras backend (KERAS_BACKEND: tensorflow, jax or torch) sees a GPU, else 'cpu'.

    Imports the backend: call it only where a model is about to be built."""
    backend = import_keras().backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            with quiet_stderr():  # CUDA probes print errors on machines without a GPU
                return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
        if backend == "jax":
            import jax

            return "gpu" if jax.default_backend() in ("gpu", "cuda", "rocm") else "cpu"
        if backend == "torch":
            import torch

            return "gpu" if torch.cuda.is_available() else "cpu"
    except (ImportError, RuntimeError):
        return "cpu"
    return "cpu"


def default_batch_size(device: str) -> int:
    return BATCH_SIZE.get(device, BATCH_SIZE["cpu"])


class Embedder:
    def __init__(self, layer: str, weights: WeightsSpec, *, precision: str = "fp32", batch_size: int = 32):
        if layer not in LAYERS:
            raise ValueError(f"layer must be one of {list(LAYERS)}; received {layer!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}; received {precision!r}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0; received {batch_size}")
        self.layer, self.weights, self.precision, self.batch_size = layer, weights, precision, batch_size
        self.dim = LAYERS[layer]
        self._model = None
        self._call = None

    @property
    def stamp(self) -> Stamp:
        return Stamp(
            model="vgg16", layer=self.layer, weights=self.weights.fingerprint, dim=self.dim, precision=self.precision
        )

    def load(self) -> Embedder:
        """Build the graph and load the weights (seconds); called lazily by embed()."""
        if self._model is None:
            with quiet_stderr():
                use_machine_threads()  # before any op: vectors must not depend on the CPU affinity (threads.py)
                self._model = build_model(self.layer, self.weights, self.precision)
                self._call = _compiled_call(self._model, self.batch_size)
        return self

    def embed(self, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """(n, 224, 224, 3) uint8 RGB -> (n, dim) float32 unit vectors, in batches of batch_size."""
        if images.ndim != 4 or images.shape[1:] != (224, 224, 3):
            raise TypeError(f"images must have shape (n, 224, 224, 3); received {images.shape}")
        self.load()
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            out[start : start + len(chunk)] = self.raw(pad_rows(chunk, self.batch_size))[: len(chunk)]
        return l2_normalize(out)

    def raw(self, chunk: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """One model call on at most batch_size uint8 images: un-normalised float32 features."""
        self.load()
        y = self._call(np.ascontiguousarray(chunk, dtype=np.uint8))
        return np.asarray(y, dtype=np.float32)  # cast before normalising: bf16 norms lose digits


@contextlib.contextmanager
def quiet_stderr():
    """Hide TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notes) on stderr; replay it if the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_keras():
    if "keras" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with quiet_stderr():
            import keras  # noqa: F401
    return sys.modules["keras"]


def preprocess(images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Keras caffe preprocessing on a copy (preprocess_input modifies float input in place)."""
    return import_keras().applications.vgg16.preprocess_input(images.astype(np.float32, copy=True))


def pad_rows(chunk: npt.NDArray[np.uint8], rows: int) -> npt.NDArray[np.uint8]:
    """Pad a short batch with black images so that the model always sees `rows` rows.

    Why: a photo's vector must not depend on which other photos shared its batch, or a resumed build (which
    batches differently) would not reproduce an uninterrupted one bit for bit. Measured on TF 2.21 CPU: for a
    fixed batch shape, rows are bitwise independent of their neighbours and position, but fc2 differs in the
    last bits between shapes (oneDNN: 1 row vs more; plain Eigen, TF_ENABLE_ONEDNN_OPTS=0: fewer than 8 rows
    vs more). One shape per --batch-size removes the dependence; the conv layers were batch-invariant anyway.
    The price is the padding of the last, short batch of a run.
    """
    if len(chunk) >= rows:
        return chunk
    return np.concatenate([chunk, np.zeros((rows - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)])


def l2_normalize(v: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v / np.maximum(norms, 1e-12), dtype=np.float32)


def build_base(weights: WeightsSpec, *, include_top: bool, precision: str = "fp32"):
    """keras.applications.VGG16 with the requested weights. Random init only when asked for explicitly."""
    keras = import_keras()
    policy = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[precision]
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        if weights.kind == "random":
            keras.utils.set_random_seed(weights.seed)
        base = keras.applications.VGG16(include_top=include_top, weights=None)
        if weights.kind == "file":
            try:
                base.load_weights(str(weights.path))
            except (ValueError, OSError, KeyError) as e:
                raise ConfigError(f"cannot load weights from {weights.path}: {str(e).splitlines()[0][:200]}") from None
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    return base


def build_model(layer: str, weights: WeightsSpec, precision: str = "fp32"):
    """VGG16 cut at `layer`: fc2 as in seed 003 §9.5, or block5_pool averaged as in seeds 000/004."""
    keras = import_keras()
    base = build_base(weights, include_top=weights.has_top or layer == "fc2", precision=precision)
    if layer == "fc2":
        out = base.get_layer("fc2").output
    else:
        out = keras.layers.GlobalAveragePooling2D(name="block5_gap")(base.get_layer("block5_pool").output)
    return keras.Model(base.input, out, name=f"vgg16_{layer}")


def conv_activations(pixels: npt.NDArray[np.uint8], layer: str, weights: WeightsSpec) -> npt.NDArray[np.float32]:
    """Feature maps (h, w, channels) of one photo at a convolutional layer (seed 002's activation maps)."""
    keras = import_keras()
    with quiet_stderr():
        base = build_base(weights, include_top=weights.has_top)
    names = [lyr.name for lyr in base.layers if lyr.name.startswith("block")]
    if layer not in names:
        raise ConfigError(f"unknown layer {layer!r}; VGG16's convolutional layers are: {', '.join(names)}")
    model = keras.Model(base.input, base.get_layer(layer).output)
    return np.asarray(model(preprocess(pixels[None]), training=False)[0], dtype=np.float32)


def imagenet_top(pixels: npt.NDArray[np.uint8], weights: WeightsSpec, top: int = 5) -> list[tuple[int, float]]:
    """ImageNet class ids and probabilities, best first (seed 003 §9.3). Needs the full (top) weights."""
    if not weights.has_top:
        raise ConfigError(
            "ImageNet labels need the full VGG16 weights with the classifier layers; "
            f"{weights.path} is a convolutional-only file"
        )
    with quiet_stderr():
        model = build_base(weights, include_top=True)
    probs = np.asarray(model(preprocess(pixels[None]), training=False)[0], dtype=np.float64)
    best = np.argsort(-probs)[:top]
    return [(int(i), float(probs[i])) for i in best]


def _compiled_call(model, batch_size: int):
    """uint8 images -> float32 features through a compiled call: tf.function on TensorFlow (preprocessing in the
    graph; faster than predict, no XLA: slower on CPU), the jitted predict_on_batch on JAX/PyTorch."""
    keras = import_keras()

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        mean = tf.constant(CAFFE_MEAN_BGR, tf.float32)

        # one trace for every batch size (a short last batch would otherwise re-trace the whole graph)
        @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.uint8)])
        def fn(x):
            x = tf.reverse(tf.cast(x, tf.float32), axis=[-1]) - mean  # = preprocess_input(mode="caffe")
            return tf.cast(model(x, training=False), tf.float32)

        return lambda x: fn(tf.constant(x)).numpy()

    def call(x: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        n = len(x)
        if n < batch_size:  # one input shape: jax.jit would compile the whole graph again for a short batch
            x = np.concatenate([x, np.zeros((batch_size - n, *x.shape[1:]), dtype=x.dtype)])
        return np.asarray(model.predict_on_batch(preprocess(x)), dtype=np.float32)[:n]

    return call
