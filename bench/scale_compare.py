"""Two versions of imgidx, command by command, on one large home: wall time, peak RSS, same output or not.

    python -m bench.scale_compare --home HOME --old /path/to/old/venv/bin/python [--new PYTHON] [--rounds 3]

Each command of COMMANDS runs as `PYTHON -m imgidx ...` (IMGIDX_HOME=HOME, from a neutral directory, under
/usr/bin/time for the peak RSS), old and new alternating, so that both see the same machine; the outputs of the
first round are compared byte for byte. The home is filled by `python -m bench.scale_store --n 1000000 --keep`.
Writes bench/out/scale_compare.json. The old version is any other checkout with its own environment (e.g. a git
worktree of an earlier commit and a venv with `pip install --no-deps -e` of it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {
    "info": ["info"],
    "similar --id": ["similar", "--id", "500001", "--json"],
    "similar --id --in": ["similar", "--id", "500001", "--in", "c0125"],
    "duplicates": ["duplicates", "c0125", "--no-pixel-check", "--json"],
    "export": ["export", "{out}", "c0125", "--json"],
    "train": ["train", "scale-compare", "c0125", "c0126", "--json"],
    "clean": ["clean", "c0125", "--classifier", "none", "--json"],
}


def run(python: str, args: list[str], home: str, cwd: str) -> tuple[float, float, int, str]:
    out = Path(cwd) / "export"
    shutil.rmtree(out, ignore_errors=True)
    args = [a.replace("{out}", str(out)) for a in args]
    start = time.monotonic()
    p = subprocess.run(
        ["/usr/bin/time", "-f", "%M", python, "-m", "imgidx", *args],
        env={**os.environ, "IMGIDX_HOME": home},
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    wall = time.monotonic() - start
    rss_gb = int(p.stderr.strip().splitlines()[-1]) / 1e6
    return round(wall, 2), round(rss_gb, 2), p.returncode, p.stdout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True)
    ap.add_argument("--old", required=True, help="python of the old version")
    ap.add_argument("--new", default=sys.executable, help="python of the new version (default: this one)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default=",".join(COMMANDS), help="comma-separated names of COMMANDS")
    a = ap.parse_args(argv)
    pythons = {"old": a.old, "new": a.new}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as cwd:
        for name in a.only.split(","):
            row = results[name] = {"old": [], "new": [], "load_average": [], "same_output": None}
            outputs = {}
            for r in range(a.rounds):
                for version, python in pythons.items():
                    wall, rss, rc, stdout = run(python, COMMANDS[name], a.home, cwd)
                    row[version].append({"s": wall, "rss_gb": rss, "exit": rc})
                    row["load_average"].append(round(os.getloadavg()[0], 2))
                    if r == 0:
                        outputs[version] = stdout
            row["same_output"] = outputs["old"] == outputs["new"]
            print(
                f"{name:20s} old {[x['s'] for x in row['old']]} new {[x['s'] for x in row['new']]} "
                f"RSS {row['old'][0]['rss_gb']} -> {row['new'][0]['rss_gb']} GB  same output: {row['same_output']}",
                flush=True,
            )
    classifier = Path(a.home) / "classifiers" / "scale-compare.joblib"
    classifier.unlink(missing_ok=True)
    out = Path(__file__).parent / "out" / "scale_compare.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"home": a.home, "pythons": pythons, "results": results}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
