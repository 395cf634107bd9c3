"""ASGI middleware of `imgidx serve`: request metrics, the access token, the upload cap, security headers.

Pure ASGI (no BaseHTTPMiddleware): cheap per request, and the upload cap counts bytes as they arrive, so a
too-large body is refused before it is read, whether or not it announces its length.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import time
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import Metrics

COOKIE = "imgidx_token"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    # the page loads its own script and style only: nothing from another host (it works offline)
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
]


async def send_json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


# RFC 9110 Host = uri-host [ ":" port ]: a bracketed IPv6 literal or a registered name / IPv4, then digits only
_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::(?P<port>[0-9]{1,5}))?\Z")


def host_name(host: str) -> str:
    """The name part of a Host header, parsed, not pattern-matched: "[::1]:8000" -> "[::1]",
    "localhost:8000" -> "localhost"; "" for anything that is not a host and an optional port
    ("localhost:80@evil.com", "[::1]evil.com", "a b", "[nonsense]")."""
    m = _HOST.match(host)
    if m is None or (m["port"] is not None and int(m["port"]) > 65535):
        return ""
    if m["v6"] is not None:
        try:
            return f"[{ipaddress.IPv6Address(m['v6'])}]"
        except ValueError:
            return ""
    return m["name"].lower().rstrip(".")  # "LOCALHOST." is localhost


class RequestMetrics:
    """Counts requests by method, route template and status; observes latency by route. Outermost."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *SECURITY_HEADERS]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or ("other" if status != 404 else "unmatched")
            self.metrics.inc("imgidx_requests_total", method=scope["method"], route=name, status=str(status))
            self.metrics.observe("imgidx_request_duration_seconds", time.perf_counter() - start, route=name)


class TokenGuard:
    """With a token: every request carries it (`Authorization: Bearer T`, or the cookie that `GET /?token=T`
    sets for the browser). Without one (loopback only): requests must name a loopback host, so that a web page
    elsewhere cannot reach the service through DNS rebinding."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self.token is None:
            raw = headers.get("host", "")
            host = host_name(raw)
            if host not in LOOPBACK_HOSTS:
                shown = raw if len(raw) <= 80 else raw[:77] + "..."
                await send_json(send, 403, f"host {shown!r} refused: this server only answers loopback names")
                return
        elif not self._authorized(headers):
            given = parse_qs(scope.get("query_string", b"").decode(errors="replace")).get("token", [""])[0]
            if scope["path"] == "/" and scope["method"] == "GET" and self._same(given):
                await self._set_cookie(send)
                return
            await send_json(
                send,
                401,
                "this server needs its token: send 'Authorization: Bearer <token>', or open /?token=<token> "
                "once in a browser",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        await self.app(scope, receive, send)

    def _same(self, given: str) -> bool:
        assert self.token is not None
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    def _authorized(self, headers: Headers) -> bool:
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and self._same(auth[7:].strip()):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is simply no token
            return False
        return COOKIE in cookie and self._same(cookie[COOKIE].value)

    async def _set_cookie(self, send: Send) -> None:
        cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict".encode()
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [(b"location", b"/"), (b"set-cookie", cookie), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})


class CrossSiteGuard:
    """State-changing requests (POST to `paths`) come from this server's own page or from a non-browser client:
    a browser says where a request comes from (Sec-Fetch-Site, Origin), and anything but same-origin is refused
    (403); the body must be JSON (415), which a plain HTML form on another site cannot send without CORS.
    Runs inside TokenGuard: the token (or the loopback rule) still applies first."""

    def __init__(self, app: ASGIApp, paths: tuple[str, ...]):
        self.app, self.paths = app, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS") or not self._guarded(scope):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refused = cross_site(headers)
        if refused:
            await send_json(send, 403, f"cross-site request refused: {refused}")
            return
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            await send_json(
                send, 415, f"this request needs a JSON body (content-type application/json), not {ctype or 'none'!r}"
            )
            return
        await self.app(scope, receive, send)

    def _guarded(self, scope: Scope) -> bool:
        path = scope["path"]
        return any(path == p or path.startswith(p + "/") for p in self.paths)


def cross_site(headers: Headers) -> str:
    """Why a request is not from this server's own origin ("" when it is, or when no browser says otherwise)."""
    for name in ("origin", "sec-fetch-site", "host"):
        # two copies: which one a proxy or framework reads is anyone's guess, so neither is trusted
        if len(headers.getlist(name)) > 1:
            return f"more than one {name.title()} header"
    site = headers.get("sec-fetch-site")
    if site is not None and site.lower() not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {site[:40]!r}"
    origin = headers.get("origin")
    if origin is None:
        return ""  # curl, scripts, old browsers' same-origin requests: the token/loopback guard decides
    # host and port, not the scheme: behind a TLS proxy the page is https while this server sees http
    own = headers.get("host", "").lower()
    if urlsplit(origin.strip()).netloc.lower() != own or not own:
        return f"Origin {origin[:80]!r} is not this server ({own[:80]!r})"
    return ""


class BodyLimit:
    """413 for a request body above `max_bytes`: at once from Content-Length, or as soon as the count passes it."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_json(send, 413, self.message(int(declared)))
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self.message(seen))
            return message

        await self.app(scope, counting_receive, send)

    def message(self, size: int) -> str:
        return (
            f"request body too large: {size / 2**20:.1f} MiB, more than the limit of {self.max_bytes / 2**20:.1f} "
            "MiB (imgidx serve --max-upload-mb)"
        )
