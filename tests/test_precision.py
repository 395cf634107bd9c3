"""Choosing the compute precision and batch size by CPU kind, forced from a flags argument (tests never depend on
the CPU that runs them): AMX-BF16 -> bf16, VNNI -> int8, AVX512_BF16 alone -> bf16, AVX2 only -> int8 where the
gate passed it (embedders.INT8_PASSES_ON_AVX2), else fp32; an explicit precision always wins."""

from __future__ import annotations

import pytest

from imgidx.indexer import embedders
from imgidx.indexer.embedders import (
    cpu_flags,
    cpu_kind,
    default_batch_size,
    default_precision,
    extend_precision,
    native,
    query_precision,
    slow_precision,
)

AMX = frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8"})
ZEN4 = frozenset({"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni"})  # family 25 model 17
AVX_VNNI = frozenset({"avx2", "fma", "avx_vnni"})  # Alder Lake and later client cores
BF16_ONLY = frozenset({"avx2", "avx512f", "avx512_bf16"})
ZEN3 = frozenset({"avx2", "fma"})
AVX2_INT8 = "int8" if embedders.INT8_PASSES_ON_AVX2 else "fp32"


@pytest.mark.parametrize(
    ("flags", "kind", "auto", "keras"),
    [
        (AMX, "amx", "bf16", "bf16"),
        (ZEN4, "vnni", "int8", "bf16"),  # Keras has no int8: bf16, native through AVX512_BF16
        (AVX_VNNI, "vnni", "int8", "fp32"),
        (BF16_ONLY, "bf16", "bf16", "bf16"),
        (ZEN3, "avx2", AVX2_INT8, "fp32"),
        (frozenset(), "other", "fp32", "fp32"),
    ],
)
def test_default_precision_by_cpu_kind(flags, kind, auto, keras):
    assert cpu_kind(flags) == kind
    for layer in ("fc2", "block5_pool"):
        assert default_precision("cpu", flags, layer=layer) == auto
        assert default_precision("cpu", flags, layer=layer, runtime="onnx") == auto
        assert default_precision("cpu", flags, layer=layer, runtime="keras") == keras
        assert default_precision("gpu", flags, layer=layer) == "fp32"


def test_avx2_follows_the_gate(monkeypatch):
    """Both answers of the gate for AVX2, whichever one README records."""
    monkeypatch.setattr(embedders, "INT8_PASSES_ON_AVX2", True)
    assert default_precision("cpu", ZEN3) == "int8" and default_precision("cpu", ZEN3, runtime="keras") == "fp32"
    monkeypatch.setattr(embedders, "INT8_PASSES_ON_AVX2", False)
    assert default_precision("cpu", ZEN3) == "fp32"


def test_avx512_bf16_counts_as_native_bf16():
    assert native("bf16", flags=ZEN4) and native("bf16", flags=BF16_ONLY) and native("bf16", flags=AMX)
    assert not native("bf16", flags=ZEN3) and not native("bf16", flags=AVX_VNNI)
    assert query_precision("bf16", flags=ZEN4) == "bf16" and query_precision("bf16", flags=ZEN3) == "fp32"
    assert extend_precision("bf16", None, flags=ZEN4) == "bf16"


def test_int8_indexes_work_on_every_cpu_and_say_once_where_they_are_slower():
    for flags in (AMX, ZEN4, AVX_VNNI, ZEN3):
        assert query_precision("int8", flags=flags) == "int8"
        assert extend_precision("int8", None, flags=flags) == "int8"  # never refused: int8 is not emulated
    assert slow_precision("int8", flags=ZEN4) is None and slow_precision("int8", flags=AVX_VNNI) is None
    note = slow_precision("int8", flags=ZEN3)
    assert note is not None and "VNNI" in note and "\n" not in note
    assert slow_precision("fp32", flags=ZEN3) is None and slow_precision("int8", "gpu", flags=ZEN3) is None


def test_an_explicit_precision_wins_over_the_cpu_kind(tmp_path):
    from imgidx.indexer.compose import make_embedder
    from imgidx.indexer.config import Settings

    # the environment prefers ONNX Runtime (auto would time both runtimes); a precision it lacks goes to Keras
    settings = Settings(home=tmp_path / "home", runtime="onnx")
    for flags, default in ((ZEN4, "int8"), (AMX, "bf16"), (ZEN3, AVX2_INT8)):
        made = make_embedder(settings, "block5_pool", "random:0", batch_size=4, flags=flags)
        assert made.precision == default and made.stamp.precision == default
        assert made.runtime == ("keras" if default == "bf16" else "onnx")
        for asked in ("fp32", "int8", "bf16"):
            got = make_embedder(settings, "block5_pool", "random:0", precision=asked, batch_size=4, flags=flags)
            assert got.precision == got.stamp.precision == asked


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 amx_bf16 avx512f\nbugs\t\t: spectre\n")
    assert cpu_flags(str(info)) == {"fpu", "sse2", "amx_bf16", "avx512f"}
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_batch_size_follows_the_device():
    assert default_batch_size("cpu") == 64 and default_batch_size("gpu") == 128
