"""The `spool` command: inspect, flush and replay a spool file.

Each command lives in its own module and registers itself on `app`. Library errors become one `Error: ...` line on
stderr with exit code 2 (see `_common.fail`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._common import app

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    # `app` loads typer (and, when it parses options, pydantic): only on first use, so `main` can skip it.
    if name == "app":
        from ._common import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _register() -> None:
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        if mod.name.startswith("cmd_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def main() -> None:
    """Console-script entry point."""
    if sys.argv[1:2] == ["stats"]:  # the hot read-only command: plain forms answered before typer loads
        from ._stats_report import fast_stats

        code = fast_stats(sys.argv[2:])
        if code is not None:
            raise SystemExit(code)
    _register()
    from ._common import app

    app(prog_name="spool")
