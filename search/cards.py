"""The Hugging Face side of an export: the features each layout declares and DIR/README.md, the dataset card.

`datasets` is not imported (it is no dependency): the features are written in the two forms it reads, the
Arrow schema metadata of a parquet file (key `huggingface`, `{"info": {"features": ...}}`, what
`Features.from_arrow_schema` reads) and the YAML header of a dataset card (`dataset_info.features`, what
`load_dataset(DIR)` reads next to `configs`, which names each split's files). tests/test_loaders.py loads every
layout with the real clients.

A feature is given once, as a small tuple, and rendered in both forms:
  ("string" | "int32" | "int64" | "float32",)      a value
  ("list", "string")                                a list of values
  ("vector", "float32", n)                          a list of exactly n values
  ("image",) / ("label", names) / ("struct", ((name, feature), ...))
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

from imgidx.indexer.licenses import license_name

# Flickr licence id -> the Hub's licence identifier, where the Hub has one (the others count as "other")
HUB_LICENSES = {
    1: "cc-by-nc-sa-2.0",
    2: "cc-by-nc-2.0",
    4: "cc-by-2.0",
    9: "cc0-1.0",
    11: "cc-by-4.0",
    12: "cc-by-sa-4.0",
    13: "cc-by-nd-4.0",
    14: "cc-by-nc-4.0",
    15: "cc-by-nc-sa-4.0",
    16: "cc-by-nc-nd-4.0",
}


# ---- features -----------------------------------------------------------------------------------------------------
def arrow_feature(f: tuple) -> dict | list:
    """One feature as `datasets.Features.to_dict()` writes it (the form the Arrow schema metadata holds)."""
    kind = f[0]
    if kind == "image":
        return {"_type": "Image"}
    if kind == "label":
        return {"names": list(f[1]), "_type": "ClassLabel"}
    if kind == "list":
        return [arrow_feature((f[1],))]  # a bare list: every datasets version reads it as a list of that feature
    if kind == "vector":
        return {"feature": arrow_feature((f[1],)), "length": f[2], "_type": "Sequence"}
    if kind == "struct":
        return {name: arrow_feature(sub) for name, sub in f[1]}
    return {"dtype": kind, "_type": "Value"}


def schema_metadata(features: Sequence[tuple[str, tuple]]) -> dict[bytes, bytes]:
    """The Arrow schema metadata that makes `datasets` read a parquet file with these features."""
    info = {"info": {"features": {name: arrow_feature(f) for name, f in features}}}
    return {b"huggingface": json.dumps(info).encode()}


def _yaml_feature(name: str | None, f: tuple, indent: int) -> list[str]:
    """One feature as a card's YAML list item (Features._to_yaml_list); name None inside a list."""
    pad = " " * indent
    head = [f"{pad}- name: {_q(name)}"] if name is not None else []
    inner = pad + "  " if name is not None else pad
    kind = f[0]
    if kind == "image":
        return [*head, f"{inner}dtype: image"]
    if kind == "label":
        lines = [*head, f"{inner}dtype:", f"{inner}  class_label:", f"{inner}    names:"]
        return lines + [f"{inner}      {_q(str(i))}: {_q(n)}" for i, n in enumerate(f[1])]
    if kind == "list":
        return [*head, f"{inner}list: {f[1]}"]
    if kind == "vector":
        return [*head, f"{inner}list: {f[1]}", f"{inner}length: {f[2]}"]
    if kind == "struct":
        lines = [*head, f"{inner}struct:"]
        for sub_name, sub in f[1]:
            lines += _yaml_feature(sub_name, sub, len(inner) + 2)
        return lines
    return [*head, f"{inner}dtype: {kind}"]


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


# ---- the card -----------------------------------------------------------------------------------------------------
def card(
    *,
    format: str,
    data_files: dict[str, list[str]],
    features: Sequence[tuple[str, tuple]] | None,
    counts: dict,
    licenses: Sequence[int | None],
    manifest: dict,
    load: str,
    notes: Sequence[str] = (),
    fields: Sequence[tuple[str, tuple]] = (),
) -> str:
    """DIR/README.md: the YAML header `datasets` and the Hub read (licences, task, configs per split, features,
    then for people: what is in it, the licence of each photo kind, counts, the model, how it was
    cleaned and deduplicated, how to load it and the command that made it."""
    by_licence = Counter(licenses)
    hub = sorted({HUB_LICENSES.get(lic, "other") for lic in by_licence})
    rows = sum(sum(labels.values()) for labels in counts.values())
    lines = ["---", "license:"] + [f"- {h}" for h in hub]
    if "other" in hub:
        lines += [
            'license_name: "per-photo (see ATTRIBUTION.csv)"',
            'license_link: "ATTRIBUTION.csv"',
        ]
    lines += [
        "task_categories:",
        "- image-classification",
        "size_categories:",
        f"- {_size_category(rows)}",
        "tags:",
        "- imgidx",
        "- flickr",
        "configs:",
        "- config_name: default",
        "  data_files:",
    ]
    for split, paths in data_files.items():
        lines += [f"  - split: {_hub_split(split)}", "    path:"] + [f"    - {_q(p)}" for p in paths]
    if features is not None:
        lines += ["dataset_info:", "  features:"]
        for name, f in features:
            lines += _yaml_feature(name, f, 2)
    # no `splits` sizes: datasets wants them with the Arrow byte counts it computes itself (counts are below)
    lines += ["---", ""]
    lines += _body(format, counts, by_licence, manifest, load, notes, fields or features or ())
    return "\n".join(lines) + "\n"


