"""Shared pieces of the CLI: the typer app, the `--path` option, opening a spool file, one-line errors."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from .._config import SpoolConfig, default_path
from .._errors import SpoolError
from .._store import Store

__all__ = ["PathOption", "app", "fail", "open_store", "resolve_path"]

app = typer.Typer(
    name="spool",
    help="Inspect, flush and replay a span-spool file (a durable buffer of tracing spans).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

PathOption = Annotated[
    Path | None,
    typer.Option(
        "--path",
        "-p",
        help="Spool file. Default: $SPOOL_PATH, else $XDG_STATE_HOME/span-spool/spans.db.",
        show_default=False,
    ),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one `Error: ...` line on stderr and exit with `code`."""
    print(f"Error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def resolve_path(path: Path | None) -> Path:
    return path if path is not None else default_path()


@contextlib.contextmanager
def open_store(path: Path | None, config: SpoolConfig | None = None) -> Iterator[Store]:
    """Open an existing spool file for a command that reads it; a missing file is `Error: no spool at PATH`
    (exit 2), so a wrong path never looks like an empty spool."""
    p = resolve_path(path)
    if not p.exists():
        fail(f"no spool at {p}")
    try:
        store = Store(p, config or SpoolConfig(), create=False)
    except (SpoolError, OSError) as exc:
        fail(str(exc))
    try:
        yield store
    finally:
        store.close()
