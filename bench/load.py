"""Load test of `imgidx serve`: N concurrent clients on loopback for a fixed time.

    python -m bench.load                       # builds a small index (random weights), starts a server, 50 clients
    python -m bench.load --url http://127.0.0.1:8000/ --token T --clients 50 --duration 30 --mode upload

Each client sends one request at a time, back to back, until the time is up (then in-flight requests finish or
time out, so a run is bounded by duration + timeout). Modes: `upload` (POST /similar with a photo: decode + the
batched model + search), `id` (POST /similar by id: no model), `mixed` (half uploads, a third by id, the rest
thumbnails). Reports throughput, p50/p90/p99/max latency, errors by kind, and the server's own count of model
calls (how well concurrent uploads were batched). Exit code 1 when errors exceed --max-errors (default 0).

With the local server (no --url, or with --home), the run first times one bare model call at batch 1 in this
process (the index's own model, the server idle), then one client uploading back to back (--single-duration), then
the N clients: `single_upload_over_bare_model` is the one-client upload p50 over the bare call's p50 (goal <= 1.5:
an upload to an idle service costs about one image's model time, not a padded batch's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

MODES = ("upload", "id", "mixed")


@dataclass
class Samples:
    latencies: dict[str, list[float]] = field(default_factory=dict)  # by request kind, successful only
    errors: Counter = field(default_factory=Counter)  # "kind: status" or "kind: ExceptionName"

    def add(self, kind: str, seconds: float, error: str | None) -> None:
        if error is None:
            self.latencies.setdefault(kind, []).append(seconds)
        else:
            self.errors[f"{kind}: {error}"] += 1


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    a = np.asarray(values) * 1000
    out = {f"p{q}_ms": round(float(np.percentile(a, q)), 1) for q in (50, 90, 99)}
    return out | {"max_ms": round(float(a.max()), 1)}


def pick(mode: str, rng: random.Random) -> str:
    if mode != "mixed":
        return mode
    r = rng.random()
    return "upload" if r < 0.5 else "id" if r < 0.83 else "thumb"


async def one_request(client: httpx.AsyncClient, kind: str, photos: list[bytes], ids: list[int], rng, k: int):
    if kind == "upload":
        files = {"file": ("q.jpg", rng.choice(photos), "image/jpeg")}
        return await client.post("/similar", params={"k": k}, files=files)
    if kind == "id":
        return await client.post("/similar", json={"id": rng.choice(ids), "k": k})
    return await client.get(f"/photos/{rng.choice(ids)}/image", params={"size": 240})


async def client_loop(n: int, client, args, photos, ids, deadline: float, samples: Samples) -> None:
    rng = random.Random(n)
    while time.monotonic() < deadline:
        kind = pick(args.mode, rng)
        start = time.perf_counter()
        try:
            r = await one_request(client, kind, photos, ids, rng, args.k)
            error = None if r.status_code == 200 else str(r.status_code)
        except httpx.HTTPError as e:
            error = type(e).__name__
        samples.add(kind, time.perf_counter() - start, error)


async def server_counts(client: httpx.AsyncClient) -> dict[str, float]:
    wanted = ("imgidx_model_calls_total", "imgidx_model_images_total", "imgidx_index_vectors")
    out = dict.fromkeys(wanted, 0.0)
    with contextlib.suppress(httpx.HTTPError):
        for line in (await client.get("/metrics")).text.splitlines():
            name, _, value = line.partition(" ")
            if name in out:
                out[name] = float(value)
    return out


async def run_load(args, url: str, photos: list[bytes]) -> dict:
    headers = {"authorization": f"Bearer {args.token}"} if args.token else {}
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    timeout = httpx.Timeout(args.timeout, connect=10)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=timeout) as client:
        health = (await client.get("/healthz")).raise_for_status().json()
        ids = list(range(1, int(health["photos"]) + 1))
        before = await server_counts(client)
        samples = Samples()
        start = time.monotonic()
        deadline = start + args.duration
        loops = [client_loop(n, client, args, photos, ids, deadline, samples) for n in range(args.clients)]
        await asyncio.wait_for(asyncio.gather(*loops), timeout=args.duration + args.timeout + 30)
        elapsed = time.monotonic() - start
        after = await server_counts(client)
    return report(args, samples, elapsed, before, after)


def report(args, samples: Samples, elapsed: float, before: dict, after: dict) -> dict:
    every = [x for values in samples.latencies.values() for x in values]
    ok, errors = len(every), sum(samples.errors.values())
    calls = after["imgidx_model_calls_total"] - before["imgidx_model_calls_total"]
    images = after["imgidx_model_images_total"] - before["imgidx_model_images_total"]
    return {
        "clients": args.clients,
        "duration_s": round(elapsed, 2),
        "mode": args.mode,
        "requests": ok + errors,
        "ok": ok,
        "errors": errors,
        "errors_by_kind": dict(samples.errors),
        "throughput_rps": round(ok / elapsed, 1),
        "latency": percentiles(every),
        "latency_by_kind": {kind: percentiles(v) | {"n": len(v)} for kind, v in sorted(samples.latencies.items())},
        "model_calls": int(calls),
        "images_embedded": int(images),
        "mean_batch": round(images / calls, 2) if calls else None,
        "index_vectors": int(after["imgidx_index_vectors"]),
    }


def print_report(r: dict) -> None:
    if r.get("bare_model_batch1"):
        b = r["bare_model_batch1"]
        print(f"bare model call, batch 1: p50 {b['p50_ms']} ms  min {b['min_ms']} ms  (n={b['n']})")
    if r.get("single_client_upload"):
        s = r["single_client_upload"]["latency"]
        print(f"1 client, uploads: p50 {s['p50_ms']} ms  p99 {s['p99_ms']} ms  max {s['max_ms']} ms")
    if "single_upload_over_bare_model" in r:
        print(f"  one upload / one bare model call: {r['single_upload_over_bare_model']} (goal <= 1.5)")
    lat = r["latency"]
    print(f"imgidx serve load test: {r['clients']} clients, {r['mode']}, {r['duration_s']} s")
    print(f"  requests {r['requests']}  ok {r['ok']}  errors {r['errors']}  throughput {r['throughput_rps']} req/s")
    print(f"  latency ms  p50 {lat['p50_ms']}  p90 {lat['p90_ms']}  p99 {lat['p99_ms']}  max {lat['max_ms']}")
    for kind, p in r["latency_by_kind"].items():
        print(f"    {kind:7s} n={p['n']:<6d} p50 {p['p50_ms']}  p99 {p['p99_ms']}  max {p['max_ms']}")
    print(f"  model: {r['images_embedded']} images in {r['model_calls']} calls (mean batch {r['mean_batch']})")
    for kind, n in r["errors_by_kind"].items():
        print(f"  error {kind}: {n}")


def bare_model_ms(home: Path, photo: bytes, repeats: int = 20) -> dict[str, float]:
    """One model call on one prepared image, as the server would make it, timed `repeats` times after a warm-up."""
    from imgidx.indexer.compose import embedder_for_index
    from imgidx.indexer.config import Settings
    from imgidx.indexer.images import prepare
    from imgidx.indexer.store import Store

    settings = Settings.from_env().with_options(home=home)
    with Store(home, readonly=True) as store:
        embedder = embedder_for_index(store, settings, batch_size=1)
    pixels = prepare(photo)[None]
    for _ in range(3):
        embedder.raw(pixels)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        embedder.raw(pixels)
        times.append(time.perf_counter() - start)
    a = np.asarray(times) * 1000
    return {"p50_ms": round(float(np.median(a)), 1), "min_ms": round(float(a.min()), 1), "n": repeats}


async def run_all(args, url: str, photos: list[bytes], home: Path | None) -> dict:
    """Bare model call (when the index is here), one client uploading, then the N clients."""
    bare = bare_model_ms(home, photos[0]) if home is not None and photos else None
    single = None
    if photos and args.single_duration > 0:
        one = argparse.Namespace(**{**vars(args), "clients": 1, "mode": "upload", "duration": args.single_duration})
        single = await run_load(one, url, photos)
    result = await run_load(args, url, photos)
    result["bare_model_batch1"] = bare
    result["single_client_upload"] = single
    if bare and single and single["latency"]["p50_ms"]:
        result["single_upload_over_bare_model"] = round(single["latency"]["p50_ms"] / bare["p50_ms"], 2)
    return result


@contextlib.contextmanager
def local_server(photos: int, extra: list[str]) -> Iterator[tuple[str, list[bytes], Path]]:
    """A throw-away index of generated photos (random weights) and a server on a free loopback port."""
    from typer.testing import CliRunner

    from imgidx.cli.app import app
    from imgidx.search.demo import generate
    from imgidx.service.server import spawned

    with tempfile.TemporaryDirectory(prefix="imgidx-load-") as tmp:
        root = Path(tmp)
        generate(root / "photos", max(1, photos // 3))
        home = root / "home"
        build = ["--home", str(home), "build", "--from-dir", str(root / "photos"), "--weights", "random:0"]
        result = CliRunner().invoke(app, [*build, "--layer", "block5_pool"])
        if result.exit_code != 0:
            raise SystemExit(f"could not build the load-test index: {result.stderr}")
        queries = sorted((root / "demo-queries").glob("*.jpg")) + sorted((root / "photos").rglob("*.jpg"))[:9]
        print(f"bench.load: index of {photos} generated photos in {home}; starting the server", file=sys.stderr)
        env = {k: v for k, v in os.environ.items() if k != "IMGIDX_TOKEN"}
        with spawned(home, *extra, env=env) as server:
            yield server.url, [q.read_bytes() for q in queries], home


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    p.add_argument("--url", help="a running server (default: build a small index and start one)")
    p.add_argument("--token", help="its token, if it has one")
    p.add_argument("--photo", action="append", type=Path, help="query photo(s) for --url (repeatable)")
    p.add_argument("--home", type=Path, help="with --url: the server's data home, to time a bare model call too")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--single-duration", type=float, default=10.0, help="seconds of one client uploading first")
    p.add_argument("--duration", type=float, default=15.0, help="seconds of load")
    p.add_argument("--mode", choices=MODES, default="mixed")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds")
    p.add_argument("--photos", type=int, default=60, help="size of the generated index (without --url)")
    p.add_argument("--max-batch", type=int, default=32, help="server's --max-batch (without --url)")
    p.add_argument("--max-errors", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    args = p.parse_args(argv)
    if args.clients <= 0 or args.duration <= 0:
        p.error(f"--clients and --duration must be > 0; received {args.clients}, {args.duration}")
    if args.url:
        if not args.photo and args.mode != "id":
            p.error("--url with uploads needs --photo FILE (or use --mode id)")
        result = asyncio.run(run_all(args, args.url, [f.read_bytes() for f in args.photo or []], args.home))
    else:
        with local_server(args.photos, ["--max-batch", str(args.max_batch)]) as (url, photos, home):
            result = asyncio.run(run_all(args, url, photos, home))
    print_report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["errors"] > args.max_errors else 0


if __name__ == "__main__":
    sys.exit(main())
