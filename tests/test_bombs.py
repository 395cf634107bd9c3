"""Decompression by bytes (issue 13.1): high-depth images that pass the pixel cap but cost several bytes a pixel.

The bombs are written by hand (a 16-bit grey PNG and a float32 TIFF of 9400x9400 px, zlib streams of a few
hundred KB), so the test process never holds them decoded. The server's and the build's peak RSS are read
from the kernel (VmHWM of the server; the build's ru_maxrss through a one-child wrapper process).
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from PIL import Image

from imgidx.indexer.errors import ImageError
from imgidx.indexer.images import MAX_DECODED_BYTES, pixel_bytes, prepare
from tests.conftest import pattern_image
from tests.serving import RANDOM

SIDE = 9400  # 88 Mpx: under the 89 Mpx pixel cap
GB = 2**30


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def grey16_png(w: int = SIDE, h: int = SIDE) -> bytes:
    comp = zlib.compressobj(1)
    row = b"\0" + bytes(range(256)) * (2 * w // 256) + b"\0" * (2 * w % 256)  # filter byte, then a ramp
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0)  # 16-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def float_tiff(w: int = SIDE, h: int = SIDE) -> bytes:
    comp = zlib.compressobj(1)
    strip = b"".join(comp.compress(b"\0" * (4 * w)) for _ in range(h)) + comp.flush()
    tags = [  # (tag, type 3=SHORT 4=LONG, value): one deflate strip of 32-bit IEEE floats
        (256, 4, w), (257, 4, h), (258, 3, 32), (259, 3, 8), (262, 3, 1), (273, 4, 0),
        (277, 3, 1), (278, 4, h), (279, 4, len(strip)), (339, 3, 3),
    ]  # fmt: skip
    data_at = 8 + 2 + 12 * len(tags) + 4

    def entry(tag: int, kind: int, value: int) -> bytes:
        value = data_at if tag == 273 else value
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        return struct.pack("<HHI", tag, kind, 1) + packed

    ifd = struct.pack("<H", len(tags)) + b"".join(entry(*t) for t in tags) + b"\0\0\0\0"
    return b"II*\0" + struct.pack("<I", 8) + ifd + strip


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {"png16": grey16_png(), "tiff32f": float_tiff()}


def test_the_bombs_are_what_they_claim(bombs):
    assert len(bombs["png16"]) < 2 * 2**20 and len(bombs["tiff32f"]) < 2 * 2**20
    png, tif = Image.open(io.BytesIO(bombs["png16"])), Image.open(io.BytesIO(bombs["tiff32f"]))
    assert (png.mode, png.size, tif.mode, tif.size) == ("I;16", (SIDE, SIDE), "F", (SIDE, SIDE))
    small = Image.open(io.BytesIO(float_tiff(64, 48)))
    small.load()  # the hand-made TIFF really decodes
    assert small.getextrema() == (0.0, 0.0)


def test_decoded_bytes_are_capped_not_only_pixels(bombs):
    assert pixel_bytes("RGB") == 3 and pixel_bytes("I;16") == 2 and pixel_bytes("F") == 4 and pixel_bytes("RGBA") == 4
    with pytest.raises(ImageError, match=r"^too many bytes when decoded \(9400x9400 px x 4 bytes = 337 MiB; limit 256"):
        prepare(bombs["tiff32f"])
    assert SIDE * SIDE * 2 <= MAX_DECODED_BYTES  # the 16-bit PNG is decoded, in bands of rows (see the RSS tests)
    assert prepare(bombs["png16"]).shape == (224, 224, 3)


def test_only_the_listed_formats_are_decoded():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nnewpath 0 0 moveto 64 64 lineto stroke\nshowpage\n"
    with pytest.raises(ImageError, match="^not a recognised image format$"):
        prepare(eps)  # Pillow would hand this to Ghostscript where installed
    buf = io.BytesIO()
    pattern_image(1, size=(64, 64)).save(buf, "PPM")
    with pytest.raises(ImageError, match="^not a recognised image format$"):
        prepare(buf.getvalue())


def test_thumbnails_refuse_what_the_index_refuses_with_its_reason(tmp_path, bombs):
    """The web page's thumbnails and the contact sheets decode through the index's decoder: the same format list and
    bomb limits (Pillow's own limit would let the 337 MiB float TIFF through), the same reason."""
    from imgidx.search.sheet import thumbnail_uri
    from imgidx.service.thumbs import ThumbnailError, make_thumbnail

    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nnewpath 0 0 moveto 64 64 lineto stroke\nshowpage\n"
    for name, data, reason in [
        ("bomb.tif", bombs["tiff32f"], "too many bytes when decoded"),
        ("x.eps", eps, "not a recognised image format"),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ThumbnailError, match=f"^{name} cannot be made into a thumbnail \\({reason}"):
            make_thumbnail(path, 256)
        uri, why = thumbnail_uri(path)
        assert uri is None and why.startswith(reason), why


def _kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.slow
@pytest.mark.long  # a server and eight 9400x9400 decodes: make test-long (CI runs it)
def test_eight_concurrent_bombs_keep_the_server_within_1_gb(served_index, bombs):
    from imgidx.service.server import spawned

    with spawned(served_index.home, env=served_index.env) as server:
        pid = server.proc.pid
        requests.get(server.url + "healthz", timeout=30).raise_for_status()
        idle = _kb(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM: the model's start-up peak is not ours
        uploads = [("png16", bombs["png16"], "image/png"), ("tiff32f", bombs["tiff32f"], "image/tiff")] * 4

        def upload(item: tuple[str, bytes, str]) -> tuple[str, int, dict]:
            name, body, ctype = item
            r = requests.post(server.url + "similar", data=body, headers={"content-type": ctype}, timeout=300)
            return name, r.status_code, r.json()

        with ThreadPoolExecutor(len(uploads)) as pool:
            answers = list(pool.map(upload, uploads))
        peak = _kb(pid, "VmHWM")
        log = "\n".join(server.log)
    for name, status, body in answers:
        if name == "tiff32f":
            assert status == 400 and "too many bytes when decoded" in body["detail"], body
        else:  # within the caps: decoded, a band of rows at a time, at most one per core at once
            assert status == 200 and len(body["hits"]) == 10, body
    assert peak - idle < GB, f"peak RSS {peak / 2**20:.0f} MiB, idle {idle / 2**20:.0f} MiB"
    assert "Traceback" not in log
    print(f"serve: idle {idle / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB under 8 concurrent bombs")


def _build_peak(home: Path, folder: Path, env: dict[str, str]) -> tuple[int, dict]:
    """Peak RSS of `imgidx build --from-dir` (its only child's ru_maxrss, read by a wrapper), and its --json."""
    wrapper = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
        "print(r.stdout); print(r.stderr, file=sys.stderr)"
    )
    cmd = [sys.executable, "-m", "imgidx", "--home", str(home), "build", "--from-dir", str(folder), *RANDOM, "--json"]
    r = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, env=env, timeout=600)
    first, _, rest = r.stdout.partition("\n")
    code, kb = map(int, first.split())
    assert code == 0, r.stdout + r.stderr
    return kb * 1024, json.loads(rest)


