"""`spool check`: SQLite's own consistency check of a spool file."""

from __future__ import annotations

from typing import Annotated

import typer

from .._config import SpoolConfig
from .._errors import SpoolCorruptError, SpoolError
from .._store import Store
from ._common import PathOption, app, fail, resolve_path

__all__ = ["check"]


@app.command(epilog="Example: spool check --full --path ./spans.db")
def check(
    path: PathOption = None,
    full: Annotated[
        bool, typer.Option("--full", help="Run integrity_check (slower, also checks indexes) instead of quick_check.")
    ] = False,
) -> None:
    """Check a spool file for corruption (SQLite's quick_check).

    Prints "ok" and exits 0, or the problems found and exits 1 (2: no spool at the path).
    """
    p = resolve_path(path)
    if not p.exists():
        fail(f"no spool at {p}")
    pragma = "integrity_check" if full else "quick_check"
    try:
        store = Store(p, SpoolConfig(), create=False)
    except SpoolCorruptError as exc:
        print(f"problem: {exc}")
        raise typer.Exit(1) from None
    except (SpoolError, OSError) as exc:
        fail(str(exc))
    try:
        problems = store.check(full=full)
    finally:
        store.close()
    if not problems:
        print(f"ok: {p} passed {pragma}")
        return
    for line in problems:
        print(f"problem: {line}")
    print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found in {p} by {pragma}")
    raise typer.Exit(1)