def _hub_split(name: str) -> str:
    return {"val": "validation"}.get(name, name)


def _size_category(n: int) -> str:
    for top, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < top:
            return name
    return "1M<n<10M"


# what each column / json field holds, for the card's Fields table
FIELD_NOTES = {
    "image": "the photo (the file's bytes as downloaded)",
    "label": "class index into the class names (a ClassLabel)",
    "label_name": "class name (the imgidx collection)",
    "label_id": "class index",
    "cls": "class index (a ClassLabel)",
    "jpg": "the photo, JPEG",
    "png": "the photo, PNG",
    "json": "the fields below, per sample",
    "key": "the sample's key in its shard",
    "__key__": "the sample's key in its shard",
    "__url__": "the shard it came from",
    "id": "imgidx photo id",
    "split": "train, val or test",
    "source": "where imgidx got it (flickr, folder, urllist)",
    "source_id": "the photo's id at the source",
    "title": "title given by the owner",
    "owner": "the owner's display name, else their Flickr NSID (credit them)",
    "license": "Flickr licence id (-1: none given)",
    "license_name": "licence name, e.g. CC BY 2.0 ('' if none given)",
    "license_url": "licence deed URL",
    "page_url": "the photo's page (link it when crediting)",
    "width": "original width in pixels (-1: unknown)",
    "height": "original height in pixels (-1: unknown)",
    "sha256": "of the file's bytes",
    "date_upload": "upload time (unix seconds as Flickr gives it)",
    "date_taken": "date taken, as the source gives it",
    "tags": "the source's tags, space-separated",
    "duplicate_group": "photos sharing a value are copies of one picture (-1: none)",
    "vector": "the stored image embedding (see the model stamp)",
}


def _fields(features: Sequence[tuple[str, tuple]]) -> list[str]:
    out = ["| field | type | what |", "| --- | --- | --- |"]
    for name, f in features:
        kind = {"label": "class label", "struct": "object"}.get(f[0], f[0])
        kind = f"{f[1]} x {f[2]}" if f[0] == "vector" else kind
        out.append(f"| `{name}` | {kind} | {FIELD_NOTES.get(name, '')} |")
        if f[0] == "struct":
            notes = {**FIELD_NOTES, "label": "class name"}
            out += [f"| `{name}.{sub}` | {g[0]} | {notes.get(sub, '')} |" for sub, g in f[1]]
    return out


def _body(
    format: str, counts: dict, by_licence: Counter, manifest: dict, load: str, notes: Sequence[str], features
) -> list:
    labels = manifest.get("labels", [])
    model = manifest.get("model") or {}
    filters = manifest.get("filters") or {}
    out = [
        f"# {', '.join(labels) or 'images'} ({format})",
        "",
        f"{manifest.get('photos', 0)} photos in {len(labels)} classes, written by "
        f"{' '.join(['imgidx', manifest.get('imgidx_version') or ''])}".strip()
        + f" (`{format}`). Files are the photos as downloaded, never "
        "re-encoded. Every photo's title, owner, licence and page travel with it (see Fields) and in "
        "ATTRIBUTION.csv; manifest.json holds the same facts for scripts.",
        "",
        "## Load it",
        "",
        "```python",
        load.strip(),
        "```",
        "",
        "## Counts",
        "",
        "| split | " + " | ".join(labels) + " | total |",
        "| --- | " + " | ".join("---" for _ in labels) + " | --- |",
    ]
    for split, per in counts.items():
        cells = [str(per.get(lab, 0)) for lab in labels]
        out.append(f"| {split} | " + " | ".join(cells) + f" | {sum(per.values())} |")
    out += ["", "## Fields", "", *_fields(features)]
    out += [
        "",
        "## Licences",
        "",
        "Each photo keeps its own licence; reuse must follow it and credit the owner (ATTRIBUTION.csv has the "
        "credit line's parts per file).",
        "",
        "| licence | photos (rows) |",
        "| --- | --- |",
    ]
    for lic, n in sorted(by_licence.items(), key=lambda kv: (-kv[1], kv[0] if kv[0] is not None else -1)):
        out.append(f"| {license_name(lic) or 'unknown (no licence given by the source)'} | {n} |")
    split = manifest.get("split") or {}
    out += [
        "",
        "## How it was made",
        "",
        f"- Model stamp of the index: `{json.dumps(model, sort_keys=True)}`.",
        f"- Splits: {', '.join(split.get('names', []))} at {split.get('fractions')}, stratified per class, seed "
        f"{split.get('seed')}.",
        "- Cleaned: photos flagged by `imgidx clean` or by applied `imgidx duplicates` groups are "
        + ("included" if filters.get("include_flagged") else "left out")
        + "; licence filter: "
        + (", ".join(license_name(i) for i in filters["license"]) if filters.get("license") else "none")
        + ".",
        f"- Deduplicated: copies of one picture (identical bytes, or stored vectors within the cut "
        f"`{filters.get('duplicates_threshold', 'auto')}`, and up to 3x the cut where the pixels align) form "
        "groups; a group never straddles two splits "
        f"({manifest.get('duplicate_groups_kept_in_one_split', 0)} groups here), and `duplicate_group` "
        "names it (-1: none).",
        *[f"- {n}" for n in notes],
        "",
        "Made by:",
        "",
        "```",
        str(manifest.get("command") or "imgidx export"),
        "```",
    ]
    return out
