"""Where ONNX Runtime's fp32 time goes in VGG16 to fc2: its own per-node profile of one batch, each convolution's
GFLOP/s beside the sgemm rate numpy's BLAS reaches on this machine (bench/runtimes.py), and the whole model's.

`python -m bench.ort_layers [--batch-size 16]` (random weights: the same FLOPs as ImageNet's). The exported
graph is cached where `--only model` caches it (bench/out/runtimes-home-cal300)."""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from .common import OUT, machine, table
from .runtimes import GFLOP_PER_IMAGE, sgemm_gflops, vgg16_convs


def conv_gflop(batch: int) -> dict[str, float]:
    """GFLOP of each VGG16 convolution for a batch (2 per multiply-add), by the exported node names."""
    return {name: 2 * batch * side * side * cin * cout * 9 / 1e9 for name, side, cin, cout in vgg16_convs()}


def profile(batch: int) -> dict:
    import onnxruntime as ort

    from imgidx.indexer.embedders.onnx_runtime import OnnxEmbedder
    from imgidx.indexer.embedders.weights import resolve
    from imgidx.indexer.threads import machine_threads as threads

    spec = resolve("random:0", "fc2", Path("/nonexistent"), "")
    path = OnnxEmbedder("fc2", spec, batch_size=batch, home=OUT / "runtimes-home-cal300").fp32_file()
    so = ort.SessionOptions()  # the settings of onnx_runtime.session, plus ORT's profiler
    so.intra_op_num_threads, so.inter_op_num_threads = threads(), 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    so.enable_profiling, so.profile_file_prefix = True, str(OUT / "ort-profile")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
    feed = {sess.get_inputs()[0].name: x}
    sess.run(None, feed)  # warm-up: allocations, weight re-layout
    start = time.perf_counter()
    sess.run(None, feed)
    wall = time.perf_counter() - start
    events = json.loads(Path(sess.end_profiling()).read_text())
    last_run = max(e["ts"] for e in events if e.get("name") == "model_run")
    per_node: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= last_run:
            per_node[e["name"].split("/")[0]] += e["dur"] / 1e6
    return {"wall_s": wall, "per_node_s": dict(per_node)}


def run(batch: int) -> tuple[dict, str]:
    sgemm = sgemm_gflops()
    prof = profile(batch)
    flops = conv_gflop(batch)
    rows, conv_s = [], 0.0
    for name, gflop in flops.items():
        s = prof["per_node_s"].get(name, float("nan"))
        conv_s += s
        rows.append((name, f"{gflop:.1f}", f"{s * 1000:.0f}", f"{gflop / s:.0f}", f"{gflop / s / sgemm:.2f}"))
    rest = sum(prof["per_node_s"].values()) - conv_s
    model_gflop = GFLOP_PER_IMAGE * batch
    rows.append(("everything else (pooling, fc, cast)", "", f"{rest * 1000:.0f}", "", ""))
    rows.append(
        (
            "whole model",
            f"{model_gflop:.0f}",
            f"{prof['wall_s'] * 1000:.0f}",
            f"{model_gflop / prof['wall_s']:.0f}",
            f"{model_gflop / prof['wall_s'] / sgemm:.2f}",
        )
    )
    result = {"batch": batch, "sgemm_gflops": round(sgemm, 1), **prof, "machine": machine()}
    title = (
        f"ONNX Runtime fp32, VGG16 to fc2, batch {batch}: per layer vs sgemm {sgemm:.0f} GFLOP/s ({machine()['cpu']})"
    )
    return result, table(title, ["layer", "GFLOP", "ms", "GFLOP/s", "of sgemm"], rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ort_layers", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args(argv)
    result, text = run(args.batch_size)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ort_layers.json").write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
