"""The fake Flickr behaves like Flickr as flickrapi 2.4.0 and requests meet it (flickr-fake-spec.md §5)."""

from __future__ import annotations

import collections
import io
import json
import socket
import threading
import time
import xml.etree.ElementTree as ET

import pytest
import requests
from flickrapi import FlickrAPI, FlickrError
from PIL import Image, ImageOps, ImageStat

from tests.fake_flickr import EXPECTED, LICENSES, VARIANTS, FakeFlickr, ManualClock, make_variant
from tests.fake_flickr.corpus import SIZES

pytest_plugins = ["tests.fake_flickr.fixtures"]

ALL_SIZES = ",".join(f"url_{k}" for k in SIZES)


def client(fake: FakeFlickr, key: str | None = None, secret: str | None = None) -> FlickrAPI:
    flickr = FlickrAPI(key or fake.api_key, secret or fake.api_secret, format="parsed-json", store_token=False)
    flickr.REST_URL = fake.rest_url
    return flickr


def raw_call(fake: FakeFlickr, **params: str) -> requests.Response:
    return requests.get(fake.rest_url, params={"api_key": fake.api_key, **params}, timeout=5)


def open_image(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.load()
    return image


@pytest.fixture(scope="module")
def flickr(fake_flickr: FakeFlickr) -> FlickrAPI:
    return client(fake_flickr)


# ---- photos.search ----


def test_search_reports_true_total_but_serves_only_the_first_4000(fake_flickr, flickr):
    expected = [p.id for p in fake_flickr.photos_for("cat")]
    pages = [flickr.photos.search(text="cat", per_page=500, page=n)["photos"] for n in range(1, 11)]
    first = pages[0]
    assert isinstance(first["total"], str) and int(first["total"]) == len(expected) > 4000
    assert (first["page"], first["pages"], first["perpage"]) == (1, -(-len(expected) // 500), 500)
    ids = [[p["id"] for p in page["photo"]] for page in pages]
    assert [i for page in ids[:8] for i in page] == expected[:4000]
    assert ids[8] == ids[9] == ids[7]  # offsets past 4,000 repeat the last reachable page
    assert pages[9]["page"] == 10


@pytest.mark.parametrize(("mode", "outcome"), [("empty", []), ("error20", 20)])
def test_pages_past_the_cap_can_be_empty_or_error_20(fresh_fake_flickr, mode, outcome):
    fresh_fake_flickr.past_cap, fresh_fake_flickr.page_cap = mode, 50
    flickr = client(fresh_fake_flickr)
    assert len(flickr.photos.search(text="cat", per_page=20, page=3)["photos"]["photo"]) == 10
    if outcome == 20:
        with pytest.raises(FlickrError) as err:
            flickr.photos.search(text="cat", per_page=20, page=4)
        assert err.value.code == 20
    else:
        assert flickr.photos.search(text="cat", per_page=20, page=4)["photos"]["photo"] == outcome


def test_pages_past_a_small_total_are_empty(flickr):
    photos = flickr.photos.search(text="lion", per_page=500, page=50)["photos"]
    assert photos["photo"] == [] and int(photos["total"]) < 4000


@pytest.mark.parametrize(("asked", "got"), [(1000, 500), (500, 500), (0, 1), (-3, 1), ("abc", 100), (None, 100)])
def test_per_page_is_clamped_to_1_500_with_default_100(flickr, asked, got):
    photos = flickr.photos.search(text="cat", per_page=asked)["photos"]
    assert photos["perpage"] == got and len(photos["photo"]) == got


def test_extras_list_only_the_sizes_a_photo_has(fake_flickr, flickr):
    photos = flickr.photos.search(text="cat", per_page=500, extras=ALL_SIZES)["photos"]["photo"]
    for entry in photos:
        record = fake_flickr.photo(entry["id"])
        assert {k for k in SIZES if f"url_{k}" in entry} == set(record.sizes)
        for key in record.sizes:
            assert (int(entry[f"width_{key}"]), int(entry[f"height_{key}"])) == record.size_dims(key)
    assert any("url_z" not in e and "url_n" in e for e in photos)  # small originals stop at url_n
    assert any("url_o" in e for e in photos) and any("url_o" not in e for e in photos)


def test_extras_add_metadata_fields(fake_flickr, flickr):
    extras = "license,owner_name,date_upload,date_taken,tags,o_dims,description,original_format,media"
    entries = flickr.photos.search(text="cat", per_page=200, extras=extras)["photos"]["photo"]
    for entry in entries:
        record = fake_flickr.photo(entry["id"])
        assert entry["license"] == str(record.license) and entry["ownername"] == record.owner_name
        assert entry["dateupload"] == str(record.date_upload) and entry["datetaken"] == record.date_taken
        assert entry["tags"] == " ".join(record.tags) and entry["description"]["_content"] == record.description
        assert (entry["o_width"], entry["o_height"]) == (str(record.width), str(record.height))
        assert ("originalsecret" in entry) == ("o" in record.sizes)
    assert "license" not in flickr.photos.search(text="cat", per_page=1)["photos"]["photo"][0]


def test_license_filter_and_the_unsorted_license_list(fake_flickr, flickr):
    photos = flickr.photos.search(text="cat", license="4,9", per_page=500, extras="license")["photos"]
    assert {p["license"] for p in photos["photo"]} == {"4", "9"}
    assert int(photos["total"]) == len(fake_flickr.photos_for("cat", license="4,9"))
    licenses = flickr.photos.licenses.getInfo()["licenses"]["license"]
    ids = [int(lic["id"]) for lic in licenses]
    assert sorted(ids) == list(range(17)) and ids != sorted(ids)
    assert {int(lic["id"]): lic["name"] for lic in licenses} == {i: name for i, (name, _url) in LICENSES.items()}


@pytest.mark.parametrize(
    ("sort", "field", "reverse"),
    [
        ("date-posted-desc", "date_upload", True),
        ("date-posted-asc", "date_upload", False),
        ("date-taken-desc", "date_taken", True),
        ("date-taken-asc", "date_taken", False),
        ("interestingness-desc", "interestingness", True),
        ("interestingness-asc", "interestingness", False),
    ],
)
def test_sort_orders(fake_flickr, flickr, sort, field, reverse):
    ids = [p["id"] for p in flickr.photos.search(text="dog", sort=sort, per_page=300)["photos"]["photo"]]
    values = [getattr(fake_flickr.photo(i), field) for i in ids]
    assert values == sorted(values, reverse=reverse)


def test_relevance_puts_cats_first_but_recent_is_noisy(fake_flickr, flickr):
    def topics(sort: str) -> collections.Counter:
        photos = flickr.photos.search(text='"cat"', sort=sort, per_page=100)["photos"]["photo"]
        return collections.Counter(fake_flickr.photo(p["id"]).topic for p in photos)

    assert topics("relevance") == {"cat": 100}
    noisy = topics("recent")  # the seeds' maybe_cat query: unknown sorts mean date-posted-desc
    assert noisy == topics("date-posted-desc")
    assert 75 <= noisy["cat"] < 100 and {"lion", "car", "meme"} & set(noisy)


def test_text_matches_title_tags_and_description_case_insensitively(fake_flickr, flickr):
    assert flickr.photos.search(text="CAT")["photos"]["total"] == flickr.photos.search(text="cat")["photos"]["total"]
    for record in fake_flickr.photos_for("kitten")[:200]:
        haystack = f"{record.title} {' '.join(record.tags)} {record.description}".lower()
        assert "kitten" in haystack
    hits = fake_flickr.photos_for("cat")
    assert any("cat" not in p.title.lower() and "cat" not in p.tags for p in hits)  # description-only matches
    assert fake_flickr.photos_for("cat -kitten") and all(
        "kitten" not in p.title.lower() for p in fake_flickr.photos_for("cat -kitten")
    )


def test_tags_tag_mode_dates_and_media_filters(fake_flickr, flickr):
    any_ids = flickr.photos.search(tags="kitten,puppy", per_page=500, extras="tags")["photos"]["photo"]
    assert all({"kitten", "puppy"} & set(p["tags"].split()) for p in any_ids)
    both = flickr.photos.search(tags="cat,pet", tag_mode="all", per_page=500, extras="tags")["photos"]["photo"]
    assert both and all({"cat", "pet"} <= set(p["tags"].split()) for p in both)
    window = {"min_upload_date": "1400000000", "max_upload_date": "1500000000"}
    dated = flickr.photos.search(text="cat", per_page=500, extras="date_upload", **window)["photos"]["photo"]
    assert dated and all(1400000000 <= int(p["dateupload"]) <= 1500000000 for p in dated)
    taken = {"min_taken_date": "2015-01-01 00:00:00", "max_taken_date": "2015-12-31 23:59:59"}
    dated = flickr.photos.search(text="cat", per_page=500, extras="date_taken", **taken)["photos"]["photo"]
    assert dated and all(p["datetaken"].startswith("2015-") for p in dated)
    videos = flickr.photos.search(text="cat", media="videos", per_page=500, extras="media")["photos"]["photo"]
    assert videos and {p["media"] for p in videos} == {"video"}
    screenshots = flickr.photos.search(text="meme", content_type=2, per_page=500)["photos"]["photo"]
    assert screenshots and {fake_flickr.photo(p["id"]).content_type for p in screenshots} == {2}


def test_parameterless_search_fails_with_code_3(flickr):
    with pytest.raises(FlickrError) as err:
        flickr.photos.search(per_page=10)
    assert err.value.code == 3


def test_drift_puts_new_photos_in_front_between_calls(fresh_fake_flickr):
    fresh_fake_flickr.drift = 5
    flickr = client(fresh_fake_flickr)
    first = flickr.photos.search(text="lion", per_page=50, page=1)["photos"]
    second = flickr.photos.search(text="lion", per_page=50, page=2)["photos"]
    assert int(second["total"]) == int(first["total"]) + 5
    assert [p["id"] for p in second["photo"][:5]] == [p["id"] for p in first["photo"][-5:]]


# ---- other methods, formats, keys ----


def test_get_sizes_get_info_and_deleted_photos(fresh_fake_flickr):
    flickr = client(fresh_fake_flickr)
    record = fresh_fake_flickr.photos_for("dog")[0]
    sizes = flickr.photos.getSizes(photo_id=record.id)["sizes"]["size"]
    assert [s["label"] for s in sizes][:2] == ["Square", "Large Square"] and len(sizes) == len(record.sizes)
    info = flickr.photos.getInfo(photo_id=record.id)["photo"]
    assert info["owner"]["nsid"] == record.owner and info["title"]["_content"] == record.title
    fresh_fake_flickr.delete(record.id)
    for method in (flickr.photos.getInfo, flickr.photos.getSizes):
        with pytest.raises(FlickrError) as err:
            method(photo_id=record.id)
        assert err.value.code == 1 and "Photo not found" in str(err.value)
    assert record.id in [p.id for p in fresh_fake_flickr.photos_for("dog")]  # search still returns it


def test_json_jsonp_and_xml_formats(fake_flickr):
    plain = raw_call(fake_flickr, method="flickr.test.echo", format="json", nojsoncallback="1", foo="bär")
    assert plain.json()["foo"]["_content"] == "bär" and plain.json()["stat"] == "ok"
    wrapped = raw_call(fake_flickr, method="flickr.test.echo", format="json").text
    assert wrapped.startswith("jsonFlickrApi(") and json.loads(wrapped[len("jsonFlickrApi(") : -1])["stat"] == "ok"
    xml = ET.fromstring(raw_call(fake_flickr, method="flickr.photos.search", text="cat", per_page="3").content)
    assert xml.get("stat") == "ok" and xml.find("photos").get("total") == str(len(fake_flickr.photos_for("cat")))
    assert len(xml.findall("photos/photo")) == 3


def test_unknown_method_112_and_unknown_format_111(fake_flickr, flickr):
    with pytest.raises(FlickrError) as err:
        flickr.do_flickr_call("flickr.photos.nope")
    assert err.value.code == 112 and 'Method "flickr.photos.nope" not found' in str(err.value)
    xml = ET.fromstring(raw_call(fake_flickr, method="flickr.test.echo", format="yaml").content)
    assert xml.find("err").get("code") == "111" and xml.find("err").get("msg") == 'Format "yaml" not found'


@pytest.mark.parametrize(
    ("key", "message"),
    [("not-a-key", "Key has invalid format"), ("0" * 32, "Key not found"), (None, "Key has expired")],
)
def test_invalid_keys_fail_with_code_100(fake_flickr, key, message):
    flickr = client(fake_flickr, key or fake_flickr.expired_key, "0123456789abcdef")
    with pytest.raises(FlickrError) as err:
        flickr.test.echo()
    assert err.value.code == 100 and f"Invalid API Key ({message})" in str(err.value)


def test_oauth_signature_is_verified(fake_flickr):
    with pytest.raises(FlickrError) as err:
        client(fake_flickr, secret="ffffffffffffffff").test.echo()
    assert err.value.code == 96 and "Invalid signature" in str(err.value)
    assert client(fake_flickr).test.echo(text="ünïcode & spaces")["text"]["_content"] == "ünïcode & spaces"
    assert raw_call(fake_flickr, method="flickr.test.echo", format="json", nojsoncallback="1").json()["stat"] == "ok"


# ---- REST faults as flickrapi surfaces them ----

STAT_FAULTS = [100, 105, 10, 0, 201, 20]


@pytest.mark.parametrize("code", STAT_FAULTS)
def test_injected_stat_fail_raises_flickr_error_with_that_code(fresh_fake_flickr, code):
    fresh_fake_flickr.inject("flickr.photos.search", [code])
    flickr = client(fresh_fake_flickr)
    with pytest.raises(FlickrError) as err:
        flickr.photos.search(text="cat")
    assert err.value.code == code
    assert flickr.photos.search(text="cat")["stat"] == "ok"  # the fault is spent


@pytest.mark.parametrize("fault", ["http:429", "http:429:retry_after=7", 500, 502, 503, 504])
def test_http_errors_raise_flickr_error_without_code(fresh_fake_flickr, fault):
    fresh_fake_flickr.inject("rest", [fault, fault])
    with pytest.raises(FlickrError) as err:
        client(fresh_fake_flickr).photos.search(text="cat")
    status = int(str(fault).split(":")[1]) if isinstance(fault, str) else fault
    assert err.value.code is None and f"Status code {status} received" in str(err.value)
    reply = raw_call(fresh_fake_flickr, method="flickr.test.echo")
    assert reply.status_code == status and reply.headers["Content-Type"].startswith("text/html")
    assert reply.headers.get("Retry-After") == ("7" if "retry_after" in str(fault) else None)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("delay:3", requests.ReadTimeout),
        ("close", requests.ConnectionError),
        ("short_body", requests.exceptions.ChunkedEncodingError),
        ("truncated_json", json.JSONDecodeError),
        ("html_200", json.JSONDecodeError),
    ],
)
def test_transport_faults_surface_as_the_spec_says(fresh_fake_flickr, fault, error):
    fresh_fake_flickr.inject("flickr.photos.search", [fault])
    flickr = client(fresh_fake_flickr)
    # only the delay must outlast the timeout; the others must not be cut short by a slow (loaded) search
    with pytest.raises(error):
        flickr.photos.search(text="cat", timeout=0.3 if fault.startswith("delay") else 30)
    assert flickr.photos.search(text="cat", per_page=1)["stat"] == "ok"
    assert [r.fault for r in fresh_fake_flickr.requests("flickr.photos.search")][0] == fault


def test_faults_apply_in_order_to_the_matching_method_only(fresh_fake_flickr):
    fresh_fake_flickr.inject("flickr.photos.search", [105, 503])
    flickr = client(fresh_fake_flickr)
    assert flickr.test.echo()["stat"] == "ok"
    codes = []
    for _ in range(3):
        try:
            codes.append(flickr.photos.search(text="cat", per_page=1)["stat"])
        except FlickrError as err:
            codes.append(err.code)
    assert codes == [105, None, "ok"]
    assert [r.status for r in fresh_fake_flickr.requests("flickr.photos.search")] == [200, 503, 200]
    assert fresh_fake_flickr.count_requests("rest") == 4 and fresh_fake_flickr.count_requests("static") == 0


def test_rate_limit_per_key_with_a_manual_clock():
    clock = ManualClock()
    with FakeFlickr(rate_limit=3, clock=clock) as fake:
        flickr = client(fake)
        for _ in range(3):
            flickr.test.echo()
        with pytest.raises(FlickrError) as err:
            flickr.test.echo()
        assert err.value.code is None and "429" in str(err.value)
        assert raw_call(fake, method="flickr.test.echo").headers["Retry-After"] == "3601"
        clock.advance(3600)
        assert flickr.test.echo()["stat"] == "ok"
        fake.rate_limiter.action = "disable"
        for _ in range(2):
            flickr.test.echo()
        with pytest.raises(FlickrError) as err:
            flickr.test.echo()
        assert err.value.code == 100 and "expired" in str(err.value)


# ---- static photo host ----


def test_static_urls_serve_jpegs_of_the_advertised_size(fake_flickr, flickr):
    entry = flickr.photos.search(text="car", per_page=1, extras="url_sq,url_m,url_z")["photos"]["photo"][0]
    for key in ("sq", "m", "z"):
        reply = requests.get(entry[f"url_{key}"], timeout=5)
        assert reply.status_code == 200 and reply.headers["Content-Type"] == "image/jpeg"
        assert int(reply.headers["Content-Length"]) == len(reply.content)
        assert open_image(reply.content).size == (int(entry[f"width_{key}"]), int(entry[f"height_{key}"]))
    head = requests.head(entry["url_z"], timeout=5)
    assert head.status_code == 200 and head.content == b"" and int(head.headers["Content-Length"]) > 0
    assert requests.get(entry["url_z"], timeout=5).content == requests.get(entry["url_z"], timeout=5).content


def test_original_size_uses_its_own_secret(fake_flickr):
    record = next(p for p in fake_flickr.photos_for("cat") if "o" in p.sizes and p.id not in fake_flickr.corpus.deleted)
    url = fake_flickr.photo_url(record.id, "o")
    assert record.original_secret in url and open_image(requests.get(url, timeout=10).content).size == (
        record.width,
        record.height,
    )
    wrong = url.replace(record.original_secret, record.secret)
    assert requests.get(wrong, timeout=5, allow_redirects=False).status_code == 302


def test_unknown_photos_and_paths_are_404_with_empty_body(fake_flickr):
    for path in (
        "/1/1_0123456789.jpg",
        "/nope",
        "/1/abc_def.jpg",
        f"/1/{fake_flickr.photos_for('cat')[0].id}_aa_x.jpg",
    ):
        reply = requests.get(fake_flickr.photo_host + path, timeout=5)
        assert reply.status_code == 404 and reply.content == b""


def test_deleted_photo_redirects_to_the_placeholder_png(fresh_fake_flickr):
    record = fresh_fake_flickr.photos_for("cat")[0]
    url = fresh_fake_flickr.photo_url(record.id, "z" if "z" in record.sizes else "n")
    fresh_fake_flickr.delete(record.id)
    first = requests.get(url, timeout=5, allow_redirects=False)
    assert first.status_code == 302 and first.headers["Location"] == fresh_fake_flickr.placeholder_url
    final = requests.get(url, timeout=5)
    assert final.status_code == 200 and final.headers["Content-Type"] == "image/png" and final.history
    assert open_image(final.content).size == (500, 374)
    wrong_secret = url.replace(record.secret, "0123456789")
    assert requests.get(wrong_secret, timeout=5, allow_redirects=False).status_code == 302
    assert fresh_fake_flickr.count_requests("redirect") == 1


def test_missing_size_redirects_to_the_placeholder(fake_flickr):
    small = next(p for p in fake_flickr.photos_for("cat") if "z" not in p.sizes)
    url = fake_flickr.photo_url(small.id, "n").replace("_n.jpg", "_b.jpg")
    assert requests.get(url, timeout=5).url == fake_flickr.placeholder_url


def test_photos_of_one_topic_look_alike(fake_flickr):
    def features(photo_id: str) -> list[float]:
        image = open_image(requests.get(fake_flickr.photo_url(photo_id, "q"), timeout=5).content).convert("RGB")
        stat = ImageStat.Stat(image)
        return [v / 255 for v in stat.mean + stat.stddev]

    def distance(a: list[float], b: list[float]) -> float:
        return sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) ** 0.5

    def centroid(rows: list[list[float]]) -> list[float]:
        return [sum(col) / len(rows) for col in zip(*rows, strict=True)]

    live = [p for p in fake_flickr.corpus.photos if p.id not in fake_flickr.corpus.deleted]
    topics = ("cat", "dog", "car", "lion", "meme")
    groups = {t: [features(p.id) for p in [p for p in live if p.topic == t][:6]] for t in topics}
    hits = 0
    for topic, rows in groups.items():  # leave-one-out nearest centroid
        for i, row in enumerate(rows):
            others = {t: centroid([r for j, r in enumerate(rs) if (t, j) != (topic, i)]) for t, rs in groups.items()}
            hits += min(others, key=lambda t: distance(row, others[t])) == topic
    assert hits >= 28  # of 30


