"""FlickrSource against the local fake Flickr, through the real flickrapi client."""

from __future__ import annotations

import pytest

from imgidx.indexer.errors import ConfigError, ImgidxError
from imgidx.indexer.sources import FlickrQuery, FlickrSource, choose_url
from tests.fake_flickr import FakeFlickr


def source(fake, **kw) -> FlickrSource:
    kw.setdefault("sleep", lambda s: None)
    return FlickrSource(fake.api_key, fake.api_secret, fake.rest_url, **kw)


def test_pages_of_500_until_count_distinct_photos(fake_flickr):
    before = fake_flickr.count_requests("flickr.photos.search")
    photos = list(source(fake_flickr).search(FlickrQuery("cat", count=1200)))
    assert len(photos) == len({p.source_id for p in photos}) == 1200
    calls = fake_flickr.requests("flickr.photos.search")[before:]
    assert len(calls) == 3 and all(c.params.get("per_page") == "500" for c in calls)


def test_never_more_than_the_4000_reachable_results(fake_flickr):
    src = source(fake_flickr)
    photos = list(src.search(FlickrQuery("cat", count=6000)))
    assert len(photos) == len({p.source_id for p in photos}) == 4000
    assert src.calls == 8  # 8 pages of 500; page 9 would only repeat page 8


def test_sort_names_map_to_flickr_orders(fake_flickr):
    got = [p.source_id for p in source(fake_flickr).search(FlickrQuery("cat", count=50, sort="recent"))]
    want = [p.id for p in fake_flickr.photos_for("cat", sort="date-posted-desc")[:50]]
    assert got == want


def test_license_filter_is_sent_and_honoured(fake_flickr):
    photos = list(source(fake_flickr).search(FlickrQuery("dog", count=80, licenses=(4, 9))))
    assert photos and {p.license for p in photos} <= {4, 9}


def test_attribution_fields_are_kept(fake_flickr):
    p = next(iter(source(fake_flickr).search(FlickrQuery("dog", count=1))))
    rec = fake_flickr.photo(p.source_id)
    assert p.title == rec.title and p.owner == rec.owner and p.owner_name == rec.owner_name
    assert p.page_url == f"https://www.flickr.com/photos/{rec.owner}/{rec.id}/" and p.license == rec.license
    assert p.collection == "dog" and p.query == "dog" and p.url and "_z" in p.url


def test_missing_size_falls_back_to_nearest_larger_then_largest():
    raw = {"url_n": "n", "url_c": "c", "url_l": "l"}
    assert choose_url(raw, "z")[0] == "c"  # no z: the next larger one
    assert choose_url({"url_n": "n", "url_m": "m"}, "z")[0] == "m"  # nothing larger: the largest it has
    assert choose_url({}, "z")[0] is None


def test_drifting_results_never_yield_duplicates():
    with FakeFlickr(seed=1, topics={"cat": 1500}, hostile=False, drift=40) as fake:
        photos = list(source(fake).search(FlickrQuery("cat", count=1400)))
    ids = [p.source_id for p in photos]
    assert len(ids) == len(set(ids)) == 1400


def test_transient_faults_are_retried(fresh_fake_flickr):
    fake = fresh_fake_flickr
    fake.inject("flickr.photos.search", ["stat:105", "http:503", "http:429", "truncated_json", "html_200"])
    slept = []
    photos = list(source(fake, sleep=slept.append).search(FlickrQuery("cat", count=5)))
    assert len(photos) == 5 and len(slept) == 5
    # exponential backoff with ±50% jitter: attempt i waits between 0.5·2^i and 1.5·2^i seconds
    assert all(0.5 * 2**i <= s <= 1.5 * 2**i for i, s in enumerate(slept)), slept


def test_invalid_key_stops_at_once_with_one_line(fresh_fake_flickr):
    src = FlickrSource("0" * 32, "secret", fresh_fake_flickr.rest_url, sleep=lambda s: None)
    with pytest.raises(ConfigError, match="FLICKR_API_KEY") as e:
        list(src.search(FlickrQuery("cat", count=5)))
    assert src.calls == 1 and "\n" not in str(e.value)


def test_persistent_failure_is_a_clear_error_without_the_secret(fresh_fake_flickr):
    fake = fresh_fake_flickr
    fake.inject("flickr.photos.search", ["http:502"] * 3)
    with pytest.raises(ImgidxError, match="kept failing after 3 tries") as e:
        list(source(fake, retries=2).search(FlickrQuery("cat", count=5)))
    assert fake.api_secret not in str(e.value)


def test_missing_key_names_the_variables():
    with pytest.raises(ConfigError, match="FLICKR_API_KEY and FLICKR_API_SECRET"):
        FlickrSource(None, None, "http://127.0.0.1:9/")


@pytest.mark.parametrize(("field", "value"), [("count", 0), ("sort", "newest"), ("size", "x")])
def test_bad_query_options_are_refused(field, value):
    with pytest.raises(ConfigError, match=f"--{field}"):
        FlickrQuery("cat", **{field: value})
