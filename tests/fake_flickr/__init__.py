"""A faithful local fake of Flickr for tests (see /work/shared/flickr-fake-spec.md §5).

Three ``ThreadingHTTPServer`` hosts on 127.0.0.1 ephemeral ports: the REST API (``fake.rest_url``),
the photo host (``fake.photo_host``) and a second host for redirects and the placeholder PNG.

    from flickrapi import FlickrAPI
    from tests.fake_flickr import FakeFlickr

    with FakeFlickr(seed=0) as fake:
        flickr = FlickrAPI(fake.api_key, fake.api_secret, format="parsed-json", store_token=False)
        flickr.REST_URL = fake.rest_url
        page = flickr.photos.search(text="cat", per_page=500, extras="url_z,license")

requests honours proxy variables, so loopback clients need ``NO_PROXY=127.0.0.1,localhost`` (the
fixtures set it). To use the pytest fixtures, register them in ``tests/conftest.py``:

    pytest_plugins = ["tests.fake_flickr.fixtures"]

``fake_flickr`` is session-scoped (do not inject faults into it, or call ``reset()`` afterwards);
``fresh_fake_flickr`` is a new fake per test.

Modules: corpus (photo records), search (photos.search semantics), render (JSON/XML bodies),
rest (REST host), static (photo and redirect hosts), images (pixels), variants (hostile image bodies,
usable on their own), faults (fault injection, rate limiter, ManualClock), transport (HTTP plumbing),
server (FakeFlickr), fixtures (pytest).
"""

from .corpus import LICENSES, SIZES, Photo
from .faults import Fault, ManualClock
from .server import FakeFlickr
from .transport import RequestRecord
from .variants import EXPECTED, VARIANTS, make_variant

__all__ = [
    "EXPECTED",
    "LICENSES",
    "SIZES",
    "VARIANTS",
    "FakeFlickr",
    "Fault",
    "ManualClock",
    "Photo",
    "RequestRecord",
    "make_variant",
]
