"""Flickr API error codes and their real messages (stat=fail answers, HTTP 200)."""

from __future__ import annotations

STAT_MESSAGES: dict[int, str] = {
    0: "Sorry, the Flickr API service is not currently available.",
    1: "Photo not found",
    2: "Unknown user",
    3: "Parameterless searches have been disabled",
    10: "Sorry, the Flickr search API is not currently available.",
    18: "Illogical arguments",
    20: "Excessive offset",
    96: "Invalid signature",
    98: "Invalid auth token",
    100: "Invalid API Key (Key not found)",
    105: "Service currently unavailable",
    111: 'Format "{}" not found',
    112: 'Method "{}" not found',
    201: "Sorry, the Flickr API service is not currently available.",
}
KEY_INVALID_FORMAT = "Invalid API Key (Key has invalid format)"
KEY_NOT_FOUND = "Invalid API Key (Key not found)"
KEY_EXPIRED = "Invalid API Key (Key has expired)"


class ApiError(Exception):
    """A stat=fail answer: the REST handler renders it in the requested format."""

    def __init__(self, code: int, message: str | None = None, *args: str):
        template = message if message is not None else STAT_MESSAGES.get(code, "Unknown error")
        self.code = code
        self.message = template.format(*args) if args else template
        super().__init__(f"{code}: {self.message}")
