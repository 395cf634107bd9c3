"""`imgidx serve`: the HTTP API and web page over the index (imgidx/service/server.py runs it,
imgidx/service/api.py answers)."""

from __future__ import annotations

from typing import Annotated

import typer

from imgidx.indexer.config import Settings
from imgidx.indexer.errors import ConfigError

from . import console


@console.handle_errors
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port; the address is printed on stderr).")] = 8000,
    token: Annotated[
        str | None, typer.Option(help="Every request must carry it (env IMGIDX_TOKEN).", show_default=False)
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted upload, in MiB (413 above).")] = 20.0,
    max_batch: Annotated[int, typer.Option(help="Most images per model call.")] = 32,
    max_wait_ms: Annotated[float, typer.Option(help="How long a lone upload waits for others to batch with.")] = 5.0,
    refresh: Annotated[float, typer.Option(help="Seconds between checks for a build's new photos.")] = 2.0,
    weights: Annotated[str | None, typer.Option(help="Weights file of the index (default: the index's own).")] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request to stderr.")] = False,
) -> None:
    """HTTP API and web page over the index (read-only; runs beside a build)."""
    from imgidx.service.server import serve as run_server
    from imgidx.service.service import ServeOptions

    settings: Settings = ctx.obj
    settings = settings.with_options(token=token, weights=weights)
    if max_upload_mb <= 0 or max_batch <= 0 or max_wait_ms < 0 or refresh < 0 or not 0 <= port < 65536:
        raise ConfigError(
            "--max-upload-mb and --max-batch must be > 0, --max-wait-ms and --refresh >= 0, --port 0-65535; "
            f"received {max_upload_mb}, {max_batch}, {max_wait_ms}, {refresh}, {port}"
        )
    options = ServeOptions(max_batch=max_batch, max_wait_s=max_wait_ms / 1000, refresh_s=refresh)
    run_server(
        settings, host=host, port=port, options=options, max_upload=int(max_upload_mb * 2**20), access_log=access_log
    )