# ---- static faults ----


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("stall:5", (requests.ConnectionError, requests.ReadTimeout)),
        ("reset", (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)),
        ("short_body", requests.exceptions.ChunkedEncodingError),
        ("close", requests.ConnectionError),
        ("redirect_loop", requests.TooManyRedirects),
    ],
)
def test_static_transport_faults(fresh_fake_flickr, fault, error):
    record = fresh_fake_flickr.photos_for("dog")[0]
    url = fresh_fake_flickr.photo_url(record.id, "z" if "z" in record.sizes else "n")
    fresh_fake_flickr.inject("static", [fault])
    with pytest.raises(error):  # only the stall must outlast the timeout: a loaded machine may serve slowly
        requests.get(url, timeout=0.3 if fault.startswith("stall") else 30)
    assert requests.get(url, timeout=30).status_code == 200


def test_static_slow_drip_truncated_body_and_statuses(fresh_fake_flickr):
    fake = fresh_fake_flickr
    url = fake.photo_url(fake.photos_for("dog")[0].id, "sq")
    good = requests.get(url, timeout=5).content
    fake.inject("static", ["slow_drip:0.02", "truncated_body", "http:429:retry_after=30", 403, 500, 503])
    started = time.monotonic()
    assert requests.get(url, timeout=5).content == good and time.monotonic() - started > 0.1
    truncated = requests.get(url, timeout=5)
    assert truncated.status_code == 200 and len(truncated.content) == len(good) // 2
    with pytest.raises(OSError):
        open_image(truncated.content)
    limited = requests.get(url, timeout=5)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "30"
    assert [requests.get(url, timeout=5).status_code for _ in range(3)] == [403, 500, 503]


