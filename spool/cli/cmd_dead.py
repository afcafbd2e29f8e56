"""`spool dead list|retry|purge`: the spans the server rejected, by the row id `dead list` shows.

`retry` and `purge` check every id first: an unknown id is an `Error:` (exit 2) and nothing is changed.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from .._store import DeadLetter, Store
from ._common import PathOption, app, fail, open_store
from ._format import parse_duration, plural

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["dead_app", "render_dead"]

dead_app = typer.Typer(
    name="dead",
    help="List, retry or purge dead letters (spans the server rejected).",
    no_args_is_help=True,
    epilog="Example: spool dead list --path ./spans.db",
)
app.add_typer(dead_app, name="dead")

IdsArgument = Annotated[
    list[int] | None,
    typer.Argument(metavar="ID...", help="Dead letter ids, as `spool dead list` shows them.", show_default=False),
]
AllOption = Annotated[bool, typer.Option("--all", help="Every dead letter.")]


def _short_id(text: str, keep: bool) -> str:
    return text if keep or len(text) <= 14 else f"{text[:8]}…{text[-4:]}"


def render_dead(letters: list[DeadLetter], width: int = 200) -> RenderableType:
    """A rich table of dead letters: id, trace, span id, name, status, detail, attempts, failed at (local time).
    Below 150 columns long trace and span ids are shortened (`--json` has them whole)."""
    from rich.markup import escape
    from rich.table import Table

    whole = width >= 150
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("trace", no_wrap=not whole, overflow="fold")
    table.add_column("span id", no_wrap=not whole, overflow="fold")
    table.add_column("name", overflow="fold", min_width=6)
    table.add_column("status", justify="right", no_wrap=True)
    table.add_column("detail", overflow="fold", ratio=1, min_width=12)
    table.add_column("attempts", justify="right", no_wrap=True)
    table.add_column("failed at", no_wrap=True, min_width=14)
    for d in letters:
        table.add_row(
            str(d.id),
            escape(_short_id(d.trace_id, whole)),
            escape(_short_id(d.span_id, whole)),
            escape(d.name or "-"),
            "-" if d.status is None else str(d.status),
            escape(d.detail or "-"),
            str(d.attempts),
            datetime.fromtimestamp(d.failed_at).strftime("%m-%d %H:%M:%S"),
        )
    return table


@dead_app.command("list", epilog="Example: spool dead list --json --limit 20 --path ./spans.db")
def dead_list(
    path: PathOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array of dead letters.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", "-n", help="Show at most N (oldest first).")] = None,
) -> None:
    """List dead letters (spans the server rejected).

    Shows id, trace, span id, name, HTTP status, the server's detail, attempts and when it failed.
    """
    if limit is not None and limit < 0:
        fail("--limit must be >= 0")
    with open_store(path) as store:
        letters = store.dead_list(limit)
        total = store.stats().dead if limit is not None and len(letters) >= limit else len(letters)
        where = store.path
    if as_json:
        print(json.dumps([d.to_dict() for d in letters]))
        return
    if not total:
        print(f"no dead letters in {where}")
        return
    if not letters:
        print(f"showing 0 of {plural(total, 'dead letter')} (--limit 0)")
        return
    from rich.console import Console

    console = Console()
    console.print(render_dead(letters, console.width))
    if total > len(letters):
        console.print(f"showing {len(letters):,} of {plural(total, 'dead letter')}")


def _check_ids(store: Store, ids: list[int]) -> None:
    unknown = sorted(set(ids) - store.dead_ids(ids))
    if unknown:
        fail(f"no dead letter with id {', '.join(map(str, unknown))}")


def _selection(ids: list[int] | None, all_: bool) -> list[int] | None:
    """The ids to act on (None: all); a usage error unless exactly one of ids / --all is given."""
    if ids and all_:
        fail("give dead letter ids or --all, not both")
    if not ids and not all_:
        fail("give dead letter ids (see `spool dead list`) or --all")
    return None if all_ else sorted(set(ids or ()))


@dead_app.command("retry", epilog="Example: spool dead retry 3 7 --path ./spans.db   (or: spool dead retry --all)")
def dead_retry(ids: IdsArgument = None, all_: AllOption = False, path: PathOption = None) -> None:
    """Move dead letters back to pending, to be sent again.

    Use it once what the server rejected is fixed; `spool flush` sends them at once.
    """
    selected = _selection(ids, all_)
    with open_store(path, write=True) as store:
        if selected is not None:
            _check_ids(store, selected)
        n, removed = store.dead_retry(selected)
    then = f"; run `spool flush` to send {'it' if n == 1 else 'them'} now" if n else ""
    print(f"moved {plural(n, 'dead letter')} back to pending{then}")
    if removed:
        print(f"removed {plural(removed, 'dead start')} whose end the server has (sent now, it would undo the end)")


@dead_app.command("purge", epilog="Example: spool dead purge --older-than 7d --path ./spans.db")
def dead_purge(
    ids: IdsArgument = None,
    all_: AllOption = False,
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="Only dead letters that failed longer ago than this (30s, 10m, 2h, 7d)."),
    ] = None,
    path: PathOption = None,
) -> None:
    """Delete dead letters for good: by id, --all or --older-than."""
    age: float | None = None
    if older_than is not None:
        try:
            age = parse_duration(older_than)
        except ValueError as exc:
            fail(str(exc))
    selected = _selection(ids, all_ or (age is not None and not ids))
    with open_store(path, write=True) as store:
        if selected is not None:
            _check_ids(store, selected)
        n = store.dead_purge(selected, older_than=age)
    print(f"purged {plural(n, 'dead letter')}" + (f" older than {older_than}" if age is not None else ""))
