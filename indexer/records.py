"""Frozen records that flow between modules. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple


@dataclass(frozen=True)
class Photo:
    """One search hit or one local file, before it is downloaded or embedded."""

    source: str  # the Source's name: "flickr" | "folder" | "urls"
    source_id: str  # Flickr photo id, the path relative to the folder, or a URL list's key (else sha1 of the URL)
    collection: str  # collection the photo is added to (query name or --as / sub-folder name)
    origin: str = ""  # folder root for folder photos; "" for Flickr
    url: str | None = None  # where to download it (Flickr, URL lists): the pipeline fetches it
    path: str | None = None  # a local file (folder photos), read in place when there is no url
    title: str = ""
    owner: str = ""  # Flickr NSID
    owner_name: str = ""
    license: int | None = None
    page_url: str = ""
    tags: tuple[str, ...] = ()
    date_upload: str = ""
    date_taken: str = ""
    width: int | None = None  # of the chosen size, when the source says
    height: int | None = None
    query: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class WeightsSpec:
    """Which weights a model runs (embedders/weights.py resolves imagenet|random|PATH into one)."""

    kind: str  # "random" | "file"
    path: Path | None = None
    seed: int = 0
    has_top: bool = True
    fingerprint: str = ""  # "random:SEED" or "sha256:HEX"; stamped into the index


@dataclass(frozen=True)
class Stamp:
    """What produced a vector. Vectors with different stamps are never mixed."""

    model: str
    layer: str
    weights: str  # "sha256:<hex>" of the weights file, or "random:<seed>"
    dim: int
    precision: str = "fp32"
    # the default = embedders.vgg16.PREPROCESS: what stamps written before this field existed mean (images.py)
    preprocess: str = "center-crop/224/draft>=2x+lanczos/caffe"

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("model", "layer", "weights", "dim", "precision", "preprocess")}

    @classmethod
    def from_dict(cls, d: dict) -> Stamp:
        return cls(**{k: d[k] for k in ("model", "layer", "weights", "dim", "precision", "preprocess") if k in d})

    def describe(self) -> str:
        w = self.weights if len(self.weights) < 24 else self.weights[:19] + "…"
        return f"{self.model}/{self.layer} weights={w} dim={self.dim} {self.precision}"


class Hit(NamedTuple):
    photo_id: int
    score: float
