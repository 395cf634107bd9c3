"""Choosing the compute precision and batch size: bf16 only where the CPU runs it natively; fp32 elsewhere."""

from __future__ import annotations

from imgidx.indexer.embedders import cpu_flags, default_batch_size, default_precision


def test_bf16_by_default_only_on_cpus_with_amx_bf16():
    assert default_precision("cpu", frozenset({"avx512f", "amx_bf16", "amx_tile"})) == "bf16"
    assert default_precision("cpu", frozenset({"avx2", "avx512f", "avx512_bf16"})) == "fp32"  # emulated: slower
    assert default_precision("cpu", frozenset()) == "fp32"
    assert default_precision("gpu", frozenset({"amx_bf16"})) == "fp32"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 amx_bf16 avx512f\nbugs\t\t: spectre\n")
    assert cpu_flags(str(info)) == {"fpu", "sse2", "amx_bf16", "avx512f"}
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_batch_size_follows_the_device():
    assert default_batch_size("cpu") == 64 and default_batch_size("gpu") == 128
