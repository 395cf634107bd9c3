"""Every export layout loaded by the real client libraries, one call each, the way their docs show: Hugging Face
`datasets` (parquet, imagefolder, webdataset, and `load_dataset(DIR)` through the dataset card), pyarrow,
`webdataset` (and through a 2-worker torch DataLoader: the `torch` marker, make test-loaders), Keras
`image_dataset_from_directory`. The photos carry Flickr-style metadata (owners, licences, tags, duplicate groups,
gaps where the source said nothing) and every loader must hand back decoded pixels, the class and the attribution.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgidx.search.export import ExportPhoto, export, shard_ranges
from tests.test_export import make_photos

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never ask the Hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
LABELS = ["bird", "cat", "dog"]


def flickr_photos(folder: Path, n: int = 60) -> list[ExportPhoto]:
    """make_photos with the gaps real sources leave: no licence, no size, no tags, no group on later photos, so a
    reader that guesses types from the first rows would meet values its guess cannot hold."""
    photos = make_photos(folder, n)
    out = []
    for i, p in enumerate(photos):
        gaps = {}
        if i % 5 == 1:
            gaps = {"license": None, "width": None, "height": None, "owner_name": "", "tags": ()}
        out.append(ExportPhoto(**{**p.__dict__, **gaps}))
    return out


def by_key(photos) -> dict[tuple[int, str], ExportPhoto]:
    return {(p.id, p.label): p for p in photos}


def same_pixels(img: Image.Image, p: ExportPhoto) -> bool:
    with Image.open(p.path) as want:
        return np.array_equal(np.asarray(img.convert("RGB")), np.asarray(want.convert("RGB")))


def check_attribution(row: dict, p: ExportPhoto) -> None:
    assert row["title"] == p.title and row["owner"] == (p.owner_name or p.owner)
    assert row["license"] == (-1 if p.license is None else p.license)
    assert row["page_url"] == f"https://www.flickr.com/photos/{p.owner}/{p.source_id}/"
    assert row["duplicate_group"] == (-1 if p.group is None else p.group)
    assert row["tags"] == " ".join(p.tags)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[ExportPhoto]:
    return flickr_photos(tmp_path_factory.mktemp("photos"))


def load(*args, tmp_path, **kw):
    from datasets import load_dataset

    return load_dataset(*args, cache_dir=str(tmp_path / "hf-cache"), **kw)


# ---- parquet -------------------------------------------------------------------------------------------------------
def test_parquet_with_datasets_pyarrow_and_the_card(photos, tmp_path):
    import pyarrow.parquet as pq
    from datasets import ClassLabel
    from datasets import Image as HFImage

    out = tmp_path / "out"
    export(photos, out, format="parquet", split="0.8,0.1,0.1", seed=1, command="imgidx export out --format parquet")
    card = (out / "README.md").read_text()
    header = card.split("---\n")[1]
    assert "- cc0-1.0\n" in header and "- other\n" in header and "image-classification" in header
    assert "| CC0 1.0 | 12 |" in card and "imgidx export out --format parquet" in card
    files = {s: str(out / "data" / f"{s}.parquet") for s in ("train", "val", "test")}
    ds = load("parquet", data_files=files, tmp_path=tmp_path)
    assert isinstance(ds["train"].features["image"], HFImage)
    assert ds["train"].features["label"] == ClassLabel(names=LABELS)
    keyed = by_key(photos)
    rows = [row for split in ds.values() for row in split]
    assert len(rows) == len(photos)
    for row in rows:
        p = keyed[(row["id"], LABELS[row["label"]])]
        assert isinstance(row["image"], Image.Image) and same_pixels(row["image"], p)
        check_attribution(row, p)
    # the bytes are the file's own (never re-encoded), row groups small enough to stream
    table = pq.read_table(files["train"])
    first = table.slice(0, 1).to_pylist()[0]
    p = keyed[(first["id"], first["label_name"])]
    assert first["image"]["bytes"] == p.path.read_bytes() and first["image"]["path"] == f"{p.id}{p.path.suffix}"
    assert pq.ParquetFile(files["train"]).metadata.row_group(0).num_rows <= 100
    # the folder alone loads (val is the Hub's "validation")
    card = load(str(out), tmp_path=tmp_path)  # the card names the files of each split
    assert set(card) == {"train", "validation", "test"} and card["validation"].num_rows == ds["val"].num_rows
    assert card["train"].features["label"].names == LABELS and isinstance(card["test"][0]["image"], Image.Image)


def test_parquet_no_embed_keeps_paths(photos, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    export(photos, out, format="parquet", embed=False)
    table = pq.read_table(out / "data" / "train.parquet").to_pylist()
    assert all(
        (out / row["image"]).read_bytes() == by_key(photos)[(row["id"], row["label_name"])].path.read_bytes()
        for row in table
    )
    ds = load(str(out), tmp_path=tmp_path)
    assert ds["train"].features["label"].names == LABELS and isinstance(ds["train"][0]["image"], str)


# ---- imagefolder ---------------------------------------------------------------------------------------------------
def test_imagefolder_with_datasets(photos, tmp_path):
    out = tmp_path / "out"
    export(photos, out, format="imagefolder", split="0.8,0.2", seed=2)
    ds = load("imagefolder", data_dir=str(out), tmp_path=tmp_path)
    assert ds["train"].features["label"].names == LABELS  # a class label without the card
    keyed = by_key(photos)
    rows = [row for split in ds.values() for row in split]
    assert set(ds) == {"train", "test"} and len(rows) == len(photos)
    for row in rows:
        p = keyed[(row["id"], row["label_name"])]
        assert row["label"] == LABELS.index(p.label) and same_pixels(row["image"], p)
        check_attribution(row, p)
    assert load(str(out), tmp_path=tmp_path)["train"].features["label"].names == LABELS  # through the card


def test_imagefolder_with_keras(photos, tmp_path):
    import keras

    out = tmp_path / "out"
    result = export(photos, out, format="imagefolder", split="0.8,0.2", seed=2)
    train = keras.utils.image_dataset_from_directory(out / "train", image_size=(48, 48), batch_size=64, shuffle=False)
    assert train.class_names == LABELS  # the metadata file beside the class folders is no class
    images, labels = next(iter(train))
    assert images.shape[1:] == (48, 48, 3) and len(labels) == sum(result.counts["train"].values())
    assert sorted(np.bincount(labels.numpy(), minlength=3)) == sorted(result.counts["train"].values())


# ---- webdataset ----------------------------------------------------------------------------------------------------
def test_webdataset_with_webdataset_and_datasets(photos, tmp_path):
    import webdataset as wds

    out = tmp_path / "out"
    export(photos, out, format="webdataset", split="0.8,0.2", seed=3)
    urls = sorted(str(p) for p in (out / "train").glob("*.tar"))
    assert len(urls) == 8  # 49 samples: at least 8 shards, whatever the shard size
    keyed = by_key(photos)
    seen = 0
    for img, cls, meta in wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("jpg;png", "cls", "json"):
        p = keyed[(meta["id"], meta["label"])]
        assert cls == LABELS.index(p.label) and same_pixels(img, p)
        check_attribution(meta, p)
        seen += 1
    assert seen == sum(json.loads((out / "manifest.json").read_text())["counts"]["train"].values()) == 49
    # the card declares the columns (jpg and png here: files are never re-encoded, and datasets wants one set of
    # keys in every sample unless told)
    card = load(str(out), tmp_path=tmp_path)
    rows = [row for split in card.values() for row in split]
    assert len(rows) == len(photos)
    for row in rows:
        img = row["jpg"] if row["jpg"] is not None else row["png"]
        p = keyed[(row["json"]["id"], row["json"]["label"])]
        assert row["cls"] == LABELS.index(p.label) and same_pixels(img, p)
        check_attribution(row["json"], p)
    # without the card, datasets guesses the types from the first samples (the gaps above come later): every
    # field has one type, so nothing a later sample holds breaks the guess
    jpegs = [p for p in photos if p.path.suffix == ".jpg"]
    export(jpegs, tmp_path / "jpegs", format="webdataset", split="1", seed=3)
    urls = sorted(str(p) for p in (tmp_path / "jpegs" / "train").glob("*.tar"))
    guessed = load("webdataset", data_files={"train": urls}, tmp_path=tmp_path)["train"]
    assert guessed.num_rows == len(jpegs)
    for row in guessed:
        p = keyed[(row["json"]["id"], row["json"]["label"])]
        assert row["cls"] == LABELS.index(p.label) and same_pixels(row["jpg"], p)
        check_attribution(row["json"], p)
    assert card["train"].features["cls"].names == LABELS and card["test"].num_rows == len(photos) - seen


def test_shards_at_least_eight_per_split_at_most_shard_size_each():
    assert shard_ranges(5, 1000) == [(i, i + 1) for i in range(5)]
    sizes = [b - a for a, b in shard_ranges(100, 1000)]
    assert len(sizes) == 8 and set(sizes) == {12, 13} and sum(sizes) == 100
    sizes = [b - a for a, b in shard_ranges(2500, 100)]
    assert len(sizes) == 25 and set(sizes) == {100}
    assert shard_ranges(0, 10) == []


@pytest.mark.torch
def test_webdataset_in_a_two_worker_dataloader(photos, tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed: make test-loaders installs the CPU wheel")
    import webdataset as wds

    out = tmp_path / "out"
    export(photos, out, format="webdataset", split="0.9,0.1", seed=4)
    for split in ("train", "test"):
        urls = sorted(str(p) for p in (out / split).glob("*.tar"))
        pipeline = (
            wds.WebDataset(urls, shardshuffle=False)
            .decode("torchrgb")
            .to_tuple("jpg;png", "cls", "json")
            .map_tuple(lambda img: img, lambda c: c, lambda m: m["id"])
        )
        loader = torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=2)
        got = [(int(c), int(i), img.shape) for img, c, i in loader]
        want = json.loads((out / "manifest.json").read_text())["counts"][split]
        # every sample once (photo 1020 is in two classes): with one shard a split, the second worker had none
        assert len(got) == sum(want.values()) and len({(c, i) for c, i, _ in got}) == len(got)
        assert all(shape == (3, 48, 48) for *_, shape in got)
