"""Photos/s of a whole `imgidx build QUERY` from the local fake Flickr (search, download, decode, embed, index).

Usage: python -m bench.flickr_build [--count 100] [--layer fc2] [--weights random:0] [--precision bf16]
Random weights cost the same FLOPs as ImageNet ones; the fake photo host answers without added latency.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from tests.fake_flickr import FakeFlickr


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--layer", default="fc2")
    p.add_argument("--weights", default="random:0")
    p.add_argument("--precision", default=None)
    args = p.parse_args(argv)
    extra = ["--precision", args.precision] if args.precision else []
    with FakeFlickr(seed=0) as fake, tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "FLICKR_API_KEY": fake.api_key,
            "FLICKR_API_SECRET": fake.api_secret,
            "IMGIDX_FLICKR_REST_URL": fake.rest_url,
            "IMGIDX_HOME": home,
            "NO_PROXY": "127.0.0.1,localhost",
        }
        cmd = [
            sys.executable,
            "-m",
            "imgidx",
            "build",
            "cat",
            "-n",
            str(args.count),
            "--weights",
            args.weights,
            "--layer",
            args.layer,
            "--json",
            *extra,
        ]
        start = time.monotonic()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.monotonic() - start
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return done.returncode
    report = json.loads(done.stdout)
    result = {
        "count": args.count,
        "layer": args.layer,
        "embedded": report["embedded"],
        "skipped": report["skipped"],
        "build_seconds": report["seconds"],
        "photos_per_second": report["photos_per_second"],
        "wall_seconds_with_startup": round(wall, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
