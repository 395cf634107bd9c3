"""Keras VGG16 -> ONNX, by a small explicit exporter, and the on-disk cache of the exported files.

Keras stays the model definition and the weight loader: `to_onnx` walks the layers of the Keras model that the
Keras runtime runs (Conv2D, MaxPooling2D, Flatten, Dense, GlobalAveragePooling2D) and writes each as ONNX
nodes with the same weights. The graph takes what the Keras runtime takes, uint8 RGB NHWC (n, 224, 224, 3), and
does the caffe preprocessing inside: subtracting the mean in RGB order and then reversing the channels equals
Keras' reverse-then-subtract element for element, and the reversal is folded into the first convolution's input
channels (a permutation of its weights: exact). Flatten feeds the Dense layers in Keras' (h, w, c) order; the
ONNX graph is NCHW, so fc1's weight rows are permuted from (h, w, c) to (c, h, w) instead of transposing the
activations (also exact).

Why not tf2onnx: it does convert this model on TF 2.21 / Keras 3.15 (tf2onnx 1.17, checked), but it traces a
TensorFlow graph (seconds of TF start-up and tracing per export), pins its own protobuf/onnx ranges, lags TF
releases, and gives a graph we do not control (node names, preprocessing, input type). Five layer kinds are
fewer lines than its workarounds.

Cache: `$IMGIDX_HOME/cache/onnx/<model>-<layer>-<precision>-<weights fingerprint>-x<EXPORTER_VERSION>.onnx`
with a JSON sidecar holding the fingerprint, layer, precision, exporter version and the sha256 of the .onnx
bytes. Both are written through indexer/atomic.py (temp file + fsync + rename); a file is used only when its
sidecar matches what is asked for and the bytes hash to what the sidecar says, else it is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import atomic, layout
from .vgg16 import CAFFE_MEAN_BGR, INPUT_SIZE

EXPORTER_VERSION = 1  # bump when the graph this file writes changes: old cache files are then rebuilt
OPSET = 17
INPUT = "images"  # uint8 (n, 224, 224, 3) RGB
OUTPUT = "features"  # float32 (n, dim), before L2 normalisation


def to_onnx(model, *, input_size: int = INPUT_SIZE, mean_bgr=CAFFE_MEAN_BGR):
    """The Keras model (VGG16 cut at fc2 or at block5_pool + GlobalAveragePooling2D, fp32) as an onnx.ModelProto."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    # caffe preprocessing: (x_rgb - mean_rgb), then to NCHW; the RGB->BGR reversal is folded into conv 1 below
    x = node("Cast", [INPUT], "pre/cast", to=TensorProto.FLOAT)
    mean_rgb = np.array(mean_bgr[::-1], np.float32).reshape(1, 1, 1, 3)
    x = node("Sub", [x, const("pre/mean_rgb", mean_rgb)], "pre/sub_mean")
    x = node("Transpose", [x], "pre/nchw", perm=[0, 3, 1, 2])
    shape = (input_size, input_size, 3)  # running (h, w, c) of the Keras tensor, for Flatten
    first_conv, flat_hwc = True, None
    for layer in model.layers:
        kind = type(layer).__name__
        name = layer.name
        if kind == "InputLayer":
            continue
        if kind == "Conv2D":
            _check_conv(layer)
            w, b = (np.asarray(v, np.float32) for v in layer.get_weights())
            w = w.transpose(3, 2, 0, 1)  # Keras HWIO -> ONNX OIHW
            if first_conv:
                w, first_conv = w[:, ::-1], False  # input channels BGR -> the graph's RGB: the caffe reversal
            k = w.shape[2]
            x = node(
                "Conv",
                [x, const(f"{name}/w", w), const(f"{name}/b", b)],
                f"{name}/conv",
                kernel_shape=[k, k],
                pads=[k // 2] * 4,
                strides=[1, 1],
            )
            x = _activation(layer, x, node)
            shape = (shape[0], shape[1], w.shape[0])
        elif kind == "MaxPooling2D":
            if tuple(layer.pool_size) != (2, 2) or tuple(layer.strides) != (2, 2) or layer.padding != "valid":
                raise ValueError(f"{name}: only 2x2/2 valid max pooling is exported")
            x = node("MaxPool", [x], f"{name}/pool", kernel_shape=[2, 2], strides=[2, 2])
            shape = (shape[0] // 2, shape[1] // 2, shape[2])
        elif kind == "Flatten":
            x = node("Flatten", [x], f"{name}/flatten", axis=1)
            flat_hwc = shape  # the next Dense reads Keras' (h, w, c) order: permute its rows to (c, h, w)
        elif kind == "Dense":
            w, b = (np.asarray(v, np.float32) for v in layer.get_weights())
            if flat_hwc is not None:
                h, wd, c = flat_hwc
                w = w.reshape(h, wd, c, -1).transpose(2, 0, 1, 3).reshape(h * wd * c, -1)
                flat_hwc = None
            # MatMul + Add rather than Gemm: the quantizer treats MatMul weights per output channel (axis 1)
            x = node("MatMul", [x, const(f"{name}/w", w)], f"{name}/matmul")
            x = node("Add", [x, const(f"{name}/b", b)], f"{name}/bias")
            x = _activation(layer, x, node)
            shape = (w.shape[1],)
        elif kind == "GlobalAveragePooling2D":
            x = node("GlobalAveragePool", [x], f"{name}/gap")
            x = node("Flatten", [x], f"{name}/flatten", axis=1)
            shape = (shape[2],)
        else:
            raise ValueError(f"layer {name} ({kind}) is not exported to ONNX")
    nodes[-1].output[0] = OUTPUT
    dim = shape[0]
    graph = helper.make_graph(
        nodes,
        model.name,
        [helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["n", input_size, input_size, 3])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["n", dim])],
        initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="imgidx")
    proto.ir_version = 8  # readable by every ONNX Runtime >= 1.10
    onnx.checker.check_model(proto, full_check=False)
    return proto


