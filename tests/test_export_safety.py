"""search/export.py against export folders someone else prepared: hostile `.imgidx-export` markers, symbolic links
where the export writes or prunes, a dangling link as DIR, collection names too long for a folder, and formula
cells in ATTRIBUTION.csv (search/csvcells.py). Each case checks that a "precious" folder outside DIR is untouched
and that nothing was written outside DIR (or, for a refusal, anywhere)."""

from __future__ import annotations

import csv
import functools
import hashlib
import http.server
import io
import json
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from imgidx.search import csvcells
from imgidx.search.export import MARKER, TOPS, ExportError, ExportPhoto, export
from tests.test_export import make_photos

ROOT = Path(__file__).resolve().parents[1]
FORMATS = tuple(TOPS)


def without(snap: dict, top: str) -> dict:
    return {k: v for k, v in snap.items() if k != top and not k.startswith(top + "/")}


def snapshot(folder: Path) -> dict[str, tuple[str, str]]:
    """Every entry below `folder`, links not followed: relative path -> (kind, bytes' sha256 or link target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = ("dir", "")
            else:
                out[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photos(tmp_path_factory.mktemp("src"), 10)


@pytest.fixture
def precious(tmp_path):
    """A folder outside DIR that no export may touch: a file, a photo-like file, a sub-folder."""
    v = tmp_path / "v"
    (v / "sub").mkdir(parents=True)
    (v / "precious.txt").write_text("precious\n")
    (v / "sub" / "1000.jpg").write_bytes(b"not ours")
    (v / "00000.tar").write_bytes(b"not ours either")
    return v


# ---- hostile markers: refused before anything is written or deleted -----------------------------------------------
def hostile_markers(v: Path, fmt: str) -> dict[str, bytes]:
    other = "data" if fmt != "parquet" else "train"
    owned = {
        "absolute": [str(v)],
        "absolute-inside": [str(v / "sub")],
        "dotdot": [".."],
        "dotdot-below": ["../v"],
        "data/../../v": ["data/../../v"],
        "train/../../v": ["train/../../v"],
        "not-normalised": ["./train" if fmt != "parquet" else "./data"],
        "trailing-slash": ["train/" if fmt != "parquet" else "data/"],
        "deeper": ["train/cat" if fmt != "parquet" else "images/x"],
        "empty-name": [""],
        "dot": ["."],
        "own-file": ["ATTRIBUTION.csv"],
        "marker": [MARKER],
        "hidden": [".git"],
        "another-format": [other],
        "nul": ["train\0x"],
    }
    markers = {name: json.dumps({"owned": o}).encode() for name, o in owned.items()}
    markers |= {
        "owned-a-string": b'{"owned": "train"}',
        "owned-numbers": b'{"owned": [1, 2]}',
        "a-list": b'["train"]',
        "not-json": b"owned: train\n",
        "not-utf8": b'{"owned": ["\xff"]}',
        "shard-outside": json.dumps({"shards": {"../v/00000.tar": "0" * 64}}).encode(),
        "shard-absolute": json.dumps({"shards": {f"{v}/00000.tar": "0" * 64}}).encode(),
        "shard-not-a-digest": json.dumps({"shards": {"train/00000.tar": "x"}}).encode(),
    }
    return markers


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_marker_naming_anything_else_is_refused_before_anything_changes(tmp_path, photos, precious, fmt):
    outside = snapshot(tmp_path)
    for n, (name, marker) in enumerate(hostile_markers(precious, fmt).items()):
        out = tmp_path / "exports" / str(n)
        out.mkdir(parents=True)
        (out / MARKER).write_bytes(marker)
        for top in TOPS[fmt]:  # the folders it would have pruned, with a stranger's file in each
            (out / top).mkdir()
            (out / top / "stranger.txt").write_text("mine")
        before = snapshot(out)
        with pytest.raises(ExportError) as refused:
            export(photos, out, format=fmt, split="0.5,0.5")
        message = str(refused.value)
        assert "\n" not in message and ("choose an empty or new folder" in message or "delete" in message), name
        assert snapshot(out) == before, name
    assert without(snapshot(tmp_path), "exports") == outside  # nothing outside the export folders changed


def test_every_format_names_its_top_folders():
    """A format without its TOPS entry could not check a marker: every format has one, each a plain visible name
    that is none of DIR's own files."""
    from imgidx.search.export import _SHARD, FILES, FORMATS

    assert set(TOPS) == set(FORMATS)
    tops = {top for names in TOPS.values() for top in names}
    assert all(top and "/" not in top and not top.startswith(".") for top in tops)
    assert not tops & {*FILES, MARKER}
    assert _SHARD.fullmatch("val/00012.tar") and not _SHARD.fullmatch("data/00012.tar")


