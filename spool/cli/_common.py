"""Shared pieces of the CLI: the typer app, the `--path` option, opening a spool file, one-line errors.

Errors are turned into one `Error: ...` line and an exit code in one place, `SpoolGroup.invoke` (`error_line`): a
command raises `SpoolError`, `sqlite3.Error` or `OSError` and never prints a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from ._boundary import ERRORS, existing, open_store, report, resolve_path

__all__ = ["PathOption", "SpoolGroup", "app", "existing", "fail", "open_store", "resolve_path"]

_HELP = """Inspect, flush and replay a span-spool file (a durable buffer of tracing spans).

\b
Examples:
  spool stats                     what the spool holds ($SPOOL_PATH or the XDG default)
  spool flush --timeout 120       deliver everything now (SGP_API_KEY, SGP_ACCOUNT_ID)
  spool dead list --path ./spans.db
"""


class SpoolGroup(TyperGroup):
    """The `spool` command group: errors from any command become one `Error:` line (exit 2), never a traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            print("Error: interrupted", file=sys.stderr)
            raise typer.Exit(130) from None
        except ERRORS as exc:
            raise typer.Exit(report(exc)) from None


app = typer.Typer(
    name="spool",
    cls=SpoolGroup,
    help=_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"spool (span-spool) {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", "-V", is_eager=True, callback=_version, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


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
