"""The small parts of `imgidx serve` that need no server: metrics text, host and token rules, name checks."""

from __future__ import annotations

import pytest

from imgidx.indexer.config import Settings
from imgidx.indexer.errors import ConfigError
from imgidx.service.guard import host_name
from imgidx.service.metrics import Metrics
from imgidx.service.queries import classifier_path
from imgidx.service.server import check_binding, is_loopback
from imgidx.service.service import BadRequest, UnsupportedImage, decode_upload

from .conftest import jpeg_bytes, pattern_image


def test_metrics_render_prometheus_text():
    m = Metrics()
    m.counter("req_total", "Requests.")
    m.histogram("lat_seconds", "Latency.", (0.1, 1.0))
    m.gauge("size", "Index size.", lambda: 42)
    m.inc("req_total", route="/a", status="200")
    m.inc("req_total", route="/a", status="200")
    m.inc("req_total", route='/b"x', status="500")
    for v in (0.05, 0.5, 3.0):
        m.observe("lat_seconds", v, route="/a")
    text = m.render()
    assert "# TYPE req_total counter" in text and 'req_total{route="/a",status="200"} 2' in text
    assert 'req_total{route="/b\\"x",status="500"} 1' in text  # label values are escaped
    assert 'lat_seconds_bucket{route="/a",le="0.1"} 1' in text
    assert 'lat_seconds_bucket{route="/a",le="1.0"} 2' in text
    assert 'lat_seconds_bucket{route="/a",le="+Inf"} 3' in text
    assert 'lat_seconds_count{route="/a"} 3' in text and 'lat_seconds_sum{route="/a"} 3.55' in text
    assert "# TYPE size gauge\nsize 42" in text and text.endswith("\n")
    assert m.value("req_total", route="/a", status="200") == 2


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:8000", "127.0.0.1"),
        ("localhost", "localhost"),
        ("[::1]:80", "[::1]"),
        ("evil.example:1", "evil.example"),
        ("LOCALHOST.:80", "localhost"),
        ("[0:0::1]:8000", "[::1]"),
        ("localhost:80@evil.com", ""),  # parsed, not pattern-matched: none of these is a host and a port
        ("[::1]evil.com", ""),
        ("127.0.0.1:80:81", ""),
        ("localhost:99999", ""),
        ("[::1", ""),
        ("[nonsense]:80", ""),
        ("local host", ""),
        ("", ""),
    ],
)
def test_host_header_names(header, name):
    assert host_name(header) == name


def test_only_loopback_may_be_bound_without_a_token():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")
    check_binding("127.0.0.1", None)
    check_binding("0.0.0.0", "t0ken-t0ken")
    with pytest.raises(ConfigError, match="--token"):
        check_binding("0.0.0.0", None)
    for weak in ("short", "has space in it", "semi;colon-token"):
        with pytest.raises(ConfigError, match="at least 8 characters"):
            check_binding("127.0.0.1", weak)


def test_the_token_comes_from_the_environment_and_is_never_printed():
    settings = Settings.from_env({"IMGIDX_TOKEN": "hunter2"})
    assert settings.token == "hunter2" and "hunter2" not in repr(settings)
    assert Settings.from_env({"IMGIDX_TOKEN": ""}).token is None


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "a b", "x" * 65])
def test_classifier_names_cannot_leave_the_classifiers_folder(tmp_path, name):
    with pytest.raises(BadRequest, match="classifier names"):
        classifier_path(tmp_path, name)


def test_classifier_path_is_under_the_home(tmp_path):
    assert classifier_path(tmp_path, "cats_vs_dogs-v1.2") == tmp_path / "classifiers" / "cats_vs_dogs-v1.2.joblib"


def test_uploads_are_decoded_or_refused_with_a_status():
    assert decode_upload(jpeg_bytes(pattern_image(3))).shape == (224, 224, 3)
    with pytest.raises(UnsupportedImage, match="not an image"):
        decode_upload(b"PK\x03\x04 a zip file")
    with pytest.raises(BadRequest, match="too small"):
        decode_upload(jpeg_bytes(pattern_image(3, size=(20, 20))))


def test_the_store_thread_reads_the_index_again_only_when_the_vectors_change(tmp_path):
    """A review (or `clean --apply`) beside the server changes only metadata: the next query sees it through
    SQLite, the caches are invalidated (a new generation), and the index is not read again (0.5 s at a million
    photos). Vectors committed beside it do reopen the store, whose index then holds them."""
    import asyncio

    import numpy as np

    from imgidx.indexer.records import Photo, Stamp
    from imgidx.indexer.store import Store
    from imgidx.indexer.store.catalog import Catalog
    from imgidx.service.service import StoreThread

    home, rng = tmp_path / "home", np.random.default_rng(0)

    def unit(n: int) -> np.ndarray:
        v = rng.normal(size=(n, 16)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    with Store(home) as s:
        s.ensure_stamp(Stamp(model="vgg16", layer="block5_pool", weights="random:0", dim=16))
        ids = s.add_photos([Photo(source="folder", source_id=f"{i}.jpg", collection="c") for i in range(6)])
        s.add_vectors([(i, "", f"s{i}") for i in ids], unit(6))
        s.save_index()
    opened: list[Store] = []
    thread = StoreThread(home, 0.0, opened.append)

    async def ask():
        thread._checked = float("-inf")  # as if the refresh interval had passed (it scales with the last reopen)
        return await thread.run(lambda store: (store, store.index.ntotal, len(store.reviews("c"))))

    try:
        first, n, reviews = asyncio.run(ask())
        assert (n, reviews, thread.generation, len(opened)) == (6, 0, 1, 1)
        catalog = Catalog(home)
        catalog.add_review("c", ids[0], "flag", reviewer="t", source="clean")
        catalog.close()
        same, n, reviews = asyncio.run(ask())
        assert same is first and (n, reviews, thread.generation, len(opened)) == (6, 1, 2, 2)
        with Store(home) as s:  # a build beside the server commits vectors and has not saved the index yet
            more = s.add_photos([Photo(source="folder", source_id=f"x{i}.jpg", collection="c") for i in range(2)])
            s.insert_vectors([(i, "", f"x{i}") for i in more], unit(2))
        fresh, n, _ = asyncio.run(ask())
        assert fresh is not first and n == 8 and thread.generation == 3
    finally:
        thread.close()
