"""The service's promises over real HTTP (SECURITY.md, README "imgidx serve"), on a server in this process so that
the test can see its model queue: a folder photo that is a symlink to a file outside its folder is not served,
uploads beyond the 512 waiting for the model are answered 503 with Retry-After, and a review waits 5 s for a
build's write transaction, then answers 503. The server is the one `imgidx serve` runs (`uvicorn_config`: the
same protocol and limits), bound to a free loopback port; the connection limit is checked here too, where no
other test's connection is open."""

from __future__ import annotations

import contextlib
import resource
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import requests
import uvicorn
from typer.testing import CliRunner

from imgidx.cli.app import app as cli
from imgidx.indexer.config import Settings
from imgidx.indexer.layout import DB_NAME
from imgidx.service.api import create_app
from imgidx.service.batcher import Busy
from imgidx.service.server import MAX_CONNECTIONS, uvicorn_config
from imgidx.service.service import WRITE_BUSY_S, ServeOptions, Service
from tests.conftest import jpeg_bytes, pattern_image
from tests.serving import RANDOM

# builds an index and loads the model; the queue, connection, symlink and review-wait limits: make test-long (CI)
pytestmark = [pytest.mark.slow, pytest.mark.long]

MAX_QUEUE = 512  # the README's and SECURITY.md's bound
MAX_BATCH = 2
JPEG = {"content-type": "image/jpeg"}


@dataclass(frozen=True)
class Linked:
    url: str
    home: Path
    service: Service
    folder: Path
    outside: Path
    ids: dict[str, int]  # source_id -> id


@pytest.fixture(scope="module")
def linked(tmp_path_factory) -> Iterator[Linked]:
    root = tmp_path_factory.mktemp("linked")
    folder, outside, home = root / "photos", root / "secret", root / "home"
    folder.mkdir()
    outside.mkdir()
    pattern_image(1).save(folder / "inside.jpg")
    pattern_image(2).save(outside / "secret.jpg")
    (folder / "link.jpg").symlink_to(outside / "secret.jpg")
    r = CliRunner().invoke(cli, ["--home", str(home), "build", "--from-dir", str(folder), *RANDOM])
    assert r.exit_code == 0, r.stdout + r.stderr

    service = Service(Settings.from_env().with_options(home=home), ServeOptions(max_batch=MAX_BATCH))
    server = uvicorn.Server(uvicorn_config(create_app(service)))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300  # loads the model first; a loaded machine is slow
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the in-process server did not start"
        time.sleep(0.1)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    try:
        ids = {requests.get(f"{url}photos/{i}", timeout=60).json()["source_id"]: i for i in (1, 2)}
        yield Linked(url, home, service, folder, outside, ids)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def test_a_folder_photo_that_links_outside_its_folder_is_not_served_over_http(linked):
    inside = requests.get(f"{linked.url}photos/{linked.ids['inside.jpg']}/image", timeout=60)
    assert inside.status_code == 200 and inside.content == (linked.folder / "inside.jpg").read_bytes()
    for query in ("", "?size=64"):  # the file itself, and a thumbnail made from it
        r = requests.get(f"{linked.url}photos/{linked.ids['link.jpg']}/image{query}", timeout=60)
        assert r.status_code == 404 and "outside its folder" in r.json()["detail"], r.text
        assert str(linked.outside) not in r.text and str(linked.folder) not in r.text  # no local path leaves


def test_uploads_beyond_the_model_queue_are_answered_503_with_retry_after(linked):
    """Fill the model's queue while the model thread works: exactly MAX_QUEUE wait (plus what the thread took
    meanwhile), and the next upload over HTTP is 503 with Retry-After. The queue is kept full while that upload
    is on its way (the thread frees a slot per batch); then the waiting ones are cancelled and uploads are
    answered again."""
    batcher = linked.service._batcher  # the model behind its queue (loaded at start-up)
    assert batcher is not None
    pixels = np.zeros((224, 224, 3), dtype=np.uint8)
    photo = jpeg_bytes(pattern_image(3))
    waiting, stop = [], threading.Event()

    def fill() -> int:
        added = 0
        with contextlib.suppress(Busy):
            while added < 10 * MAX_QUEUE:
                waiting.append(batcher.submit(pixels))
                added += 1
        return added

    def keep_full() -> None:
        while not stop.is_set():
            fill()
            time.sleep(0.001)

    first = fill()
    topping = threading.Thread(target=keep_full, daemon=True)
    topping.start()
    try:
        r = requests.post(linked.url + "similar", data=photo, headers=JPEG, timeout=60)
    finally:
        stop.set()
        topping.join(10)
        for f in waiting:
            f.cancel()
    assert MAX_QUEUE <= first <= MAX_QUEUE + 2 * MAX_BATCH  # the thread holds at most a batch or two
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and "waiting" in r.json()["detail"]
    deadline = time.monotonic() + 300  # the cancelled ones leave the queue as the thread takes them
    while (again := requests.post(linked.url + "similar", data=photo, headers=JPEG, timeout=120)).status_code == 503:
        assert time.monotonic() < deadline
        time.sleep(float(again.headers["retry-after"]))  # as a client does
    assert again.status_code == 200 and again.json()["hits"]


def _get(url: str) -> bytes:
    """The status line of a GET /healthz on a new connection."""
    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=60) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return s.recv(65536).split(b"\r\n", 1)[0]


def test_at_most_1000_connections_at_once_then_503(linked):
    """SECURITY.md: at most 1000 connections. uvicorn counts the connection asking too: with 998 others open a
    request is answered, with 999 it is refused at once (503)."""
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 2 * MAX_CONNECTIONS + 500:  # both ends live in this process
        pytest.skip(f"needs a file-descriptor limit above {2 * MAX_CONNECTIONS + 500} (ulimit -n)")
    u = urlparse(linked.url)
    idle = []
    try:
        for _ in range(MAX_CONNECTIONS - 2):
            idle.append(socket.create_connection((u.hostname, u.port), timeout=60))
        assert _get(linked.url).startswith(b"HTTP/1.1 200")  # the 999th connection
        idle.append(socket.create_connection((u.hostname, u.port), timeout=60))
        assert _get(linked.url).startswith(b"HTTP/1.1 503")  # the 1000th
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 30
    while not _get(linked.url).startswith(b"HTTP/1.1 200"):  # the server notices the closes
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_review_waits_5_s_for_a_builds_write_then_answers_503(linked):
    """README ("Beside a build"): a review waits up to 5 s for a build's write transaction, then answers 503; once
    the transaction ends the same review is stored. The build's transaction is held here by a plain connection."""
    meta = requests.get(f"{linked.url}photos/1", timeout=60).json()
    body = {"collection": meta["collections"][0], "id": 1, "decision": "keep", "source": "clean", "reviewer": "t"}
    guard = {"origin": linked.url.rstrip("/"), "sec-fetch-site": "same-origin"}
    build = sqlite3.connect(linked.home / DB_NAME)
    try:
        build.execute("BEGIN IMMEDIATE")  # what a build's commit holds
        start = time.monotonic()
        r = requests.post(linked.url + "reviews", json=body, headers=guard, timeout=60)
        waited = time.monotonic() - start
    finally:
        build.rollback()
        build.close()
    assert r.status_code == 503 and WRITE_BUSY_S - 0.5 <= waited < WRITE_BUSY_S + 10, (r.status_code, waited, r.text)
    r = requests.post(linked.url + "reviews", json=body, headers=guard, timeout=60)
    assert r.status_code == 200 and r.json()["flagged"] is False, r.text
