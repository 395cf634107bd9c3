"""Write an image set the way a training job reads it: `imagefolder`, `parquet` or `webdataset`, always with
DIR/README.md (a dataset card), DIR/ATTRIBUTION.csv and DIR/manifest.json.

Input is plain records (ExportPhoto: id, label, file path, metadata, vector, duplicate group), so this module
knows nothing of the store. Every layout loads in one call with the clients its users train with, classes,
pixels and attribution included (README.md of the repository shows each call; tests/test_loaders.py makes them):
  imagefolder  DIR/<split>/<label>/<id>.<ext> + DIR/<split>/metadata.parquet (file_name, label, attribution
               columns): Keras image_dataset_from_directory and torchvision ImageFolder read the class folders,
               Hugging Face `imagefolder` attaches the metadata to each image
  parquet      DIR/data/<split>.parquet, the Hugging Face layout: `image` = {bytes, path} with the file's bytes,
               `label` a class index, the features declared in the schema metadata; one row per photo and label
               with its metadata and stored vector; row groups of ROW_GROUP rows (streaming reads a group at a
               time). embed=False: `image` is the path of DIR/images/<id>.<ext> instead (smaller, not portable)
  webdataset   DIR/<split>/NNNNN.tar: KEY.jpg (or .png, ...), KEY.json, KEY.cls (the ImageNet-webdataset
               class index), samples shuffled by the seed over at least MIN_SHARDS shards per split (so every
               DataLoader worker gets shards) of at most shard_size samples; every .json field always present
               with one type (no nulls: "" / -1 / [])
and DIR/README.md, a Hugging Face dataset card (search/cards.py): licences, task, per-split files and features in
its YAML header, then counts, licences, model and the command for people.
Files are hard-linked from the index where the file system allows it, else copied; never re-encoded.

Re-running with the same arguments writes nothing: every output is compared with what is there first. Every file
is written aside and renamed into place, and DIR/manifest.json is written last (removed first when it would
change), so an interrupted export leaves no half-written file and a rerun resumes: finished files are kept,
webdataset shards are skipped by their fingerprint in DIR/.imgidx-export. Files an earlier export wrote that the
new one does not plan (other splits, photos now flagged) are removed, only inside the folders exports own.

What an export may touch: only DIR's own entries and, below DIR, the top folders its format writes (TOPS). The
marker is read as untrusted input (export folders are shared): a marker naming anything else (an absolute path,
`..`, another format's folders) is refused before anything is written or deleted, and so is a symbolic link
where the export would write or prune a folder. A link where a file goes is replaced as a link (never written
through), and pruning never follows one. DIR itself may be a link the user made to a folder.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import numpy as np

from imgidx.indexer import atomic
from imgidx.indexer.errors import ConfigError, ImgidxError
from imgidx.indexer.licenses import LICENSES, license_name

from . import cards, csvcells
from .splits import NAMES, assign_splits, parse_fractions, split_names

FORMATS = ("imagefolder", "parquet", "webdataset")
SHARD_SIZE = 1000
MIN_SHARDS = 8  # per split (fewer only for fewer samples): DataLoader / datasets workers each take whole shards
ROW_GROUP = 100  # parquet rows per row group: ~100 photos, what the Hub writes for image datasets
MARKER = ".imgidx-export"  # JSON: the folders exports own here, and the webdataset shard fingerprints
SPLITS = tuple(dict.fromkeys(name for names in NAMES.values() for name in names))
# the top folders of DIR each format writes: the only names a marker may claim, the only folders pruned
TOPS = {"imagefolder": SPLITS, "parquet": ("data", "images"), "webdataset": SPLITS}
FILES = ("ATTRIBUTION.csv", "manifest.json", "README.md")  # DIR's own files besides the marker
NAME_MAX = 255  # bytes in one folder name on the usual file systems (ext4, XFS, btrfs, APFS)
_SHARD = re.compile(f"(?:{'|'.join(SPLITS)})/[0-9]{{5,}}\\.tar")  # the shard names _webdataset writes
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ExportError(ImgidxError):
    """The export cannot be written (DIR is not an export folder, a photo file is gone)."""


@dataclass(frozen=True)
class ExportPhoto:
    id: int
    label: str  # the collection
    path: Path  # the photo file (absolute, or relative to the working directory)
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)
    group: int | None = None  # duplicate group: photos sharing one never land in different splits
    source: str = ""
    source_id: str = ""
    title: str = ""
    owner: str = ""  # Flickr NSID
    owner_name: str = ""
    license: int | None = None
    page_url: str = ""
    width: int | None = None
    height: int | None = None
    sha256: str = ""
    date_upload: str = ""
    date_taken: str = ""
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportResult:
    dir: Path
    format: str
    counts: dict  # {split: {label: n}}
    written: int  # files written this run (0 on an unchanged rerun)
    kept: int  # files already in place
    removed: int  # files of an earlier export that this one does not plan
    manifest: dict

    def as_dict(self) -> dict:
        return {
            "dir": str(self.dir),
            "format": self.format,
            "counts": self.counts,
            "written": self.written,
            "kept": self.kept,
            "removed": self.removed,
        }


def export(
    photos: Sequence[ExportPhoto],
    out: Path,
    *,
    format: str = "imagefolder",
    split: str | Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    model: dict | None = None,
    filters: dict | None = None,
    version: str = "",
    shard_size: int = SHARD_SIZE,
    link: bool = True,
    embed: bool = True,
    command: str = "",
) -> ExportResult:
    """Write `photos` to `out` in `format`; see the module docstring for the layouts and guarantees.
    embed: parquet holds the image bytes (else paths into DIR/images/). command: what made it, for the card."""
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}; received {format!r}")
    if shard_size < 1:
        raise ConfigError(f"shard size must be >= 1; received {shard_size}")
    fractions = parse_fractions(split)
    photos = sorted(photos, key=lambda p: (p.label, p.id))
    _check(photos)
    out = Path(out)
    state = _inspect(out, format)  # reads only: every refusal comes before the first write
    splits = assign_splits(
        [p.id for p in photos], [p.label for p in photos], [p.group for p in photos], fractions, seed=seed
    )
    _check_folders(out, _folders(format, photos, splits), state.get("owned", []))
    _claim(out, TOPS[format])
    exts: dict[int, str] = {}
    for p in reversed(photos):  # once per photo, not per label; the last row's path, as a dict display keeps it
        if p.id not in exts:
            exts[p.id] = _extension(p.path)
    counts = _counts(photos, splits, split_names(fractions))
    manifest = {
        "imgidx_version": version,
        "format": format,
        "model": model or {},
        "split": {"names": list(split_names(fractions)), "fractions": list(fractions), "seed": seed},
        "filters": filters or {},
        "photos": len({p.id for p in photos}),
        "rows": len(photos),
        "labels": sorted({p.label for p in photos}),
        "counts": counts,
        "duplicate_groups_kept_in_one_split": len({p.group for p in photos if p.group is not None}),
        "photos_with_several_labels": sum(1 for n in Counter(p.id for p in photos).values() if n > 1),
        "attribution": "ATTRIBUTION.csv",
        "card": "README.md",
        "command": command,
    }
    if format == "parquet":
        manifest["images"] = "embedded" if embed else "images/"
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    manifest_path = out / "manifest.json"
    if os.path.lexists(manifest_path) and not _holds(manifest_path, manifest_bytes):
        manifest_path.unlink()  # it describes an export this run replaces: no manifest until this one is whole
    writer = _Writer(out, link)
    if format == "imagefolder":
        planned = _imagefolder(writer, photos, splits, exts)
    elif format == "parquet":
        planned = _parquet(writer, photos, splits, exts, embed)
    else:
        planned = _webdataset(writer, photos, splits, exts, seed, shard_size, state)
    writer.write_bytes(out / "README.md", _card(format, photos, planned, counts, manifest, embed).encode())
    writer.sync()  # every photo in place for good before ATTRIBUTION.csv and the manifest say so
    writer.write_bytes(out / "ATTRIBUTION.csv", _attribution(photos, planned))
    owned = sorted(set(state.get("owned", [])) | {f.split("/", 1)[0] for f in planned.values()})
    state = {**state, "owned": owned}
    writer.write_bytes(out / MARKER, _state_bytes(state))
    removed = _prune(out, owned, set(planned.values()))
    writer.write_bytes(manifest_path, manifest_bytes)  # last: its presence says the export is whole
    return ExportResult(out, format, counts, writer.written, writer.kept, removed, manifest)


# ---- layouts ------------------------------------------------------------------------------------------------------
def _imagefolder(w: _Writer, photos, splits, exts) -> dict[tuple, str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    planned, folders = {}, {label: safe_name(label) for label in {p.label for p in photos}}
    labels = sorted(folders)
    rows: dict[str, list[tuple[str, ExportPhoto]]] = {}
    for p, s in zip(photos, splits, strict=True):
        name = f"{folders[p.label]}/{p.id}{exts[p.id]}"
        w.place_file(p.path, os.path.join(w.root, s, name))
        planned[(p.id, p.label)] = f"{s}/{name}"
        rows.setdefault(s, []).append((name, p))
    # Hugging Face imagefolder reads DIR/<split>/metadata.*: file_name (relative to that folder) becomes the image,
    # the other columns come along. Parquet, not jsonl, because its schema carries the features: `label` a class
    # label and every column its type, where a jsonl's types are guessed (and the card's features are not read
    # for imagefolder). Keras and torchvision look only into the class folders.
    features = imagefolder_features(labels)
    for s, members in rows.items():
        columns = {
            "file_name": pa.array([name for name, _ in members], pa.string()),
            "label": pa.array([labels.index(p.label) for _, p in members], pa.int64()),
            "label_name": pa.array([p.label for _, p in members], pa.string()),
            "id": pa.array([p.id for _, p in members], pa.int64()),
            "split": pa.array([s] * len(members), pa.string()),
            **_metadata_columns([p for _, p in members]),
        }
        file_features = [("file_name", ("string",)), *features[1:]]
        table = pa.table(columns).replace_schema_metadata(cards.schema_metadata(file_features))
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        rel = f"{s}/metadata.parquet"
        w.write_bytes(w.out / rel, buf.getvalue())
        planned[("metadata", s)] = rel
    return planned


def imagefolder_features(labels: Sequence[str]) -> list[tuple[str, tuple]]:
    """What datasets' imagefolder gives for this layout (metadata.parquet's columns, file_name as `image`)."""
    return [
        ("image", ("image",)),
        ("label", ("label", tuple(labels))),
        ("label_name", ("string",)),
        ("id", ("int64",)),
        ("split", ("string",)),
        *metadata_features(),
    ]


def _parquet(w: _Writer, photos, splits, exts, embed: bool) -> dict[tuple, str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    planned, images = {}, {}
    if not embed:
        for p in photos:
            rel = f"images/{p.id}{exts[p.id]}"
            if p.id not in images:
                w.place_file(p.path, os.path.join(w.root, rel))
                images[p.id] = rel
    dims = {len(p.vector) for p in photos if p.vector is not None}
    if len(dims) > 1:
        raise ConfigError(f"vectors of several sizes ({sorted(dims)}) cannot share one parquet column")
    dim = dims.pop() if dims else 0
    labels = sorted({p.label for p in photos})
    features = parquet_features(labels, dim, embed)
    for name in dict.fromkeys(splits):
        rows = [p for p, s in zip(photos, splits, strict=True) if s == name]
        rel = f"data/{name}.parquet"
        if embed:  # the file's own bytes (never re-encoded) and its name, as datasets' Image feature stores them
            image = pa.StructArray.from_arrays(
                [
                    pa.array([Path(p.path).read_bytes() for p in rows], pa.binary()),
                    pa.array([f"{p.id}{exts[p.id]}" for p in rows], pa.string()),
                ],
                names=["bytes", "path"],
            )
        else:
            image = pa.array([images[p.id] for p in rows], pa.string())
        columns = {
            "image": image,
            "label": pa.array([labels.index(p.label) for p in rows], pa.int64()),
            "label_name": pa.array([p.label for p in rows], pa.string()),
            "id": pa.array([p.id for p in rows], pa.int64()),
            "split": pa.array([name] * len(rows), pa.string()),
            **_metadata_columns(rows),
        }
        if dim:
            flat = np.concatenate(
                [
                    np.asarray(p.vector, np.float32) if p.vector is not None else np.full(dim, np.nan, np.float32)
                    for p in rows
                ]
            )
            columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)
        table = pa.table(columns).replace_schema_metadata(cards.schema_metadata(features))
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd", row_group_size=ROW_GROUP)
        w.write_bytes(w.out / rel, buf.getvalue())
        planned[("parquet", name)] = rel
        for p in rows:
            planned[(p.id, p.label)] = images[p.id] if not embed else f"{rel}#{p.id}{exts[p.id]}"
    return planned


def shard_ranges(n: int, shard_size: int, min_shards: int = MIN_SHARDS) -> list[tuple[int, int]]:
    """(start, end) of each shard of n samples: at least min_shards (fewer only when n is smaller), at most
    shard_size samples each, sizes within one of each other."""
    k = max(-(-n // shard_size), min(min_shards, n))
    return [(i * n // k, (i + 1) * n // k) for i in range(k)]


def _webdataset(w: _Writer, photos, splits, exts, seed, shard_size, state) -> dict[tuple, str]:
    planned = {}
    labels = sorted({p.label for p in photos})
    fingerprints = dict(state.get("shards", {}))
    for name in dict.fromkeys(splits):
        rows = [p for p, s in zip(photos, splits, strict=True) if s == name]
        # shuffled by the seed: shards are read in order, and one label per shard would starve a training batch
        rows.sort(key=lambda p: hashlib.sha256(f"{seed}:{p.id}:{p.label}".encode()).digest())
        for n, (start, end) in enumerate(shard_ranges(len(rows), shard_size)):
            chunk = rows[start:end]
            rel = f"{name}/{n:05d}.tar"
            samples = []
            for i, p in enumerate(chunk):
                key = f"{n:05d}{i:04d}" if shard_size <= 10_000 else f"{n:05d}{i:09d}"
                meta = {
                    "key": key,
                    "id": p.id,
                    "label": p.label,
                    "label_id": labels.index(p.label),
                    "split": name,
                    **metadata(p),
                }
                samples.append((key, p, meta))
                planned[(p.id, p.label)] = f"{rel}#{key}{exts[p.id]}"
            fp = hashlib.sha256(
                json.dumps(
                    [[k, str(p.path), _file_identity(p.path), m, exts[p.id]] for k, p, m in samples], sort_keys=True
                ).encode()
            ).hexdigest()
            target = w.out / rel
            if fingerprints.get(rel) == fp and _is_regular(target):
                w.kept += 1
            else:
                w.write_with(target, lambda f, samples=samples: _write_tar(f, samples, exts, labels))
                fingerprints[rel] = fp
                # recorded per shard, so a rerun after an interruption skips the shards already done
                state["shards"] = fingerprints
                w.write_bytes(
                    w.out / MARKER, (json.dumps(state, indent=1, sort_keys=True) + "\n").encode(), count=False
                )
            planned[("shard", rel)] = rel
    state["shards"] = {k: v for k, v in fingerprints.items() if k in set(planned.values())}
    return planned


def _write_tar(f, samples, exts, labels) -> None:
    with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for key, p, meta in samples:
            data = Path(p.path).read_bytes()
            for suffix, blob in (
                (exts[p.id], data),
                (".json", (json.dumps(meta, sort_keys=True, ensure_ascii=False) + "\n").encode()),
                (".cls", f"{meta['label_id']}\n".encode()),
            ):
                info = tarfile.TarInfo(key + suffix)
                info.size, info.mtime, info.mode = len(blob), 0, 0o644  # fixed: the same input gives the same bytes
                tar.addfile(info, io.BytesIO(blob))


# (column, type) of the per-photo metadata, in every layout (parquet columns, webdataset .json, imagefolder
# metadata.parquet), always with a value of that type: "" for an unknown text, -1 for an unknown number or licence
# or no duplicate group (a null, or an empty list, leaves readers that guess types from the first rows, as
# datasets does for webdataset .json, with a null column that a later value breaks). Tags are one
# string, space-separated as Flickr gives them, for the same reason.
METADATA = (
    ("source", "string"),
    ("source_id", "string"),
    ("title", "string"),
    ("owner", "string"),
    ("license", "int32"),
    ("license_name", "string"),
    ("license_url", "string"),
    ("page_url", "string"),
    ("width", "int32"),
    ("height", "int32"),
    ("sha256", "string"),
    ("date_upload", "string"),
    ("date_taken", "string"),
    ("tags", "string"),
    ("duplicate_group", "int64"),
)
_FEATURE = {"string": ("string",), "int32": ("int32",), "int64": ("int64",)}


def metadata(p: ExportPhoto) -> dict:
    return {
        "source": p.source or "",
        "source_id": p.source_id or "",
        "title": p.title or "",
        "owner": p.owner_name or p.owner or "",
        "license": -1 if p.license is None else p.license,
        "license_name": license_name(p.license),
        "license_url": _license_url(p.license),
        "page_url": page_url(p),
        "width": -1 if p.width is None else p.width,
        "height": -1 if p.height is None else p.height,
        "sha256": p.sha256 or "",
        "date_upload": p.date_upload or "",
        "date_taken": p.date_taken or "",
        "tags": " ".join(p.tags),
        "duplicate_group": -1 if p.group is None else p.group,
    }


def metadata_features() -> list[tuple[str, tuple]]:
    return [(name, _FEATURE[t]) for name, t in METADATA]


def parquet_features(labels: Sequence[str], dim: int, embed: bool = True) -> list[tuple[str, tuple]]:
    """The columns of a parquet split, in order, as search/cards.py features."""
    out = [
        ("image", ("image",) if embed else ("string",)),
        ("label", ("label", tuple(labels))),
        ("label_name", ("string",)),
        ("id", ("int64",)),
        ("split", ("string",)),
        *metadata_features(),
    ]
    return out + [("vector", ("vector", "float32", dim))] if dim else out


def _metadata_columns(rows: Sequence[ExportPhoto]) -> dict:
    import pyarrow as pa

    types = {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64()}
    values = [metadata(p) for p in rows]
    return {name: pa.array([v[name] for v in values], types[t]) for name, t in METADATA}


def _card(format: str, photos, planned: dict, counts: dict, manifest: dict, embed: bool) -> str:
    """DIR/README.md for this layout: its per-split files, features and the calls that load it."""
    labels = manifest["labels"]
    names = [s for s in counts if any(counts[s].values())]
    notes = []
    if format == "parquet":
        data_files = {s: [f"data/{s}.parquet"] for s in names}
        dims = {len(p.vector) for p in photos if p.vector is not None}
        features = parquet_features(labels, dims.pop() if dims else 0, embed)
        load = (
            'from datasets import load_dataset\nds = load_dataset("DIR")  # or load_dataset("parquet", '
            'data_files={"train": "DIR/data/train.parquet", ...})\nds["train"][0]["image"]  # a PIL image; '
            '"label" a ClassLabel, attribution in "title", "owner", "license_name", "page_url"\n\n'
            'import pandas as pd\ndf = pd.read_parquet("DIR/data/train.parquet")  # image = {bytes, path}'
        )
        notes.append(
            "Images are embedded in the parquet files (their bytes as downloaded): the export is as large as the "
            "photos, and copies of it need nothing else."
            if embed
            else "Images are files in images/; the `image` column holds their paths relative to DIR."
        )
    elif format == "webdataset":
        data_files = {s: [f"{s}/*.tar"] for s in names}
        exts = sorted({planned[(p.id, p.label)].rsplit(".", 1)[1] for p in photos})
        sample = [("key", ("string",)), ("id", ("int64",)), ("label", ("string",)), ("label_id", ("int64",))]
        sample += [("split", ("string",)), *metadata_features()]
        features = [
            ("__key__", ("string",)),
            ("__url__", ("string",)),  # what datasets' webdataset reader adds to every sample
            *[(ext, ("image",)) for ext in exts],
            ("json", ("struct", tuple(sorted(sample)))),
            ("cls", ("label", tuple(labels))),
        ]
        load = (
            'import webdataset as wds\nurls = sorted(glob.glob("DIR/train/*.tar"))\n'
            'ds = wds.WebDataset(urls, shardshuffle=len(urls)).decode("pil").to_tuple("jpg;png", "cls", "json")\n'
            "loader = torch.utils.data.DataLoader(ds.batched(32), batch_size=None, num_workers=2)\n\n"
            'from datasets import load_dataset\nds = load_dataset("DIR")  # columns jpg, json (attribution), cls'
        )
        notes.append(
            "Shards: `KEY.jpg` (or `.png`: files are never re-encoded) and `KEY.json` as img2dataset writes "
            "them, `KEY.cls` the class index as in the ImageNet webdataset; at least "
            f"{MIN_SHARDS} shards per split (fewer only for fewer photos), so every loader worker gets shards."
        )
    else:
        data_files = {s: [f"{s}/**"] for s in names}
        features = imagefolder_features(labels)
        load = (
            'from datasets import load_dataset\nds = load_dataset("imagefolder", data_dir="DIR")  '
            "# image, label and the attribution columns of metadata.parquet\n\n"
            'keras.utils.image_dataset_from_directory("DIR/train")\n'
            'torchvision.datasets.ImageFolder("DIR/train")'
        )
    return cards.card(
        format=format,
        data_files=data_files,
        features=None if format == "parquet" else features,
        counts={s: counts[s] for s in names},
        licenses=[p.license for p in photos],
        manifest=manifest,
        load=load,
        notes=notes,
        fields=features,
    )


def _attribution(photos: Sequence[ExportPhoto], planned: dict) -> bytes:
    """The CSV people open in a spreadsheet: cells neutralised and links http(s) only (search/csvcells.py)."""
    return csvcells.table(
        ["file", "id", "title", "owner", "license", "license_url", "page_url"],
        (
            [
                planned[(p.id, p.label)],
                p.id,
                p.title,
                p.owner_name or p.owner,
                license_name(p.license),
                _license_url(p.license),
                csvcells.web_link(page_url(p)),
            ]
            for p in photos
        ),
    )


def page_url(p: ExportPhoto) -> str:
    """The photo's Flickr page (built from owner and id when the source did not give it)."""
    if p.page_url:
        return p.page_url
    if p.source == "flickr" and p.owner and p.source_id:
        return f"https://www.flickr.com/photos/{p.owner}/{p.source_id}/"
    return ""