def _check_conv(layer) -> None:
    k = layer.kernel_size
    if k[0] != k[1] or k[0] % 2 != 1 or tuple(layer.strides) != (1, 1) or layer.padding != "same":
        raise ValueError(f"{layer.name}: only odd square 'same' convolutions with stride 1 are exported")
    if tuple(layer.dilation_rate) != (1, 1) or layer.groups != 1 or not layer.use_bias:
        raise ValueError(f"{layer.name}: dilated, grouped or bias-free convolutions are not exported")
    if layer.data_format != "channels_last":
        raise ValueError(f"{layer.name}: only channels_last Keras models are exported")


def _activation(layer, x: str, node: Callable[..., str]) -> str:
    act = getattr(layer.activation, "__name__", str(layer.activation))
    if act == "relu":
        return node("Relu", [x], f"{layer.name}/relu")
    if act == "linear":
        return x
    raise ValueError(f"{layer.name}: activation {act} is not exported")


# ---- cache -----------------------------------------------------------------------------------------------------


def cache_dir(home: Path) -> Path:
    return layout.onnx_cache_folder(home)


def cache_path(home: Path, *, model: str, layer: str, precision: str, fingerprint: str) -> Path:
    return cache_dir(home) / f"{model}-{layer}-{precision}-{_name(fingerprint)}-x{EXPORTER_VERSION}.onnx"


def shared_path(cache_dir: Path, *, model: str, layer: str, fingerprint: str, tag: str) -> Path:
    """A quantized file shared by every data home of this user (`cache_dir`: the user cache, e.g. ~/.cache/imgidx):
    `tag` names what else decides its bytes (recipe version, calibration size, ONNX Runtime version)."""
    return Path(cache_dir) / "onnx" / f"{model}-{layer}-int8-{_name(fingerprint)}-x{EXPORTER_VERSION}-{tag}.onnx"


