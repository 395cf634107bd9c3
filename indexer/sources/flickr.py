"""Flickr searches as a Source: `FlickrSource(queries, count=..., ...).photos()` -> Iterator[Photo].

Flickr facts this relies on (shared/flickr-fake-spec.md): at most 500 per page, only the first 4,000 results of
a search are reachable (later pages repeat), results drift between calls (deduplicate by id), `total` may be a
string and `url_X` extras are absent when a photo lacks that size. API calls (retries, budget, errors) go through
flickr_api.FlickrApi; only it and fetch.py touch the network.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from .. import names
from ..config import Settings
from ..errors import ConfigError, MissingCredentials
from ..licenses import parse_license_ids
from ..records import Photo
from ..retry import RETRIES
from .flickr_api import CallBudget, FlickrApi

log = logging.getLogger(__name__)

PER_PAGE_MAX = 500
REACHABLE_MAX = 4000
SORTS = {"relevance": "relevance", "recent": "date-posted-desc", "interesting": "interestingness-desc"}
# (URL suffix the user names, extras key, longest edge in px); ordered by size.
SIZES: list[tuple[str, str, int]] = [
    ("s", "url_sq", 75),
    ("t", "url_t", 100),
    ("q", "url_q", 150),
    ("m", "url_s", 240),
    ("n", "url_n", 320),
    ("w", "url_w", 400),
    ("-", "url_m", 500),
    ("z", "url_z", 640),
    ("c", "url_c", 800),
    ("b", "url_l", 1024),
    ("h", "url_h", 1600),
    ("k", "url_k", 2048),
    ("o", "url_o", 10**6),
]
SIZE_LETTERS = [s[0] for s in SIZES]
NAME = "flickr"


@dataclass(frozen=True)
class FlickrQuery:
    text: str
    count: int = 100
    sort: str = "relevance"
    licenses: tuple[int, ...] = ()
    size: str = "z"
    collection: str = ""

    def __post_init__(self):
        if self.count <= 0:
            raise ConfigError(f"count (photos per query) must be > 0; received {self.count}")
        if self.sort not in SORTS:
            raise ConfigError(f"sort must be one of {', '.join(SORTS)}; received {self.sort!r}")
        if self.size not in SIZE_LETTERS:
            raise ConfigError(f"size must be one of {' '.join(SIZE_LETTERS)}; received {self.size!r}")


class FlickrSource:
    """A Source: photos of each query in turn, one collection per query (`as_name` names it for a single query).

    `client` makes the calls (FlickrClient: key, budget, retries); without one it is made from `settings`
    (config.Settings: FLICKR_API_KEY/SECRET, REST URL, timeouts, call budget). `on_query(text, found)` is told
    after each query."""

    name = NAME

    def __init__(
        self,
        queries: str | Sequence[str],
        *,
        count: int = 100,
        sort: str = "relevance",
        license: str | Sequence[int] | None = None,
        size: str = "z",
        as_name: str | None = None,
        client: FlickrClient | None = None,
        settings: Settings | None = None,
        on_query: Callable[[str, int], None] | None = None,
        on_wait: Callable[[float], None] | None = None,
    ):
        texts = [queries] if isinstance(queries, str) else list(queries)
        if not texts:
            raise ConfigError("a Flickr source needs at least one query")
        if as_name and len(texts) > 1:
            raise ConfigError("one collection name for several queries: give it with a single query")
        if isinstance(license, str):
            try:
                licenses = tuple(parse_license_ids(license))
            except ValueError as e:
                raise ConfigError(str(e)) from None
        else:
            licenses = tuple(license or ())
        if as_name:
            names.check(as_name, "the collection name given")
        for t in texts if not as_name else ():  # a query may be any text; the collection it names may not
            names.check(t, f"query {t[:60]!r}", todo="search with it, but give its collection a name", nameable=True)
        self.queries = [
            FlickrQuery(t, count=count, sort=sort, licenses=licenses, size=size, collection=as_name or t) for t in texts
        ]
        self._client, self._settings, self.on_query, self.on_wait = client, settings, on_query, on_wait

    @property
    def client(self) -> FlickrClient:
        if self._client is None:  # made on first use: constructing a source checks options, not the key
            self._client = FlickrClient.from_settings(self._settings or Settings.from_env(), on_wait=self.on_wait)
        return self._client

    def photos(self) -> Iterator[Photo]:
        for q in self.queries:
            found = 0
            for photo in self.client.search(q):
                found += 1
                yield photo
            if self.on_query:
                self.on_query(q.text, found)


class FlickrClient:
    """Pages through flickr.photos.search by hand (flickrapi's walk() needs etree and ignores the 4,000 cap)."""

    def __init__(
        self,
        key: str | None,
        secret: str | None,
        rest_url: str,
        *,
        timeout: float = 30.0,
        retries: int = RETRIES,
        backoff: float = 1.0,
        budget: CallBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not key or not secret:
            raise MissingCredentials(
                "no Flickr API key: set FLICKR_API_KEY and FLICKR_API_SECRET (get a key at "
                "https://www.flickr.com/services/apps/create), or index a folder or a URL list instead"
            )
        budget = budget or CallBudget(sleep=sleep)
        self.api = FlickrApi(
            key, secret, rest_url, timeout=timeout, retries=retries, backoff=backoff, budget=budget, sleep=sleep
        )

    @classmethod
    def from_settings(cls, settings: Settings, on_wait: Callable[[float], None] | None = None) -> FlickrClient:
        budget = CallBudget(settings.flickr_calls_per_hour, settings.flickr_budget_window, on_wait=on_wait)
        return cls(
            settings.flickr_key,
            settings.flickr_secret,
            settings.flickr_rest_url,
            timeout=settings.flickr_timeout,
            retries=settings.retries,
            backoff=settings.backoff,
            budget=budget,
        )

    @property
    def calls(self) -> int:
        return self.api.calls

    def search(self, q: FlickrQuery) -> Iterator[Photo]:
        """Yield up to q.count distinct photos (fewer when Flickr has fewer or the 4,000 cap is reached)."""
        want = min(q.count, REACHABLE_MAX)
        if q.count > REACHABLE_MAX:
            log.warning("Flickr returns at most %d results per search; asking for %d", REACHABLE_MAX, want)
        per_page = min(PER_PAGE_MAX, want)
        seen: set[str] = set()
        page = 1
        while len(seen) < want and (page - 1) * per_page < REACHABLE_MAX:
            body = self._call_search(q, page, per_page)
            photos = body.get("photo") or []
            pages = _int(body.get("pages"), 0)
            new = 0
            for raw in photos:
                pid = str(raw.get("id", ""))
                if not (pid.isascii() and pid.isdigit()) or pid in seen:
                    continue  # drift and the 4,000 cap repeat earlier results
                seen.add(pid)
                new += 1
                yield photo_from_flickr(raw, q)
                if len(seen) >= want:
                    return
            if not photos or page >= pages or new == 0:
                return
            page += 1

    def _call_search(self, q: FlickrQuery, page: int, per_page: int) -> dict:
        params = {
            "text": q.text,
            "sort": SORTS[q.sort],
            "per_page": str(per_page),
            "page": str(page),
            "media": "photos",
            "extras": extras_for(q.size),
        }
        if q.licenses:
            params["license"] = ",".join(map(str, q.licenses))
        return self.api.call("flickr.photos.search", params, expect="photos")["photos"]


def extras_for(size: str) -> str:
    """Attribution extras plus url_* of the chosen size and all others, so a fallback needs no second call."""
    urls = [key for _, key, _ in SIZES if key not in ("url_sq", "url_t", "url_q")]
    return ",".join(["license", "owner_name", "date_upload", "date_taken", "tags", "o_dims", *urls])


def choose_url(raw: dict, size: str) -> tuple[str | None, int | None, int | None]:
    """The chosen size, else the nearest larger one, else the largest the photo has."""
    idx = SIZE_LETTERS.index(size)
    order = SIZES[idx:] + SIZES[:idx][::-1]
    for _, key, _ in order:
        url = raw.get(key)
        if url:
            suffix = key[4:]
            return str(url), _int(raw.get(f"width_{suffix}"), None), _int(raw.get(f"height_{suffix}"), None)
    return None, None, None


def photo_from_flickr(raw: dict, q: FlickrQuery) -> Photo:
    pid = str(raw["id"])
    owner = str(raw.get("owner", ""))
    url, w, h = choose_url(raw, q.size)
    tags = raw.get("tags") or ""
    return Photo(
        source=NAME,
        source_id=pid,
        collection=q.collection or q.text,
        url=url,
        title=str(raw.get("title") or ""),
        owner=owner,
        owner_name=str(raw.get("ownername") or ""),
        license=_int(raw.get("license"), None),
        page_url=f"https://www.flickr.com/photos/{owner}/{pid}/",
        tags=tuple(str(tags).split()),
        date_upload=str(raw.get("dateupload") or ""),
        date_taken=str(raw.get("datetaken") or ""),
        width=w,
        height=h,
        query=q.text,
    )


def _int(v: object, default: int | None) -> int | None:
    try:
        return int(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
