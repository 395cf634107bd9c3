"""search/export.py and search/splits.py: each format read back with the library its users use (a directory walk,
pyarrow/pandas, the webdataset package and tarfile), the no-leak rule, idempotent reruns, and resumes after an
export is interrupted (an exception at a random moment, and a SIGKILLed subprocess)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgidx.indexer.atomic import is_temp
from imgidx.indexer.errors import ConfigError
from imgidx.search.export import MARKER, ExportError, ExportPhoto, export
from imgidx.search.splits import assign_splits, parse_fractions

ROOT = Path(__file__).resolve().parents[1]


def make_photos(folder: Path, n: int = 60, *, size: int = 48, seed: int = 0) -> list[ExportPhoto]:
    """n photo files (cats, dogs and a few birds), duplicate groups of 2-3, one photo under two labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    photos = []
    for i in range(n):
        label = "bird" if i % 10 == 9 else ("cat" if i % 2 == 0 else "dog")
        path = folder / f"p{i}.{'png' if i % 7 == 3 else 'jpg'}"
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, quality=90) if path.suffix == ".jpg" else Image.fromarray(pixels).save(path)
        photos.append(
            ExportPhoto(
                id=1000 + i,
                label=label,
                path=path,
                vector=rng.normal(size=8).astype(np.float32),
                group=i // 3 if i < 12 else None,  # groups {0,1,2}, {3,4,5}, ... spanning labels
                source="flickr",
                source_id=str(5_000_000 + i),
                title=f'photo {i}, "quoted"',
                owner=f"{i}@N0{i % 3}",
                owner_name=f"Owner {i}" if i % 4 else "",
                license=[4, 9, 2, 0][i % 4],
                width=size,
                height=size,
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                date_upload=str(1_600_000_000 + i),
                tags=("a", "b") if i % 2 else (),
            )
        )
    if n > 20:  # photo 1020 also sits in "dog" (the same picture under two collections)
        photos.append(ExportPhoto(**{**photos[20].__dict__, "label": "dog"}))
    return photos


