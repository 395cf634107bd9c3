"""Hostile and broken input through both paths (the fake Flickr and --from-dir): every image variant of the fake
and every static fault. Each photo is indexed correctly (pixels checked where it means something) or skipped
with a specific reason in `imgidx info --failures`; the run exits 0, says what it skipped, stays within its
timeouts, and `--retry-failed` retries exactly the retryable ones."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from imgidx.cli.app import app
from imgidx.indexer.images import prepare
from tests.fake_flickr import VARIANTS, FakeFlickr, make_variant
from tests.fake_flickr.variants import _gradient, _save

pytestmark = pytest.mark.slow
runner = CliRunner()
MODEL = ["--weights", "random:0", "--layer", "block5_pool", "--batch-size", "8"]
FAST = {  # small limits so that the faults cost seconds, not minutes (see README: configuration)
    "IMGIDX_CONNECT_TIMEOUT": "2",
    "IMGIDX_READ_TIMEOUT": "1",  # not less: on a loaded 2-core machine a healthy download can pause 0.5 s
    "IMGIDX_DOWNLOAD_DEADLINE": "1.5",
    "IMGIDX_RETRIES": "2",
    "IMGIDX_BACKOFF": "0.05",
    "IMGIDX_MAX_BACKOFF": "2",
}
REFUSED = {  # variant -> the reason it is skipped (both paths, unless noted)
    "truncated_jpeg": r"^corrupt or truncated image",
    "random_bytes": r"^not a recognised image format$",
    "zero_bytes": r"^empty file \(0 bytes\)$",
    "html_as_jpeg": r"^not an image: the server sent an HTML/XML page$",
    "decompression_bomb": r"^too many pixels.*decompression bomb refused",
    "decompression_bomb_jpeg": r"^too many pixels.*decompression bomb refused",
    "oversized_body": r"^too large \(\d+ bytes; limit \d+\)$",  # Flickr only: a local file has no byte cap
    "one_pixel_jpeg": r"^image too small \(1x1 px",
    "one_pixel_png": r"^image too small \(1x1 px",
}
# static faults on ordinary photos: (faults, what happens, reason of a failure)
ONCE = ["slow_drip:0.05", "stall:5", "reset", "short_body", "http:429:retry_after=1", "http:503", "redirect_chain:3"]
ALWAYS = {  # as many times as there are tries: skipped, retryable
    "http:500": r"^HTTP 500$",
    "stall:5": r"^timed out \(nothing for 1 s\) \(network\)$",
    # a drip ends at the download deadline; on a loaded machine a gap between its chunks may reach the read timeout
    # first: both are skipped and retryable (the 10-second bound below still checks that it ends)
    "slow_drip:0.05": r"^too slow \(over 1.5 s\)$|^timed out \(nothing for 1 s\) \(network\)$",
    "reset": r"^connection broken \(\w+\) \(network\)$",
    "short_body": r"^connection broken \(\w+\) \(network\)$|^body shorter than announced",
}
LATER = {  # skipped, not retried in this run (one request), but retryable: --retry-failed tries them again
    "http:403": r"^HTTP 403$",  # a photo host's 403/404/410 is no proof that the photo is gone
    "http:404": r"^HTTP 404$",
    "http:410": r"^HTTP 410$",
}
FINAL = {  # skipped, not retryable
    "redirect_loop": r"^too many redirects",
    "redirect_chain:8": r"^too many redirects",
    "truncated_body": r"^corrupt or truncated image",
    "deleted": r"^photo unavailable on Flickr \(redirected to the placeholder image\)$",
}


def run(*args, ok=True):
    r = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert r.exit_code == 0, r.stdout + r.stderr
    return r


def failures() -> dict[str, tuple[str, int]]:
    rows = json.loads(run("info", "--failures", "--json").stdout)["failed"]
    return {r["source_id"]: (r["error"], r["retryable"]) for r in rows}


def check_pixels(name: str, pixels: np.ndarray) -> None:
    """Orientation fixed and colours right, against the pictures the fake drew."""
    ref = prepare(_save(_gradient(), "PNG")).astype(int)
    x = pixels.astype(int)
    if name.startswith("exif_orientation_"):  # red top-left, blue bar on top, green bottom-right, grey middle
        assert x[40, 10].tolist() == pytest.approx([255, 0, 0], abs=30), name
        assert x[8, 112].tolist() == pytest.approx([0, 0, 255], abs=30), name
        assert x[215, 215].tolist() == pytest.approx([0, 160, 0], abs=30), name
    elif name in ("progressive_jpeg", "webp_as_jpeg", "cmyk_jpeg", "icc_jpeg", "oversized_body"):
        assert np.abs(x - ref).mean() < 3, name
    elif name == "grayscale_jpeg":
        assert (x[..., 0] == x[..., 1]).all() and (x[..., 1] == x[..., 2]).all()
        assert abs(x[..., 0].mean() - ref.mean()) < 3
    elif name == "png_rgba":  # transparent top onto white, opaque bottom keeps its colours
        assert x[:4].mean() > 235 and np.abs(x[-4:] - ref[-4:]).mean() < 20


def check_variants(by_source: dict[str, str], stored: dict[str, str], fails: dict) -> None:
    """by_source: variant -> source id; stored: source id -> the file the index points at."""
    for name, sid in by_source.items():
        if name in REFUSED and sid in fails:
            assert re.search(REFUSED[name], fails[sid][0]), (name, fails[sid])
            continue
        assert name not in REFUSED or name == "oversized_body", f"{name} was indexed: {fails.get(sid)}"
        assert sid not in fails, (name, fails[sid])
        with open(stored[sid], "rb") as f:
            check_pixels(name, prepare(f.read()))


def indexed_paths() -> dict[str, str]:
    hits = json.loads(run("similar", "--id", 1, "-k", 500, "--json").stdout)["hits"]
    return {h["source_id"]: h["path"] for h in hits}


@pytest.fixture
def fake(monkeypatch):
    for k, v in FAST.items():
        monkeypatch.setenv(k, v)
    with FakeFlickr(seed=0, topics={"dog": 40}, hostile=True) as fake:
        monkeypatch.setenv("FLICKR_API_KEY", fake.api_key)
        monkeypatch.setenv("FLICKR_API_SECRET", fake.api_secret)
        monkeypatch.setenv("IMGIDX_FLICKR_REST_URL", fake.rest_url)
        yield fake


@pytest.mark.long  # every variant through a real build: make test-long (CI runs it)
def test_every_variant_and_static_fault_through_flickr(fake, tmp_path):
    dogs = [p.id for p in fake.photos_for("dog", sort="relevance")[:30] if not fake.corpus.is_deleted(p.id)]
    plan: dict[str, tuple[str, list]] = {}  # photo id -> (label, faults)
    for label in ONCE:
        plan[dogs[len(plan)]] = (f"once {label}", [label])
    for label in ALWAYS:
        plan[dogs[len(plan)]] = (f"always {label}", [label] * 3)
    for label in LATER:
        plan[dogs[len(plan)]] = (f"later {label}", [label])
    for label in FINAL:
        # as many as there are tries: on a loaded machine a half body can also time out (retryable), and the retry
        # must meet the same fault, not the intact photo
        plan[dogs[len(plan)]] = (label, [] if label == "deleted" else [label] * 3)
    for pid, (label, faults) in plan.items():
        fake.delete(pid) if label == "deleted" else fake.inject(f"static:{pid}", faults)

    start = time.monotonic()
    r = run("build", "hostile", "dog", "-n", 30, *MODEL)
    seconds = time.monotonic() - start
    fails = failures()
    skipped = re.findall(r"^skipping (\d+) \(id \d+\): (.+)$", r.stderr, re.M)
    # the run says what it skipped (the first 20, then how many more)
    assert dict(skipped).items() <= {sid: why for sid, (why, _) in fails.items()}.items()
    more = re.search(r"^\.\.\. and (\d+) more: see `imgidx info --failures`$", r.stderr, re.M)
    assert len(skipped) + (int(more[1]) if more else 0) == len(fails), r.stderr
    check_variants(fake.hostile_ids, indexed_paths(), fails)

    for pid, (label, _) in plan.items():
        kind, _, fault = label.partition(" ")
        if kind == "once":
            assert pid not in fails, (label, fails.get(pid))
        elif kind == "always":
            assert re.search(ALWAYS[fault], fails[pid][0]) and fails[pid][1] == 1, (label, fails.get(pid))
        elif kind == "later":
            assert re.search(LATER[fault], fails[pid][0]) and fails[pid][1] == 1, (label, fails.get(pid))
            assert len([rec for rec in fake.requests("static") if f"/{pid}_" in rec.path]) == 1, label
        else:
            assert re.search(FINAL[label], fails[pid][0]) and fails[pid][1] == 0, (label, fails.get(pid))
    # stalls and drips end at their timeouts: a few seconds per photo at most, whatever the server does
    for pid, (label, _) in plan.items():
        ts = [rec.ts for rec in fake.requests("static") if f"/{pid}_" in rec.path]
        assert max(ts) - min(ts) < 10, (label, max(ts) - min(ts))
    assert seconds < 240

    # --retry-failed: the retryable ones come back (the fake's faults are spent), the final ones are not asked for
    # (not even Flickr's placeholder: that photo is known to be deleted)
    asked = fake.count_requests("static")
    again = json.loads(run("build", "hostile", "dog", "-n", 30, *MODEL, "--retry-failed", "--json").stdout)
    final_ids = {pid for pid, (label, _) in plan.items() if label in FINAL} | {fake.hostile_ids[n] for n in REFUSED}
    retried = {pid for pid, (label, _) in plan.items() if label.startswith(("always", "later"))}
    assert again["embedded"] == len(retried) and set(failures()) == final_ids
    asked_ids = {rec.path.split("/")[2].split("_")[0] for rec in fake.requests("static")[asked:]}
    assert asked_ids == retried
    assert json.loads(run("verify", "--json").stdout)["problems"] == []


def test_every_variant_through_a_folder(tmp_path):
    root = tmp_path / "hostile"
    root.mkdir()
    names = {}
    for name in VARIANTS:
        body, ctype = make_variant(name)
        ext = {"image/png": "png", "image/gif": "gif"}.get(ctype, "jpg")  # webp and html under .jpg, as served
        (root / f"{name}.{ext}").write_bytes(body)
        names[name] = f"{name}.{ext}"
    r = run("build", "--from-dir", root, *MODEL)
    assert "skipping" in r.stderr
    fails = failures()
    refused = {n for n in REFUSED if n != "oversized_body"}
    assert set(fails) == {names[n] for n in refused}
    check_variants(names, indexed_paths(), fails)
    assert json.loads(run("verify", "--json").stdout)["problems"] == []
