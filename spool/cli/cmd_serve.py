"""`spool serve`: the host's durable tracing agent (the `serve` extra: uvicorn and prometheus_client).

It drains the spool at `--path` for as long as it runs (outages, refused keys and a full disk are states it reports
and waits out) and, unless `--no-ingest`, takes spans over HTTP from any process on the host (`spool._serve`).
SIGTERM or SIGINT: stop taking requests, answer those in flight, commit, deliver for up to `shutdown_timeout`, exit 0.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from ._boundary import resolve_path
from ._common import PathOption, app, fail

__all__ = ["serve"]

_EPILOG = """\b
Example: spool serve --sink otlp   (OTLP/HTTP on 127.0.0.1:4318, delivered to OTEL_EXPORTER_OTLP_*)
  spool serve --sink sgp --listen 127.0.0.1:8321
  SPOOL_SERVE_TOKEN=... spool serve --listen 0.0.0.0:4318   (off loopback: a bearer token is required)
  spool serve --no-ingest   (deliver what applications write to the file themselves)
"""


@app.command(epilog=_EPILOG)
def serve(
    path: PathOption = None,
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to take spans on.")] = "127.0.0.1:4318",
    sink: Annotated[
        str | None,
        typer.Option("--sink", help="sgp or otlp: a new file's format and where it goes (default: the environment)."),
    ] = None,
    no_ingest: Annotated[bool, typer.Option("--no-ingest", help="Take no spans over HTTP; only deliver.")] = False,
    token_env: Annotated[
        str, typer.Option("--token-env", help="The environment variable holding the bearer token.")
    ] = "SPOOL_SERVE_TOKEN",
    redact: Annotated[
        bool, typer.Option("--redact", help="Scrub secrets from every span before the disk (spool.redact.scrub()).")
    ] = False,
) -> None:
    """Take spans over HTTP, keep them on disk, deliver them.

    The host's durable tracing agent: OTLP/HTTP POST /v1/traces or Scale GP's PUT /v5/spans/batch, answered once
    the spans are on disk; /healthz, /readyz, /metrics. SIGTERM: deliver up to shutdown_timeout, exit 0."""
    try:
        import uvicorn
    except ImportError:
        fail("spool serve needs the serve extra: pip install 'span-spool[serve]'")
    from .._config import SpoolConfig
    from .._formats import format_named
    from .._serve import ServeApp
    from .._spool import Spool
    from ..redact import scrub

    host, _, port_text = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        fail(f"--listen {listen!r} is not HOST:PORT (e.g. 127.0.0.1:4318)")
    token = (os.environ.get(token_env) or "").strip() or None
    if token is None and not _loopback(host):
        fail(f"listening on {host} (not loopback) needs a bearer token: set {token_env}")
    p = resolve_path(path)
    fmt = _format(p, sink)
    if redact and not format_named(fmt).takes_items:
        fail(
            "--redact scrubs Scale GP spans; an otlp spool stores OTLP spans as they were sent"
            " (redact them in the application: SpoolSpanProcessor(redact=scrub()))"
        )

    delivery = format_named(fmt).sink_from_env()  # (SpoolConfigError, an `Error:` line, when incomplete)
    spool = Spool(p, sink=delivery, config=SpoolConfig(), redact=scrub() if redact else None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    what = "delivering only" if no_ingest else f"taking spans on http://{host}:{port_text}"
    print(f"spool serve: {p} ({fmt}), {what}; delivering to {delivery!r}", file=sys.stderr, flush=True)
    config = uvicorn.Config(
        ServeApp(spool, token=token, ingest=not no_ingest),
        host=host,
        port=int(port_text),
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    # uvicorn raises SIGTERM/SIGINT again once it has shut down; a stop asked for is a clean exit (0), so the handler
    # it finds and puts back is one that does nothing.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.Server(config).run()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _format(path: os.PathLike[str], sink: str | None) -> str:
    """An existing file's format; else `--sink`; else the environment (OTLP variables: `otlp`; SGP ones: `sgp`)."""
    from .._formats import FORMATS
    from ._boundary import open_store

    if os.path.exists(path) and os.path.getsize(path) > 0:
        with open_store(Path(path)) as store:
            have = store.file_format()
        if sink is not None and sink != have:
            fail(f"{path} holds {have} spans; --sink {sink} cannot deliver them (use another --path)")
        return have
    if sink is not None:
        if sink not in FORMATS:
            fail(f"--sink {sink!r}: one of {', '.join(FORMATS)}")
        return sink
    otlp = any(k.startswith("OTEL_EXPORTER_OTLP_") and v for k, v in os.environ.items())
    sgp = any(k.startswith("SGP_") and v for k, v in os.environ.items())
    if otlp == sgp:
        found = "both OTEL_EXPORTER_OTLP_* and SGP_*" if otlp else "neither OTEL_EXPORTER_OTLP_* nor SGP_*"
        fail(f"the environment sets {found}: say which with --sink sgp or --sink otlp")
    return "otlp" if otlp else "sgp"