def test_the_issue_reproductions(tmp_path, photos, precious):
    """issue 18 item 1 as filed: an absolute path and data/../../v with parquet, train + a link with imagefolder."""
    outside = snapshot(precious)
    for fmt, owned in (("parquet", [str(precious)]), ("parquet", ["data/../../v"]), ("imagefolder", ["train"])):
        out = tmp_path / f"exp-{fmt}-{len(owned[0])}"
        out.mkdir()
        (out / MARKER).write_text(json.dumps({"owned": owned}))
        if owned == ["train"]:
            (out / "train").symlink_to(precious)
        with pytest.raises(ExportError, match="symbolic link|claims"):
            export(photos, out, format=fmt)
        assert snapshot(precious) == outside
        assert sorted(os.listdir(out)) == sorted([MARKER] + (["train"] if owned == ["train"] else []))


def test_a_marker_that_is_a_link_or_a_folder_is_refused(tmp_path, photos, precious):
    outside = snapshot(precious)
    for kind in ("link", "dangling", "folder"):
        out = tmp_path / kind
        out.mkdir()
        if kind == "folder":
            (out / MARKER).mkdir()
        else:
            (out / MARKER).symlink_to(precious / "precious.txt" if kind == "link" else tmp_path / "nowhere")
        before = snapshot(out)
        with pytest.raises(ExportError, match="not a file imgidx wrote|not empty"):
            export(photos, out)
        assert snapshot(out) == before
    assert snapshot(precious) == outside


# ---- symbolic links: refused where the export writes or prunes folders, replaced as links where files go ----------
def link_cases(fmt: str) -> list[str]:
    """Folders (relative to DIR) an export of `photos` with split 1 writes into or prunes."""
    return {
        "imagefolder": ["train", "train/cat", "train/bird", "test"],
        "parquet": ["data", "images"],
        "webdataset": ["train", "test"],
    }[fmt]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_linked_folder_is_refused_and_nothing_is_written_through_it(tmp_path, photos, precious, fmt):
    outside = snapshot(tmp_path)
    for n, rel in enumerate(link_cases(fmt)):
        out = tmp_path / "exports" / str(n)
        export(photos, out, format=fmt, split="0.5,0.5" if rel == "test" else "1")  # test: pruned, not planned
        target = out / rel
        if os.path.lexists(target):
            os.rename(target, tmp_path / "exports" / f"moved{n}")  # the real folder is kept aside, untouched
        target.symlink_to(precious)
        before = snapshot(out)
        with pytest.raises(ExportError, match="symbolic link") as refused:
            export(photos, out, format=fmt, split="1", seed=1)
        assert str(target) in str(refused.value) and "\n" not in str(refused.value)
        assert snapshot(out) == before, rel
        assert without(snapshot(tmp_path), "exports") == outside, rel


@pytest.mark.parametrize("fmt", FORMATS)
def test_linked_files_are_replaced_as_links_and_stray_links_are_removed_as_links(tmp_path, photos, precious, fmt):
    out = tmp_path / "exp"
    export(photos, out, format=fmt, split="1", shard_size=3)
    files = sorted(p for p in out.rglob("*") if p.is_file() and not p.is_symlink())
    linked = [f for f in files if f.parent != out][:3] + [out / "ATTRIBUTION.csv", out / "manifest.json"]
    for f in linked:  # each file swapped for a link to the precious file
        f.unlink()
        f.symlink_to(precious / "precious.txt")
    top = TOPS[fmt][0]
    (out / top / "stray.jpg").symlink_to(precious / "sub" / "1000.jpg")
    (out / top / "stray-folder").symlink_to(precious)
    (out / top / "dangling").symlink_to(tmp_path / "nowhere")
    outside = without(snapshot(tmp_path), "exp")
    result = export(photos, out, format=fmt, split="1", shard_size=3)
    assert without(snapshot(tmp_path), "exp") == outside  # the links' targets untouched, nothing new outside
    assert result.removed == 3 and not [p for p in out.rglob("*") if p.is_symlink()]
    fresh = tmp_path / "fresh"
    export(photos, fresh, format=fmt, split="1", shard_size=3)
    mine = {k: v for k, v in snapshot(out).items() if k != MARKER}
    assert mine == {k: v for k, v in snapshot(fresh).items() if k != MARKER}
    assert export(photos, out, format=fmt, split="1", shard_size=3).written == 0  # and a rerun keeps it all


