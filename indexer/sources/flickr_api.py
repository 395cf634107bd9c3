"""One Flickr API call at a time, done carefully: a call budget, retries with backoff and jitter that honour
Retry-After, one clear error when it cannot work, and the API secret kept out of every message.

flickrapi turns any non-200 reply into FlickrError('... Status code N received') with code None and drops the
headers. A requests response hook on this client's own session (flickrapi's `session` is a class attribute
shared by every instance, so we shadow it per instance rather than touch it) remembers the status and
Retry-After of the last reply.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Callable

from .. import retry
from ..errors import ConfigError, ImgidxError
from ..retry import retry_after_seconds

log = logging.getLogger(__name__)

RETRYABLE_CODES = {0, 10, 105, 201}  # Flickr's "service unavailable" family (stat=fail, HTTP 200)
RETRYABLE_STATUS = retry.RETRY_STATUS
MAX_WAIT = 600.0  # a Retry-After beyond this is not waited out in full
GARBAGE = (json.JSONDecodeError, ValueError, AttributeError, KeyError, TypeError)


class CallBudget:
    """At most `calls` calls in any `window` seconds (Flickr allows 3,600 per hour per key); waits when spent."""

    def __init__(
        self,
        calls: int = 3600,
        window: float = 3600.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_wait: Callable[[float], None] | None = None,
    ):
        if calls <= 0 or window <= 0:
            raise ValueError(f"call budget must be > 0 calls per > 0 s; received {calls} per {window}")
        self.calls, self.window, self._clock, self._sleep, self._on_wait = calls, window, clock, sleep, on_wait
        self._times: collections.deque[float] = collections.deque()
        self.waited = 0.0

    def acquire(self) -> None:
        while True:
            now = self._clock()
            while self._times and self._times[0] <= now - self.window:
                self._times.popleft()
            if len(self._times) < self.calls:
                self._times.append(now)
                return
            wait = self._times[0] + self.window - now
            if self._on_wait:
                self._on_wait(wait)
            self.waited += wait
            self._sleep(wait)


class FlickrApi:
    def __init__(
        self,
        key: str,
        secret: str,
        rest_url: str,
        *,
        timeout: float = 30.0,
        retries: int = retry.RETRIES,
        backoff: float = 1.0,
        budget: CallBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        import flickrapi
        import requests

        self._flickr = flickrapi.FlickrAPI(key, secret, format="parsed-json", store_token=False, timeout=timeout)
        self._flickr.REST_URL = rest_url
        session = requests.Session()
        session.hooks["response"].append(self._remember)
        self._flickr.flickr_oauth.session = session  # this instance only; see the module docstring
        self._secret = secret
        self.retries, self.backoff, self._sleep = retries, backoff, sleep
        self.budget = budget or CallBudget(sleep=sleep)
        self.calls = 0
        self._status: int | None = None
        self._retry_after: float | None = None

    def _remember(self, response, *args, **kwargs) -> None:
        self._status, self._retry_after = response.status_code, retry_after_seconds(response)

    def call(self, method: str, params: dict, expect: str | None = None) -> dict:
        """The parsed reply of `method` (which must hold the key `expect`), after retries; raises ImgidxError."""
        last = ""
        for attempt in range(self.retries + 1):
            outcome, wait = self._once(method, params, expect)
            if isinstance(outcome, dict):
                return outcome
            last = outcome
            if attempt < self.retries:
                delay = retry.delay(attempt, base=self.backoff, cap=MAX_WAIT, retry_after=wait)
                log.warning("Flickr %s failed (%s); retrying in %.1f s", method, last, delay)
                self._sleep(delay)
        raise ImgidxError(
            f"Flickr {method} kept failing after {self.retries + 1} tries ({last}); "
            "check your connection or try again later"
        )

    def _once(self, method: str, params: dict, expect: str | None) -> tuple[dict | str, float | None]:
        """A reply, or (why it failed, Retry-After) for a retryable failure. Raises for failures that are final."""
        import flickrapi
        import requests

        self.budget.acquire()
        self.calls += 1
        self._status = self._retry_after = None
        try:
            reply = self._flickr.do_flickr_call(method, **params)
        except flickrapi.FlickrError as e:
            return self._flickr_error(method, e), self._retry_after
        except GARBAGE as e:
            return f"garbled reply ({type(e).__name__})", None
        except requests.RequestException as e:
            return f"{type(e).__name__}: {self._clean(e)}", None
        if not isinstance(reply, dict) or (expect and not isinstance(reply.get(expect), dict)):
            return f"unexpected reply {self._clean(reply)[:80]}", None
        return reply, None

    def _flickr_error(self, method: str, e: Exception) -> str:
        code = getattr(e, "code", None)
        if code == 100 or (code is not None and str(code) == "100"):
            raise ConfigError(
                f"Flickr rejected the API key ({self._clean(e)}); check FLICKR_API_KEY and FLICKR_API_SECRET"
            )
        if code is None and self._status is not None:
            if self._status not in RETRYABLE_STATUS:
                raise ImgidxError(f"Flickr answered HTTP {self._status} to {method}; check the key and the endpoint")
            return f"HTTP {self._status}" + (f", Retry-After {self._retry_after:g} s" if self._retry_after else "")
        if code is not None and _int(code) not in RETRYABLE_CODES:
            raise ImgidxError(f"Flickr refused {method}: {self._clean(e)}")
        return self._clean(e)

    def _clean(self, e: object) -> str:
        """Text with the API secret removed, whatever the library put in it."""
        return str(e).replace(self._secret, "***")[:200]


def _int(v: object) -> int | None:
    try:
        return int(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