@pytest.mark.slow
@pytest.mark.long  # two builds: make test-long (CI runs it)
def test_a_build_skips_the_bombs_with_a_reason_within_1_gb_of_a_normal_build(tmp_path, bombs):
    from tests.serving import server_env

    env = server_env(tmp_path)
    normal, hostile = tmp_path / "normal" / "photos", tmp_path / "hostile" / "photos"
    for folder in (normal, hostile):
        folder.mkdir(parents=True)
        for i in range(6):
            pattern_image(i, size=(640, 480)).save(folder / f"p{i}.jpg", quality=90)
    (hostile / "deep.png").write_bytes(bombs["png16"])
    (hostile / "deep2.png").write_bytes(bombs["png16"])
    (hostile / "float.tif").write_bytes(bombs["tiff32f"])
    (hostile / "float2.tif").write_bytes(bombs["tiff32f"])
    base, report = _build_peak(tmp_path / "normal" / "home", normal, env)
    peak, bad = _build_peak(tmp_path / "hostile" / "home", hostile, env)
    assert report["embedded"] == 6
    # the six photos and the two 16-bit PNGs (decoded within the byte cap; identical bytes may be embedded once)
    assert bad["embedded"] + bad["reused"] == 8
    failed = subprocess.run(
        [sys.executable, "-m", "imgidx", "--home", str(tmp_path / "hostile" / "home"), "info", "--failures", "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    reasons = {r["source_id"]: r["error"] for r in json.loads(failed.stdout)["failed"]}
    assert set(reasons) == {"float.tif", "float2.tif"}
    assert all(why.startswith("too many bytes when decoded") for why in reasons.values()), reasons
    assert peak - base < GB, f"build peak {peak / 2**20:.0f} MiB against {base / 2**20:.0f} MiB"
    print(f"build: normal peak {base / 2**20:.0f} MiB, with bombs {peak / 2**20:.0f} MiB")
