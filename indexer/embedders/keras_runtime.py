"""The Keras runtime: runs a model module's Keras graph (vgg16.keras_model) on the Keras backend.

Speed (README "Performance"): one cached tf.function with a [None, size, size, 3] uint8 signature (one trace for
every batch size) with the caffe preprocessing inside the graph; `mixed_bfloat16` on CPUs with AMX-BF16 (~10x
fp32, cosine to fp32 >= 0.9999); batches of 64 on CPU, 128 on a GPU. On JAX/PyTorch the jitted predict_on_batch
runs at a fixed batch shape on a preprocessed float copy. Every batch is padded to batch_size rows (pad_rows).
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import numpy.typing as npt

from ..records import Stamp
from . import check_images, embed_in_batches, stamp_of
from . import vgg16 as _vgg16
from .keras_env import KERAS_POLICY, dtype_policy, import_keras, quiet_stderr
from .weights import WeightsSpec


class KerasEmbedder:
    """An Embedder (see embedders.Embedder) over Keras. Construct through embedders.make() or directly."""

    runtime = "keras"

    def __init__(
        self,
        layer: str,
        weights: WeightsSpec,
        *,
        precision: str = "fp32",
        batch_size: int = 32,
        model: ModuleType = _vgg16,
    ):
        if layer not in model.LAYERS:
            raise ValueError(f"layer must be one of {list(model.LAYERS)}; received {layer!r}")
        if precision not in KERAS_POLICY:  # int8 is ONNX Runtime's (onnx_runtime.py)
            raise ValueError(f"the Keras runtime runs precision {'|'.join(KERAS_POLICY)}; received {precision!r}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0; received {batch_size}")
        self.model = model
        self.name, self.input_size, self.preprocess = model.NAME, model.INPUT_SIZE, model.PREPROCESS
        self.layers = dict(model.LAYERS)
        self.layer, self.weights, self.precision, self.batch_size = layer, weights, precision, batch_size
        self.dim = model.LAYERS[layer]
        self._model = None
        self._call = None

    @property
    def stamp(self) -> Stamp:
        return stamp_of(self.model, self.layer, self.weights, self.precision)

    def load(self) -> KerasEmbedder:
        """Build the graph and load the weights (seconds); called lazily by embed()."""
        if self._model is None:
            with quiet_stderr(), dtype_policy(self.precision):
                self._model = self.model.keras_model(self.layer, self.weights)
            with quiet_stderr():
                self._call = _compiled_call(self._model, self.batch_size, self.model)
        return self

    def embed(self, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """(n, size, size, 3) uint8 RGB -> (n, dim) float32 unit vectors, in batches of batch_size."""
        check_images(images, self.input_size)
        self.load()
        return embed_in_batches(images, self.batch_size, self.dim, self.raw)

    def raw(self, chunk: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """One model call on at most batch_size uint8 images: un-normalised float32 features."""
        self.load()
        y = self._call(np.ascontiguousarray(chunk, dtype=np.uint8))
        return np.asarray(y, dtype=np.float32)  # cast before normalising: bf16 norms lose digits


def _compiled_call(model, batch_size: int, spec: ModuleType):
    """uint8 images -> float32 features through a compiled call: tf.function on TensorFlow (preprocessing in the
    graph; faster than predict, no XLA: slower on CPU), the jitted predict_on_batch on JAX/PyTorch."""
    keras = import_keras()
    size = spec.INPUT_SIZE

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        mean = tf.constant(spec.CAFFE_MEAN_BGR, tf.float32)

        # one trace for every batch size (a short last batch would otherwise re-trace the whole graph)
        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
        def fn(x):
            x = tf.reverse(tf.cast(x, tf.float32), axis=[-1]) - mean  # = preprocess_input(mode="caffe")
            return tf.cast(model(x, training=False), tf.float32)

        return lambda x: fn(tf.constant(x)).numpy()

    def call(x: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        n = len(x)
        if n < batch_size:  # one input shape: jax.jit would compile the whole graph again for a short batch
            x = np.concatenate([x, np.zeros((batch_size - n, *x.shape[1:]), dtype=x.dtype)])
        return np.asarray(model.predict_on_batch(spec.preprocess(x)), dtype=np.float32)[:n]

    return call
