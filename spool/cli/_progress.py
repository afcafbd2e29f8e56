"""A rich progress bar on stderr when stderr is a terminal; a no-op otherwise (pipes, CI, tests)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Literal

__all__ = ["progress"]


@contextlib.contextmanager
def progress(
    description: str, total: float | None, unit: Literal["spans", "bytes"] = "spans"
) -> Iterator[Callable[[float], None]]:
    """Yield `advance(n)`, counting spans or bytes. `total` None: no known end (a pulsing bar)."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    count = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    with Progress(
        TextColumn(description), BarColumn(), count, TimeElapsedColumn(), console=Console(stderr=True), transient=True
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
