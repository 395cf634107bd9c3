"""Download photo bytes: concurrent, with timeouts, retries and caps. fetch() never raises for one photo.

What it guards against (shared/flickr-fake-spec.md §4): 429/5xx (retried with exponential backoff and jitter,
honouring Retry-After), timeouts and resets (retried), slow-drip bodies (a total deadline), oversized bodies (a
byte cap, checked before and while reading), redirect loops (a small redirect limit), non-http schemes, HTML
served as an image, and Flickr's "photo unavailable" placeholder, which answers 200 after a redirect.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

import requests
import urllib3
from requests.adapters import HTTPAdapter

from . import retry
from .retry import RETRY_STATUS, retry_after_seconds  # noqa: F401 - re-exported: callers used them from here

MAX_BYTES = 20 * 1024 * 1024
PLACEHOLDER_NAMES = ("photo_unavailable", "photo_unavailable_l")


@dataclass(frozen=True)
class Download:
    data: bytes | None
    error: str | None = None
    retryable: bool = False
    final_url: str = ""


class Fetcher:
    def __init__(
        self,
        *,
        workers: int = 16,
        connect_timeout: float = 10.0,
        read_timeout: float = 20.0,
        deadline: float = 60.0,
        retries: int = 4,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        max_bytes: int = MAX_BYTES,
        max_redirects: int = 5,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if workers <= 0:
            raise ValueError(f"workers must be > 0; received {workers}")
        self.workers, self.retries, self.backoff, self.max_backoff = workers, retries, backoff, max_backoff
        self.timeout = (connect_timeout, read_timeout)
        self.deadline, self.max_bytes, self._sleep = deadline, max_bytes, sleep
        self.max_redirects = max_redirects
        self._local = threading.local()

    def _session(self) -> requests.Session:
        # one session per worker thread: requests.Session is not documented as thread-safe
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.max_redirects = self.max_redirects
            s.headers["User-Agent"] = "imgidx/0.1 (+https://github.com/imgidx)"
            s.mount("http://", HTTPAdapter(pool_maxsize=4))
            s.mount("https://", HTTPAdapter(pool_maxsize=4))
            self._local.session = s
        return s

    def fetch(self, url: str | None) -> Download:
        if not url:
            return Download(None, "Flickr gave no URL for this photo (no downloadable size)")
        if urlparse(url).scheme not in ("http", "https"):
            return Download(None, f"refused non-http(s) URL scheme {urlparse(url).scheme!r}")
        last: Download = Download(None, "not tried")
        for attempt in range(self.retries + 1):
            last, wait = self._once(url)
            if not last.retryable or attempt == self.retries:
                return last
            self._sleep(retry.delay(attempt, base=self.backoff, cap=self.max_backoff, retry_after=wait))
        return last

    def _once(self, url: str) -> tuple[Download, float | None]:
        start = time.monotonic()
        try:
            with self._session().get(url, timeout=self.timeout, stream=True) as r:
                final = r.url
                if urlparse(final).scheme not in ("http", "https"):
                    return Download(None, "redirected to a non-http(s) URL"), None
                if retry.retryable_status(r.status_code):
                    return Download(None, f"HTTP {r.status_code}", True, final), retry_after_seconds(r)
                if r.status_code != 200:
                    return Download(None, f"HTTP {r.status_code}", False, final), None
                if is_placeholder(final):
                    return Download(
                        None, "photo unavailable on Flickr (redirected to the placeholder image)", False, final
                    ), None
                ctype = r.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if ctype.startswith("text/"):
                    return Download(None, f"not an image (server sent {ctype})", False, final), None
                declared = _int(r.headers.get("Content-Length"))
                if declared is not None and declared > self.max_bytes:
                    return Download(None, f"too large ({declared} bytes; limit {self.max_bytes})", False, final), None
                return self._read_body(r, start, declared), None
        except (requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL) as e:
            return Download(None, f"refused URL ({type(e).__name__})"), None
        except requests.TooManyRedirects:
            return Download(None, f"too many redirects (more than {self.max_redirects}; a redirect loop?)"), None
        except (requests.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError):
            return Download(None, f"could not connect within {self.timeout[0]:g} s (network)", True), None
        except (requests.Timeout, urllib3.exceptions.TimeoutError):
            return Download(None, f"timed out (nothing for {self.timeout[1]:g} s) (network)", True), None
        except (requests.ConnectionError, urllib3.exceptions.HTTPError) as e:
            return Download(None, f"connection broken ({type(e).__name__}) (network)", True), None
        except requests.RequestException as e:
            return Download(None, f"download failed ({type(e).__name__})", True), None

    def _read_body(self, r: requests.Response, start: float, declared: int | None) -> Download:
        chunks, size = [], 0
        # read1 returns whatever has arrived, so a slow drip cannot hide from the deadline inside one big read
        while chunk := r.raw.read1(64 * 1024, decode_content=True):
            size += len(chunk)
            if size > self.max_bytes:
                return Download(None, f"too large (over {self.max_bytes} bytes)", False, r.url)
            if time.monotonic() - start > self.deadline:
                return Download(None, f"too slow (over {self.deadline:g} s)", True, r.url)
            chunks.append(chunk)
        if declared is not None and size != declared:
            return Download(None, f"body shorter than announced ({size} of {declared} bytes)", True, r.url)
        return Download(b"".join(chunks), None, False, r.url)


def is_placeholder(url: str) -> bool:
    name = urlparse(url).path.rsplit("/", 1)[-1].rsplit(".", 1)[0].lower()
    return name in PLACEHOLDER_NAMES


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None
