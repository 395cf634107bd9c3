"""Ray itself: import it (or say how to install it), and join a cluster or start a local one for one build."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from ..errors import ConfigError

INSTALL = "pip install 'imgidx[ray]'"


class RayMissing(ConfigError):
    """engine="ray" was asked for where Ray is not installed."""


def import_ray() -> ModuleType:
    """The `ray` module with Ray Data, or one line saying how to install them."""
    try:
        import ray
        import ray.data  # noqa: F401 - the engine needs Ray Data, which `ray` alone does not install
    except ImportError as e:
        raise RayMissing(f'engine="ray" needs Ray Data, which is not installed here ({e}): {INSTALL}') from None
    return ray


@contextmanager
def connected(ray: ModuleType, address: str | None) -> Iterator[None]:
    """Use the Ray this process already joined; else join `address`; else start a local Ray with the machine's
    cores for this build only (and stop it afterwards)."""
    if ray.is_initialized():
        yield
        return
    # workers' output stays in Ray's session logs; the build reports its own errors, in its own words
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": True}
    if address:
        ray.init(address=address, **quiet)
    else:  # the machine's cores, not the affinity mask: the same count the model threads use (threads.py)
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **quiet)
    try:
        yield
    finally:
        ray.shutdown()


def resources(ray: ModuleType) -> tuple[int, int]:
    """(GPUs, alive nodes) of the cluster this process is connected to."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return gpus, max(1, nodes)
