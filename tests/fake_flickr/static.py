"""The photo host (``/{server}/{id}_{secret}[_{suffix}].jpg``) and the second host that serves the
placeholder and redirect hops."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, quote, urlsplit

from .corpus import SUFFIX_TO_SIZE
from .faults import Fault
from .images import placeholder_gif, placeholder_png
from .transport import BaseHandler

PATH_RE = re.compile(r"^/(?P<server>\d+)/(?P<id>\d+)_(?P<secret>[0-9a-f]+)(?:_(?P<suffix>[a-z]))?\.(?:jpg|png|gif)$")
PLACEHOLDER_PATH = "/images/photo_unavailable.png"


class StaticHandler(BaseHandler):
    def do_GET(self) -> None:
        self.serve(head=False)

    def do_HEAD(self) -> None:
        self.serve(head=True)

    def serve(self, head: bool) -> None:
        path = urlsplit(self.path).path
        match = PATH_RE.match(path)
        targets = (f"static:{match['id']}", "static") if match else ("static",)
        fault = self.fake.faults.take(*targets)
        entry = self.record(fault)
        if fault is not None and fault.kind == "delay":
            if not self.sleep(fault.seconds):
                self.drop()
                return
            fault = None
        entry.status = self.respond(match, fault, head)

    def respond(self, match: re.Match | None, fault: Fault | None, head: bool) -> int | None:
        kind = fault.kind if fault else None
        if kind == "close":
            self.drop()
            return None
        if kind == "http":
            self.send_fault_status(fault, head)
            return fault.code
        if kind in ("redirect_chain", "redirect_loop"):
            here = f"{self.fake.photo_host}{self.path}"
            hop = f"{self.fake.redirect_host}/hop/{fault.hops - 1}?to={quote(here, safe='')}"
            if kind == "redirect_loop":
                hop = f"{self.fake.redirect_host}/loop/a"
            elif fault.hops <= 1:
                hop = here  # the fault is spent, so this is one plain redirect
            self.send_body(302, b"", None, {"Location": hop}, head)
            return 302
        resolved = self.resolve(match)
        if isinstance(resolved, int):
            self.send_body(resolved, b"", None, head=head)
            return resolved
        if isinstance(resolved, str):
            self.send_body(302, b"", "text/html", {"Location": resolved}, head)
            return 302
        body, ctype = resolved
        if head or kind is None:
            self.send_body(200, body, ctype, head=head)
        elif kind == "slow_drip":
            self.send_drip(200, body, ctype, fault.seconds)
        elif kind == "stall":
            self.send_stall(200, body, ctype, fault.seconds)
        elif kind == "reset":
            self.send_reset(200, body, ctype)
        elif kind == "short_body":
            self.send_short(200, body, ctype)
        elif kind == "truncated_body":
            self.send_body(200, body[: len(body) // 2], ctype)
        return 200

    def resolve(self, match: re.Match | None) -> int | str | tuple[bytes, str]:
        """404 for unknown ids and paths, a placeholder URL for wrong secrets, deleted photos and missing
        sizes, else (body, content type)."""
        if match is None:
            return 404
        photo = self.fake.corpus.get(match["id"])
        size = SUFFIX_TO_SIZE.get(match["suffix"] or "")
        if photo is None or size is None:
            return 404
        secret = photo.original_secret if size == "o" else photo.secret
        unavailable = (
            self.fake.corpus.is_deleted(photo.id)
            or match["secret"] != secret
            or match["server"] != photo.server
            or size not in photo.sizes
        )
        if unavailable:
            return f"{self.fake.redirect_host}{PLACEHOLDER_PATH}"
        return self.fake.image_body(photo, size)


class RedirectHandler(BaseHandler):
    """The second host: photo_unavailable.png/.gif, ``/hop/N?to=URL`` (N more redirects, the last to URL)
    and a ``/loop/a`` ⇄ ``/loop/b`` loop."""

    def do_GET(self) -> None:
        entry = self.record()
        entry.status = self.serve(head=False)

    def do_HEAD(self) -> None:
        entry = self.record()
        entry.status = self.serve(head=True)

    def serve(self, head: bool) -> int:
        url = urlsplit(self.path)
        if url.path == PLACEHOLDER_PATH:
            self.send_body(200, self.fake.cached("placeholder.png", placeholder_png), "image/png", head=head)
            return 200
        if url.path == "/images/photo_unavailable.gif":
            self.send_body(200, self.fake.cached("placeholder.gif", placeholder_gif), "image/gif", head=head)
            return 200
        parts = url.path.strip("/").split("/")
        location = None
        if len(parts) == 2 and parts[0] == "hop" and parts[1].isdigit():
            target = parse_qs(url.query).get("to", [""])[0]
            remaining = int(parts[1])
            location = f"/hop/{remaining - 1}?to={quote(target, safe='')}" if remaining > 1 else target
        elif len(parts) == 2 and parts[0] == "loop":
            location = "/loop/b" if parts[1] == "a" else "/loop/a"
        if not location:
            self.send_body(404, b"", None, head=head)
            return 404
        if location.startswith("/"):
            location = self.fake.redirect_host + location
        self.send_body(302, b"", None, {"Location": location}, head)
        return 302
