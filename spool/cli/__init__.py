"""The `spool` command: inspect, flush and replay a spool file.

Each command lives in its own module and registers itself on `app`. Library errors become one `Error: ...` line on
stderr with exit code 2 (see `_common.fail`).
"""

from __future__ import annotations

from ._common import app

__all__ = ["app", "main"]


def _register() -> None:
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        if mod.name.startswith("cmd_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def main() -> None:
    """Console-script entry point."""
    _register()
    app()
