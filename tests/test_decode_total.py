"""Decoding is total (issue 18): every photo indexes or is skipped with a one-line reason, and nothing about one
photo stops a build, a search or a request. The corpus (tests/odd_images.py) has every Pillow mode and odd format a
user can meet, made here with Pillow: 1, L, LA, P with transparency, I, I;16, I;16B, F (also NaN and inf), RGBX,
CMYK, YCbCr, LAB, 16-bit RGB, multi-frame GIF/TIFF, APNG, animated WebP, broken ICC profiles, EXIF orientations
1-8 (and nonsense), files cut at 5/30/60/95 %; PA, HSV, La, RGBa and the I;16 byte orders in memory (no format
Pillow writes has them)."""

from __future__ import annotations

import io
import json
import re
import time

import numpy as np
import pytest
import requests
from PIL import Image
from typer.testing import CliRunner

import imgidx
from imgidx.cli.app import app
from imgidx.indexer import images
from imgidx.indexer.errors import ImageError
from imgidx.indexer.images import pixels, prepare
from tests.odd_images import corpus, good, in_memory_modes, rgb_picture

runner = CliRunner()
MODEL = ["--weights", "random:0", "--layer", "block5_pool", "--batch-size", "8"]  # as test_hostile: small and quick
GOOD = 3  # plain JPEGs beside the odd files


def one_line(reason: str) -> None:
    assert reason and "\n" not in reason and "Traceback" not in reason and len(reason) < 240, reason


def outcome(data: bytes) -> str | None:
    """None when the bytes give pixels, else the one-line reason."""
    try:
        got = prepare(data)
    except ImageError as e:
        one_line(e.reason)
        return e.reason
    assert got.shape == (224, 224, 3) and got.dtype == np.uint8 and got.flags.writeable
    return None


def test_every_odd_file_gives_pixels_or_a_one_line_reason():
    refused = {name: why for name, data in corpus().items() if (why := outcome(data)) is not None}
    # every intact file is a photo a user expects indexed, whatever its mode, frames, profile or orientation
    assert not {n: r for n, r in refused.items() if not n.startswith("truncated_")}
    # and a file cut early is refused in every format (later cuts may still decode: Pillow fills missing rows)
    cut_early = {n.split(".", 1)[1] for n in corpus() if n.startswith("truncated_05")}
    assert {n.split(".", 1)[1] for n in refused if n.startswith("truncated_05")} == cut_early


def test_a_float_tiff_keeps_its_picture():
    """The TIFF that stopped every build (a read-only array scaled in place): indexed, its gradient intact."""
    data = corpus()["mode_F.tif"]
    grey = prepare(data)[..., 0].astype(int)
    assert (np.diff(grey.mean(axis=1)) >= 0).all() and grey[-1].mean() - grey[0].mean() > 100
    assert outcome(corpus()["mode_F_nan.tif"]) is None and outcome(corpus()["mode_F_inf.tif"]) is None


