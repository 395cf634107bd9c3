"""Importing Keras quietly, finding its device, and its dtype policy. The only place that imports Keras' backend
for the embedders; importing this module imports nothing heavy."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

from ..threads import use_machine_threads

KERAS_POLICY = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


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

            use_machine_threads()  # before any op: vectors must not depend on the CPU affinity (threads.py)
    return sys.modules["keras"]


@contextlib.contextmanager
def dtype_policy(precision: str) -> Iterator[None]:
    """Layers built inside the block compute at `precision` (Keras mixed precision); float32 again afterwards."""
    keras = import_keras()
    keras.mixed_precision.set_dtype_policy(KERAS_POLICY[precision])
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


# Device files through which Linux programs reach a GPU: NVIDIA's driver, AMD's ROCm, WSL2's GPU paravirtualisation.
GPU_DEVICE_FILES = ("/dev/nvidia*", "/dev/kfd", "/dev/dxg")


def accelerator() -> str:
    """'gpu' when the Keras backend (KERAS_BACKEND: tensorflow, jax or torch) sees a GPU, else 'cpu'.

    On Linux without any GPU device file no backend can see a GPU: 'cpu' without importing one (importing
    TensorFlow takes seconds, e.g. in a Ray build's driver, which runs no model). Otherwise it imports the
    backend: call it only where a model is about to be built."""
    if not gpu_device_files():
        return "cpu"
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


def gpu_device_files() -> bool:
    """Whether a GPU may be reachable: always True off Linux (macOS reaches its GPU through no device file)."""
    import glob

    return not sys.platform.startswith("linux") or any(glob.glob(p) for p in GPU_DEVICE_FILES)
