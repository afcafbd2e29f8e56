"""`spool demo`: the command line; what it runs is in `_demo` (loaded only when it runs)."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import app

__all__ = ["demo"]


@app.command(epilog="Example: spool demo")
def demo(
    seconds: Annotated[float, typer.Option("--seconds", help="How long the agents produce spans.", min=1)] = 10.0,
    outage: Annotated[float, typer.Option("--outage", help="How long the receiver is down.", min=0.1)] = 3.5,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the temporary spool file for a look afterwards.")] = False,
) -> None:
    """Watch a spool ride out a backend outage (no credentials needed).

    Starts a local receiver, runs an agent-like workload into a temporary spool, takes the receiver down for a few
    seconds, and ends with a table proving every span arrived. Exit 0 when all did, else 1.
    """
    from . import _demo

    raise typer.Exit(_demo.demo(seconds, outage, keep))
