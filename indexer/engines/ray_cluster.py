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
    with _notes_to_stderr():
        if ray.is_initialized():
            yield
            return
        # workers' output stays in Ray's session logs; the build reports its own errors, in its own words
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": True}
        if address:
            try:
                ray.init(address=address, **quiet)
            except Exception as e:  # noqa: BLE001 - Ray raises several kinds (connection, auth, version): one line
                raise ConfigError(
                    f"cannot join the Ray cluster at {address} ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
                    "check the address (HOST:6379, or ray://HOST:10001 for Ray Client) and that the cluster runs"
                ) from None
        else:  # the machine's cores, not the affinity mask: the same count the model threads use (threads.py)
            # "local": a new Ray even where one runs already (ray.init() alone would join it, or RAY_ADDRESS)
            ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, **quiet)
        try:
            yield
        finally:
            ray.shutdown()


@contextmanager
def _notes_to_stderr() -> Iterator[None]:
    """Ray prints the cluster's notes to the driver's stdout (e.g. "A worker died ..." when an actor is killed and
    restarted); stdout is the command's output (`--json`), so during a build they go to stderr."""
    import ray._private.worker as w  # Ray's own module: where the note printer lives (2.9 to 2.60 at least)

    original = getattr(w, "print_to_stdstream", None)
    if original is None:  # another Ray: leave it as it is
        yield
        return

    def to_stderr(data: dict, *args, **kwargs) -> None:
        original({**data, "is_err": True}, *args, **kwargs)

    w.print_to_stdstream = to_stderr
    try:
        yield
    finally:
        w.print_to_stdstream = original


def resources(ray: ModuleType) -> tuple[int, int]:
    """(GPUs, alive nodes) of the cluster this process is connected to."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return gpus, max(1, nodes)
