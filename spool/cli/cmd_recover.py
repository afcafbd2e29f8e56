"""`spool recover`: salvage a damaged spool into a fresh one (the damaged file is only read)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import PathOption, app, existing, fail
from ._format import plural

__all__ = ["recover"]


@app.command(epilog="Example: spool recover --path ./spans.db --out ./spans-recovered.db")
def recover(
    out: Annotated[Path, typer.Option("--out", "-o", metavar="NEW.db", help="The new spool file to write.")],
    path: PathOption = None,
) -> None:
    """Salvage a damaged spool into a new spool file.

    Copies every readable span and dead letter; the damaged file is never modified. Prints what was saved and what
    could not be read. Exit 0: everything was readable; 1: some rows were lost to the damage; 2: nothing could be
    read. Then deliver it: spool flush --path NEW.db.
    """
    from .._recover import recover as salvage

    p = existing(path)
    s = salvage(p, out)
    totals = "unreadable" if s.totals is None else ", ".join(f"{k} {v:,}" for k, v in s.totals.items())
    print(f"saved {plural(s.spans, 'pending span')} and {plural(s.dead, 'dead letter')} into {out} (totals: {totals})")
    if s.complete:
        print(f"everything was readable; deliver it with: spool flush --path {out}")
        return
    what = []
    if s.uncounted:
        what.append(f"at least {plural(s.lost, 'row')} could not be read" if s.lost else "some rows could not be read")
    elif s.lost:
        what.append(f"{plural(s.lost, 'row')} could not be read")
    if s.lost_strings:
        what.append(f"{plural(len(s.lost_strings), 'span')} saved with a lost string ([lost in damage] in its place)")
    if s.totals is None:
        what.append("the totals could not be read")
    if not what:
        what.append("the file is damaged where no row is")
    why = f" ({'; '.join(s.problems[:3])})" if s.problems else ""
    print(f"{', '.join(what)}{why}; deliver what was saved with: spool flush --path {out}")
    if s.spans == 0 and s.dead == 0:
        fail(f"nothing could be read from {p}")
    raise typer.Exit(1)
