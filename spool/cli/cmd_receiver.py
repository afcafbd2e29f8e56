"""`spool receiver`: the project's local span endpoint, for development and offline capture.

It serves Scale GP's `PUT /v5/spans/batch` with the real API's validation and upsert rules and OTLP/HTTP's
`POST /v1/traces` (protobuf or JSON) (`spool.testing.Receiver`), can append
what it accepts to a JSONL file (which `spool import` reads back), and has the test-suite's fault switches on
`POST /_control`. It is not a production server: one process, spans kept in memory.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import app, fail

__all__ = ["receiver"]

_EPILOG = """\b
Example: spool receiver --port 8321 --out captured.jsonl
  then, in another shell:
  export SGP_CLIENT_BASE_URL=http://127.0.0.1:8321 SGP_API_KEY=local SGP_ACCOUNT_ID=local
  spool flush
  or, for an OpenTelemetry application (OTLP/HTTP):
  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:8321 python app.py
\b
Fault switches (what the tests use), e.g. fail the next 3 requests with 503:
  curl -X POST http://127.0.0.1:8321/_control -d '{"fail_status": 503, "fail_count": 3}'
  keys: fail_status, fail_count, retry_after, latency, hang, max_body_bytes,
  refuse_seconds, reset; {"fail_status": null} clears. GET /_stats shows counts.
"""


@app.command(epilog=_EPILOG)
def receiver(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port; 0 picks a free one.")] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", metavar="FILE.jsonl", help="Append each accepted item to this file.")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="Require this x-api-key (401 without one, 403 if wrong).")
    ] = None,
    keys_only: Annotated[
        bool, typer.Option("--keys-only", help="Keep only each span's key and end (for millions of spans).")
    ] = False,
) -> None:
    """Run a local span receiver: Scale GP's API and OTLP/HTTP.

    Serves PUT /v5/spans/batch and POST /v1/traces until Ctrl-C; --out appends what it accepts to a file (created
    0600) that spool import takes back: SGP items to FILE.jsonl, OTLP spans (one OTLP/JSON object per line) to
    FILE.otlp.jsonl.
    """
    from .._receiver import Receiver

    if not 0 <= port <= 65535:
        fail(f"--port must be 0..65535, got {port}")
    if out is not None:
        try:
            os.close(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))  # spans hold prompts
        except OSError as exc:
            fail(f"cannot write --out {out}: {exc.strerror or exc}")
    rx = Receiver(host, port, out=out, api_key=api_key, keep_items=not keys_only)
    try:
        rx.start()
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _announce(rx.url, api_key, out)
        done.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        rx.stop()
    st: dict[str, Any] = rx.stats()
    print(f"stopped: {st['spans']:,} spans stored from {st['requests']:,} requests", flush=True)


def _announce(url: str, api_key: str | None, out: Path | None) -> None:
    print(f"listening on {url}")
    print(f"export SGP_CLIENT_BASE_URL={url} SGP_API_KEY={api_key or 'local'} SGP_ACCOUNT_ID=local")
    if out is not None:
        print(f"appending accepted spans to {out}")
    print(f'fault switches: curl -X POST {url}/_control -d \'{{"fail_status": 503, "fail_count": 3}}\'')
    print("Ctrl-C to stop", flush=True)
