"""Security basics from SECURITY.md: http(s) only (redirects too), file names never from remote text, data-home
files created under the user's umask."""

from __future__ import annotations

import os
import re
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from imgidx.indexer.fetch import Download, Fetcher
from imgidx.indexer.pipeline import Job, Loader
from tests.subproc import imgidx_env, run


class Redirector(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(302)
        self.send_header("Location", "file:///etc/passwd")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_only_http_and_https_even_after_a_redirect():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        f = Fetcher(retries=3, sleep=lambda s: None, allow_private_hosts=True)
        for url in ("file:///etc/passwd", "ftp://example.com/x.jpg", "gopher://x/", "data:image/png;base64,AAAA"):
            got = f.fetch(url)
            assert got.data is None and "scheme" in got.error and not got.retryable, url
        got = f.fetch(f"http://127.0.0.1:{server.server_address[1]}/photo.jpg")
        assert got.data is None and not got.retryable and "refused" in got.error, got
    finally:
        server.shutdown()


class Serves:
    workers = 1

    def __init__(self, data: bytes):
        self.data = data

    def fetch(self, url):
        return Download(self.data, final_url=url)


def png() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


def test_file_names_come_from_the_numeric_id_and_the_bytes_never_from_remote_text(tmp_path):
    loader = Loader(tmp_path, Serves(png()))
    done = loader(Job(7, "flickr", "123456", "http://x/../../evil name.exe?x=/etc", None))
    assert done.error is None and done.path == "photos/flickr/56/123456.png"  # .png: what the bytes are
    stored = {"photos/flickr/56/123456.png"}
    for bad in ("../../etc/passwd", "12/34", "1.jpg", "", "٣٤٥"):  # the last is Arabic-Indic digits
        # an id that is not ASCII digits never becomes a name: the file is named from its hash (indexer/layout.py)
        got = loader(Job(8, "flickr", bad, "http://x/1.jpg", None))
        assert got.error is None and re.fullmatch(r"photos/flickr/[0-9a-f]{2}/h[0-9a-f]{32}\.png", got.path), bad
        stored.add(got.path)
    assert {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()} == stored


@pytest.mark.slow
def test_data_home_files_are_created_under_the_users_umask(fresh_fake_flickr, tmp_path):
    home = tmp_path / "home"
    env = imgidx_env(home, fresh_fake_flickr)
    model = ["--weights", "random:0", "--layer", "block5_pool", "--batch-size", "4"]
    private = lambda: os.umask(0o077)  # noqa: E731
    for args in (["build", "dog", "-n", "4", *model], ["verify", "--repair"]):  # repair rewrites the index
        r = run(args, env, preexec_fn=private)
        assert r.returncode == 0, r.stderr
    found = [home, *home.rglob("*")]
    assert {p.name for p in found} >= {"imgidx.sqlite", "faiss.index", "build.lock", "photos", "index"}
    loose = [(str(p), oct(p.stat().st_mode)) for p in found if stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert not loose, loose
    assert not [p for p in found if p.is_file() and p.stat().st_mode & 0o111]  # nothing executable