def test_static_redirect_chain_and_photo_specific_faults(fresh_fake_flickr):
    fake = fresh_fake_flickr
    first, second = fake.photos_for("dog")[:2]
    fake.inject("static", ["redirect_chain:3"])
    reply = requests.get(fake.photo_url(first.id, "t"), timeout=5)
    assert reply.status_code == 200 and len(reply.history) == 3 and reply.url == fake.photo_url(first.id, "t")
    fake.inject(f"static:{second.id}", [503])
    assert requests.get(fake.photo_url(first.id, "t"), timeout=5).status_code == 200
    assert requests.get(fake.photo_url(second.id, "t"), timeout=5).status_code == 503


def test_inject_rejects_unknown_faults_and_targets(fake_flickr):
    with pytest.raises(ValueError):
        fake_flickr.inject("static", ["truncated_json"])
    with pytest.raises(ValueError):
        fake_flickr.inject("photos", [105])
    with pytest.raises(ValueError):
        fake_flickr.inject("rest", ["melt"])


# ---- image variants ----


@pytest.mark.parametrize("name", [v for v in VARIANTS if v != "oversized_body"])
def test_each_variant_is_served_and_decodes_as_expected(fake_flickr, name):
    reply = requests.get(fake_flickr.photo_url(fake_flickr.hostile_ids[name], "q"), timeout=5)
    body, content_type = make_variant(name)
    assert reply.status_code == 200 and reply.content == body and reply.headers["Content-Type"] == content_type
    outcome = EXPECTED[name]
    if outcome == "unidentified":
        with pytest.raises(Image.UnidentifiedImageError):
            open_image(reply.content)
    elif outcome == "bomb":
        with pytest.raises(Image.DecompressionBombError):
            open_image(reply.content)
        assert len(body) < 64 * 1024
    elif outcome == "truncated":
        with pytest.raises(OSError, match="truncated"):
            open_image(reply.content)
    else:
        check_decoded(name, open_image(reply.content))


