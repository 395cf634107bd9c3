"""The one retry rule for HTTP (photo downloads in fetch.py, Flickr API calls in flickr_api.py): which statuses
are worth another try, exponential backoff with +-50 % jitter, and Retry-After honoured up to a cap."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping

RETRIES = 4  # retries after a first try, per download and per Flickr API call (the one default)
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})  # timeouts, rate limits and transient server faults


def retryable_status(status: int) -> bool:
    return status in RETRY_STATUS


def delay(attempt: int, *, base: float = 1.0, cap: float | None = None, retry_after: float | None = None) -> float:
    """Seconds to wait before try `attempt + 1` (attempt 0 is the first failure): the server's Retry-After when it
    gave one, else base * 2**attempt with +-50 % jitter (so many clients do not retry in step); at most `cap`."""
    wait = retry_after if retry_after is not None else base * 2**attempt * (0.5 + random.random())
    return min(wait, cap) if cap is not None else wait


def retry_after_seconds(response: object) -> float | None:
    """Retry-After of a response (requests-like: `.headers`), in seconds: delta-seconds or an HTTP date."""
    headers: Mapping[str, str] = getattr(response, "headers", None) or {}
    value = headers.get("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    import email.utils  # here: it imports socket and calendar, and only an HTTP-date Retry-After needs it

    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None