def _license_url(license_id: int | None) -> str:
    return LICENSES.get(license_id, ("", ""))[1] if license_id is not None else ""


# ---- checks, counts, names ----------------------------------------------------------------------------------------
def _check(photos: Sequence[ExportPhoto]) -> None:
    seen = set()
    for p in photos:
        if (p.id, p.label) in seen:
            raise ConfigError(f"photo {p.id} is listed twice under {p.label!r}")
        seen.add((p.id, p.label))
    missing = [p for p in photos if not _is_file(p.path)]
    if missing:
        shown = ", ".join(f"{p.id} ({p.path})" for p in missing[:5])
        raise ExportError(f"{len(missing)} photo file(s) are missing, e.g. {shown}; nothing was exported")
    names: dict[str, str] = {}
    for label in {p.label for p in photos}:
        other = names.setdefault(safe_name(label), label)
        if other != label:
            raise ConfigError(f"collections {other!r} and {label!r} would share the folder {safe_name(label)!r}")


def safe_name(label: str) -> str:
    """A collection name as one path component: '/', '\\' and control characters become '_'; '', '.', '..',
    hidden names and the names of the metadata files Hugging Face's imagefolder reads are escaped; a name over
    NAME_MAX bytes is cut and ends in '~' + 16 hex digits of its sha256 (still one folder per collection; the
    manifest and the metadata keep the full name)."""
    name = "".join("_" if c in "/\\" or c < " " or c == "\x7f" else c for c in label).strip()
    taken = ("", ".", "..", "metadata.parquet", "metadata.jsonl", "metadata.csv")
    name = name if name not in taken and not name.startswith(".") else "_" + name
    if len(name.encode("utf-8", "surrogatepass")) > NAME_MAX:
        digest = hashlib.sha256(label.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        cut = name.encode("utf-8", "surrogatepass")[: NAME_MAX - 1 - len(digest)].decode("utf-8", "ignore")
        name = f"{cut}~{digest}"
    return name


def _counts(photos, splits, names) -> dict:
    counts: dict[str, dict[str, int]] = {s: {} for s in names}
    tally = Counter(zip(splits, (p.label for p in photos), strict=True))
    for (s, label), n in sorted(tally.items()):
        counts[s][label] = n
    return counts


# First bytes that only one decoder of images.FORMATS accepts (Pillow's own checks: no two share a first byte, and
# TIFF, the sixth, starts with I or M). Such a head is named by that decoder or by nobody; nobody means "bin", and
# then the file's suffix names it. Where the suffix gives the same name, both roads end there, so Pillow is not
# asked (it would open every photo; tests/test_export.py checks these against the installed Pillow's accept
# functions).
SIGNATURES = (
    (b"\xff\xd8\xff", "jpg"),  # JPEG (and MPO, which Pillow opens as JPEG first): image_format says "jpg"
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
)


def _extension(path: Path) -> str:
    head = _head(path, 16)  # what the signatures need; Pillow, asked only when they do not settle it, gets 64 KB
    suffix = (path if isinstance(path, PurePath) else PurePath(path)).suffix.lower()  # no new Path a photo
    by_suffix = {".jpeg": "jpg"}.get(suffix, suffix.lstrip(".") or "bin")
    if any(head.startswith(magic) and by_suffix == fmt for magic, fmt in SIGNATURES) or (
        by_suffix == "webp" and head.startswith(b"RIFF") and head[8:12] == b"WEBP"
    ):
        return "." + by_suffix
    from imgidx.indexer.images import image_format

    fmt = image_format(_head(path, 1 << 16))
    if fmt == "bin":  # Pillow needs more than the head for some formats: trust a known suffix then
        fmt = by_suffix
    return "." + fmt


def _head(path: str | Path, size: int) -> bytes:
    """The first `size` bytes of a file (all of a shorter one), as open(path, "rb").read(size) gives them, without
    the buffered file object (an fstat and an isatty ioctl per photo)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = []
        while size:
            part = os.read(fd, size)
            if not part:
                break
            parts.append(part)
            size -= len(part)
    finally:
        os.close(fd)
    return b"".join(parts)


def _state_bytes(state: dict) -> bytes:
    return (json.dumps(state, indent=1, sort_keys=True) + "\n").encode()


def _file_identity(path: Path) -> list:
    st = Path(path).stat()
    return [st.st_size, st.st_mtime_ns]


# ---- the export folder ------------------------------------------------------------------------------------------
_FIX = "choose an empty or new folder"


def _inspect(out: Path, format: str) -> dict:
    """Refuse DIR unless it is new, empty, or an earlier export of this format with a marker this code could
    have written; return the marker's state. Reads only."""
    try:
        st = os.lstat(out)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ExportError(f"cannot use {out} ({e.strerror}); {_FIX}") from None
    if stat.S_ISLNK(st.st_mode):  # a link the user named as DIR is followed; a dangling one is refused
        try:
            st = os.stat(out)
        except OSError:
            raise ExportError(
                f"{out} is a symbolic link to {os.readlink(out)!r}, which does not exist; make that folder or {_FIX}"
            ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise ExportError(f"{out} exists and is not a folder; {_FIX}")
    marker = out / MARKER
    try:
        mst = os.lstat(marker)
    except FileNotFoundError:
        with os.scandir(out) as it:
            if any(True for _ in it):
                raise ExportError(f"{out} is not empty and not an imgidx export; {_FIX}") from None
        return {}
    if not stat.S_ISREG(mst.st_mode):
        raise ExportError(f"{marker} is not a file imgidx wrote (a link, a folder or a device); {_FIX}")
    return _read_marker(out, marker.read_bytes(), format)


def _read_marker(out: Path, data: bytes, format: str) -> dict:
    """The marker's state, refused unless it is what export() writes: owned = top folders of this format,
    shards = {'<split>/NNNNN.tar': sha256}."""
    where = f"{out / MARKER}"
    try:
        state = json.loads(data or b"{}")
    except ValueError:  # JSON and UTF-8 errors alike
        raise ExportError(f"{where} is not a marker imgidx wrote (not JSON); {_FIX}") from None
    if not isinstance(state, dict):
        raise ExportError(f"{where} is not a marker imgidx wrote (not a JSON object); {_FIX}")
    owned = state.get("owned", [])
    if not isinstance(owned, list) or not all(isinstance(top, str) for top in owned):
        raise ExportError(f"{where} is not a marker imgidx wrote ('owned' is not a list of names); {_FIX}")
    for top in owned:
        if top in TOPS[format]:
            continue
        if any(top in tops for tops in TOPS.values()):
            raise ExportError(
                f"{out} holds an export in another format (its {top!r} folder), which a {format} export does not "
                f"replace: {_FIX}, or delete {out} first"
            )
        raise ExportError(
            f"{where} claims {_shown(top)}, which no {format} export writes (exports own only "
            f"{', '.join(TOPS[format])} in their folder); nothing was changed: {_FIX}"
        )
    shards = state.get("shards", {})
    if not isinstance(shards, dict) or not all(
        isinstance(k, str) and _SHARD.fullmatch(k) and isinstance(v, str) and _SHA256.fullmatch(v)
        for k, v in shards.items()
    ):
        raise ExportError(f"{where} is not a marker imgidx wrote ('shards' are not shard fingerprints); {_FIX}")
    return state


def _shown(name: str) -> str:
    return repr(name if len(name) <= 80 else name[:80] + "...")


def _folders(format: str, photos: Sequence[ExportPhoto], splits: Sequence[str]) -> set[str]:
    """The folders (relative to DIR) this export writes files into."""
    if format == "parquet":
        return set(TOPS["parquet"])
    if format == "webdataset":
        return set(splits)
    names = {label: safe_name(label) for label in {p.label for p in photos}}
    return {f"{s}/{names[label]}" for s, label in set(zip(splits, (p.label for p in photos), strict=True))}


def _check_folders(out: Path, folders: set[str], owned: Sequence[str]) -> None:
    """Before anything is written: every folder on the way to a file this export writes is a real folder or
    missing (then made), never a symbolic link (it would send the files elsewhere); the tops pruned are no links
    either, and DIR's own files are no folders. Reads only."""
    seen: dict[str, bool] = {}  # folder -> exists
    for rel in sorted(folders | set(owned)):
        parts = rel.split("/")
        for n in range(1, len(parts) + 1 if rel in folders else 2):
            sub = "/".join(parts[:n])
            if sub not in seen:
                seen[sub] = _real_folder(out, sub, must=rel in folders)
            if not seen[sub]:
                break  # missing: nothing below it either
    for name in FILES:
        path = out / name
        if os.path.isdir(path) and not os.path.islink(path):
            raise ExportError(f"{path} is a folder where the export writes a file; remove it or {_FIX}")


def _real_folder(out: Path, rel: str, *, must: bool) -> bool:
    """True: out/rel is a folder (no link); False: missing (or, when not `must`, not a folder: pruning skips
    it). A link, or a file where a folder must go, is refused."""
    path = out / rel
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        raise ExportError(
            f"{path} is a symbolic link; an export never writes or deletes through one: remove the link or {_FIX}"
        )
    if stat.S_ISDIR(st.st_mode):
        return True
    if must:
        raise ExportError(f"{path} is not a folder where the export writes one; remove it or {_FIX}")
    return False


def _claim(out: Path, tops: Sequence[str]) -> None:
    """Make `out` an export folder (checked by _inspect) and clear the temps an interrupted export left in DIR
    and in this format's tops."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot make the folder {out} ({e.strerror}); {_FIX}") from None
    for tmp in _temps(os.fspath(out), tops):  # named by indexer/atomic.py
        # a link at a temp name is no temp imgidx wrote, and a write to that name would go through it
        if tmp.is_symlink() or atomic.temp_owner(tmp) == os.getpid() or not atomic.owner_alive(tmp):
            tmp.unlink(missing_ok=True)
    marker = out / MARKER
    if not os.path.lexists(marker):
        atomic.write_text(marker, "{}\n")


def _temps(folder: str, tops: Sequence[str] | None = None):
    """Temp files (and links at temp names) in `folder` and below it (only below `tops` where given), links
    never followed."""
    with os.scandir(folder) as it:
        entries = list(it)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if tops is None or entry.name in tops:
                yield from _temps(entry.path)
        elif _maybe_temp(entry.name) and atomic.is_temp(Path(entry.path)):
            yield Path(entry.path)


def _maybe_temp(name: str) -> bool:
    """What every temp name (indexer/atomic.py) looks like: no Path made for the other files."""
    return name.startswith(".") and name.endswith(".tmp")


def _prune(out: Path, owned: Sequence[str], planned: set[str]) -> int:
    """Remove what earlier exports wrote that this one does not plan: only below the tops in `owned` (checked
    against TOPS), links removed as links and never followed."""
    keep = {rel.split("#", 1)[0] for rel in planned}
    removed = 0
    for top in owned:
        root = out / top
        if top.startswith(".") or top in FILES or "/" in top or not _is_real_folder(root):
            continue
        removed += _prune_folder(os.fspath(root), top, keep)
        with os.scandir(root) as it:
            empty = not any(True for _ in it)
        if empty:
            root.rmdir()
    return removed


def _prune_folder(folder: str, rel: str, keep: set[str]) -> int:
    """Below `folder` (`rel` inside the export): remove the files and links not in `keep` (temps stay), then the
    folders left empty; a folder after everything in it, names in reverse order, links never entered."""
    removed = 0
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name, reverse=True)
    for entry in entries:
        path, name = entry.path, f"{rel}/{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            removed += _prune_folder(path, name, keep)
            with os.scandir(path) as it:
                empty = not any(True for _ in it)
            if empty:
                os.rmdir(path)
        elif (entry.is_symlink() or entry.is_file(follow_symlinks=False)) and not (
            name in keep or (_maybe_temp(entry.name) and atomic.is_temp(Path(path)))
        ):
            os.unlink(path)  # a link: the link itself, never what it points at
            removed += 1
    return removed


def _is_real_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


class _Writer:
    """Every output goes through here: written aside and renamed (indexer/atomic.py), skipped when in place."""

    def __init__(self, out: Path, link: bool):
        self.out, self.link, self.written, self.kept = out, link, 0, 0
        self.root = os.fspath(out)  # photo targets are plain strings: no Path object per photo
        self.unsynced: set[str] = set()  # folders with photo renames not yet fsynced (sync() does, once each)
        self.made: set[str] = set()  # folders this run created or found (mkdir once per folder, not per photo)

    def _aside(self, target: Path):
        return atomic.replacing(target)  # the one atomic write: temp in the same folder, fsync, rename

    def sync(self) -> None:
        """Make the photo renames durable: one fsync per folder instead of one per photo (4,000 photos: ~1 s)."""
        for folder in sorted(self.unsynced):
            atomic.fsync_dir(folder)
        self.unsynced.clear()

    def write_bytes(self, target: Path, data: bytes, *, count: bool = True) -> None:
        if _holds(target, data):
            self.kept += count
            return
        with self._aside(target) as tmp:
            _clear(tmp)
            tmp.write_bytes(data)
        self.written += count

    def write_with(self, target: Path, fill) -> None:
        with self._aside(target) as tmp:
            _clear(tmp)
            with open(tmp, "wb") as f:
                fill(f)
        self.written += 1

    def place_file(self, source: Path, target: str | Path) -> None:
        """The photo file at target, hard-linked (same file system) or copied with its times; never re-encoded."""
        folder = os.path.dirname(target)
        # a hard link at a free name needs no temp, no rename and no look first: it appears whole or not at all, and
        # a name in use (an earlier export's file, kept below when it is this photo) refuses it. Where the folder
        # is new or links fail, the general way below (aside, then renamed)
        if self.link and folder in self.made and atomic.link_new(source, target):
            self.unsynced.add(folder)
            self.written += 1
            return
        mode = _lmode(target)  # a link at the name is replaced as a link, never kept or written through
        if stat.S_ISREG(mode) and _same(source, target):
            self.kept += 1
            return
        if stat.S_ISDIR(mode):
            raise ExportError(f"{target} is a folder where the export writes a photo; remove it or {_FIX}")
        # a hard link adds no bytes to fsync (they are the source's), a copy does; the folder is fsynced once,
        # by sync(), not once per photo
        with atomic.replacing(Path(target), sync_file=False, sync_dir=False) as tmp:
            _clear(tmp)
            linked = False
            if self.link:
                with contextlib.suppress(OSError):  # another file system, or links not allowed: copy instead
                    os.link(source, tmp)
                    linked = True
            if not linked:
                shutil.copy2(source, tmp)
                atomic.fsync_file(tmp)
        self.made.add(folder)
        self.unsynced.add(folder)
        self.written += 1


def _is_file(path: str | Path) -> bool:
    """Path(path).is_file() without making a Path per photo: False when the path or a folder on
    it is missing, other errors (no permission) raise."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
            raise
        return False
    except ValueError:
        return False


def _clear(tmp: Path) -> None:
    """Nothing at a temp name before it is written: opening a link planted there would write through it."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def _lmode(path: str | Path) -> int:
    """The file type bits of `path` itself (a link is a link), 0 when it is missing."""
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return 0


def _is_regular(path: str | Path) -> bool:
    return stat.S_ISREG(_lmode(path))


def _holds(path: Path, data: bytes) -> bool:
    """`path` is a regular file (not a link) with exactly `data` in it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == len(data) and path.read_bytes() == data


def _same(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        if os.path.samefile(a, b):
            return True
        sa, sb = os.stat(a), os.stat(b)
        if sa.st_size == sb.st_size and sa.st_mtime_ns == sb.st_mtime_ns:
            return True  # copy2 keeps the times: an earlier export's copy of the same file
    return False


def grouped(photo_ids: Sequence[int], groups: Sequence[Sequence[int]]) -> dict[int, int]:
    """{photo id: group number} from lists of ids (e.g. Duplicates.groups' ids), for ExportPhoto.group."""
    out: dict[int, int] = {}
    for g, ids in enumerate(groups):
        for pid in ids:
            out[pid] = g
    return {pid: out[pid] for pid in photo_ids if pid in out}