def tree(folder: Path) -> dict[str, tuple[int, int, str]]:
    """relative path -> (inode, mtime_ns, sha256) of every file: what "changes nothing" compares."""
    return {
        p.relative_to(folder).as_posix(): (
            p.stat().st_ino,
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def contents(folder: Path) -> dict[str, str]:
    return {k: v[2] for k, v in tree(folder).items()}


def attribution(folder: Path) -> list[dict]:
    with open(folder / "ATTRIBUTION.csv", newline="") as f:
        return list(csv.DictReader(f))


def split_of_rows(rows) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for pid, split in rows:
        out.setdefault(pid, set()).add(split)
    return out


def assert_no_leak(photos, split_by_id: dict[int, set[str]]):
    assert all(len(s) == 1 for s in split_by_id.values()), "a photo in two splits"
    by_group: dict[int, set[str]] = {}
    for p in photos:
        if p.group is not None:
            by_group.setdefault(p.group, set()).update(split_by_id[p.id])
    assert by_group and all(len(s) == 1 for s in by_group.values()), "a duplicate group in two splits"


# ---- imagefolder ---------------------------------------------------------------------------------------------------
def test_imagefolder_walk(tmp_path):
    photos = make_photos(tmp_path / "src")
    out = tmp_path / "out"
    result = export(photos, out, format="imagefolder", split="0.8,0.1,0.1", seed=3, model={"layer": "x"}, version="9")
    files = [p for p in out.rglob("*") if p.is_file() and p.parent != out and p.name != "metadata.parquet"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("metadata.parquet")) == [
        "test/metadata.parquet",
        "train/metadata.parquet",
        "val/metadata.parquet",
    ]
    assert len(files) == len(photos) == 61
    rows = []
    by_name = {(p.id, p.label): p for p in photos}
    for f in files:
        split, label, name = f.relative_to(out).parts
        pid = int(name.split(".")[0])
        src = by_name[(pid, label)]
        assert f.read_bytes() == Path(src.path).read_bytes()  # never re-encoded
        assert f.suffix == (".png" if src.path.suffix == ".png" else ".jpg")
        rows.append((pid, split))
    assert_no_leak(photos, split_of_rows(rows))
    manifest = json.loads((out / "manifest.json").read_text())
    walked = Counter((f.relative_to(out).parts[0], f.relative_to(out).parts[1]) for f in files)
    assert {(s, lab): n for s, labs in manifest["counts"].items() for lab, n in labs.items()} == dict(walked)
    assert manifest["counts"] == result.counts and manifest["model"] == {"layer": "x"}
    assert manifest["imgidx_version"] == "9" and manifest["photos"] == 60 and manifest["rows"] == 61
    assert manifest["split"] == {"names": ["train", "val", "test"], "fractions": [0.8, 0.1, 0.1], "seed": 3}
    assert manifest["photos_with_several_labels"] == 1
    # stratified: each label's train share near 0.8 (groups of 3 move at most 3 photos)
    for label in ("cat", "dog"):
        total = sum(manifest["counts"][s].get(label, 0) for s in ("train", "val", "test"))
        assert abs(manifest["counts"]["train"][label] - 0.8 * total) <= 3
    att = attribution(out)
    assert len(att) == 61 and {r["file"] for r in att} == {f.relative_to(out).as_posix() for f in files}
    row = next(r for r in att if r["id"] == "1001")
    assert row["owner"] == "Owner 1" and row["license"] == "CC0 1.0"
    assert row["license_url"] == "https://creativecommons.org/publicdomain/zero/1.0/"
    assert row["page_url"] == "https://www.flickr.com/photos/1@N01/5000001/"
    assert row["title"] == 'photo 1, "quoted"'
    assert next(r for r in att if r["id"] == "1000")["owner"] == "0@N00"  # no display name: the NSID


def test_files_are_hard_links_when_possible_and_copies_otherwise(tmp_path):
    photos = make_photos(tmp_path / "src", 6)
    export(photos, tmp_path / "linked", split="1")
    export(photos, tmp_path / "copied", split="1", link=False)
    src = photos[0].path.stat().st_ino
    assert (tmp_path / "linked/train/cat/1000.jpg").stat().st_ino == src
    assert (tmp_path / "copied/train/cat/1000.jpg").stat().st_ino != src


def test_a_link_at_a_taken_name_replaces_what_is_there(tmp_path):
    """Links go straight to their final name only where it is free; a file already there (another picture under
    the same name) is replaced through a temp and a rename, and no temp is left behind either way."""
    photos = make_photos(tmp_path / "src", 8)
    out = tmp_path / "out"
    export(photos, out, split="1")
    squatter = out / "train/cat/1002.jpg"
    squatter.unlink()
    squatter.write_bytes(b"another picture")
    again = export(photos, out, split="1")
    assert again.written == 1 and squatter.stat().st_ino == photos[2].path.stat().st_ino
    assert not [p for p in out.rglob("*") if is_temp(p)]


def _prune_by_rglob(out: Path, owned, planned) -> int:
    """The earlier _prune (a Path and a stat per file), with links removed as links (never followed, the target
    never touched): what the scandir walk must match."""
    keep = {rel.split("#", 1)[0] for rel in planned}
    removed = 0
    for top in owned:
        root = out / top
        if not root.is_dir() or top.startswith(".") or top in ("ATTRIBUTION.csv", "manifest.json"):
            continue
        for path in sorted(root.rglob("*"), reverse=True):
            rel = path.relative_to(out).as_posix()
            if path.is_symlink():
                if rel not in keep:
                    path.unlink()
                    removed += 1
            elif path.is_file() and rel not in keep and not is_temp(path):
                path.unlink()
                removed += 1
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        if not any(root.iterdir()):
            root.rmdir()
    return removed


@pytest.mark.parametrize("seed", range(4))
def test_prune_removes_what_the_rglob_walk_removed(tmp_path, seed):
    from imgidx.search.export import _prune

    rng = np.random.default_rng(seed)
    trees = [tmp_path / "a", tmp_path / "b"]
    planned = set()
    for n in range(300):
        depth = int(rng.integers(1, 4))
        parts = [str(rng.choice(["train", "val", "test", ".hidden", "x"]))]
        parts += [f"d{int(rng.integers(0, 4))}" for _ in range(depth - 1)]
        kind = rng.integers(0, 10)
        name = f".{n}.jpg.{os.getpid()}.1.tmp" if kind == 0 else f"{n}.{'jpg' if kind < 8 else 'png'}"
        rel = "/".join([*parts, name])
        if rng.random() < 0.5:
            planned.add(rel if rng.random() < 0.8 else f"{rel}#key.jpg")
        for t in trees:
            (t / rel).parent.mkdir(parents=True, exist_ok=True)
            (t / rel).write_bytes(b"x")
    for t in trees:  # empty folders, a file link, a folder link (not entered), a dangling link
        (t / "train/empty/deeper").mkdir(parents=True)
        (t / "elsewhere").mkdir()
        (t / "elsewhere/f.jpg").write_bytes(b"y")
        (t / "val/link-to-file").symlink_to(t / "elsewhere/f.jpg")
        (t / "test/link-to-folder").symlink_to(t / "elsewhere")
        (t / "test/dangling").symlink_to(t / "nowhere")
    owned = ["train", "val", "test", ".hidden", "x", "ATTRIBUTION.csv", "missing"]
    old = _prune_by_rglob(trees[0], owned, planned)
    assert _prune(trees[1], owned, planned) == old > 0
    listing = [sorted(p.relative_to(t).as_posix() for p in t.rglob("*")) for t in trees]
    assert listing[0] == listing[1]
    for t in trees:  # the links went, what they pointed at stayed
        assert (t / "elsewhere/f.jpg").read_bytes() == b"y" and not [p for p in t.rglob("*") if p.is_symlink()]


def _extension_by_pillow(path: Path) -> str:
    """The earlier _extension: Pillow names every head, the suffix only what it cannot name."""
    from imgidx.indexer.images import image_format

    with open(path, "rb") as f:
        head = f.read(1 << 16)
    fmt = image_format(head)
    if fmt == "bin":
        fmt = {".jpeg": "jpg"}.get(Path(path).suffix.lower(), Path(path).suffix.lower().lstrip(".") or "bin")
    return "." + fmt


def _image_bytes(fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(buf, fmt, **kw)
    return buf.getvalue()


def test_head_reads_what_a_buffered_read_reads(tmp_path):
    from imgidx.search.export import _head

    for n in (0, 1, 676, 65_535, 65_536, 65_537, 200_000):
        path = tmp_path / f"f{n}"
        path.write_bytes(os.urandom(n))
        with open(path, "rb") as f:
            assert _head(path, 1 << 16) == f.read(1 << 16)
    with pytest.raises(FileNotFoundError):
        _head(tmp_path / "missing", 16)


def test_signatures_are_the_ones_pillow_alone_accepts():
    """Each signature export trusts is accepted by exactly its own decoder among images.FORMATS (each of them has
    an accept check), so Pillow can name such a head only that way, or not at all."""
    from imgidx.indexer.images import FORMATS
    from imgidx.search.export import SIGNATURES

    Image.init()
    heads = [(magic + bytes(16))[:16] for magic, _ in SIGNATURES] + [b"RIFF\0\0\0\0WEBPVP8 "]
    owners = [fmt for _, fmt in SIGNATURES] + ["webp"]
    for head, owner in zip(heads, owners, strict=True):
        accepted = []
        for name in FORMATS:
            factory, accept = Image.OPEN[name]
            assert accept is not None, f"{name} would try every head"
            if accept(head):
                accepted.append(name)
        assert accepted == [{"jpg": "JPEG"}.get(owner, owner.upper())], (head, accepted)


def test_extension_names_every_file_as_pillow_and_the_suffix_did(tmp_path):
    """Good, corrupt and cut files of every format under matching, other and no suffixes: the signature short cut
    gives what Pillow-then-suffix gave, refusals included."""
    jpeg = _image_bytes("JPEG")
    app15 = b"\xff\xef" + (40_002).to_bytes(2, "big") + bytes(40_000)  # two of them: headers beyond the 64 KiB head
    contents = {
        "jpeg": jpeg,
        "jpeg-big-header": jpeg[:2] + app15 + app15 + jpeg[2:],
        "jpeg-corrupt": b"\xff\xd8\xff" + os.urandom(200),
        "jpeg-cut": _image_bytes("JPEG")[:40],
        "png": _image_bytes("PNG"),
        "png-corrupt": b"\x89PNG\r\n\x1a\n" + os.urandom(100),
        "gif": _image_bytes("GIF"),
        "gif-corrupt": b"GIF89a" + os.urandom(5),
        "bmp": _image_bytes("BMP"),
        "bmp-corrupt": b"BM" + os.urandom(30),
        "webp": _image_bytes("WEBP"),
        "webp-corrupt": b"RIFF\0\0\0\0WEBPVP8 " + os.urandom(20),
        "webp-odd-mode": b"RIFF\0\0\0\0WEBPXXXX" + os.urandom(20),
        "tiff": _image_bytes("TIFF"),
        "html": b"<!doctype html><html></html>",
        "empty": b"",
        "noise": os.urandom(300),
    }
    suffixes = [".jpg", ".jpeg", ".JPG", ".jfif", ".png", ".gif", ".bmp", ".webp", ".WebP", ".tif", ".tiff", ".bin", ""]
    from imgidx.search.export import _extension

    checked = 0
    for name, data in contents.items():
        for n, suffix in enumerate(suffixes):
            path = tmp_path / f"{name}-{n}{suffix}"
            path.write_bytes(data)
            assert _extension(path) == _extension_by_pillow(path), (name, suffix)
            checked += 1
    assert _extension_by_pillow(tmp_path / "jpeg-big-header-0.jpg") == ".jpg"  # by its suffix: the head was refused
    assert _extension_by_pillow(tmp_path / "jpeg-big-header-3.jfif") == ".jfif"
    assert checked == len(contents) * len(suffixes)


# ---- parquet -------------------------------------------------------------------------------------------------------
def test_parquet_with_pandas_and_pyarrow(tmp_path):
    import pandas as pd
    import pyarrow.parquet as pq

    photos = make_photos(tmp_path / "src")
    out = tmp_path / "out"
    export(photos, out, format="parquet", split="0.7,0.3", seed=1, filters={"license": [4, 9]})
    assert sorted(p.name for p in (out / "data").iterdir()) == ["test.parquet", "train.parquet"]
    df = pd.concat([pd.read_parquet(out / "data" / f"{s}.parquet") for s in ("train", "test")])
    assert len(df) == 61 and df["id"].nunique() == 60
    assert set(df["split"]) == {"train", "test"} and set(df["label_name"]) == {"cat", "dog", "bird"}
    assert set(zip(df["label"], df["label_name"], strict=True)) == {(0, "bird"), (1, "cat"), (2, "dog")}
    assert_no_leak(photos, split_of_rows(zip(df["id"], df["split"], strict=True)))
    by_key = {(p.id, p.label): p for p in photos}
    for row in df.itertuples():
        p = by_key[(row.id, row.label_name)]
        assert row.image["bytes"] == p.path.read_bytes() and row.image["path"] == f"{p.id}{p.path.suffix}"
        np.testing.assert_array_equal(np.asarray(row.vector, np.float32), p.vector)
        assert row.license == p.license and row.sha256 == p.sha256 and row.tags == " ".join(p.tags)
    table = pq.read_table(out / "data" / "train.parquet")
    assert str(table.schema.field("vector").type) == "fixed_size_list<element: float>[8]"
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert features["image"] == {"_type": "Image"} and features["label"]["names"] == ["bird", "cat", "dog"]
    assert list(features) == table.schema.names  # every column declared, in order
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["filters"] == {"license": [4, 9]} and set(manifest["counts"]) == {"train", "test"}
    assert manifest["images"] == "embedded" and not (out / "images").exists()
    att = attribution(out)
    assert len(att) == 61 and all(r["file"].split("#")[0] in ("data/train.parquet", "data/test.parquet") for r in att)
    # --no-embed: today's small layout, one file per photo whatever its labels, paths relative to DIR
    export(photos, out, format="parquet", split="0.7,0.3", seed=1, embed=False)
    assert len(list((out / "images").iterdir())) == 60
    df = pd.read_parquet(out / "data" / "train.parquet")
    assert all(
        (out / row.image).read_bytes() == by_key[(row.id, row.label_name)].path.read_bytes() for row in df.itertuples()
    )


# ---- webdataset ----------------------------------------------------------------------------------------------------
def test_webdataset_with_the_webdataset_package_and_tarfile(tmp_path):
    import webdataset as wds

    photos = make_photos(tmp_path / "src")
    out = tmp_path / "out"
    export(photos, out, format="webdataset", split="0.8,0.2", seed=2, shard_size=10)
    shards = sorted(out.glob("*/*.tar"))
    assert [s.name for s in sorted((out / "train").glob("*.tar"))][:2] == ["00000.tar", "00001.tar"]
    samples = []
    for split in ("train", "test"):
        urls = [str(s) for s in sorted((out / split).glob("*.tar"))]
        for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
            ext = "jpg" if "jpg" in sample else "png"
            meta = json.loads(sample["json"])
            assert int(sample["cls"]) == meta["label_id"] and meta["split"] == split
            samples.append((meta, sample[ext]))
    assert len(samples) == 61
    by_key = {(p.id, p.label): p for p in photos}
    for meta, data in samples:
        assert data == by_key[(meta["id"], meta["label"])].path.read_bytes()
    assert_no_leak(photos, split_of_rows((m["id"], m["split"]) for m, _ in samples))
    for shard in shards:  # plain tarfile too: 3 members per sample, at most 10 samples per shard
        with tarfile.open(shard) as tar:
            names = tar.getnames()
        assert len(names) % 3 == 0 and len(names) <= 30
    labels_first_shard = {m["label"] for m, _ in samples[:10]}
    assert len(labels_first_shard) > 1  # shuffled, not one label per shard
    att = attribution(out)
    assert len(att) == 61 and all(r["file"].split("#")[0].endswith(".tar") for r in att)


# ---- splits --------------------------------------------------------------------------------------------------------
def test_splits_exact_quotas_without_groups_and_deterministic():
    ids = list(range(200))
    labels = ["a"] * 100 + ["b"] * 100
    s = assign_splits(ids, labels, [None] * 200, (0.8, 0.1, 0.1), seed=0)
    assert Counter(zip(labels, s, strict=True)) == {
        ("a", "train"): 80, ("a", "val"): 10, ("a", "test"): 10,
        ("b", "train"): 80, ("b", "val"): 10, ("b", "test"): 10,
    }  # fmt: skip
    assert s == assign_splits(ids, labels, [None] * 200, (0.8, 0.1, 0.1), seed=0)
    assert s != assign_splits(ids, labels, [None] * 200, (0.8, 0.1, 0.1), seed=1)
    # input order does not matter
    rev = assign_splits(ids[::-1], labels[::-1], [None] * 200, (0.8, 0.1, 0.1), seed=0)
    assert rev[::-1] == s


def test_splits_keep_groups_whole():
    rng = np.random.default_rng(0)
    ids = list(range(300))
    labels = [str(x) for x in rng.integers(0, 3, 300)]
    groups = [int(g) if g < 40 else None for g in rng.integers(0, 120, 300)]
    s = assign_splits(ids, labels, groups, (0.6, 0.2, 0.2), seed=5)
    for g in set(groups) - {None}:
        assert len({s[i] for i in ids if groups[i] == g}) == 1


@pytest.mark.parametrize(
    ("fractions", "seed", "digest"),
    [
        ((0.8, 0.1, 0.1), 0, "521334ff4be82e49"),
        ((0.8, 0.1, 0.1), 3, "938fe90fafcdd5cf"),
        ((0.5, 0.5), 0, "50728793ace245d9"),
        ((0.6, 0.2, 0.2), 3, "99f15736b25125d1"),
    ],
)
def test_splits_are_the_same_from_version_to_version(fractions, seed, digest):
    """The splits of earlier versions, pinned (photos under several labels, duplicate groups): a rerun after an
    upgrade must not move photos between train and test."""
    rng = np.random.default_rng(seed)
    pairs = zip(rng.integers(0, 600, 900).tolist(), rng.integers(0, 4, 900).tolist(), strict=True)
    rows = sorted({(p, f"l{lab}") for p, lab in pairs})
    group = {p: (g if g < 60 else None) for p, g in enumerate(rng.integers(0, 200, 600).tolist())}
    s = assign_splits([p for p, _ in rows], [lab for _, lab in rows], [group[p] for p, _ in rows], fractions, seed=seed)
    assert hashlib.sha256(",".join(s).encode()).hexdigest()[:16] == digest


@pytest.mark.parametrize("bad", ["0.8,0.3", "1.2", "a,b", "0.5,0.2,0.2,0.1", "", "-0.2,1.2"])
def test_bad_split(bad):
    with pytest.raises(ConfigError, match="split"):
        parse_fractions(bad)


# ---- reruns, resumes, refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["imagefolder", "parquet", "webdataset"])
def test_rerun_with_the_same_arguments_changes_nothing(tmp_path, fmt):
    photos = make_photos(tmp_path / "src")
    out = tmp_path / "out"
    first = export(photos, out, format=fmt, seed=4, shard_size=8)
    before = tree(out)
    again = export(photos, out, format=fmt, seed=4, shard_size=8)
    assert tree(out) == before and again.written == 0 and again.removed == 0 and first.written > 0


def test_other_arguments_replace_the_old_export_without_leftovers(tmp_path):
    photos = make_photos(tmp_path / "src")
    out = tmp_path / "out"
    export(photos, out, seed=1)
    export(photos[:30], out, seed=2, split="0.5,0.5")
    files = [p for p in out.rglob("*") if p.is_file() and p.parent != out and p.name != "metadata.parquet"]
    assert len(files) == 30 and {f.relative_to(out).parts[0] for f in files} == {"train", "test"}
    assert not (out / "val").exists()
    export(photos, out, format="webdataset", shard_size=8)  # the same top folders: replaced, no leftovers
    files = [p for p in out.rglob("*") if p.is_file() and p.parent != out]
    assert files and all(f.suffix == ".tar" for f in files)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MARKER, "ATTRIBUTION.csv", "README.md", "manifest.json", "train", "val", "test"]
    )
    fresh = tmp_path / "fresh"
    export(photos, fresh, format="webdataset", shard_size=8)
    mine, theirs = contents(out), contents(fresh)
    del mine[MARKER], theirs[MARKER]  # the marker remembers every folder exports made here
    assert mine == theirs
    before = tree(out)  # parquet's folders are not the splits': another format's export is not replaced
    with pytest.raises(ExportError, match="another format"):
        export(photos, out, format="parquet")
    assert tree(out) == before


class Interrupted(BaseException):
    pass


@pytest.mark.parametrize("fmt", ["imagefolder", "parquet", "webdataset"])
def test_interrupted_at_any_moment_leaves_no_half_file_and_resumes(tmp_path, fmt):
    """An exception raised by a timer at a varying moment inside export(); then a rerun completes the export."""
    photos = make_photos(tmp_path / "src", 40, size=160)
    reference = tmp_path / "reference"
    export(photos, reference, format=fmt, seed=7, shard_size=6, link=False)
    interrupted = 0

    def stop(*_):
        raise Interrupted

    old = signal.signal(signal.SIGALRM, stop)
    try:
        for k in range(12):
            out = tmp_path / f"out{k}"
            signal.setitimer(signal.ITIMER_REAL, 0.0005 + 0.0015 * k)
            try:
                export(photos, out, format=fmt, seed=7, shard_size=6, link=False)
            except Interrupted:
                interrupted += 1
                check_partial(out, reference)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if out.exists():
                export(photos, out, format=fmt, seed=7, shard_size=6, link=False)
                assert contents(out) == contents(reference)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert interrupted >= 3


def check_partial(out: Path, reference: Path) -> None:
    """Every file at its final name is whole (identical to the finished export's), and no manifest yet."""
    want = contents(reference)
    for rel, sha in contents(out).items():
        if is_temp(Path(rel)) or rel == MARKER:
            continue
        assert rel != "manifest.json", "a manifest before the export is whole"
        assert sha == want[rel], f"{rel} is not the finished file"


def test_killed_subprocess_resumes(tmp_path):
    photos = make_photos(tmp_path / "src", 300, size=96)
    out, reference = tmp_path / "out", tmp_path / "reference"
    export(photos, reference, format="webdataset", shard_size=2, link=False)
    script = (
        "import pickle, sys; from imgidx.search.export import export; "
        "photos = pickle.load(open(sys.argv[1], 'rb')); "
        "export(photos, sys.argv[2], format='webdataset', shard_size=2, link=False)"
    )
    import pickle

    (tmp_path / "photos.pkl").write_bytes(pickle.dumps(photos))
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "photos.pkl"), str(out)], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not list(out.glob("train/0000[3-9].tar")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if (out / "manifest.json").exists():
        pytest.skip("the export finished before the kill landed")
    check_partial(out, reference)
    resumed = export(photos, out, format="webdataset", shard_size=2, link=False)
    assert contents(out) == contents(reference)
    assert resumed.kept >= 3  # the shards finished before the kill were not written again


def test_refuses_a_folder_that_is_not_an_export(tmp_path):
    photos = make_photos(tmp_path / "src", 4)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("keep me")
    with pytest.raises(ExportError, match="not empty"):
        export(photos, tmp_path / "busy")
    assert os.listdir(tmp_path / "busy") == ["thesis.tex"]


def test_missing_file_exports_nothing(tmp_path):
    photos = make_photos(tmp_path / "src", 4)
    photos[2].path.unlink()
    with pytest.raises(ExportError, match="missing"):
        export(photos, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.jpg"))


def test_odd_collection_names_stay_inside_the_folder(tmp_path):
    photos = make_photos(tmp_path / "src", 4)
    odd = [
        ExportPhoto(**{**p.__dict__, "label": lab}) for p, lab in zip(photos, ["../up", "a/b", ".", "x"], strict=True)
    ]
    export(odd, tmp_path / "out", split="1")
    names = sorted(p.name for p in (tmp_path / "out" / "train").iterdir())
    assert names == ["_.", "_.._up", "a_b", "metadata.parquet", "x"]
    clash = [ExportPhoto(**{**photos[0].__dict__, "label": "metadata.parquet"})]
    export(clash, tmp_path / "clash", split="1")  # a collection named like the metadata file gets another folder
    assert sorted(p.name for p in (tmp_path / "clash" / "train").iterdir()) == ["_metadata.parquet", "metadata.parquet"]
    assert not (tmp_path / "up").exists()
