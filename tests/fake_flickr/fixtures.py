"""pytest fixtures for the fake Flickr. Register with ``pytest_plugins = ["tests.fake_flickr.fixtures"]``."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .server import FakeFlickr

NO_PROXY = "127.0.0.1,localhost"


@pytest.fixture(scope="session")
def fake_flickr() -> Iterator[FakeFlickr]:
    """One fake for the whole session. Read-only use; tests that inject faults use fresh_fake_flickr."""
    saved = {name: os.environ.get(name) for name in ("NO_PROXY", "no_proxy")}
    os.environ.update(NO_PROXY=NO_PROXY, no_proxy=NO_PROXY)
    try:
        with FakeFlickr(seed=0) as fake:
            yield fake
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def fresh_fake_flickr(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFlickr]:
    """A new fake per test, so faults, deletions, drift and rate limits never leak between tests."""
    monkeypatch.setenv("NO_PROXY", NO_PROXY)
    monkeypatch.setenv("no_proxy", NO_PROXY)
    with FakeFlickr(seed=0) as fake:
        yield fake
