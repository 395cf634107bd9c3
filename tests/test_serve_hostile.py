"""`imgidx serve` against hostile requests (issue 13.5 and 13.7): numbers that overflow, JSON nested too deep,
Host headers that only look like loopback, clients that hold a request open, heads over 16 KiB, idle kept-alive
connections. Each answers 4xx (or is cut) with no traceback in the server's log. (A folder photo that is a symlink
outside its folder, the model queue and the connection limit: tests/test_serve_limits.py.)"""

from __future__ import annotations

import re
import socket
import threading
import time
from urllib.parse import urlparse

import pytest
import requests

from imgidx.service.server import KEEP_ALIVE_S, MAX_HEAD_BYTES, REQUEST_TIMEOUT_S

BAD_BODIES = [
    '{"id": Infinity}',
    '{"k": Infinity, "id": 1}',
    '{"id": -Infinity}',
    '{"id": NaN}',
    '{"id": 1e300}',
    '{"id": 2.5}',
    '{"id": 99999999999999999999999}',
    '{"id": 1, "k": 99999999999999999999999}',
    '{"id": 1, "collection": {"a": 1}}',
    "[" * 100_000 + "]" * 100_000,
    '{"id": ' + "[" * 100_000 + "]" * 100_000 + "}",
]


def _no_traceback(server) -> None:
    time.sleep(0.2)  # the log is drained by a thread
    assert not [line for line in server.log if "Traceback" in line or "Exception" in line], server.log[-30:]


@pytest.mark.parametrize("body", BAD_BODIES, ids=lambda b: b[:30])
@pytest.mark.parametrize("route", ["similar", "classify/shapes"])
def test_bad_numbers_and_deep_json_answer_400(server, route, body):
    if route.startswith("classify") and '"k"' in body:
        pytest.skip("classify has no k")
    r = requests.post(server.url + route, data=body, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert r.json()["detail"] and "Traceback" not in r.text
    _no_traceback(server)


def test_classify_ids_out_of_range_answer_400(server):
    for ids in ([99999999999999999999999], [1e300], ["x"], [True]):
        r = requests.post(server.url + "classify/shapes", json={"ids": ids}, timeout=30)
        assert r.status_code == 400, (ids, r.status_code, r.text[:300])
    _no_traceback(server)


@pytest.mark.parametrize("number", ["99999999999999999999999", "9223372036854775808", "18446744073709551616"])
@pytest.mark.parametrize("suffix", ["", "/image", "/image?size=64"])
def test_ids_beyond_sqlite_answer_404(server, number, suffix):
    r = requests.get(f"{server.url}photos/{number}{suffix}", timeout=30)
    assert r.status_code == 404, (r.status_code, r.text[:300])
    assert r.json()["detail"].startswith("no photo with id")
    _no_traceback(server)


def test_the_largest_sqlite_id_is_merely_not_found(server):
    r = requests.get(f"{server.url}photos/9223372036854775807", timeout=30)
    assert r.status_code == 404 and r.json()["detail"] == "no photo with id 9223372036854775807"


@pytest.mark.parametrize(
    "host", ["localhost:80@evil.com", "[::1]evil.com", "127.0.0.1:80:81", "localhost:99999", "[::1", "local host"]
)
def test_host_values_that_only_look_like_loopback_are_refused(server, host):
    r = requests.get(server.url + "healthz", headers={"Host": host}, timeout=30)
    assert r.status_code in (400, 403), (host, r.status_code)  # 400: h11 itself refuses a malformed header
    assert requests.get(server.url + "healthz", timeout=30).status_code == 200


def _held(url: str, first: bytes, drip: bytes | None) -> float:
    """Send `first`, then `drip` every 2 s (or nothing); seconds until the server closes the connection."""
    u = urlparse(url)
    start = time.monotonic()
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        s.sendall(first)
        while time.monotonic() - start < 60:
            try:
                if drip is not None:
                    s.sendall(drip)
                s.settimeout(2)
                if s.recv(4096) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:  # reset, or a write to a closed connection
                break
    return time.monotonic() - start


@pytest.mark.slow
@pytest.mark.long  # waits out the 30 s request deadline: make test-long (CI runs it)
def test_slow_clients_are_cut_before_40_s(server):
    cases = {
        "nothing": (b"", None),
        "half the headers": (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", b"a"),
        "a dripping body": (b"POST /similar HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n", b"x"),
    }
    took: dict[str, float] = {}
    threads = [
        threading.Thread(target=lambda n=name, c=case: took.__setitem__(n, _held(server.url, *c)))
        for name, case in cases.items()
    ]
    for t in threads:
        t.start()
    assert requests.get(server.url + "healthz", timeout=30).status_code == 200  # others are served meanwhile
    for t in threads:
        t.join()
    for name, seconds in took.items():
        assert REQUEST_TIMEOUT_S - 1 <= seconds < 40, (name, seconds)


def _answer(url: str, request: bytes, timeout: float = 30) -> tuple[bytes, bool]:
    """Send `request` whole, in one write; the answer's status line, and whether the server then closed."""
    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        if data.startswith(b"HTTP/1.1 200"):
            return data.split(b"\r\n", 1)[0], False
        try:
            s.settimeout(5)
            while s.recv(65536):  # the rest of the refusal's short body, then the end
                pass
            closed = True
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            closed = False
    return data.split(b"\r\n", 1)[0], closed


def _head_of(size: int) -> bytes:
    """A GET whose request line, headers and blank line are exactly `size` bytes."""
    start = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: "
    return start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"


def test_request_heads_up_to_16_kib_are_answered_and_longer_ones_refused_with_431(server):
    """SECURITY.md: request line and headers at most 16 KiB, also when the whole head arrives in one piece."""
    assert len(_head_of(MAX_HEAD_BYTES)) == MAX_HEAD_BYTES == 16 * 1024
    assert _answer(server.url, _head_of(MAX_HEAD_BYTES))[0].startswith(b"HTTP/1.1 200")
    for size in (MAX_HEAD_BYTES + 1, 20 * 1024):  # 20 KiB in one piece was answered 200 before
        status, closed = _answer(server.url, _head_of(size))
        assert status.startswith(b"HTTP/1.1 431") and closed, (size, status)
    _no_traceback(server)


@pytest.mark.long  # waits the 5 s out: make test-long (CI runs it)
def test_an_idle_kept_alive_connection_is_closed_after_5_s(server):
    u = urlparse(server.url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        for _ in range(2):  # kept alive: a second request on the same connection is answered
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                data += s.recv(65536)
            head, body = data.split(b"\r\n\r\n", 1)
            length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
            while len(body) < length:
                body += s.recv(65536)
            assert head.startswith(b"HTTP/1.1 200") and len(body) == length
        idle = time.monotonic()
        while s.recv(65536):
            pass
        waited = time.monotonic() - idle
    assert KEEP_ALIVE_S - 0.5 <= waited < KEEP_ALIVE_S + 5, waited  # + the loaded machine's slack
