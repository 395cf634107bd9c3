"""Why TensorFlow reaches only a third of the fp32 limit on an AVX2 CPU: one VGG16 convolution (block3_conv2:
56x56x256 -> 256, 3x3, batch 8, 7.4 GFLOP) timed in fresh processes, alternating, under

  numpy sgemm      the same FLOPs as one im2col GEMM through numpy's BLAS (the limit)
  tf onednn        TensorFlow's default on x86 (oneDNN kernels)
  tf eigen         TF_ENABLE_ONEDNN_OPTS=0 (TensorFlow's own Eigen kernels)
  tf onednn 1thr   oneDNN with intra_op_parallelism_threads=1 (x2 = what perfect 2-thread scaling would give)
  ort              ONNX Runtime (MLAS) on the same conv, intra_op_num_threads = cpu count

`python -m bench.conv_kernels [--rounds 3]` prints GFLOP/s per variant and round (median last)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

N, H, C, K = 8, 56, 256, 256
GFLOP = 2 * N * H * H * C * K * 9 / 1e9

CHILD = r"""
import json, os, sys, time
import numpy as np
kind = sys.argv[1]
N, H, C, K = map(int, sys.argv[2:6])
rng = np.random.default_rng(0)
x = rng.random((N, H, H, C), dtype=np.float32)
w = rng.random((3, 3, C, K), dtype=np.float32) - 0.5
if kind == "numpy":
    a = rng.random((N * H * H, 9 * C), dtype=np.float32); b = w.reshape(9 * C, K)
    f = lambda: a @ b
elif kind.startswith("tf"):
    import tensorflow as tf
    if kind == "tf1":
        tf.config.threading.set_intra_op_parallelism_threads(1)
    xt, wt = tf.constant(x), tf.constant(w)
    g = tf.function(lambda: tf.nn.conv2d(xt, wt, 1, "SAME"))
    f = lambda: g().numpy()
else:
    import onnx, onnxruntime as ort
    from onnx import helper, numpy_helper, TensorProto
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [N, C, H, H])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [N, K, H, H])],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(w.transpose(3, 2, 0, 1)), "w")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]); m.ir_version = 8
    so = ort.SessionOptions(); so.intra_op_num_threads = os.cpu_count()
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    xn = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    f = lambda: s.run(None, {"x": xn})
f(); f()
best, end = 1e9, time.perf_counter() + 4
while time.perf_counter() < end:
    t = time.perf_counter(); f(); best = min(best, time.perf_counter() - t)
print(json.dumps(best))
"""

VARIANTS = {
    "numpy sgemm": ("numpy", {}),
    "tf onednn": ("tf", {}),
    "tf eigen (TF_ENABLE_ONEDNN_OPTS=0)": ("tf", {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    "tf onednn, 1 thread": ("tf1", {}),
    "ort (MLAS)": ("ort", {}),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.conv_kernels", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    got: dict[str, list[float]] = {k: [] for k in VARIANTS}
    for _ in range(args.rounds):
        for name, (kind, env) in VARIANTS.items():
            out = subprocess.run(
                [sys.executable, "-c", CHILD, kind, *map(str, (N, H, C, K))],
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
                capture_output=True,
                text=True,
                check=True,
            )
            got[name].append(round(GFLOP / json.loads(out.stdout.strip().splitlines()[-1]), 1))
            print(f"{name:40s} {got[name][-1]:7.1f} GFLOP/s", flush=True)
    print(json.dumps({k: {"gflops": v, "median": statistics.median(v)} for k, v in got.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
