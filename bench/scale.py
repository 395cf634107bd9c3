"""Part `scale` of `make bench`: a store of 1,000,000 synthetic photos (100,000 with --quick) and the time, peak
RSS and disk of each everyday command on it (bench/scale_store.py), then the Ray engine against the local one on
the same shared photos in one run (bench/scale_ray.py). README "Scaling" reads these numbers."""

from __future__ import annotations

from .common import Options, Skip


def run(opts: Options) -> tuple[dict, str]:
    from . import scale_ray, scale_store

    store, text = scale_store.run_store(100_000 if opts.quick else 1_000_000)
    data = {"store": store}
    try:
        ray_data, ray_text = scale_ray.run(opts)
        data["ray"] = ray_data
        text += "\n" + ray_text
    except Skip as e:
        data["ray"] = {"skipped": str(e)}
        text += f"\nray: skipped ({e})\n"
    return data, text
