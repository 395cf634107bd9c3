"""Two versions of imgidx, command by command, on one large home: wall time, peak RSS, same output or not.

    python -m bench.scale_compare --home HOME --old /path/to/old/venv/bin/python [--new PYTHON] [--rounds 3]

Each command of COMMANDS runs as a real `imgidx` subprocess (bench.scale_store.run_cli: wall time, the child's
peak RSS, and how many cores other processes used meanwhile), old and new alternating, so that both see the same
machine; the outputs of the first round are compared byte for byte. The home is filled by
`python -m bench.scale_store --n 1000000 --keep`. Writes bench/out/scale_compare.json. The old version is any
other checkout with its own environment (e.g. a git worktree of an earlier commit and a venv with
`pip install --no-deps -e` of it); --new defaults to this checkout with this interpreter.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from .common import OUT, machine
from .scale_store import run_cli

COMMANDS = {
    "info": ["info"],
    "similar --id": ["similar", "--id", "500001", "--json"],
    "similar --id --in": ["similar", "--id", "500001", "--in", "c0125"],
    "duplicates": ["duplicates", "c0125", "--no-pixel-check", "--json"],
    "export": ["export", "{out}", "c0125", "--json"],
    "train": ["train", "scale-compare", "c0125", "c0126", "--json"],
    "clean": ["clean", "c0125", "--classifier", "none", "--json"],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True, type=Path)
    ap.add_argument("--old", required=True, help="python of the old version")
    ap.add_argument("--new", default=None, help="python of the new version (default: this checkout)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default=",".join(COMMANDS), help="comma-separated names of COMMANDS")
    a = ap.parse_args(argv)
    pythons = {"old": a.old, "new": a.new}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        export_dir = Path(scratch) / "export"
        for name in a.only.split(","):
            args = [x.replace("{out}", str(export_dir)) for x in COMMANDS[name]]
            row = results[name] = {"old": [], "new": []}
            outputs = {}
            for r in range(a.rounds):
                for version, python in pythons.items():
                    shutil.rmtree(export_dir, ignore_errors=True)
                    run = run_cli(a.home, *args, python=python, output=True)
                    stdout = run.pop("stdout")
                    row[version].append(run)
                    if r == 0:
                        outputs[version] = stdout
            row["same_output"] = outputs["old"] == outputs["new"]
            print(
                f"{name:20s} old {[x['s'] for x in row['old']]} new {[x['s'] for x in row['new']]} "
                f"RSS {row['old'][0]['peak_rss_gb']} -> {row['new'][0]['peak_rss_gb']} GiB  "
                f"same output: {row['same_output']}",
                flush=True,
            )
    (a.home / "classifiers" / "scale-compare.joblib").unlink(missing_ok=True)
    out = OUT / "scale_compare.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps({"machine": machine(), "home": str(a.home), "pythons": pythons, "results": results}, indent=2)
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
