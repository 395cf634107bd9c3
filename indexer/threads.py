"""One thread count for the model runtimes, taken from the machine (os.cpu_count()), never from the process's CPU
affinity mask.

Why: TensorFlow sizes its thread pools from the CPUs the process may run on, and fp32 kernels split their sums by
thread count, so a build pinned to fewer CPUs (taskset, a cpuset, a nice'd resume) gave vectors that differ in the
last bits from an unpinned one. Measured on a 2-core AMD EPYC (AVX2, TF 2.21, oneDNN on, batch 4, fp32, fc2 and
block5_pool): default threads, pinned vs unpinned: not bitwise equal; with this fixed count: bitwise equal, and
equal to the unpinned default. The count is a function of the machine alone, so the promise is "bitwise on one
machine"; other machines (other kernels) agree within cosine >= 0.999999. ONNX Runtime takes the same count.
"""

from __future__ import annotations

import os


def machine_threads() -> int:
    """The machine's CPU count: the intra-op (and inter-op) thread count every model runtime uses."""
    return os.cpu_count() or 1


def use_machine_threads() -> None:
    """Fix TensorFlow's thread pools at machine_threads(); call before the first TensorFlow op (model load).

    Other Keras backends are left alone. If TensorFlow's runtime already started with another count (something ran
    an op first), TensorFlow refuses the change; vectors may then depend on the affinity mask, as before."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    n = machine_threads()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:  # "cannot be modified after initialization": the runtime keeps the count it started with
        pass
