"""HTTP plumbing shared by the fake's three hosts: a stoppable ThreadingHTTPServer and a handler base
with the byte-level misbehaviours (short bodies, resets, drips, stalls, dropped connections)."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .faults import REASONS, Fault, html_page


@dataclass
class RequestRecord:
    """One line of FakeFlickr.log, appended when a request arrives (in arrival order)."""

    host: str  # "rest" | "static" | "redirect"
    http_method: str
    path: str
    api_method: str | None = None  # REST only
    params: dict = field(default_factory=dict)
    status: int | None = None  # None while in flight, or when no status line was sent (dropped connection)
    fault: str | None = None
    ts: float = 0.0


class FakeServer(ThreadingHTTPServer):
    """Binds 127.0.0.1 only; tracks open connections so stop() can cut keep-alive clients loose and
    join every handler thread (daemon_threads False, block_on_close True)."""

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], fake: Any, host: str):
        self.fake, self.host_kind = fake, host
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), handler)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def process_request(self, request, client_address):
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        """Clients that hang up mid-answer (timeouts, resets, stop()) are expected: stay quiet about
        socket errors, but print anything else (a bug in the fake)."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def cut_connections(self) -> None:
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class BaseHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeFlickr/1.0"
    sys_version = ""
    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep stderr quiet
        pass

    @property
    def fake(self) -> Any:
        return self.server.fake

    def sleep(self, seconds: float) -> bool:
        """Sleep unless the fake is stopping; True when the whole time passed."""
        return not self.fake.stopping.wait(seconds)

    def record(self, fault: Fault | None = None, api_method: str | None = None,
               params: dict | None = None) -> RequestRecord:  # fmt: skip
        """Log the request on arrival; the handler sets ``.status`` once it has answered."""
        entry = RequestRecord(
            host=self.server.host_kind, http_method=self.command, path=self.path, api_method=api_method,
            params=dict(params or {}), fault=str(fault) if fault else None, ts=time.time(),
        )  # fmt: skip
        self.fake.log.append(entry)
        return entry

    def send_head(self, status: int, content_type: str | None, length: int, headers: dict | None = None) -> None:
        self.send_response(status, REASONS.get(status))
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()

    def send_body(self, status: int, body: bytes, content_type: str | None, headers: dict | None = None,
                  head: bool = False) -> None:  # fmt: skip
        self.send_head(status, content_type, len(body), headers)
        if not head and body:
            self.wfile.write(body)

    def send_html(self, status: int, headers: dict | None = None, head: bool = False) -> None:
        self.send_body(status, html_page(status), "text/html; charset=utf-8", headers, head)

    def send_fault_status(self, fault: Fault, head: bool = False) -> None:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        self.send_html(fault.code, headers, head)

    # ---- misbehaviour at the byte level ----

    def drop(self) -> None:
        """Close the connection without answering."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def send_short(self, status: int, body: bytes, content_type: str, extra: int = 1000) -> None:
        """Promise more bytes than are sent, then close."""
        self.send_head(status, content_type, len(body) + extra)
        self.wfile.write(body)
        self.drop()

    def send_reset(self, status: int, body: bytes, content_type: str) -> None:
        """Send half of the body, then a TCP RST."""
        self.send_head(status, content_type, len(body))
        self.wfile.write(body[: len(body) // 2])
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        os.close(self.connection.detach())

    def send_drip(self, status: int, body: bytes, content_type: str, interval: float, chunk: int = 256) -> None:
        self.send_head(status, content_type, len(body))
        for start in range(0, len(body), chunk):
            self.wfile.write(body[start : start + chunk])
            if not self.sleep(interval):
                self.drop()
                return

    def send_stall(self, status: int, body: bytes, content_type: str, seconds: float) -> None:
        self.send_head(status, content_type, len(body))
        self.sleep(seconds)
        self.drop()

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""
