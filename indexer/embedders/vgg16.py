"""VGG16, the reference model: every fact about it lives here (and nowhere else).

fc2 (4096-d) as in seed 003 §9.5, or block5_pool global-average-pooled (512-d) as in seeds 000/004. Input is
uint8 RGB 224x224 from images.prepare; Keras' caffe preprocessing (RGB->BGR, ImageNet mean). Keras is the model
definition and the weight loader; runtimes (keras_runtime.py, ONNX Runtime) run what `keras_model` builds.
Keras is imported only inside the functions that build a graph.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError
from ..records import WeightsSpec
from .keras_env import import_keras, quiet_stderr

NAME = "vgg16"  # the stamp's model: existing indexes say exactly this
INPUT_SIZE = 224
LAYERS = {"fc2": 4096, "block5_pool": 512}  # layer offered -> dim of its vector
DEFAULT_LAYER = "fc2"  # what a new index embeds when no layer is given
# duplicates' calibrated cut (cosine distance) per layer with ImageNet weights (search/duplicates.py CALIBRATION)
DUPLICATE_CUTS = {"block5_pool": 0.05}
NEEDS_TOP = frozenset({"fc2"})  # layers that need the fully connected ("top") weights
TOP_LAYERS = frozenset({"fc1", "fc2"})  # what a weights file must hold to count as "top"
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils, mode="caffe"
# images.py's preparation + the caffe mode; byte-identical to the stamps of existing indexes (records.Stamp default)
PREPROCESS = "center-crop/224/draft>=2x+lanczos/caffe"

TOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
# Keras' published md5 of the official files (keras/src/applications/vgg16.py).
OFFICIAL_MD5 = {TOP_FILE: "64373286793e3c8b2b4e3219cbf3544b", NOTOP_FILE: "6d6bbae143d832006294945121d1f1fc"}
WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"


def imagenet_files(layer: str) -> list[str]:
    """The official files that serve `layer`, preferred first (the 58 MB notop file is enough for block5_pool)."""
    return [TOP_FILE] if layer in NEEDS_TOP else [NOTOP_FILE, TOP_FILE]


def preprocess(images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Keras caffe preprocessing on a copy (preprocess_input modifies float input in place)."""
    return import_keras().applications.vgg16.preprocess_input(images.astype(np.float32, copy=True))


def keras_base(weights: WeightsSpec, *, include_top: bool):
    """keras.applications.VGG16 with the requested weights. Random init only when asked
    for explicitly. Layers compute in the current Keras dtype policy (keras_env.dtype_policy)."""
    keras = import_keras()
    if weights.kind == "random":
        keras.utils.set_random_seed(weights.seed)
    base = keras.applications.VGG16(include_top=include_top, weights=None)
    if weights.kind == "file":
        try:
            base.load_weights(str(weights.path))
        except (ValueError, OSError, KeyError) as e:
            raise ConfigError(f"cannot load weights from {weights.path}: {str(e).splitlines()[0][:200]}") from None
    return base


def keras_model(layer: str, weights: WeightsSpec):
    """VGG16 cut at `layer`: fc2 as in seed 003 §9.5, or block5_pool averaged as in seeds 000/004. Takes float
    input already preprocessed (caffe); outputs (n, LAYERS[layer])."""
    keras = import_keras()
    base = keras_base(weights, include_top=weights.has_top or layer in NEEDS_TOP)
    if layer == "fc2":
        out = base.get_layer("fc2").output
    else:
        out = keras.layers.GlobalAveragePooling2D(name="block5_gap")(base.get_layer("block5_pool").output)
    return keras.Model(base.input, out, name=f"vgg16_{layer}")


def conv_activations(pixels: npt.NDArray[np.uint8], layer: str, weights: WeightsSpec) -> npt.NDArray[np.float32]:
    """Feature maps (h, w, channels) of one photo at a convolutional layer (seed 002's activation maps)."""
    keras = import_keras()
    with quiet_stderr():
        base = keras_base(weights, include_top=weights.has_top)
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
        model = keras_base(weights, include_top=True)
    probs = np.asarray(model(preprocess(pixels[None]), training=False)[0], dtype=np.float64)
    best = np.argsort(-probs)[:top]
    return [(int(i), float(probs[i])) for i in best]
