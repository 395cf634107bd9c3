"""SSRF and credentials (issue 13.4): photo URLs that point inward are refused by default, after DNS and after
every redirect; a setting allows them; user names and passwords in URLs never leave the machine.

A real HTTP server on a loopback port plays the internal host. DNS is the only thing faked: a name that
resolves to a public address (which the fake network routes to that same local server), to show that the
check follows the connection through redirects."""

from __future__ import annotations

import io
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from imgidx.indexer.compose import make_fetcher
from imgidx.indexer.config import Settings
from imgidx.indexer.errors import ConfigError
from imgidx.indexer.fetch import Fetcher, address_allowed, strip_userinfo

PUBLIC = "93.184.216.34"  # what the fake DNS answers for cdn.example


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(buf, "PNG")
    return buf.getvalue()


class Internal(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        Internal.seen.append((self.path, self.headers.get("Authorization")))
        if self.path.startswith("/to/"):  # /to/<url>: a redirect there
            self.send_response(302)
            self.send_header("Location", self.path[4:])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = png()
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def internal(monkeypatch):
    Internal.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Internal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    real = socket.getaddrinfo

    def dns(host, p, *args, **kw):  # the remote world: cdn.example is public, and routed to our server
        if host == "cdn.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, p))]
        if host == "rebind.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p))]
        if host == PUBLIC:
            return real("127.0.0.1", port, *args, **kw)
        return real(host, p, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", dns)
    monkeypatch.delenv("IMGIDX_ALLOW_PRIVATE_HOSTS", raising=False)
    yield port
    server.shutdown()
    server.server_close()


def quick(**kw) -> Fetcher:
    return Fetcher(retries=0, connect_timeout=2, read_timeout=2, deadline=5, **kw)


def test_public_addresses_only():
    for ip in ("127.0.0.1", "127.9.9.9", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",
               "100.64.0.1", "224.0.0.1", "239.255.255.250", "::1", "fe80::1", "fc00::1", "ff02::1",
               "::ffff:127.0.0.1", "::"):  # fmt: skip
        assert not address_allowed(ip), ip
    for ip in (PUBLIC, "8.8.8.8", "2606:4700:4700::1111"):
        assert address_allowed(ip), ip


def test_inward_urls_are_refused_by_default(internal):
    port = internal
    urls = [
        f"http://127.0.0.1:{port}/a.png",
        f"http://2130706433:{port}/a.png",  # 127.0.0.1 as one decimal number
        f"http://0x7f000001:{port}/a.png",
        f"http://127.1:{port}/a.png",
        f"http://localhost:{port}/a.png",
        f"http://0.0.0.0:{port}/a.png",
        f"http://rebind.example:{port}/a.png",  # a name that resolves inward
        f"http://user:pw@127.0.0.1:{port}/a.png",
    ]
    for url in urls:
        got = quick().fetch(url)
        assert got.data is None and got.error.startswith("refused address"), (url, got)
        assert not got.retry_later and "IMGIDX_ALLOW_PRIVATE_HOSTS=1" in got.error  # final: stored not retryable
    assert Internal.seen == []  # not one request reached the internal host


def test_a_redirect_inward_is_refused_at_the_redirect(internal):
    port = internal
    got = quick().fetch(f"http://cdn.example:{port}/a.png")  # public, and really fetched
    assert got.data == png()
    got = quick().fetch(f"http://cdn.example:{port}/to/http://127.0.0.1:{port}/secret.png")
    assert got.data is None and got.error.startswith("refused address 127.0.0.1"), got
    got = quick().fetch(f"http://cdn.example:{port}/to/http://2130706433:{port}/secret.png")
    assert got.data is None and got.error.startswith("refused address 2130706433 (127.0.0.1)"), got
    assert [path for path, _ in Internal.seen if "secret" in path and not path.startswith("/to/")] == []


def test_the_setting_allows_them(internal, monkeypatch):
    port = internal
    assert Settings.from_env({}).allow_private_hosts is False
    assert Settings.from_env({"IMGIDX_ALLOW_PRIVATE_HOSTS": "1"}).allow_private_hosts is True
    with pytest.raises(ConfigError, match="IMGIDX_ALLOW_PRIVATE_HOSTS must be 1 or 0"):
        Settings.from_env({"IMGIDX_ALLOW_PRIVATE_HOSTS": "maybe"})
    for settings, ok in ((Settings(), False), (Settings(allow_private_hosts=True), True)):
        got = make_fetcher(settings, 1).fetch(f"http://2130706433:{port}/a.png")
        assert (got.data == png()) is ok, got


def test_userinfo_and_netrc_credentials_never_leave(internal, monkeypatch, tmp_path):
    port = internal
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login n password netrcpw\nmachine cdn.example login n password netrcpw\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert strip_userinfo("http://u:p@h:1/x?y") == "http://h:1/x?y" and strip_userinfo("http://h/a@b") == "http://h/a@b"
    allowed = quick(allow_private_hosts=True)
    for url in (
        f"http://user:pw@127.0.0.1:{port}/a.png",
        f"http://127.0.0.1:{port}/to/http://user:pw@127.0.0.1:{port}/b.png",
        f"http://user:pw@127.0.0.1:{port}/to/http://u2:p2@localhost:{port}/c.png",
    ):
        assert allowed.fetch(url).data == png(), url
    assert quick().fetch(f"http://user:pw@cdn.example:{port}/d.png").data == png()
    assert len(Internal.seen) == 6 and all(auth is None for _, auth in Internal.seen), Internal.seen


@pytest.mark.long  # two real builds: make test-long (CI runs it)
@pytest.mark.slow
def test_a_refused_address_is_a_final_failure_that_retry_failed_leaves_alone(internal, tmp_path):
    """An address refused as private stays private: stored as not retryable, so --retry-failed never asks again."""
    import json

    from typer.testing import CliRunner

    from imgidx.cli.app import app

    port = internal
    urls = tmp_path / "list.csv"
    urls.write_text(f"url,id\nhttp://cdn.example:{port}/a.png,public\nhttp://127.0.0.1:{port}/b.png,inward\n")
    model = ["--weights", "random:0", "--layer", "block5_pool", "--batch-size", "4"]
    runner = CliRunner()
    first = runner.invoke(app, ["build", "--from-urls", str(urls), *model, "--json"])
    assert first.exit_code == 0, first.stderr
    assert json.loads(first.stdout)["embedded"] == 1
    [failed] = json.loads(runner.invoke(app, ["info", "--failures", "--json"]).stdout)["failed"]
    assert failed["source_id"] == "inward" and failed["error"].startswith("refused address 127.0.0.1")
    assert failed["retryable"] in (0, False)
    seen = len(Internal.seen)
    again = runner.invoke(app, ["build", "--from-urls", str(urls), *model, "--retry-failed", "--json"])
    report = json.loads(again.stdout)
    assert again.exit_code == 0 and report["failed_before"] == 1 and report["skipped"] == 0, again.stderr
    assert len(Internal.seen) == seen  # nothing asked of anyone
