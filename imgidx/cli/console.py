"""Output for people and scripts: tables on stdout, --json, progress on stderr, one-line errors (exit 1)."""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

from imgidx.indexer.errors import (
    ConfigError,
    EmptyIndex,
    ImgidxError,
    InvalidCollectionName,
    MissingCredentials,
    NoIndexError,
    StampMismatch,
    VectorsLost,
)

if TYPE_CHECKING:
    from rich.console import Console

    out: Console  # stdout, for tables and lines
    err: Console  # stderr, for progress and notes


def __getattr__(name: str):
    """`out` and `err`, made on first use: importing rich is not free, and --json output never needs it."""
    if name not in ("out", "err"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from rich.console import Console

    made = Console(soft_wrap=True) if name == "out" else Console(stderr=True)
    globals()[name] = made
    return made


def _console(name: str) -> Console:
    return globals()[name] if name in globals() else __getattr__(name)


def handle_errors(fn: Callable) -> Callable:
    """Domain errors become `error: <what to do>` on stderr and exit code 1; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ImgidxError as e:
            typer.echo(f"error: {e}{hint(e)}", err=True)
            raise typer.Exit(1) from None
        except sqlite3.DatabaseError as e:  # damage found mid-command; `imgidx verify` says more
            typer.echo(f"error: the index database failed ({e}); run `imgidx verify` for a report", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: everything committed so far is kept; run the same command to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper


def hint(error: ImgidxError) -> str:
    """The library's messages name no command; on the command line, say which one to run."""
    if isinstance(error, NoIndexError):
        return "; `imgidx build` makes one"
    if isinstance(error, EmptyIndex):
        return " with `imgidx build`"
    if isinstance(error, MissingCredentials):
        return " (`imgidx build --from-dir DIR` or `--from-urls FILE`)"
    if isinstance(error, VectorsLost):
        return " with `imgidx verify --repair`"
    if isinstance(error, InvalidCollectionName) and error.nameable:
        return " (with --as NAME; for a query, one query per build)"
    if isinstance(error, StampMismatch) and not str(error).startswith("classifier"):
        return " (omit --layer/--weights to use the index's own)"
    return ""


def print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A table for people; columns that are empty in every row are left out (folder photos have no owner)."""
    keep = [i for i in range(len(columns)) if not rows or any(r[i] not in (None, "") for r in rows)]
    columns = [columns[i] for i in keep]
    rows = [[r[i] for i in keep] for r in rows]
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False)
    for c in columns:
        table.add_column(c, overflow="fold", justify="right" if c in ("#", "id", "score", "count", "n") else "left")
    for r in rows:
        table.add_row(*("" if v is None else str(v) for v in r))
    _console("out").print(table)


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr for a library call's on_progress(done, total); shown from the first report on."""
    state: dict[str, object] = {}

    def report(done: int, total: int) -> None:
        if "bar" not in state:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=_console("err"),
                transient=False,
            )
            bar.start()
            state["bar"], state["task"] = bar, bar.add_task(description, total=total)
        state["bar"].update(state["task"], completed=done, total=total)  # type: ignore[attr-defined]

    try:
        yield report
    finally:
        if "bar" in state:
            state["bar"].stop()  # type: ignore[attr-defined]


def setup_logging(verbose: bool, secrets: Sequence[str | None] = ()) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr
    )
    # flickrapi logs every non-200 reply body at ERROR; our own retry lines say the same thing once
    logging.getLogger("flickrapi").setLevel(logging.INFO if verbose else logging.CRITICAL)
    hidden = [s for s in secrets if s]
    if hidden:
        for handler in logging.getLogger().handlers:
            for old in [f for f in handler.filters if isinstance(f, Redact)]:
                handler.removeFilter(old)
            handler.addFilter(Redact(hidden))


class Redact(logging.Filter):
    """Replace secrets in every log line, whichever library wrote it (belt and braces: none is known to)."""

    def __init__(self, secrets: Sequence[str]):
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(s in message for s in self.secrets):
            for s in self.secrets:
                message = message.replace(s, "***")
            record.msg, record.args = message, None
        return True


def parse_threshold(text: str, example: str) -> str | float:
    """--threshold auto|FLOAT (clean, duplicates); `example` says what a number means there."""
    if text == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--threshold takes 'auto' or {example}; received {text!r}") from None
