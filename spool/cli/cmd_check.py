"""`spool check`: SQLite's own consistency check of a spool file (read-only)."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import PathOption, app, open_store

__all__ = ["check"]


@app.command(epilog="Example: spool check --full --path ./spans.db")
def check(
    path: PathOption = None,
    full: Annotated[
        bool, typer.Option("--full", help="Run integrity_check (slower, also checks indexes) instead of quick_check.")
    ] = False,
) -> None:
    """Check a spool file for damage (read-only).

    Runs SQLite's quick_check (--full: integrity_check); the file is only read.
    Prints "ok" and exits 0, or the problems found and exits 1; exit 2 when there is no spool at the path, it is
    not a spool file, or it is too damaged to open.
    """
    pragma = "integrity_check" if full else "quick_check"
    with open_store(path) as store:
        problems = store.check(full=full)
    p = store.path
    if not problems:
        print(f"ok: {p} passed {pragma}")
        return
    for line in problems:
        print(f"problem: {line}")
    print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found in {p} by {pragma}")
    print(f"salvage what is readable: spool recover --path {p} --out NEW.db")
    raise typer.Exit(1)
