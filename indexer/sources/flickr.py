"""Where photos come from: a Flickr search (flickrapi, parsed-json) or a local folder. -> Iterator[Photo].

Flickr facts this relies on (shared/flickr-fake-spec.md): at most 500 per page, only the first 4,000 results of
a search are reachable (later pages repeat), results drift between calls (deduplicate by id), `total` may be a
string and `url_X` extras are absent when a photo lacks that size. API calls (retries, budget, errors) go through
flickr_api.FlickrApi; only it and fetch.py touch the network.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .flickr_api import CallBudget, FlickrApi
from .records import Photo

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
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


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
            raise ConfigError(f"--count must be > 0; received {self.count}")
        if self.sort not in SORTS:
            raise ConfigError(f"--sort must be one of {', '.join(SORTS)}; received {self.sort!r}")
        if self.size not in SIZE_LETTERS:
            raise ConfigError(f"--size must be one of {' '.join(SIZE_LETTERS)}; received {self.size!r}")


class FlickrSource:
    """Pages through flickr.photos.search by hand (flickrapi's walk() needs etree and ignores the 4,000 cap)."""

    def __init__(
        self,
        key: str | None,
        secret: str | None,
        rest_url: str,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 1.0,
        budget: CallBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not key or not secret:
            raise ConfigError(
                "no Flickr API key: set FLICKR_API_KEY and FLICKR_API_SECRET (get a key at "
                "https://www.flickr.com/services/apps/create), or index a folder with --from-dir"
            )
        budget = budget or CallBudget(sleep=sleep)
        self.api = FlickrApi(
            key, secret, rest_url, timeout=timeout, retries=retries, backoff=backoff, budget=budget, sleep=sleep
        )

    @property
    def calls(self) -> int:
        return self.api.calls

    def search(self, q: FlickrQuery, on_page: Callable[[int, int], None] | None = None) -> Iterator[Photo]:
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
            if on_page:
                on_page(page, len(seen))
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
        source="flickr",
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


class FolderSource:
    """Image files under a folder; first-level sub-folder names become collections (like flow_from_directory)."""

    def __init__(self, root: Path, collection: str | None = None):
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise ConfigError(f"--from-dir {root} is not a folder")
        self.collection = collection or self.root.name

    def photos(self) -> Iterator[Photo]:
        for path in sorted(self.root.rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file() or path.name.startswith("."):
                continue
            rel = path.relative_to(self.root)
            collection = rel.parts[0] if len(rel.parts) > 1 else self.collection
            yield Photo(
                source="folder",
                source_id=rel.as_posix(),
                collection=collection,
                origin=str(self.root),
                path=str(path),
                title=path.stem,
            )


def _int(v: object, default: int | None) -> int | None:
    try:
        return int(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
