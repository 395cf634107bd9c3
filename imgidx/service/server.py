"""Run `imgidx serve` under uvicorn, and start it as a child process (for tests and the load benchmark).

We bind the socket ourselves so that `--port 0` works (the kernel picks a free port) and the address we announce
on stderr is the one really bound; the announcement comes only once the model is loaded and the port listens.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from imgidx.indexer.compose import embedder_for_index
from imgidx.indexer.config import Settings
from imgidx.indexer.errors import ConfigError
from imgidx.indexer.store import Store

from .api import create_app
from .service import ServeOptions, Service

ANNOUNCE = "imgidx serve: listening on "
REQUEST_TIMEOUT_S = 30.0  # from a connection's first byte (or its previous answer) to a complete request
KEEP_ALIVE_S = 5  # an idle kept-alive connection is closed after this
MAX_HEAD_BYTES = 16 * 1024  # request line + headers + the blank line: beyond, 431
MAX_CONNECTIONS = 1000
TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/=-]{8,}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"binding to {host} would open the index to the network; pass --token TOKEN (or set IMGIDX_TOKEN) "
            "so that every request must carry it, or bind to 127.0.0.1"
        )
    if token is not None and not TOKEN_RE.fullmatch(token):
        raise ConfigError(
            "the token must be at least 8 characters of letters, digits and ._~+/=- (it travels in a header and a "
            "cookie); make one with: python3 -c 'import secrets; print(secrets.token_urlsafe())'"
        )


def preflight(settings: Settings) -> str:
    """Fail with a one-line message before the server starts: no index, or weights that are not here."""
    with Store(settings.home, readonly=True) as store:
        if store.stamp is not None:
            embedder_for_index(store, settings)  # resolves the weights; the model itself loads at start-up
        counts = store.counts()
        return f"{counts['photos']} photos in {len(counts['collections'])} collections"


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    options: ServeOptions | None = None,
    max_upload: int,
    access_log: bool = False,
) -> None:
    check_binding(host, settings.token)
    summary = preflight(settings)
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it a
    # kept-alive connection waits ~40 ms per answer (Nagle against delayed ACKs)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port") from None
    bound = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if family == socket.AF_INET6 else host
    url = f"http://{shown}:{bound}/"
    app = create_app(Service(settings, options), token=settings.token, max_upload=max_upload)
    config = uvicorn_config(app, access_log=access_log)
    _AnnouncingServer(config, f"{ANNOUNCE}{url} ({summary}; Ctrl-C stops)").run(sockets=[sock])


def uvicorn_config(app, *, access_log: bool = False) -> uvicorn.Config:  # type: ignore[no-untyped-def]
    """The server's limits (SECURITY.md: the service's connections); `serve` and the tests run this one."""
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"  # stdout is for results only
    return uvicorn.Config(
        app,
        log_level="info" if access_log else "warning",
        log_config=log_config,
        access_log=access_log,
        timeout_graceful_shutdown=5,
        http=TimedH11Protocol,
        timeout_keep_alive=KEEP_ALIVE_S,  # an idle kept-alive connection
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,  # a head arriving in pieces (TimedH11Protocol: in one)
        limit_concurrency=MAX_CONNECTIONS,  # beyond this, 503 at once instead of running out of file descriptors
    )


_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s"
)


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for receiving each request: a client that sends its headers or its
    body too slowly (or nothing at all) is cut after REQUEST_TIMEOUT_S instead of holding a connection forever.
    The time the app then takes to answer is not limited (a model call under load can take seconds)."""

    request_timeout_s = REQUEST_TIMEOUT_S

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        super().connection_made(transport)
        self._head = b""
        self._arm()

    def data_received(self, data: bytes) -> None:
        """h11 limits only a head that arrives in pieces: one that arrives whole (any size a socket buffer holds)
        would be parsed. So the request line and headers are measured here, up to their blank line."""
        if self.conn.their_state is h11.IDLE:  # the head of a request is still arriving
            self._head = (self._head + data)[: MAX_HEAD_BYTES + 1]
            end = self._head.find(b"\r\n\r\n")
            if (end + 4 if end >= 0 else len(self._head)) > MAX_HEAD_BYTES:
                body = b'{"detail": "the request line and headers are longer than %d bytes"}' % MAX_HEAD_BYTES
                self.transport.write(_TOO_LARGE % (len(body), body))
                self.transport.close()
                return
        else:
            self._head = b""
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.SEND_BODY and self.conn.their_state is not h11.IDLE:
            self._disarm()  # the whole request is in (DONE), or the connection is ending: nothing to wait for

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._head = b""  # the next request's head is measured from its first byte
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._request_timer = self.loop.call_later(self.request_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        timer = getattr(self, "_request_timer", None)
        if timer is not None:
            timer.cancel()
            self._request_timer = None

    def _too_slow(self) -> None:
        self._request_timer = None
        if self.transport.is_closing() or self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            return
        # just close (h11 cannot answer a request whose headers never arrived); a stalled body: the app sees a
        # disconnect
        self.transport.close()


class _AnnouncingServer(uvicorn.Server):
    """Says where it listens once it really does (after the lifespan start-up has loaded the model)."""

    def __init__(self, config: uvicorn.Config, line: str):
        super().__init__(config)
        self.line = line

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            print(self.line, file=sys.stderr, flush=True)


@dataclass
class ServerProcess:
    url: str
    proc: subprocess.Popen
    log: list[str] = field(default_factory=list)  # the server's stderr, for failure messages


@contextmanager
def spawned(
    home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 180.0
) -> Iterator[ServerProcess]:
    """`imgidx --home HOME serve --port 0 ARGS…` as a child process; yields once it listens, stops it after.

    `env` is the child's whole environment (default: this process's)."""
    cmd: Sequence[str] = [sys.executable, "-m", "imgidx", "--home", str(home), "serve", "--port", "0", *args]
    env = dict(os.environ if env is None else env)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    server = ServerProcess("", proc)
    ready = threading.Event()

    def drain() -> None:  # keep reading, or a chatty server would block on a full pipe
        assert proc.stderr is not None
        for line in proc.stderr:
            server.log.append(line.rstrip("\n"))
            if line.startswith(ANNOUNCE):
                server.url = line[len(ANNOUNCE) :].split()[0]
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        deadline = time.monotonic() + timeout
        while not ready.wait(0.2):
            if time.monotonic() > deadline:
                raise TimeoutError(f"imgidx serve did not start within {timeout:.0f} s: " + "\n".join(server.log))
        if not server.url:
            raise RuntimeError(f"imgidx serve exited ({proc.wait()}): " + "\n".join(server.log[-20:]))
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
