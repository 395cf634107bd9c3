"""The Embedder plug-in point: one protocol, a registry of models and runtimes, VGG16 as the reference. No model
is built here (test_embed.py runs the graphs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from imgidx.indexer import embedders
from imgidx.indexer.embedders import vgg16
from imgidx.indexer.embedders.weights import resolve
from imgidx.indexer.errors import ConfigError
from imgidx.indexer.records import Stamp


def spec(layer="block5_pool"):
    return resolve("random:0", layer, Path("/nonexistent"), "")


def test_vgg16_through_the_registry_meets_the_protocol_without_building_a_graph():
    emb = embedders.make("vgg16", "fc2", spec("fc2"), precision="fp32", batch_size=8)
    assert isinstance(emb, embedders.Embedder)
    assert (emb.name, emb.input_size, emb.layer, emb.dim, emb.batch_size) == ("vgg16", 224, "fc2", 4096, 8)
    assert emb.layers == {"fc2": 4096, "block5_pool": 512} and emb.preprocess == vgg16.PREPROCESS
    assert emb._model is None  # nothing heavy until load()/embed()


def test_the_stamp_is_byte_identical_to_the_one_existing_indexes_hold():
    stored = '{"model": "vgg16", "layer": "block5_pool", "weights": "random:0", "dim": 512, "precision": "bf16", '
    stored += '"preprocess": "center-crop/224/draft>=2x+lanczos/caffe"}'
    emb = embedders.make("vgg16", "block5_pool", spec(), precision="bf16")
    assert json.dumps(emb.stamp.as_dict()) == stored
    assert emb.stamp == Stamp("vgg16", "block5_pool", "random:0", 512, "bf16")  # records' default: the same string


def test_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="unknown model"):
        embedders.make("resnet", "fc2", spec())
    with pytest.raises(ConfigError, match="unknown layer"):
        embedders.make("vgg16", "fc1", spec())
    with pytest.raises(ConfigError, match="unknown runtime"):
        embedders.make("vgg16", "fc2", spec("fc2"), runtime="nope")


def test_a_runtime_registers_by_name():
    made = []

    def factory(layer, weights, *, precision, batch_size, model):
        made.append((layer, precision, batch_size, model.NAME))
        return "an embedder"

    embedders.register_runtime("test-only", factory)
    try:
        assert embedders.make("vgg16", "fc2", spec("fc2"), "fp16", 4, runtime="test-only") == "an embedder"
    finally:
        del embedders.RUNTIMES["test-only"]
    assert made == [("fc2", "fp16", 4, "vgg16")]


def test_the_embedder_modules_import_without_keras_and_without_a_cycle():
    code = (
        "import sys; import imgidx.indexer.embedders.weights, imgidx.indexer.embedders.keras_runtime, "
        "imgidx.indexer.compose; assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
