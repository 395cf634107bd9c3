"""Fetcher against the fake photo host: retries, caps, placeholders, redirect loops, slow bodies."""

from __future__ import annotations

import pytest

from imgidx.indexer.fetch import Fetcher, is_placeholder


def fetcher(**kw) -> tuple[Fetcher, list[float]]:
    slept: list[float] = []
    kw.setdefault("sleep", slept.append)
    kw.setdefault("backoff", 0.01)
    kw.setdefault("allow_private_hosts", True)  # the fake's photo host is on loopback
    return Fetcher(**kw), slept


@pytest.fixture
def fake(fresh_fake_flickr):
    return fresh_fake_flickr


def a_photo(fake, topic="dog"):
    return next(p for p in fake.photos_for(topic) if "z" in p.sizes and not fake.corpus.is_deleted(p.id))


def test_downloads_a_jpeg(fake):
    p = a_photo(fake)
    got = fetcher()[0].fetch(fake.photo_url(p.id, "z"))
    assert got.error is None and got.data[:2] == b"\xff\xd8"


def test_404_is_not_retried(fake):
    f, slept = fetcher()
    got = f.fetch(fake.photo_host + "/1/1_nosuch.jpg")
    assert got.error == "HTTP 404" and not got.retryable and slept == []


def test_deleted_photo_placeholder_is_recognised(fake):
    p = a_photo(fake)
    fake.delete(p.id)
    got = fetcher()[0].fetch(fake.photo_url(p.id, "z"))
    assert got.data is None and "unavailable" in got.error and is_placeholder(got.final_url)


def test_5xx_and_429_are_retried_honouring_retry_after(fake):
    p = a_photo(fake)
    fake.inject(f"static:{p.id}", ["http:503", "http:429:retry_after=7"])
    f, slept = fetcher()
    got = f.fetch(fake.photo_url(p.id, "z"))
    assert got.error is None and len(slept) == 2 and slept[1] == 7


def test_gives_up_after_the_retry_budget_and_says_it_is_retryable(fake):
    p = a_photo(fake)
    fake.inject(f"static:{p.id}", ["http:500"] * 3)
    got = fetcher(retries=2)[0].fetch(fake.photo_url(p.id, "z"))
    assert got.error == "HTTP 500" and got.retryable


def test_byte_cap(fake):
    p = a_photo(fake)
    got = fetcher(max_bytes=1000)[0].fetch(fake.photo_url(p.id, "z"))
    assert "too large" in got.error and not got.retryable


def test_redirect_loop_is_cut(fake):
    p = a_photo(fake)
    fake.inject(f"static:{p.id}", ["redirect_loop"])
    got = fetcher()[0].fetch(fake.photo_url(p.id, "z"))
    assert "redirect" in got.error


def test_slow_drip_hits_the_total_deadline(fake):
    p = a_photo(fake)
    fake.inject(f"static:{p.id}", ["slow_drip:0.2"])
    got = fetcher(deadline=0.5, retries=0)[0].fetch(fake.photo_url(p.id, "z"))
    assert got.data is None and ("too slow" in got.error or "timed out" in got.error) and got.retryable


def test_reset_mid_body_is_retried_then_succeeds(fake):
    p = a_photo(fake)
    fake.inject(f"static:{p.id}", ["reset"])
    f, slept = fetcher()
    got = f.fetch(fake.photo_url(p.id, "z"))
    assert got.error is None and len(slept) == 1


def test_stall_hits_the_read_timeout(fake):
    p = a_photo(fake)
    fake.inject(f"static:{p.id}", ["stall:3"])
    got = fetcher(read_timeout=0.3, retries=0)[0].fetch(fake.photo_url(p.id, "z"))
    assert got.data is None and got.retryable


def test_non_http_schemes_are_refused():
    got = Fetcher().fetch("file:///etc/passwd")
    assert got.data is None and "scheme" in got.error


def test_html_sent_as_image_jpeg_is_caught_by_the_decoder(fake):
    from imgidx.indexer.errors import ImageError
    from imgidx.indexer.images import prepare

    got = fetcher()[0].fetch(fake.photo_url(fake.hostile_ids["html_as_jpeg"], "z"))
    assert got.error is None  # the host claims image/jpeg ...
    with pytest.raises(ImageError, match="HTML"):  # ... but the bytes say otherwise
        prepare(got.data)
