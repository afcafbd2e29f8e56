"""The README's backend recipes, run as written: bash evaluates each `sh` block with test credentials, and a spool
sends a span with the environment it made to a local server standing in for that backend, which refuses (401) a
request without the authentication that backend requires and records the path and headers it got."""

from __future__ import annotations

import base64
import http.server
import os
import re
import subprocess
import threading
import urllib.parse
from pathlib import Path

import pytest
from conftest import FAST
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider

from spool import OTLPSink
from spool.otel import SpoolSpanProcessor

README = Path(__file__).resolve().parent.parent / "README.md"
RECIPES = dict(re.findall(r"^```sh\n# ([^\n(]+?)(?: \([^\n]*\))?\n(.*?)^```$", README.read_text(), flags=re.M | re.S))
CREDENTIALS = {
    "PHOENIX_API_KEY": "phx-key-123",
    "MLFLOW_EXPERIMENT_ID": "42",
    "LANGFUSE_PUBLIC_KEY": "pk-lf-1",
    "LANGFUSE_SECRET_KEY": "sk-lf-2",
    "LOGFIRE_TOKEN": "pylf_v1_us_token",
}
WANTS = {  # backend: (path, headers it requires)
    "Arize Phoenix": ("/v1/traces", {"authorization": "Bearer phx-key-123"}),
    "MLflow": ("/v1/traces", {"x-mlflow-experiment-id": "42"}),
    "Langfuse": (
        "/api/public/otel/v1/traces",
        {"authorization": "Basic " + base64.b64encode(b"pk-lf-1:sk-lf-2").decode()},
    ),
    "Logfire": ("/v1/traces", {"authorization": "pylf_v1_us_token"}),
    "OpenTelemetry Collector": ("/v1/traces", {}),
}


class Backend:
    """An OTLP/HTTP endpoint on 127.0.0.1 that answers 401 unless the request carries `wants`' headers."""

    def __init__(self, path: str, wants: dict[str, str]) -> None:
        self.got: list[tuple[str, dict[str, str], bytes]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                owner.got.append((self.path, headers, body))
                ok = self.path == path and all(headers.get(k) == v for k, v in wants.items())
                self.send_response(200 if ok else (404 if self.path != path else 401))
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Backend:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _environment(block: str) -> dict[str, str]:
    """The OTEL_* variables the block exports, as bash makes them."""
    done = subprocess.run(
        ["bash", "-c", f"set -eu\n{block}\nenv -0"],
        env={"PATH": os.environ["PATH"], **CREDENTIALS},
        capture_output=True,
        text=True,
        check=True,
    )
    pairs = (entry.split("=", 1) for entry in done.stdout.split("\0") if "=" in entry)
    return {k: v for k, v in pairs if k.startswith("OTEL_")}


def test_every_recipe_in_the_readme_is_checked() -> None:
    assert set(RECIPES) == set(WANTS)


@pytest.mark.parametrize("backend", sorted(WANTS))
def test_a_recipe_reaches_its_backend_with_its_path_and_authentication(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, wants = WANTS[backend]
    env = _environment(RECIPES[backend])
    with Backend(path, wants) as server:
        for name, value in env.items():  # the backend's host is this test's server; the path is the recipe's
            if name.endswith("ENDPOINT"):
                parts = urllib.parse.urlsplit(value)
                value = urllib.parse.urlunsplit(("http", server.url.split("//")[1], parts.path, "", ""))
            monkeypatch.setenv(name, value)
        processor = SpoolSpanProcessor(tmp_path / "spans.db", sink=OTLPSink(), config=FAST)
        provider = TracerProvider()
        provider.add_span_processor(processor)
        with provider.get_tracer("t").start_as_current_span(f"to {backend}"):
            pass
        assert processor.force_flush(10_000), server.got[-1][:2] if server.got else "no request"
        provider.shutdown()
    got_path, headers, body = server.got[-1]
    assert got_path == path and headers["content-type"] == "application/x-protobuf"
    assert {k: headers.get(k) for k in wants} == wants
    request = ExportTraceServiceRequest.FromString(body)
    assert request.resource_spans[0].scope_spans[0].spans[0].name == f"to {backend}"
