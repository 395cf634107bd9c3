"""Fixtures for `imgidx serve`: one small real index (random weights) and real servers on loopback ports.

Registered in conftest.py. Session scope: building the index and starting a server load the VGG16 graph
(seconds), so the API and browser tests share them; tests that need other options start their own server.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from .conftest import pattern_image

RANDOM = ["--weights", "random:0", "--layer", "block5_pool", "--batch-size", "4"]  # small: short batches are padded
FAMILIES = {"stripes": 7, "rings": 7}


@dataclass(frozen=True)
class ServedIndex:
    home: Path
    photos: Path  # the folder it was built from: <family>/<family>_<i>.jpg, stripes/zz_noise.png
    env: dict[str, str]  # for the server processes: nothing from the developer's own setup

    def fingerprint(self) -> dict[str, str]:
        """sha256 of the files that make the index, to prove the server never writes to them."""
        files = [self.home / "imgidx.sqlite", self.home / "index" / "faiss.index"]
        return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def server_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMGIDX_", "FLICKR_")) and "proxy" not in k.lower()}
    env.update(
        KERAS_HOME=str(root / "keras"),
        XDG_CACHE_HOME=str(root / "cache"),
        IMGIDX_WEIGHTS_URL="http://127.0.0.1:9/vgg16/",  # unreachable: never the internet
        NO_PROXY="127.0.0.1,localhost",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return env


def make_photos(root: Path) -> Path:
    for kind, n in FAMILIES.items():
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pattern_image(100 * len(kind) + i, kind=kind).save(root / kind / f"{kind}_{i}.jpg", quality=90)
    noise = np.random.default_rng(5).integers(0, 256, size=(200, 260, 3), dtype=np.uint8)
    Image.fromarray(noise, "RGB").save(root / "stripes" / "zz_noise.png")
    return root


def build(home: Path, folder: Path, env: dict[str, str], *extra: str) -> None:
    from imgidx.cli.app import app

    args = ["--home", str(home), "build", "--from-dir", str(folder), *RANDOM, *extra]
    result = CliRunner().invoke(app, args, env={k: env.get(k) for k in ("KERAS_HOME", "XDG_CACHE_HOME")})
    assert result.exit_code == 0, result.stdout + result.stderr


def save_classifiers(home: Path) -> None:
    """`shapes`: stripes vs rings on this index; `elsewhere`: trained under another model stamp."""
    from imgidx.indexer.store import Store
    from imgidx.search.classifier import train_classifier

    with Store(home, readonly=True) as store:
        ids = [i for name in FAMILIES for i in store.vector_ids(name)]
        labels = [name for name in FAMILIES for _ in store.vector_ids(name)]
        report = train_classifier(store.vectors(ids), labels, test_size=0.3)
        stamp = store.stamp.as_dict()
    report.classifier.save(home / "classifiers" / "shapes.joblib", stamp)
    report.classifier.save(home / "classifiers" / "elsewhere.joblib", {**stamp, "weights": "random:1"})


@pytest.fixture(scope="session")
def served_index(tmp_path_factory) -> ServedIndex:
    root = tmp_path_factory.mktemp("served")
    env = server_env(root)
    index = ServedIndex(root / "home", make_photos(root / "photos"), env)
    build(index.home, index.photos, env)
    save_classifiers(index.home)
    return index


@pytest.fixture(scope="session")
def server(served_index) -> Iterator:
    """The default server (an imgidx.service.server.ServerProcess): loopback, no token, 20 MiB cap."""
    from imgidx.service.server import spawned

    with spawned(served_index.home, "--max-batch", "8", env=served_index.env) as running:  # a lone upload pads to 8
        yield running
