"""`spool flush`: deliver what a spool holds now, then exit: an `sgp` spool to Scale GP (credentials from `SGP_*`), an
`otlp` spool by OTLP/HTTP (endpoint and headers from `OTEL_EXPORTER_OTLP_*`).

Exit 0 when nothing is pending at the end (dead letters do not count), 1 when spans remain (the backend is down or
the timeout ran out: they stay on disk), 2 when retrying cannot help (missing or refused credentials, a base URL that
is not an http(s) URL or has no span API) or for bad usage or no spool file, 3 when nothing is pending but spans
the server refused went to dead letters (so a cron job sees refusals). What it runs is in `_flush`.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, NoReturn

import typer

from .._config import SpoolConfig
from .._errors import CredentialsError, EndpointError, RequestRefusedError
from .._formats import format_named
from ._boundary import check_before_write, naming_damage
from ._common import PathOption, app, existing, fail, open_store

__all__ = ["flush"]


@app.command(epilog="Example: spool flush --timeout 120 --batch-size 500 --path ./spans.db")
def flush(
    path: PathOption = None,
    timeout: Annotated[float, typer.Option("--timeout", "-t", help="Give up after this many seconds.")] = 30.0,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            "-b",
            help="Spans per request, 1..1000 (larger is faster for big replays).",
            show_default="$SPOOL_BATCH_SIZE or 50",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with the outcome.")] = False,
) -> None:
    """Deliver everything pending now, then exit.

    An sgp spool goes to Scale GP with SGP_API_KEY, SGP_ACCOUNT_ID and SGP_CLIENT_BASE_URL; an otlp spool to the
    OTLP/HTTP endpoint OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (or OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces, default
    http://localhost:4318/v1/traces) with OTEL_EXPORTER_OTLP_HEADERS. Exit 0: nothing pending; 1: spans
    remain (kept on disk: the backend is down or the timeout ran out); 2: retrying cannot help (credentials missing
    or refused, no span API at the base URL, every request refused alike), bad usage or no spool at the path;
    3: delivered, but spans the server refused went to dead letters (spool dead list). A progress bar shows on a
    terminal.
    """
    p = existing(path)
    check_before_write(p)  # a file found damaged here is left exactly as it is
    with open_store(p) as store:
        before = store.stats()
        fmt = store.file_format()
    if batch_size is not None and not 1 <= batch_size <= 1000:
        fail(f"--batch-size must be 1..1000, got {batch_size}")
    if not timeout >= 0:
        fail(f"--timeout must be >= 0, got {timeout}")
    import asyncio

    from ._flush import quiet_logs, run_flush

    config = SpoolConfig() if batch_size is None else SpoolConfig(batch_size=batch_size)
    if before.pending == 0:  # nothing to send: no sink, no SDK import (a second or two)
        result: dict[str, Any] = {
            "ok": True,
            "delivered": 0,
            "refused": 0,
            "pending": 0,
            "dead": before.dead,
            "last_error": None,
        }
        _done(result, as_json)
    sink = format_named(fmt).sink_from_env()  # (raises `SpoolConfigError` when the environment is incomplete)
    try:
        with quiet_logs(), naming_damage(p):
            result = asyncio.run(run_flush(p, sink, config, timeout, batch_size, progress=sys.stderr.isatty()))
    except CredentialsError as exc:
        fail(f"credentials refused ({exc}); fix {sink.credentials_setting} (spans kept)")
    except EndpointError as exc:
        fail(f"{exc}; fix {sink.endpoint_setting} (spans kept)")
    except RequestRefusedError as exc:
        fail(f"requests refused: {exc}; check {sink.credentials_setting} / {sink.endpoint_setting} (spans kept)")
    except KeyboardInterrupt:
        fail("interrupted; what was not delivered stays in the spool", 130)
    if not result["ok"]:
        with open_store(p) as store:  # who holds what is left (a live drainer's batches stay its own)
            result["leased"] = store.leased()
    _done(result, as_json)


def _done(result: dict[str, Any], as_json: bool) -> NoReturn:
    """Print the outcome (one JSON object, or a line for people) and exit 0 when nothing is pending, 3 when nothing
    is pending but this flush moved spans the server refused to dead letters, 1 when spans remain."""
    from ._flush import report

    if as_json:
        print(json.dumps(result))
    else:
        report(result)
    raise typer.Exit((3 if result["refused"] else 0) if result["ok"] else 1)
