"""Sources: FlickrClient/FlickrSource against the local fake Flickr (real flickrapi client), folder, URL list."""

from __future__ import annotations

import csv
import hashlib

import pytest

from imgidx.indexer.errors import ConfigError, ImgidxError, MissingCredentials
from imgidx.indexer.sources import Source
from imgidx.indexer.sources.flickr import FlickrClient, FlickrQuery, FlickrSource, choose_url
from imgidx.indexer.sources.folder import FolderSource
from imgidx.indexer.sources.urllist import UrlListSource
from tests.fake_flickr import FakeFlickr


def source(fake, **kw) -> FlickrClient:
    kw.setdefault("sleep", lambda s: None)
    return FlickrClient(fake.api_key, fake.api_secret, fake.rest_url, **kw)


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
    photos = list(source(fake, sleep=slept.append, retries=5).search(FlickrQuery("cat", count=5)))  # 5 faults
    assert len(photos) == 5 and len(slept) == 5
    # exponential backoff with ±50% jitter: attempt i waits between 0.5·2^i and 1.5·2^i seconds
    assert all(0.5 * 2**i <= s <= 1.5 * 2**i for i, s in enumerate(slept)), slept


def test_invalid_key_stops_at_once_with_one_line(fresh_fake_flickr):
    src = FlickrClient("0" * 32, "secret", fresh_fake_flickr.rest_url, sleep=lambda s: None)
    with pytest.raises(ConfigError, match="FLICKR_API_KEY") as e:
        list(src.search(FlickrQuery("cat", count=5)))
    assert src.calls == 1 and "\n" not in str(e.value)


def test_persistent_failure_is_a_clear_error_without_the_secret(fresh_fake_flickr):
    fake = fresh_fake_flickr
    fake.inject("flickr.photos.search", ["http:502"] * 3)
    with pytest.raises(ImgidxError, match="kept failing after 3 tries") as e:
        list(source(fake, retries=2).search(FlickrQuery("cat", count=5)))
    assert fake.api_secret not in str(e.value)


def test_missing_key_names_the_variables_and_the_cli_adds_its_other_sources():
    from imgidx.cli.console import hint

    with pytest.raises(MissingCredentials, match="FLICKR_API_KEY and FLICKR_API_SECRET") as e:
        FlickrClient(None, None, "http://127.0.0.1:9/")
    assert "--" not in str(e.value) and "--from-dir" in hint(e.value)


@pytest.mark.parametrize(("field", "value"), [("count", 0), ("sort", "newest"), ("size", "x")])
def test_bad_query_options_are_refused(field, value):
    with pytest.raises(ConfigError, match=f"^{field} "):
        FlickrQuery("cat", **{field: value})


# ---- the Source protocol: Flickr, folder and URL list -------------------------------------------------------------


def test_flickr_source_takes_its_queries_at_construction(fake_flickr):
    told = []
    src = FlickrSource(
        ["cat", "dog"], count=30, size="z", client=source(fake_flickr), on_query=lambda t, n: told.append((t, n))
    )
    assert isinstance(src, Source) and src.name == "flickr"
    photos = list(src.photos())
    assert len(photos) == 60 and {p.collection for p in photos} == {"cat", "dog"}
    assert told == [("cat", 30), ("dog", 30)] and all(p.url and p.path is None for p in photos)
    one = list(FlickrSource("cat", count=3, as_name="kittens", license="4,9", client=source(fake_flickr)).photos())
    assert {p.collection for p in one} == {"kittens"} and {p.license for p in one} <= {4, 9}


def test_flickr_source_options_are_checked_before_any_call():
    with pytest.raises(ConfigError, match="single query"):
        FlickrSource(["cat", "dog"], as_name="pets")
    with pytest.raises(ConfigError, match="count"):
        FlickrSource("cat", count=0)


def test_folder_source_yields_local_paths(photo_dir):
    src = FolderSource(photo_dir, as_name="loose")
    assert isinstance(src, Source) and src.name == "folder"
    photos = list(src.photos())
    assert len(photos) == 13 and all(p.path and p.url is None for p in photos)
    assert {p.collection for p in photos} == {"stripes", "rings", "loose"}
    with pytest.raises(ConfigError, match="not a folder"):
        FolderSource(photo_dir / "missing")


ROWS = [
    {"url": "http://127.0.0.1:9/a.jpg", "id": "a-1", "title": "A", "owner": "ann", "license": "4", "collection": "x"},
    {"url": "http://127.0.0.1:9/b.jpg", "id": "", "title": "", "caption": "a caption", "license": "CC-BY"},
    {"url": "ftp://127.0.0.1:9/c.jpg", "id": "c"},  # not http(s): skipped
    {"url": "http://127.0.0.1:9/a.jpg", "id": "a-1", "title": "A again"},  # the same key again: once
]


def write_csv(path, rows):
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    return path


def check_rows(photos, stem):
    assert [p.source_id for p in photos] == ["a-1", hashlib.sha1(b"http://127.0.0.1:9/b.jpg").hexdigest()]
    a, b = photos
    assert (a.source, a.url, a.path, a.title, a.owner, a.license, a.collection) == (
        "urls", "http://127.0.0.1:9/a.jpg", None, "A", "ann", 4, "x"
    )  # fmt: skip
    assert b.title == "a caption" and b.license is None and b.collection == stem  # no column: the file's stem


def test_url_list_from_csv(tmp_path):
    src = UrlListSource(write_csv(tmp_path / "birds.csv", ROWS))
    assert isinstance(src, Source) and src.name == "urls"
    check_rows(list(src.photos()), "birds")
    assert {p.collection for p in UrlListSource(tmp_path / "birds.csv", as_name="b").photos()} == {"x", "b"}


def test_url_list_from_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    cols = list(dict.fromkeys(k for r in ROWS for k in r))
    table = pa.table({c: [r.get(c) for r in ROWS] for c in cols})
    pq.write_table(table, tmp_path / "birds.parquet")
    check_rows(list(UrlListSource(tmp_path / "birds.parquet").photos()), "birds")


def test_url_list_without_a_url_column_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no 'url' column"):
        list(UrlListSource(write_csv(tmp_path / "l.csv", [{"link": "http://x/"}])).photos())
    with pytest.raises(ConfigError, match="not a file"):
        UrlListSource(tmp_path / "missing.csv")
