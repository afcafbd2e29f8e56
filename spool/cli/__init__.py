"""The `spool` command: inspect, flush and replay a spool file.

Each command lives in its own module and registers itself on `app`. Library errors become one `Error: ...` line on
stderr with exit code 2 (see `_common.fail`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from ._common import app

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    # `app` loads typer (and, when it parses options, pydantic): only on first use, so `main` can skip it.
    if name == "app":
        from ._common import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _register(command: str | None = None) -> None:
    """Import the command modules (each registers its command on `app`): only `command`'s when it names one (a
    command's module loads what it needs, and the others' imports would be start-up time), else all of them."""
    import importlib
    import pkgutil

    names = [m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("cmd_")]
    if command is not None and f"cmd_{command}" in names:
        names = [f"cmd_{command}"]
    for name in names:
        importlib.import_module(f"{__name__}.{name}")


def main() -> None:
    """Console-script entry point. Ctrl-C at any moment, start-up included, exits 130 with one line."""
    try:
        _main()
    except KeyboardInterrupt:  # before typer runs the command (imports, the fast stats path)
        _interrupted()
    except SystemExit as exc:  # typer turns a Ctrl-C inside a command into a silent exit 130
        if exc.code == 130 and isinstance(getattr(exc.__context__, "__cause__", None), KeyboardInterrupt):
            _interrupted()
        raise


def _interrupted() -> NoReturn:
    print("Error: interrupted", file=sys.stderr)
    raise SystemExit(130) from None


def _main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["stats"]:  # the hot read-only command: plain forms answered before typer loads
        from ._stats_report import fast_stats

        code = fast_stats(args[1:])
        if code is not None:
            raise SystemExit(code)
    _register(args[0] if args and not args[0].startswith("-") else None)
    from ._common import app

    app(prog_name="spool")