def check_decoded(name: str, image: Image.Image) -> None:
    expectations = {
        "progressive_jpeg": lambda: image.info.get("progressive") == 1,
        "png_rgba": lambda: image.mode == "RGBA" and image.getextrema()[3][0] < 255,
        "png_palette": lambda: image.mode == "P" and "transparency" in image.info,
        "png_16bit_gray": lambda: image.mode.startswith("I;16") or image.mode == "I",
        "animated_gif": lambda: image.is_animated and image.n_frames == 4,
        "webp_as_jpeg": lambda: image.format == "WEBP",
        "cmyk_jpeg": lambda: image.mode == "CMYK",
        "grayscale_jpeg": lambda: image.mode == "L",
        "icc_jpeg": lambda: len(image.info.get("icc_profile", b"")) > 100,
        "one_pixel_jpeg": lambda: image.size == (1, 1),
        "one_pixel_png": lambda: image.size == (1, 1),
    }
    if name.startswith("exif_orientation_"):
        orientation = int(name.rsplit("_", 1)[1])
        upright = ImageOps.exif_transpose(image).convert("RGB")
        assert image.getexif()[0x0112] == orientation and upright.size == (120, 80)
        red, green, blue = upright.getpixel((3, 3)), upright.getpixel((116, 76)), upright.getpixel((60, 2))
        assert red[0] > 200 > red[2] and green[1] > 120 > green[0] and blue[2] > 200 > blue[0]
    else:
        assert expectations[name](), name


