"""imgidx/ops/dataset.py on a real store (SQLite + FAISS) with real files: duplicate groups with the pixel check,
--apply's reversible flags on every membership, and an export that leaves flagged photos out."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from imgidx import ops
from imgidx.indexer.errors import ConfigError
from imgidx.indexer.records import Photo, Stamp
from imgidx.indexer.store import Store
from tests.subproc import imgidx_env, run

STAMP = Stamp(model="vgg16", layer="block5_pool", weights="sha256:" + "0" * 64, dim=16)


def unit(v):
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def picture(seed: int, w: int = 200, h: int = 150) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    return small


@pytest.fixture
def home(tmp_path):
    """cat: 6 photos; dog: 4 photos. cat 0's crop sits in dog (vector at 0.08: the pixel check decides);
    cat 1 has a byte-identical copy in cat; dog 3 looks like dog 2 (0.08) but is another picture."""
    files = tmp_path / "files"
    files.mkdir()
    rng = np.random.default_rng(0)
    base = unit(np.abs(rng.normal(size=(9, 16))))

    def near(v, d, seed):
        r = np.random.default_rng(seed).normal(size=v.shape)
        r = unit(r - (r @ v) * v)
        a = np.arccos(1 - d)
        return unit(np.cos(a) * v + np.sin(a) * r)

    entries = []  # (collection, name, image bytes, vector, licence, width)
    for i in range(6):
        buf = io.BytesIO()
        picture(i).save(buf, "JPEG", quality=92)
        entries.append(("cat", f"c{i}.jpg", buf.getvalue(), base[i], 4, None))
    entries.append(("cat", "c1copy.jpg", entries[1][2], base[1], 9, None))  # same bytes, CC0
    crop = picture(0).crop((12, 8, 182, 135)).resize((200, 150))
    buf = io.BytesIO()
    crop.save(buf, "JPEG", quality=80)
    entries.append(("dog", "d0.jpg", buf.getvalue(), near(base[0], 0.08, 1), 4, None))
    for i, seed in ((1, 20), (2, 21), (3, 22)):
        buf = io.BytesIO()
        picture(seed).save(buf, "JPEG", quality=92)
        vec = base[6 + i - 1] if i < 3 else near(base[7], 0.08, 2)
        entries.append(("dog", f"d{i}.jpg", buf.getvalue(), vec, 0, None))
    h = tmp_path / "home"
    with Store(h) as store:
        store.ensure_stamp(STAMP)
        for coll, name, data, vec, lic, _ in entries:
            path = files / name
            path.write_bytes(data)
            photo = Photo(
                source="folder", source_id=name, collection=coll, origin=str(files), path=str(path), license=lic,
                title=name, owner_name="someone",
            )  # fmt: skip
            (pid,) = store.add_photos([photo])
            store.add_vectors([(pid, str(path), hashlib.sha256(data).hexdigest())], vec[None])
        store.save_index()
    return h


def names(store, ids):
    rows = store.photo_rows(ids)
    return sorted(rows[i]["source_id"] for i in ids)


def test_groups_exact_and_verified_near_across_collections(home):
    with Store(home, readonly=True) as store:
        result = ops.duplicates(store)
        groups = {tuple(names(store, g.ids)): g for g in result.groups}
        assert set(groups) == {("c0.jpg", "d0.jpg"), ("c1.jpg", "c1copy.jpg")}
        exact, near = groups[("c1.jpg", "c1copy.jpg")], groups[("c0.jpg", "d0.jpg")]
        assert exact.kind == "exact" and names(store, [exact.keep]) == ["c1copy.jpg"]  # CC0 beats CC BY
        assert near.kind == "near" and near.collections == ("cat", "dog") and near.spans_collections
        assert names(store, [near.keep]) == ["c0.jpg"]  # same pixel count; the crop's file is smaller
        # under the cut the byte copies (asked only whether they are mirror images: no); between the cut and 3x
        # the cut the pixels decide: the crop (confirmed) and d3 vs d2 (refused)
        assert result.mirror_checked_pairs >= 1 and result.mirrored_pairs == 0
        assert result.verified_pairs >= 2 and result.confirmed_pairs == 1
        without = ops.duplicates(store, pixel_check=False)
        assert [len(g.ids) for g in without.groups] == [2]  # only the exact pair under the vector cut
        only_dog = ops.duplicates(store, ["dog"])
        assert only_dog.groups == ()
        with pytest.raises(ConfigError, match="no collection 'bird'"):
            ops.duplicates(store, ["bird"])
        json.dumps(result.as_dict())


def test_apply_flags_every_membership_and_undo_restores(home):
    with Store(home) as store:
        before = {c: store.vector_ids(c, include_flagged=False) for c in ("cat", "dog")}
        result = ops.duplicates(store)
        assert ops.flag_duplicates(store, result) == 2
        after = {c: store.vector_ids(c, include_flagged=False) for c in ("cat", "dog")}
        assert len(after["cat"]) == len(before["cat"]) - 1 and len(after["dog"]) == len(before["dog"]) - 1
        gone = {pid for c in before for pid in set(before[c]) - set(after[c])}
        assert gone == set(result.dropped)  # the non-kept photo of each group, on each of its collections
        # a rerun reports the same groups (flagged photos included) and flags nothing new
        assert [g.ids for g in ops.duplicates(store).groups] == [g.ids for g in result.groups]
        assert ops.undo_duplicates(store) == 2
        assert {c: store.vector_ids(c, include_flagged=False) for c in ("cat", "dog")} == before


def test_export_leaves_flagged_out_and_keeps_groups_in_one_split(home, tmp_path):
    with Store(home) as store:
        ops.flag_duplicates(store, ops.duplicates(store))
        out = tmp_path / "out"
        result = ops.export_collections(store, out, format="imagefolder", split="0.5,0.5", seed=1, version="t")
        assert sum(sum(c.values()) for c in result.counts.values()) == 9  # 11 memberships - 2 flagged
        everything = ops.export_collections(store, tmp_path / "all", include_flagged=True, split="0.5,0.5")
        assert sum(sum(c.values()) for c in everything.counts.values()) == 11
        rows = list(csv.DictReader(io.StringIO((tmp_path / "all" / "ATTRIBUTION.csv").read_text())))
        split_of = {}
        for r in rows:
            split_of.setdefault(r["title"].replace("copy", ""), set()).add(r["file"].split("/")[0])
        assert len(split_of["c1.jpg"]) == 1  # the byte copies share a split
        c0, d0 = split_of["c0.jpg"], split_of["d0.jpg"]
        assert c0 == d0  # the crop in "dog" and its original in "cat" share a split
        cc0 = ops.export_collections(store, tmp_path / "cc0", licenses=[9], include_flagged=True, split="1")
        assert cc0.counts == {"train": {"cat": 1}}
        assert json.loads((tmp_path / "cc0" / "manifest.json").read_text())["filters"]["license"] == [9]


def test_cli_duplicates_and_export(home, tmp_path):
    """As a user runs them: --json contract, --apply then --undo, --sheet, export --json, errors in one line."""
    env = imgidx_env(home)
    done = run(["duplicates", "--json", "--sheet", tmp_path / "dups.html"], env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["threshold"] == 0.05 and len(report["groups"]) == 2 and not report["applied"]
    assert {g["kind"] for g in report["groups"]} == {"exact", "near"}
    assert all(g["ids"][0] == g["keep"] and isinstance(g["max_distance"], float) for g in report["groups"])
    assert "duplicate of" in (tmp_path / "dups.html").read_text()
    applied = json.loads(run(["duplicates", "--apply", "--json"], env).stdout)
    assert applied["applied"] and applied["flagged"] == 2
    out = tmp_path / "set"
    args = ["export", out, "cat", "dog", "--format", "webdataset", "--split", "0.5,0.5", "--shard-size", "2"]
    done = run([*args, "--json"], env)
    assert done.returncode == 0, done.stderr
    assert sum(sum(c.values()) for c in json.loads(done.stdout)["counts"].values()) == 9
    assert (out / "manifest.json").is_file() and (out / "ATTRIBUTION.csv").is_file()
    for shard in out.glob("*/*.tar"):  # one or two samples each (the split's 4-5 samples over 4-5 shards)
        with tarfile.open(shard) as tar:
            assert 1 <= len(tar.getnames()) // 3 <= 2
    command = f"imgidx export {out} cat dog --format webdataset --split 0.5,0.5 --seed 0 --threshold auto"
    command += " --shard-size 2"
    assert command in (out / "README.md").read_text()  # the card says how it was made
    undone = run(["duplicates", "--undo"], env)
    assert undone.returncode == 0 and "2 memberships" in undone.stderr
    bad = run(["duplicates", "--threshold", "loose"], env)
    assert bad.returncode == 1 and bad.stderr.startswith("error: --threshold") and "Traceback" not in bad.stderr
    bad = run(["export", tmp_path / "x", "--format", "zip"], env)
    assert bad.returncode == 1 and "format must be one of" in bad.stderr


def test_index_api(home, tmp_path):
    import imgidx

    idx = imgidx.open(home)
    result = idx.duplicates()
    assert isinstance(result, imgidx.Duplicates) and len(result.groups) == 2 and result.as_dict()["threshold"] == 0.05
    assert idx.duplicates(["cat"]).groups[0].kind == "exact"  # only the byte copies are both in "cat"
    idx.duplicates(apply=True)
    exported = idx.export(tmp_path / "out", format="parquet", split="1")
    assert isinstance(exported, imgidx.ExportResult) and sum(exported.counts["train"].values()) == 9
    assert idx.undo_duplicates() == 2
    assert sum(idx.export(tmp_path / "out", format="parquet", split="1").counts["train"].values()) == 11


def test_a_persons_keep_beats_a_duplicate_flag_in_export_and_reports(home, tmp_path):
    """A reviewed "keep" outranks duplicates' automatic flag, before and after a second --apply: export takes the
    photo back, it stays among its collection's clean members, and undo leaves the person's decision alone."""
    import imgidx

    idx = imgidx.open(home)
    result = idx.duplicates(apply=True)
    assert len(result.dropped) == 2
    kept, other = sorted(result.dropped)
    with Store(home, readonly=True) as store:
        (collection,) = store.collections_of([kept])[kept]
    idx.review(collection, kept, "keep", source="duplicates")
    for _ in range(2):  # a second --apply sets the automatic flag again: the keep still counts
        exported = idx.export(tmp_path / "out", format="parquet", split="1")
        assert sum(exported.counts["train"].values()) == 10  # 11 memberships, only `other` left out
        with Store(home, readonly=True) as store:
            assert kept in store.vector_ids(collection, include_flagged=False)
            memberships = store.collections_of([kept, other])
            flagged = {
                p for p, cs in memberships.items() for c in cs if p not in store.vector_ids(c, include_flagged=False)
            }
            assert flagged == {other}  # the keep hides the automatic flag; the other photo's flag counts
        idx.duplicates(apply=True)
    assert idx.undo_duplicates() == 2  # the automatic flags go; the review stays
    assert [r.photo_id for r in idx.reviews(collection)] == [kept]
