"""FakeFlickr: the three local hosts (REST, photos, redirects) and the state they share."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable

from .corpus import Corpus, Photo, resolve_counts
from .faults import Fault, FaultBook, RateLimiter
from .images import ImageCache, render_jpeg
from .render import static_url
from .rest import RestApi, RestHandler
from .search import PAST_CAP_MODES, Query, matches, parse_query, search, search_key
from .static import PLACEHOLDER_PATH, RedirectHandler, StaticHandler
from .transport import FakeServer, RequestRecord
from .variants import VARIANTS, make_variant


class RequestLog(list):
    """FakeFlickr.log: a list of RequestRecord, appended to by handler threads."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            super().append(record)

    def clear(self) -> None:
        with self._lock:
            super().clear()

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self)


class FakeFlickr:
    """A local Flickr: ``with FakeFlickr(seed=0) as fake: flickr.REST_URL = fake.rest_url``.

    seed: makes keys, photos and pixels deterministic. topics: names or {name: count} (default cat 4500,
    dog 1500, car/lion/meme 500). photos_per_topic: int for every topic or {name: count}.
    hostile: add a "hostile" topic with one photo per image variant (ids in ``hostile_ids``).
    page_cap / past_cap: results reachable per search (4000) and what pages past it get: "repeat" the
    last reachable page, "empty", or "error20". drift: new photos put in front of a search's results
    on each repeat of that search. rate_limit / rate_window / rate_limit_action / clock: see RateLimiter.
    """

    def __init__(self, seed: int = 0, topics=None, photos_per_topic=None, *, hostile: bool = True,
                 page_cap: int = 4000, past_cap: str = "repeat", drift: int = 0, rate_limit: int | None = None,
                 rate_window: float = 3600.0, rate_limit_action: str = "429",
                 clock: Callable[[], float] | None = None) -> None:  # fmt: skip
        if past_cap not in PAST_CAP_MODES:
            raise ValueError(f"past_cap must be one of {PAST_CAP_MODES}; received {past_cap!r}")
        if page_cap < 1 or drift < 0:
            raise ValueError(f"page_cap must be >= 1 and drift >= 0; received {page_cap}, {drift}")
        self.seed, self.page_cap, self.past_cap, self.drift = seed, page_cap, past_cap, drift
        self._counts, self._hostile = resolve_counts(topics, photos_per_topic), hostile
        self.clock = clock or time.monotonic
        self.rate_limiter = RateLimiter(rate_limit, rate_window, rate_limit_action, self.clock)
        self.api_key = hashlib.md5(f"fake-flickr-key-{seed}".encode()).hexdigest()
        self.api_secret = hashlib.sha1(f"fake-flickr-secret-{seed}".encode()).hexdigest()[:16]
        self.expired_key = hashlib.md5(f"fake-flickr-expired-{seed}".encode()).hexdigest()
        self.log = RequestLog()
        self.faults = FaultBook()
        self.images = ImageCache()
        self.stopping = threading.Event()
        self.api = RestApi(self)
        self._lock = threading.Lock()
        self._servers: dict[str, FakeServer] = {}
        self._threads: list[threading.Thread] = []
        self._reset_state()

    def _reset_state(self) -> None:
        self.corpus = Corpus(self.seed, self._counts, hostile=len(VARIANTS) if self._hostile else 0)
        hostile = [p.id for p in self.corpus.photos if p.topic == "hostile"]
        self.hostile_ids: dict[str, str] = dict(zip(VARIANTS, hostile, strict=False))
        self._variants = {pid: name for name, pid in self.hostile_ids.items()}
        self.keys: dict[str, tuple[str, str]] = {
            self.api_key: (self.api_secret, "active"),
            self.expired_key: (hashlib.sha1(self.expired_key.encode()).hexdigest()[:16], "expired"),
        }
        self._search_calls: dict[tuple, int] = {}
        self._drifted: dict[tuple, list[Photo]] = {}

    # ---- lifecycle ----

    def start(self) -> FakeFlickr:
        if self._servers:
            return self
        self.stopping.clear()
        for name, handler in (("rest", RestHandler), ("static", StaticHandler), ("redirect", RedirectHandler)):
            server = FakeServer(handler, self, name)
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fake-flickr-{name}", daemon=True
            )
            thread.start()
            self._servers[name], self._threads = server, [*self._threads, thread]
        return self

    def stop(self) -> None:
        """Stop serving, wake sleeping handlers, cut keep-alive connections and join every thread."""
        self.stopping.set()
        stoppers = [threading.Thread(target=server.shutdown) for server in self._servers.values()]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        for server in self._servers.values():
            server.cut_connections()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = {}, []

    def __enter__(self) -> FakeFlickr:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _url(self, name: str) -> str:
        if name not in self._servers:
            raise RuntimeError("FakeFlickr is not running: call start() or use it as a context manager")
        return self._servers[name].base_url

    @property
    def rest_url(self) -> str:
        return f"{self._url('rest')}/services/rest/"

    @property
    def photo_host(self) -> str:
        return self._url("static")

    @property
    def redirect_host(self) -> str:
        return self._url("redirect")

    @property
    def placeholder_url(self) -> str:
        return f"{self.redirect_host}{PLACEHOLDER_PATH}"

    # ---- behaviour switches for tests ----

    def inject(self, target: str, faults: Iterable[Fault | int | str] | Fault | int | str) -> None:
        """Make the next calls to ``target`` fail in order (see faults.py for targets and fault names)."""
        if not (target == "rest" or target.startswith("flickr.") or target == "static" or target.startswith("static:")):
            raise ValueError(
                f"target must be 'rest', a flickr.* method, 'static' or 'static:<id>'; received {target!r}"
            )
        self.faults.add(target, [faults] if isinstance(faults, Fault | int | str) else faults)

    def set_variant(self, photo_id: str, name: str | None) -> None:
        """Serve the image variant ``name`` (see variants.VARIANTS) for every size of a photo; None undoes it."""
        if self.corpus.get(photo_id) is None:
            raise KeyError(f"unknown photo id; received {photo_id!r}")
        if name is None:
            self._variants.pop(str(photo_id), None)
            return
        if name not in VARIANTS:
            raise ValueError(f"unknown image variant; received {name!r}")
        self._variants[str(photo_id)] = name

    def delete(self, photo_id: str) -> None:
        """Delete a photo: search still returns it, getInfo/getSizes answer 1, its URLs redirect to the placeholder."""
        self.corpus.delete(photo_id)

    def add_key(self, key: str, secret: str, status: str = "active") -> None:
        self.keys[key] = (secret, status)

    def reset(self) -> None:
        """Forget faults, variants, deletions, drift, rate-limit counts and the log (servers keep running)."""
        self.faults.clear()
        self.rate_limiter.reset()
        self.log.clear()
        self._reset_state()

    # ---- what tests can ask ----

    def photos_for(self, query: str, sort: str = "date-posted-desc", **params: str) -> list[Photo]:
        """All photos a text search returns, in order, before the 4,000 cap (no drift, no request logged)."""
        return search(self.corpus.snapshot(), parse_query({"text": query, "sort": sort, **params}))

    def photo(self, photo_id: str) -> Photo:
        photo = self.corpus.get(photo_id)
        if photo is None:
            raise KeyError(f"unknown photo id; received {photo_id!r}")
        return photo

    def photo_url(self, photo_id: str, size: str = "m") -> str:
        return static_url(self.photo_host, self.photo(photo_id), size)

    def requests(self, kind: str | None = None) -> list[RequestRecord]:
        """Logged requests: all, or one host ("rest", "static", "redirect"), or one API method name."""
        records = self.log.snapshot()
        if kind is None or kind == "all":
            return records
        if kind in ("rest", "static", "redirect"):
            return [r for r in records if r.host == kind]
        return [r for r in records if r.api_method == kind]

    def count_requests(self, kind: str | None = None) -> int:
        return len(self.requests(kind))

    # ---- used by the handlers ----

    def image_body(self, photo: Photo, size: str) -> tuple[bytes, str]:
        variant = self._variants.get(photo.id)
        if variant is not None:
            return make_variant(variant)
        return self.images.get((photo.id, size), lambda: render_jpeg(photo, size, self.seed)), "image/jpeg"

    def cached(self, name: str, make: Callable[[], bytes]) -> bytes:
        return self.images.get(("static", name), make)

    def run_search(self, params: dict, query: Query) -> list[Photo]:
        """Full ordered results; with drift, each repeat of a search first uploads ``drift`` new matches."""
        key = search_key(params)
        with self._lock:
            calls = self._search_calls.get(key, 0)
            self._search_calls[key] = calls + 1
            if self.drift and calls:
                words = query.words + list(query.tags)
                topic = next((w for w in words if w in self.corpus.counts), next(iter(self.corpus.counts), "cat"))
                added = self.corpus.add_new(topic, query.words, list(query.tags), self.drift)
                self._drifted[key] = added + self._drifted.get(key, [])
            drifted = list(self._drifted.get(key, []))
        results = search(self.corpus.snapshot(), query)
        if drifted:
            front = [p for p in drifted if matches(p, query)]
            ids = {p.id for p in front}
            results = front + [p for p in results if p.id not in ids]
        return results

    def __repr__(self) -> str:
        where = self.rest_url if self._servers else "stopped"
        return f"<FakeFlickr seed={self.seed} photos={len(self.corpus.photos)} {where}>"