def test_oversized_body_and_set_variant_on_any_photo(fresh_fake_flickr):
    fake = fresh_fake_flickr
    url = fake.photo_url(fake.hostile_ids["oversized_body"], "sq")
    assert int(requests.head(url, timeout=5).headers["Content-Length"]) == 30 * 1024 * 1024
    record = fake.photos_for("lion")[0]
    url = fake.photo_url(record.id, "t")
    fake.set_variant(record.id, "png_rgba")
    assert open_image(requests.get(url, timeout=5).content).mode == "RGBA"
    fake.set_variant(record.id, None)
    assert requests.get(url, timeout=5).headers["Content-Type"] == "image/jpeg"


# ---- corpus and lifecycle ----


def test_corpus_covers_the_awkward_cases(fake_flickr):
    photos = fake_flickr.corpus.photos
    assert {p.license for p in photos} == set(range(17))
    assert any(p.media == "video" for p in photos) and fake_flickr.corpus.deleted
    titles = [p.title for p in photos]
    assert "" in titles and any(len(t) > 500 for t in titles)
    assert any("\u0600" <= ch <= "\u06ff" for t in titles for ch in t)  # Arabic, right-to-left
    assert any(ord(ch) > 0x1F000 for t in titles for ch in t)  # emoji
    assert all(p.owner.split("@")[0].isdigit() and p.owner.split("@N")[1].isdigit() for p in photos)
    assert len({p.id for p in photos}) == len(photos) and all(p.id.isdigit() for p in photos)