@pytest.mark.parametrize("mode", list(in_memory_modes()))
def test_every_pillow_mode_converts_with_its_colours(mode):
    img = in_memory_modes()[mode]
    got = pixels(img).astype(int)
    assert got.shape == (224, 224, 3)
    ref = pixels(rgb_picture()).astype(int)
    grey = pixels(rgb_picture().convert("L")).astype(int)
    if mode in ("1", "L", "LA", "La"):
        assert (got[..., 0] == got[..., 2]).all()
        assert mode == "1" or np.abs(got - grey).mean() < 2, np.abs(got - grey).mean()
    elif mode in ("P", "PA", "P_transparency"):  # a 256-colour palette: close, not equal
        assert np.abs(got - ref).mean() < 15
    elif mode in ("RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        assert np.abs(got - ref).mean() < 3, np.abs(got - ref).mean()
    else:  # 16/32-bit and float grey: a left-to-right, top-to-bottom ramp that gets brighter
        assert got[-1].mean() > got[0].mean() + 100


def test_anything_pillow_raises_becomes_the_photos_reason(monkeypatch):
    """A failure no one foresaw (a Pillow bug, a mode it cannot resize) is that photo's reason, in one line."""

    photo = good(0)

    def broken(*args, **kwargs):
        raise RuntimeError("resampling\nfailed")

    monkeypatch.setattr(Image.Image, "resize", broken)
    with pytest.raises(ImageError, match=r"^cannot be converted \(RuntimeError: resampling failed\)$"):
        prepare(photo)

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(Image.Image, "resize", no_memory)
    with pytest.raises(ImageError, match="^too large to decode in the memory available$"):
        prepare(photo)
    assert images.total  # the one guard both prepare and pixels go through


def test_the_service_and_the_contact_sheets_thumbnail_every_odd_file_or_refuse_it(tmp_path):
    """GET /photos/ID/image?size= of an indexed odd photo: a JPEG, or the 404 with a reason (never a 500); a
    contact sheet's card: the thumbnail, or a grey box that says why. Both refuse exactly what the index refuses."""
    from imgidx.search.sheet import thumbnail_uri
    from imgidx.service.thumbs import ThumbnailError, make_thumbnail

    refused, boxed, files = {}, {}, corpus()
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        try:
            with Image.open(io.BytesIO(make_thumbnail(path, 64))) as thumb:
                assert thumb.format == "JPEG" and max(thumb.size) == 64, name
        except ThumbnailError as e:
            one_line(str(e))
            refused[name] = str(e)
        uri, why = thumbnail_uri(path)
        if uri is None:
            one_line(why)
            boxed[name] = why
        else:
            assert uri.startswith("data:image/jpeg;base64,") and not why
    by_index = {name for name, data in files.items() if outcome(data) is not None}
    assert set(refused) == set(boxed) == by_index and all(n.startswith("truncated_") for n in by_index)


@pytest.mark.long  # a build over the whole corpus, a server, every refused file: make test-long (CI runs it)
@pytest.mark.slow
def test_odd_files_through_build_similar_and_post_similar(tmp_path, isolated_env):
    """The three paths users run: `build --from-dir` over the whole corpus (N good + M hostile index exactly N);
    `similar PATH` and `POST /similar` with every refused file and the issue's float TIFF (each accepted file costs
    a model call per path: all of them in make test-long)."""
    three_paths(tmp_path, isolated_env / "home", every=False)


@pytest.mark.slow
@pytest.mark.long
def test_every_odd_file_through_similar_and_post_similar(tmp_path, isolated_env):
    three_paths(tmp_path, isolated_env / "home", every=True)


def three_paths(tmp_path, home, *, every: bool) -> None:
    """Indexed or one line; never a traceback or a 500. POST /similar goes to a server on the index just built,
    one row per model call (an upload alone is padded to --max-batch)."""
    from imgidx.service.server import spawned
    from tests.serving import server_env

    root = tmp_path / "photos"
    (root / "good").mkdir(parents=True)
    (root / "odd").mkdir()
    for i in range(GOOD):
        (root / "good" / f"g{i}.jpg").write_bytes(good(i))
    files = corpus()
    for name, data in files.items():
        (root / "odd" / name).write_bytes(data)
    hostile = {f"odd/{n}" for n, data in files.items() if outcome(data) is not None}
    usable = GOOD + len(files) - len(hostile)

    r = runner.invoke(app, ["build", "--from-dir", str(root), *MODEL, "--json"])
    assert r.exit_code == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert report["embedded"] + report["reused"] == usable and report["index"]["photos"] == usable
    assert {f["source_id"] for f in report["failures"]} == hostile
    for f in report["failures"]:
        one_line(f["reason"])
    failed = json.loads(runner.invoke(app, ["info", "--failures", "--json"]).stdout)["failed"]
    assert {row["source_id"] for row in failed} == hostile

    asked = [n for n in files if every or f"odd/{n}" in hostile or n == "mode_F.tif"]
    # similar PATH: the library call once per file (one model), the command itself on a refused file
    index = imgidx.open()
    for name in asked:
        path = root / "odd" / name
        if f"odd/{name}" in hostile:
            with pytest.raises(imgidx.ConfigError) as e:
                index.similar(path, k=3)
            one_line(str(e.value))
        else:
            assert len(index.similar(path, k=3)) == 3, name
    refused = sorted(hostile)[0].split("/", 1)[1]
    r = runner.invoke(app, ["similar", str(root / "odd" / refused), "-k", "3", "--json"])
    assert r.exit_code == 1 and re.fullmatch(r"error: .+ cannot be used: .+\n", r.stderr), r.stderr

    # POST /similar: 200 or a 4xx with the reason; the server logs no traceback
    with spawned(home, "--max-batch", "1", env=server_env(tmp_path)) as server:
        for name in asked:
            answer = requests.post(
                server.url + "similar", files={"file": (name, files[name], "image/jpeg")}, timeout=60
            )
            if f"odd/{name}" in hostile:
                assert answer.status_code in (400, 415), (name, answer.status_code, answer.text[:200])
                one_line(answer.json()["detail"])
            else:
                assert answer.status_code == 200 and answer.json()["hits"], (name, answer.status_code, answer.text)
        time.sleep(0.2)  # the log is drained by a thread
        assert not [line for line in server.log if "Traceback" in line or "Exception" in line], server.log[-20:]