@pytest.mark.parametrize("fmt", FORMATS)
def test_links_at_temp_names_are_never_written_through(tmp_path, photos, precious, fmt):
    """A link planted at the temp name a write would use (this process's, or a live process's, pid) is removed as
    a link: the write never opens it."""
    out = tmp_path / "exp"
    export(photos, out, format=fmt, split="1", shard_size=3)
    files = [p for p in out.rglob("*") if p.is_file() and p.name != MARKER]
    for f in files:
        f.unlink()  # so every file is written again, each through its temp name
        for pid in (os.getpid(), 1):
            (f.parent / f".{f.name}.{pid}.{threading.get_ident()}.tmp").symlink_to(precious / "precious.txt")
    (out / f".{MARKER}.{os.getpid()}.{threading.get_ident()}.tmp").symlink_to(precious / "precious.txt")
    outside = without(snapshot(tmp_path), "exp")
    again = export(photos, out, format=fmt, split="1", shard_size=3)
    assert without(snapshot(tmp_path), "exp") == outside and again.written == len(files)
    assert not [p for p in out.rglob("*") if p.is_symlink()]


def test_dir_as_a_dangling_link_is_refused_in_one_line(tmp_path, photos):
    out = tmp_path / "exp"
    out.symlink_to(tmp_path / "gone")
    with pytest.raises(ExportError, match="symbolic link to .*which does not exist") as refused:
        export(photos, out)
    assert "\n" not in str(refused.value) and not (tmp_path / "gone").exists() and out.is_symlink()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        export(photos, tmp_path / "file")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")  # a link the user named as DIR is followed
    export(photos, tmp_path / "link", split="1")
    assert (tmp_path / "real" / "manifest.json").is_file() and (tmp_path / "link").is_symlink()


def tiny_home(tmp_path: Path, photos) -> Path:
    """A real store (SQLite + vector file + FAISS) holding `photos`, without a model: what `imgidx export` reads."""
    from imgidx.indexer.records import Photo, Stamp
    from imgidx.indexer.store import Store

    home = tmp_path / "home"
    with Store(home) as store:
        store.ensure_stamp(Stamp(model="vgg16", layer="block5_pool", weights="sha256:" + "0" * 64, dim=8))
        for p in photos:
            photo = Photo(
                source="folder", source_id=p.path.name, collection=p.label, origin=str(p.path.parent),
                path=str(p.path), title=p.title, page_url=p.page_url,
            )  # fmt: skip
            (pid,) = store.add_photos([photo])
            vector = p.vector / np.linalg.norm(p.vector)
            store.add_vectors([(pid, str(p.path), hashlib.sha256(p.path.read_bytes()).hexdigest())], vector[None])
        store.save_index()
    return home


