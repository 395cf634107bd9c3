"""Download photo bytes: concurrent, with timeouts, retries and caps. fetch() never raises for one photo.

What it guards against (shared/flickr-fake-spec.md §4): 429/5xx (retried with exponential backoff and jitter,
honouring Retry-After), timeouts and resets (retried), slow-drip bodies (a total deadline), oversized bodies (a
byte cap, checked before and while reading), redirect loops (a small redirect limit), non-http schemes, HTML
served as an image, and Flickr's "photo unavailable" placeholder, which answers 200 after a redirect.

And against URLs that point inward (SSRF): unless allowed, a connection is only made to a public address. The
check is made where the socket is opened, on the addresses DNS gave, and the socket connects to the address that
was checked (no second lookup that DNS rebinding could answer differently); every redirect opens its connection
the same way. User names and passwords in photo URLs are dropped, and no Authorization header is ever sent.

Failures say what may change: `retryable` ones (timeouts, 5xx, 429) are retried at once with backoff;
`transient` ones (403/404/410 and other 4xx) are not retried in this run, but a later `--retry-failed` run tries
them again. Neither flag: the photo is known dead (Flickr's placeholder), the bytes are not an image, or the
address is refused as private (it stays private: asking again would only knock on the same inward door).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse, urlunparse

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.utils import select_proxy
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError

from imgidx._version import __version__

from . import retry
from .retry import RETRY_STATUS, retry_after_seconds  # noqa: F401 - re-exported: callers used them from here

MAX_BYTES = 20 * 1024 * 1024
PLACEHOLDER_NAMES = ("photo_unavailable", "photo_unavailable_l")


@dataclass(frozen=True)
class Download:
    data: bytes | None
    error: str | None = None
    retryable: bool = False  # worth retrying now, with backoff (network, 5xx, 429)
    final_url: str = ""
    transient: bool = False  # not now, but a later run may succeed (403/404/410)

    @property
    def retry_later(self) -> bool:
        """Worth another try in a later run (--retry-failed): everything but what is known dead or not an image."""
        return self.retryable or self.transient


class BlockedAddress(Exception):
    """A photo URL that resolves to a private, loopback, link-local, multicast or reserved address."""


def address_allowed(ip: str) -> bool:
    """Only globally routable unicast addresses ("::ffff:127.0.0.1" is judged as the IPv4 address it maps)."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_global and not addr.is_multicast


def vetted_addresses(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, all of them public, or BlockedAddress. "2130706433" (a decimal IPv4) and
    other numeric forms resolve like any name, to the address they really denote."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError:
        raise BlockedAddress(f"refused host name {host[:60]!r}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for ip in addresses:
        if not address_allowed(ip):
            shown = host if host == ip else f"{host} ({ip})"
            raise BlockedAddress(
                f"refused address {shown}: private, loopback, link-local or multicast hosts are not fetched "
                "(IMGIDX_ALLOW_PRIVATE_HOSTS=1 allows them)"
            )
    return addresses


class _PublicOnly:
    """Mixed into urllib3's connections: resolve, check every address, connect to a checked one."""

    def _new_conn(self) -> socket.socket:
        if getattr(self, "proxy", None) is not None:  # a connection to the proxy; _Adapter checked the target
            return super()._new_conn()  # type: ignore[misc]
        try:
            addresses = vetted_addresses(self._dns_host, self.port)  # type: ignore[attr-defined]
        except socket.gaierror as e:
            raise NameResolutionError(self.host, self, e) from e  # type: ignore[attr-defined, arg-type]
        name, last = self._dns_host, None  # type: ignore[attr-defined]
        for ip in addresses:
            self._dns_host = ip  # the socket connects to this checked address; Host and SNI keep the name
            try:
                return super()._new_conn()  # type: ignore[misc]
            except urllib3.exceptions.NewConnectionError as e:
                last = e
            finally:
                self._dns_host = name
        assert last is not None
        raise last


class _PublicHTTPConnection(_PublicOnly, HTTPConnection):
    pass


class _PublicHTTPSConnection(_PublicOnly, HTTPSConnection):
    pass


class _PublicHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PublicHTTPConnection


class _PublicHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PublicHTTPSConnection


class _Adapter(HTTPAdapter):
    """Public addresses only (see _PublicOnly); through a proxy, the target's name is checked before sending."""

    def init_poolmanager(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _PublicHTTPPool, "https": _PublicHTTPSPool}

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def, override]
        if select_proxy(request.url, kwargs.get("proxies") or {}):
            u = urlparse(request.url)
            vetted_addresses(u.hostname or "", u.port or (443 if u.scheme == "https" else 80))
        return super().send(request, **kwargs)


class _NoAuthSession(requests.Session):
    """Never sends credentials to a photo host: none from the URL, none from ~/.netrc, none kept on redirects."""

    def rebuild_auth(self, prepared_request, response) -> None:  # type: ignore[no-untyped-def]
        prepared_request.headers.pop("Authorization", None)


def _no_authorization(r: requests.PreparedRequest) -> requests.PreparedRequest:
    r.headers.pop("Authorization", None)
    return r


def strip_userinfo(url: str) -> str:
    """http://user:pw@host/x -> http://host/x (credentials in a photo URL never leave the machine)."""
    u = urlparse(url)
    if "@" not in u.netloc:
        return url
    return urlunparse(u._replace(netloc=u.netloc.rsplit("@", 1)[1]))


class Fetcher:
    def __init__(
        self,
        *,
        workers: int = 16,
        connect_timeout: float = 10.0,
        read_timeout: float = 20.0,
        deadline: float = 60.0,
        retries: int = retry.RETRIES,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        max_bytes: int = MAX_BYTES,
        max_redirects: int = 5,
        allow_private_hosts: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if workers <= 0:
            raise ValueError(f"workers must be > 0; received {workers}")
        self.workers, self.retries, self.backoff, self.max_backoff = workers, retries, backoff, max_backoff
        self.timeout = (connect_timeout, read_timeout)
        self.deadline, self.max_bytes, self._sleep = deadline, max_bytes, sleep
        self.max_redirects, self.allow_private_hosts = max_redirects, allow_private_hosts
        self._local = threading.local()

    def _session(self) -> requests.Session:
        # one session per worker thread: requests.Session is not documented as thread-safe
        s = getattr(self._local, "session", None)
        if s is None:
            s = _NoAuthSession()
            s.auth = _no_authorization  # an explicit auth: requests then takes none from the URL or ~/.netrc
            s.max_redirects = self.max_redirects
            s.headers["User-Agent"] = f"imgidx/{__version__} (+https://github.com/imgidx)"
            adapter = HTTPAdapter if self.allow_private_hosts else _Adapter
            s.mount("http://", adapter(pool_maxsize=4))
            s.mount("https://", adapter(pool_maxsize=4))
            self._local.session = s
        return s

    def fetch(self, url: str | None) -> Download:
        if not url:
            return Download(None, "Flickr gave no URL for this photo (no downloadable size)")
        if urlparse(url).scheme not in ("http", "https"):
            return Download(None, f"refused non-http(s) URL scheme {urlparse(url).scheme!r}")
        url = strip_userinfo(url)
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
                    # a 403/404/410 from a photo host is no proof the photo is gone (a CDN or a permission
                    # glitch): not retried now, but by a later --retry-failed. Deleted photos redirect to the
                    # placeholder below, which is final.
                    return Download(None, f"HTTP {r.status_code}", False, final, transient=True), None
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
        except BlockedAddress as e:  # final: the address stays private, so --retry-failed must not knock again
            return Download(None, str(e)), None
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