def _name(fingerprint: str) -> str:
    """sha256:<64 hex> -> enough of it for a file name; the sidecar has it all."""
    return fingerprint.replace(":", "-")[:48]


def memo_folder(cache_dir: Path) -> Path:
    """The user cache's quantized models by calibration photos (memo_path), at most MEMO_KEEP of them."""
    return Path(cache_dir) / "onnx" / "by-photos"


def memo_path(cache_dir: Path, *, model: str, layer: str, fingerprint: str, tag: str, pixels: str) -> Path:
    """A quantized file kept in the user cache by what made it, down to the calibration photos' pixels (`pixels`:
    their sha256): any data home whose calibration photos are the same pixels gets the same bytes from it."""
    name = f"{model}-{layer}-int8-{_name(fingerprint)}-x{EXPORTER_VERSION}-{tag}-{pixels}.onnx"
    return memo_folder(cache_dir) / name


def keep_newest(folder: Path, n: int) -> None:
    """Remove all but the `n` most recently used models of `folder` (a user cache folder; use = the sidecar's
    mtime, see `touch`), each with its sidecar."""
    try:
        models = sorted(folder.glob("*.onnx"), key=lambda m: _mtime(_sidecar(m)), reverse=True)
    except OSError:
        return
    for old in models[n:]:
        for f in (_sidecar(old), old):  # sidecar first: a model without one is never trusted
            with contextlib.suppress(OSError):
                f.unlink()


def touch(path: Path) -> None:
    """Mark the model at `path` as just used (keep_newest keeps the most recently used)."""
    with contextlib.suppress(OSError):
        os.utime(_sidecar(path))


def copy(source: Path, target: Path, meta: dict) -> None:
    """The cached model at `source` (checked by `cached`, or just written) also at `target`, with its own sidecar
    (`meta` + the sha256 and size `source`'s sidecar vouches for): a hard link where the file system allows (no
    second copy on disk, nothing read again), else the bytes written atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        target.unlink()  # not a valid cached model (the caller checked): stale, replaced here
    if atomic.link_new(source, target):
        atomic.fsync_dir(target.parent)
        checked = sidecar(source)
        side = {**meta, "sha256": checked["sha256"], "bytes": checked["bytes"]}
        atomic.write_text(_sidecar(target), json.dumps(side, indent=1, sort_keys=True))
    else:
        write(target, source.read_bytes(), meta)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def expected_meta(*, model: str, layer: str, precision: str, fingerprint: str, **extra) -> dict:
    return {
        "model": model,
        "layer": layer,
        "precision": precision,
        "weights": fingerprint,
        "exporter_version": EXPORTER_VERSION,
        "opset": OPSET,
        **extra,
    }


def cached(path: Path, meta: dict) -> bool:
    """True when `path` exists, its sidecar says it was made from `meta` and its bytes hash to what it says."""
    try:
        side = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(side, dict) or {k: side.get(k) for k in meta} != meta:
        return False
    try:
        return _sha256(path) == side.get("sha256")
    except OSError:
        return False


def write(path: Path, data: bytes, meta: dict) -> None:
    """The model bytes, then the sidecar, each atomically: a reader sees a whole old pair or a whole new one
    (a new model beside an old sidecar fails the sha256 check and is rebuilt)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, data)
    side = {**meta, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    atomic.write_text(_sidecar(path), json.dumps(side, indent=1, sort_keys=True))


def get_or_build(path: Path, meta: dict, build: Callable[[], bytes]) -> Path:
    """The cached file at `path` when it matches `meta`, else build() it and store it (missing, stale, mismatching
    or corrupt files are all rebuilt, never trusted)."""
    if not cached(path, meta):
        write(path, build(), meta)
    return path


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def sidecar(path: Path) -> dict:
    """What the sidecar of `path` says ({} when there is none or it cannot be read)."""
    try:
        side = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return {}
    return side if isinstance(side, dict) else {}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