def test_the_cli_prints_one_line_exits_1_and_writes_the_neutral_csv(tmp_path, photos, precious):
    from imgidx.cli.app import app

    runner = CliRunner()
    home = tiny_home(tmp_path, formula_photos(photos[:4]))
    outside = snapshot(precious)
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / MARKER).write_text(json.dumps({"owned": [str(precious)]}))
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    for out, said in ((tmp_path / "exp", "claims"), (tmp_path / "dangling", "which does not exist")):
        r = runner.invoke(app, ["--home", str(home), "export", str(out), "--format", "parquet"])
        lines = (r.stdout + r.stderr).strip().splitlines()
        assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], lines
    assert snapshot(precious) == outside and os.listdir(tmp_path / "exp") == [MARKER]
    assert not (tmp_path / "gone").exists()
    r = runner.invoke(app, ["--home", str(home), "export", str(tmp_path / "ok"), "--split", "1"])
    assert r.exit_code == 0, r.stdout + r.stderr
    with open(tmp_path / "ok" / "ATTRIBUTION.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and not formula_cells((tmp_path / "ok" / "ATTRIBUTION.csv").read_text())
    assert {r["page_url"] for r in rows} == {""}  # javascript:, file:, ...


# ---- collection names that cannot be a folder ----------------------------------------------------------------------
def test_collection_names_too_long_for_a_folder_map_to_short_unique_ones(tmp_path, photos):
    long_a, long_b = "a" * 300, "a" * 299 + "b"  # the same first 238 bytes
    accents = "é" * 200  # 400 bytes in UTF-8
    at_bound, over = "b" * 255, "c" * 256  # 255 bytes is a folder name as it is; 256 is cut
    labels = [long_a, long_b, accents, "line\nbreak", "tab\tand\x7fdel", "cat", "dog", "bird", at_bound, over]
    odd = [ExportPhoto(**{**p.__dict__, "label": lab}) for p, lab in zip(photos, labels, strict=True)]
    out = tmp_path / "exp"
    result = export(odd, out, split="1")
    folders = sorted(p.name for p in (out / "train").iterdir() if p.is_dir())  # beside train/metadata.parquet
    assert len(folders) == 10 and all(len(os.fsencode(f)) <= 255 for f in folders)
    assert at_bound in folders and over not in folders and f"{'c' * 238}~" in "/".join(folders)
    assert "line_break" in folders and "tab_and_del" in folders
    assert sorted(json.loads((out / "manifest.json").read_text())["labels"]) == sorted(labels)
    assert result.counts["train"][long_a] == 1 and export(odd, out, split="1").written == 0
    digest = hashlib.sha256(long_a.encode()).hexdigest()[:16]
    assert f"{'a' * (255 - 17)}~{digest}" in folders


# ---- formula cells in ATTRIBUTION.csv ------------------------------------------------------------------------------
TITLES = [
    '=HYPERLINK("http://e")',
    "+cmd|' /C calc'!A0",
    "@SUM(1)",
    "-2+3",
    "\t=1+1",
    "\r=1+1",
    "＝1+1",
    "x;=1+1",
    "a\n=1+1",
    "b\t@x",
]
LINKS = ["javascript:alert(1)", "file:///etc/passwd", "JAVASCRIPT:x", " javascript:x", "data:text/html,x", "http:x"]
FORMULA = tuple("=+-@\t\r") + ("＝", "＋", "－", "＠")


def unquoted(cell: str) -> str:
    """The text without the `'` put before formula characters."""
    return re.sub("'(?=\"*[=+\\-@\t\r＝＋－＠])", "", cell)


def formula_cells(raw: str) -> list[str]:
    """Cells that start a formula, as the csv module reads the file, and as a spreadsheet set to split on `;` or
    tabs could (the worst case: quotes ignored, every line break a new row, quotes before a cell's text dropped)."""
    cells = [c for row in csv.reader(io.StringIO(raw)) for c in row]
    for delimiter in (";", "\t"):
        cells += [c.lstrip('"') for line in re.split("\r\n|\r|\n", raw) for c in line.split(delimiter)]
    return [c for c in cells if c.startswith(FORMULA)]


def formula_photos(photos) -> list[ExportPhoto]:
    n = len(TITLES)
    return [
        ExportPhoto(
            **{
                **p.__dict__,
                "title": TITLES[i % n],
                "owner_name": TITLES[(i + 1) % n],
                "page_url": (LINKS + ["https://example.org/ok", "http://example.org/ok"])[i % (len(LINKS) + 2)],
                "source": "urls",
            }
        )
        for i, p in enumerate(photos)
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_attribution_cells_never_start_a_formula_and_links_are_http(tmp_path, photos, fmt):
    hostile = formula_photos(photos)
    out = tmp_path / "exp"
    export(hostile, out, format=fmt, split="1")
    raw = (out / "ATTRIBUTION.csv").read_bytes().decode()
    assert not formula_cells(raw)
    rows = list(csv.DictReader(io.StringIO(raw)))
    by_id = {int(r["id"]): r for r in rows}
    for p in hostile:
        row = by_id[p.id]
        for got, given in ((row["title"], p.title), (row["owner"], p.owner_name)):
            assert got.startswith("'") == given.lstrip('"').startswith(FORMULA) and unquoted(got) == given
        assert row["page_url"] == (p.page_url if p.page_url.startswith(("http://e", "https://e")) else "")
    assert raw.startswith('"file","id","title"') and raw.count('"') >= 2 * 7 * (len(rows) + 1)  # all quoted
    # programs read the raw text: the manifest's neighbours (parquet, webdataset .json) are not neutralised
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(out / "data" / "train.parquet").to_pylist()
        assert {(r["id"], r["title"], r["page_url"]) for r in table} == {(p.id, p.title, p.page_url) for p in hostile}


def test_every_csv_writer_of_the_library_is_the_neutralising_one():
    """One helper for every CSV imgidx writes: csv.writer / DictWriter appear only in search/csvcells.py."""
    found = []
    for folder in ("imgidx", "indexer", "search"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            if "csv.writer" in text or "DictWriter" in text:
                found.append(path.relative_to(ROOT).as_posix())
    assert found == ["search/csvcells.py"]
    assert csvcells.table(["a"], [["=1"], [None], ["-"], ["ok"]]) == b'"a"\n"\'=1"\n""\n"\'-"\n"ok"\n'
    assert [csvcells.web_link(u) for u in ("https://a/b", "HTTP://a", "ftp://a", "https:///x", "//a")] == [
        "https://a/b",
        "HTTP://a",
        "",
        "",
        "",
    ]


# ---- the path users run: build from a folder and a URL list, then export ------------------------------------------
@pytest.mark.long  # two real builds: make test-long (CI runs it); the CSV rules are tested above per format
@pytest.mark.slow
def test_built_from_a_folder_and_a_url_list_the_csv_has_no_formula(tmp_path):
    """`imgidx build --from-dir` over files named like formulas, `--from-urls` with formula titles and
    javascript:/file: page URLs, then `imgidx export`: no cell starts a formula, no non-http link."""
    from imgidx.cli.app import app
    from tests.conftest import pattern_image

    runner = CliRunner()
    random = ["--weights", "random:0", "--layer", "block5_pool", "--batch-size", "4"]

    def run(*args):
        r = runner.invoke(app, [str(a) for a in args])
        assert r.exit_code == 0, r.stdout + r.stderr
        return r

    folder = tmp_path / "pets" / "=cats"
    folder.mkdir(parents=True)
    names = ["=x", "+cmd|' -C calc'!A0", "@SUM(1)", "-2+3"]  # no '/' in a file name
    for i, name in enumerate(names):
        pattern_image(i).save(folder / f"{name}.jpg", quality=90)
    run("build", "--from-dir", tmp_path / "pets", *random)
    www = tmp_path / "www"
    www.mkdir()
    for i in range(3):
        pattern_image(10 + i, kind="rings").save(www / f"r{i}.jpg", quality=90)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with open(tmp_path / "list.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["url", "key", "title", "owner", "page_url", "collection"])
            links = ["javascript:alert(1)", "file:///etc/passwd", "https://example.org/r2"]
            for i in range(3):
                w.writerow(
                    [f"http://127.0.0.1:{server.server_port}/r{i}.jpg", f"r{i}", TITLES[i], "@me", links[i], "r"]
                )
        run("build", "--from-urls", tmp_path / "list.csv", *random)
    finally:
        server.shutdown()
        server.server_close()
    run("export", tmp_path / "exp", "--split", "1")
    with open(tmp_path / "exp" / "ATTRIBUTION.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 and not formula_cells((tmp_path / "exp" / "ATTRIBUTION.csv").read_text())
    assert sorted(r["title"] for r in rows if r["file"].startswith("train/=cats/")) == sorted("'" + n for n in names)
    assert sorted(r["page_url"] for r in rows if r["owner"] == "'@me") == ["", "", "https://example.org/r2"]
    assert (tmp_path / "exp" / "train" / "=cats").is_dir()