def test_same_seed_same_world_other_seed_other_world():
    a, b, c = FakeFlickr(seed=1), FakeFlickr(seed=1), FakeFlickr(seed=2)
    assert a.api_key == b.api_key != c.api_key and len(a.api_key) == 32 and len(a.api_secret) == 16
    assert [p.id for p in a.corpus.photos[:50]] == [p.id for p in b.corpus.photos[:50]]
    assert [p.title for p in a.corpus.photos[:50]] != [p.title for p in c.corpus.photos[:50]]


def test_stop_closes_ports_and_joins_every_thread_even_mid_request():
    before = set(threading.enumerate())
    fake = FakeFlickr(topics={"cat": 20}).start()
    assert all(url.startswith("http://127.0.0.1:") for url in (fake.rest_url, fake.photo_host, fake.redirect_host))
    port = int(fake.photo_host.rsplit(":", 1)[1])
    session = requests.Session()
    session.get(fake.rest_url, params={"api_key": fake.api_key, "method": "flickr.test.echo"}, timeout=5)  # keep-alive
    fake.inject("static", ["stall:30"])
    outcome = []

    def fetch_stalled() -> None:
        try:
            requests.get(fake.photo_url(fake.corpus.photos[0].id, "t"), timeout=20)
        except requests.RequestException as err:
            outcome.append(err)

    stalled = threading.Thread(target=fetch_stalled)
    stalled.start()
    time.sleep(0.2)
    started = time.monotonic()
    fake.stop()
    stalled.join(5)
    assert time.monotonic() - started < 3 and outcome and not stalled.is_alive()
    assert set(threading.enumerate()) <= before
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    session.close()
