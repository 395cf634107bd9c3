"""The REST host: /services/rest/ with keys, OAuth 1.0a signatures, methods and REST faults."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from oauthlib.oauth1.rfc5849 import signature, utils

from . import render
from .errors import KEY_EXPIRED, KEY_INVALID_FORMAT, KEY_NOT_FOUND, ApiError
from .faults import Fault, html_page
from .search import page_count, paginate, paging, parse_query
from .transport import BaseHandler

if TYPE_CHECKING:
    from .server import FakeFlickr

KEY_RE = re.compile(r"^[0-9a-f]{32}$")
FORMATS = ("json", "rest")


def oauth_fields(headers) -> dict[str, str]:
    value = headers.get("Authorization", "")
    if not value.lower().startswith("oauth "):
        return {}
    try:
        return {k: utils.unescape(v) for k, v in utils.parse_authorization_header(value)}
    except (ValueError, IndexError):
        return {}


def signature_ok(http_method: str, uri: str, headers, body: str, secret: str, token_secret: str = "") -> bool:
    """Recompute the HMAC-SHA1 signature over query, Authorization header and form body (RFC 5849)."""
    fields = oauth_fields(headers)
    if fields.get("oauth_signature_method", "HMAC-SHA1") != "HMAC-SHA1" or "oauth_signature" not in fields:
        return False
    form = "application/x-www-form-urlencoded" in headers.get("Content-Type", "")
    try:
        params = signature.collect_parameters(
            uri_query=urlsplit(uri).query,
            body=body if form else None,
            headers={"Authorization": headers["Authorization"]},
        )
    except ValueError:
        return False
    request = SimpleNamespace(http_method=http_method, uri=uri, params=params, signature=fields["oauth_signature"])
    return signature.verify_hmac_sha1(request, secret, token_secret)


class RestApi:
    """Answers one call: (status, body, content type, extra headers). Raises nothing."""

    def __init__(self, fake: FakeFlickr):
        self.fake = fake

    def answer(self, http_method: str, uri: str, headers, params: dict, body: str) -> tuple[int, bytes, str, dict]:
        fmt = params.get("format", "rest")
        if fmt not in FORMATS:
            return (200, *render.render_fail(111, f'Format "{fmt}" not found', "rest", params), {})
        try:
            key = self._check_key(params, headers)
            if not self.fake.rate_limiter.allow(key):
                if self.fake.rate_limiter.action == "disable":
                    self.fake.keys[key] = (self.fake.keys[key][0], "expired")
                    raise ApiError(100, KEY_EXPIRED)
                retry = {"Retry-After": str(self.fake.rate_limiter.retry_after(key))}
                return 429, html_page(429, "Too many requests for this API key."), "text/html; charset=utf-8", retry
            if oauth_fields(headers) and not signature_ok(http_method, uri, headers, body, self.fake.keys[key][0]):
                raise ApiError(96)
            payload = self._dispatch(params.get("method", ""), params)
        except ApiError as err:
            return (200, *render.render_fail(err.code, err.message, fmt, params), {})
        return (200, *render.render_ok(payload, fmt, params), {})

    def _check_key(self, params: dict, headers) -> str:
        key = params.get("api_key") or oauth_fields(headers).get("oauth_consumer_key", "")
        if not KEY_RE.match(key):
            raise ApiError(100, KEY_INVALID_FORMAT)
        if key not in self.fake.keys:
            raise ApiError(100, KEY_NOT_FOUND)
        if self.fake.keys[key][1] != "active":
            raise ApiError(100, KEY_EXPIRED)
        if oauth_fields(headers).get("oauth_token"):
            raise ApiError(98)  # the fake issues no user tokens
        return key

    def _dispatch(self, method: str, params: dict) -> dict:
        if method == "flickr.test.echo":
            return render.echo(params)
        if method == "flickr.photos.licenses.getInfo":
            return render.licenses_info()
        if method == "flickr.photos.search":
            return self.search(params)
        if method in ("flickr.photos.getSizes", "flickr.photos.getInfo"):
            photo = self.fake.corpus.get(params.get("photo_id", ""))
            if photo is None or self.fake.corpus.is_deleted(photo.id):
                raise ApiError(1)
            if method == "flickr.photos.getSizes":
                return render.sizes_info(photo, self.fake.photo_host)
            return render.photo_info(photo)
        raise ApiError(112, None, method)

    def search(self, params: dict) -> dict:
        fake = self.fake
        query = parse_query(params, known_owners={o for o, _n in fake.corpus.owners})
        results = fake.run_search(params, query)
        page, per_page = paging(params)
        page_photos = paginate(results, page, per_page, fake.page_cap, fake.past_cap)
        extras = render.parse_extras(params.get("extras"))
        return render.photos_envelope(
            page_photos, extras, fake.photo_host, page, page_count(len(results), per_page), per_page, len(results)
        )


class RestHandler(BaseHandler):
    def do_GET(self) -> None:
        self.handle_call()

    def do_POST(self) -> None:
        self.handle_call()

    def handle_call(self) -> None:
        url = urlsplit(self.path)
        raw = self.read_body().decode("utf-8", "replace") if self.command == "POST" else ""
        if url.path.rstrip("/") != "/services/rest":
            self.record().status = 404
            self.send_body(404, b"", None)
            return
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        if "application/x-www-form-urlencoded" in self.headers.get("Content-Type", "x-www-form-urlencoded"):
            params.update(parse_qsl(raw, keep_blank_values=True))
        method = params.get("method", "")
        fault = self.fake.faults.take(method, "rest")
        entry = self.record(fault, method, {k: v for k, v in params.items() if not k.startswith("oauth_")})
        if fault is not None and fault.kind == "delay" and not self.sleep(fault.seconds):
            self.drop()
            return
        entry.status = self.respond(fault, f"http://{self.headers.get('Host', '')}{self.path}", params, raw)

    def respond(self, fault: Fault | None, uri: str, params: dict, raw: str) -> int | None:
        kind = fault.kind if fault else None
        if kind == "close":
            self.drop()
            return None
        if kind == "http":
            self.send_fault_status(fault)
            return fault.code
        if kind == "html_200":
            self.send_html(200)
            return 200
        if kind == "stat":
            fmt = params.get("format", "rest") if params.get("format") in FORMATS else "rest"
            err = ApiError(fault.code, fault.message)
            body, ctype = render.render_fail(err.code, err.message, fmt, params)
            self.send_body(200, body, ctype)
            return 200
        status, body, ctype, headers = self.fake.api.answer(self.command, uri, self.headers, params, raw)
        if kind == "truncated_json":
            self.send_body(status, body[: len(body) // 2], ctype)
        elif kind == "short_body":
            self.send_short(status, body, ctype)
        else:
            self.send_body(status, body, ctype, headers)
        return status
