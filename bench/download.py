"""Part `download`: photos/s through the build's fetch stage (real Fetcher, files written like a Flickr build)
from a local server that adds 50 ms per photo, against the concurrency bound workers / 0.05 s."""

from __future__ import annotations

import http.server
import shutil
import tempfile
import threading
import time
from pathlib import Path

from .common import OUT, Options, photo_files, table

LATENCY = 0.05


def _server(payload: dict[str, bytes]):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else headers and body meet a 40 ms delayed ACK

        def do_GET(self):  # noqa: N802 - http.server's name
            body = payload.get(self.path.rsplit("/", 1)[-1])
            time.sleep(LATENCY)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _measure(port: int, n: int, workers: int, decode: bool) -> float:
    from imgidx.indexer.fetch import Fetcher
    from imgidx.indexer.flow import cores, two_stage
    from imgidx.indexer.pipeline import Job, Loader

    home = Path(tempfile.mkdtemp(prefix="dl-", dir=OUT))
    try:
        loader = Loader(home, Fetcher(workers=workers, allow_private_hosts=True))  # the local fake
        jobs = [Job(i, "flickr", str(100000 + i), f"http://127.0.0.1:{port}/{i}.jpg", None) for i in range(n)]
        start = time.perf_counter()
        got = list(
            two_stage(
                jobs,
                loader.fetch,
                loader.decode if decode else (lambda x: x),
                fetch_workers=workers,
                decode_workers=cores(),
                window=3 * 64,
            )
        )
        elapsed = time.perf_counter() - start
        errors = [g.error for g in got if g.error]
        if errors:
            raise RuntimeError(f"{len(errors)} downloads failed, e.g. {errors[0]}")
        return n / elapsed
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(opts: Options) -> tuple[dict, str]:
    import os

    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    files = photo_files(200 if opts.quick else 800)
    n = len(files)
    payload = {f"{i}.jpg": f.read_bytes() for i, f in enumerate(files)}
    OUT.mkdir(parents=True, exist_ok=True)
    server = _server(payload)
    result, rows = {"latency_s": LATENCY, "photos": n, "runs": []}, []
    try:
        for workers in (4, 16) if opts.quick else (4, 16, 32):
            for decode in (False, True):
                got = _measure(server.server_port, n, workers, decode)
                bound = workers / LATENCY
                result["runs"].append(
                    {"workers": workers, "decode": decode, "photos_per_s": round(got, 1), "bound": bound}
                )
                rows.append((workers, "yes" if decode else "no", f"{got:.0f}", f"{bound:.0f}", f"{got / bound:.2f}"))
    finally:
        server.shutdown()
        server.server_close()
    title = f"3. download: {n} photos from a local server adding {LATENCY * 1000:.0f} ms each (photos/s)"
    return result, table(title, ["fetch workers", "+ decode", "photos/s", "bound", "of bound"], rows)
