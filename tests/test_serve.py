"""`spool serve` as a real process on 127.0.0.1, fed by clients no one here wrote (the official OpenTelemetry exporter,
the scale-gp-beta SDK, plain httpx), delivering to a real receiver behind it."""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import poll

from spool._ingest import MAX_BODY, otlp_rows
from spool._serve import changes
from spool.testing import Receiver

pytestmark = pytest.mark.slow

QUICK_RETRY = {
    "SPOOL_BACKOFF_INITIAL": "0.05",
    "SPOOL_BACKOFF_MAX": "0.2",
    "SPOOL_COOLDOWN_MAX": "1",
}  # a backend back is probed within a second


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """`spool serve` in a process of its own."""

    def __init__(self, path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = ["--path", str(path), "--listen", f"127.0.0.1:{self.port}", *args]
        self.env = {**os.environ, "SPOOL_SHUTDOWN_TIMEOUT": "2", **(env or {})}
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Serve:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "spool", "serve", *self.args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"spool serve exited {self.proc.returncode}: {self.proc.stderr.read()}")  # type: ignore[union-attr]
            try:
                return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert poll(up, 30), "spool serve did not come up"
        return self

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        assert self.proc is not None
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, err


@contextmanager
def serving(path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Serve]:
    s = Serve(path, *args, env=env).start()
    try:
        yield s
    finally:
        if s.proc is not None and s.proc.poll() is None:
            s.stop(signal.SIGKILL)


def _otel_spans(n: int, prefix: str = "op") -> list[Any]:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    tracer = provider.get_tracer("bench", "1.0")
    out = []
    for i in range(n):
        with tracer.start_as_current_span(f"{prefix}-{i}", attributes={"i": i, "route": "/pay"}) as s:
            s.add_event("retry", {"n": 1})
        out.append(s)
    return out


def _as_sent(spans: list[Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Each span as the official exporter encodes it, in the receiver's form (`row_to_json` of its row)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from spool._otlpcodec import row_to_json

    parsed = otlp_rows(encode_spans(spans).SerializeToString(), False, 1 << 20)
    return {(r.trace_id, r.span_id): row_to_json(r.body) for r in parsed.rows}


def test_the_official_exporter_through_serve_with_a_kill_9_midway_loses_nothing_acknowledged(tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    with Receiver() as collector:
        collector.refuse()  # the backend is down: what serve takes stays in its file
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, **QUICK_RETRY}
        path = tmp_path / "serve.db"
        first, second = _otel_spans(300, "a"), _otel_spans(200, "b")
        with serving(path, "--sink", "otlp", env=env) as serve:
            exporter = OTLPSpanExporter(endpoint=serve.url + "/v1/traces")
            for start in range(0, 300, 100):
                assert exporter.export(first[start : start + 100]) == SpanExportResult.SUCCESS  # acknowledged
            serve.stop(signal.SIGKILL)
        with serving(path, "--sink", "otlp", env=env) as serve:  # the same file, a new process
            exporter = OTLPSpanExporter(endpoint=serve.url + "/v1/traces")
            assert exporter.export(second) == SpanExportResult.SUCCESS
            collector.resume()
            assert collector.wait_for(500, timeout=60), collector.stats()
            code, err = serve.stop()
        assert code == 0, err
        assert collector.spans == _as_sent(first + second)  # every span, byte for byte as the exporter sent it


def test_the_scale_gp_sdk_upserts_through_serve_with_a_kill_9_midway(tmp_path: Path) -> None:
    from scale_gp_beta import SGPClient

    items = [
        {
            "trace_id": "t-1",
            "id": f"s-{i}",
            "name": f"step {i}",
            "start_timestamp": "2026-11-28T10:00:00Z",
            "end_timestamp": "2026-11-28T10:00:01Z",
            "input": {"q": i},
            "metadata": {"model": "gpt-4o"},
        }
        for i in range(40)
    ]
    with Receiver() as backend:
        backend.refuse()
        env = {"SGP_API_KEY": "k", "SGP_ACCOUNT_ID": "a", "SGP_CLIENT_BASE_URL": backend.url, **QUICK_RETRY}
        path = tmp_path / "sgp.db"
        for half, part in enumerate((items[:20], items[20:])):
            with serving(path, "--sink", "sgp", env=env) as serve:
                client = SGPClient(api_key="k", account_id="a", base_url=serve.url, max_retries=0)
                answer = client.spans.upsert_batch(items=part)  # type: ignore[arg-type]
                assert [s.id for s in answer.items] == [i["id"] for i in part]  # acknowledged: on disk
                if half == 0:
                    serve.stop(signal.SIGKILL)
                    continue
                one_bad = [{**items[0], "id": "s-extra"}, {"trace_id": "t-1", "id": "no-start", "name": "x"}]
                r = httpx.put(serve.url + "/v5/spans/batch", json={"items": one_bad})
                assert r.status_code == 422 and r.json()["detail"].startswith("items[1]:"), r.text
                assert "1 other span of the request kept" in r.json()["detail"]
                backend.resume()
                assert backend.wait_for(41, timeout=60)
                code, _ = serve.stop()
        assert code == 0
        sent = [*items, {**items[0], "id": "s-extra"}]
        assert backend.spans == {("t-1", i["id"]): i for i in sent}  # each item as the client sent it


def test_otlp_json_with_gzip_keeps_the_valid_spans_refuses_the_bad_one_and_survives_a_kill_9(tmp_path: Path) -> None:
    def doc(i: int) -> dict[str, Any]:
        good = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": f"eee19b7ec3c1b1{i:02x}", "name": f"good {i}"}
        bad = {"traceId": "00", "spanId": "eee19b7ec3c1b1ff", "name": "bad"}
        return {"resourceSpans": [{"scopeSpans": [{"scope": {"name": "http"}, "spans": [good, bad]}]}]}

    gz = {"content-type": "application/json", "content-encoding": "gzip"}
    with Receiver() as collector:
        collector.refuse()
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, **QUICK_RETRY}
        path = tmp_path / "j.db"
        with serving(path, "--sink", "otlp", env=env) as serve:
            r = httpx.post(serve.url + "/v1/traces", content=gzip.compress(orjson.dumps(doc(1))), headers=gz)
            assert r.status_code == 200, r.text
            assert r.json()["partialSuccess"]["rejectedSpans"] == "1"
            serve.stop(signal.SIGKILL)
        with serving(path, "--sink", "otlp", env=env) as serve:
            r = httpx.post(serve.url + "/v1/traces", content=gzip.compress(orjson.dumps(doc(2))), headers=gz)
            assert r.status_code == 200
            sgp = httpx.put(serve.url + "/v5/spans/batch", json={"items": []})
            assert sgp.status_code == 415 and "otlp" in sgp.json()["detail"]
            collector.resume()
            assert collector.wait_for(2, timeout=60)
        got = {v["span"]["name"]: v for v in collector.spans.values()}
    assert set(got) == {"good 1", "good 2"} and got["good 1"]["scope"] == {"name": "http"}
    assert got["good 2"]["span"]["spanId"] == "eee19b7ec3c1b102"


def test_limits_backpressure_health_readiness_and_metrics(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "SPOOL_MAX_BYTES": str(1 << 20)}
    proto = {"content-type": "application/x-protobuf"}
    with serving(tmp_path / "cap.db", "--sink", "otlp", env=env) as serve:
        big = httpx.post(serve.url + "/v1/traces", content=b"\0" * (MAX_BODY + 1), headers=proto)
        assert big.status_code == 413
        bomb = gzip.compress(b"\0" * (65 << 20))
        inflated = httpx.post(serve.url + "/v1/traces", content=bomb, headers={**proto, "content-encoding": "gzip"})
        assert inflated.status_code == 413
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        statuses = []
        for start in range(0, 40):  # ~40 x 50 spans of ~600 bytes: past a 1 MiB cap
            body = encode_spans(_otel_spans(50, f"c{start}")).SerializeToString()
            r = httpx.post(serve.url + "/v1/traces", content=body, headers=proto)
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) > 0
                break
        assert statuses[0] == 200 and statuses[-1] == 429, statuses
        ready = httpx.get(serve.url + "/readyz")
        assert ready.status_code == 503 and "cap" in " ".join(ready.json()["reasons"])
        text = httpx.get(serve.url + "/metrics").text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families["spool_retried"].type == "counter" and families["spool_pending"].type == "gauge"
        assert families["spool_serve_ingested_spans"].samples[0].value > 0
        assert "# HELP spool_delivered_total Spans the backend took" in text and "# TYPE spool_pending gauge" in text
        code, err = serve.stop()
    assert code == 0, err


def test_off_loopback_a_token_is_required_to_start_and_to_be_served(tmp_path: Path) -> None:
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    env.pop("SPOOL_SERVE_TOKEN", None)
    port = _free_port()
    no_token = subprocess.run(
        [sys.executable, "-m", "spool", "serve", "--path", str(tmp_path / "t.db"), "--listen", f"0.0.0.0:{port}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_token.returncode == 2 and "SPOOL_SERVE_TOKEN" in no_token.stderr
    assert not (tmp_path / "t.db").exists()
    with serving(tmp_path / "t.db", "--sink", "otlp", env={**env, "SPOOL_SERVE_TOKEN": "s3cret-token"}) as serve:
        assert httpx.get(serve.url + "/metrics").status_code == 401
        assert httpx.post(serve.url + "/v1/traces", content=b"").status_code == 401
        auth = {"authorization": "Bearer s3cret-token", "content-type": "application/x-protobuf"}
        assert httpx.post(serve.url + "/v1/traces", content=b"", headers=auth).status_code == 200
        assert httpx.get(serve.url + "/healthz").status_code == 200  # probes need no token


def test_sigterm_stops_delivers_for_the_shutdown_timeout_and_keeps_the_rest(tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from spool import SpoolConfig
    from spool._store import Store

    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "SPOOL_SHUTDOWN_TIMEOUT": "1"}
    with serving(tmp_path / "s.db", "--sink", "otlp", env=env) as serve:
        OTLPSpanExporter(endpoint=serve.url + "/v1/traces").export(_otel_spans(30))
        t0 = time.monotonic()
        code, err = serve.stop(signal.SIGTERM)
    assert code == 0, err
    assert "stopped; 30 spans left" in err
    assert time.monotonic() - t0 < 60
    store = Store(tmp_path / "s.db", SpoolConfig())
    try:
        assert store.stats().pending == 30
    finally:
        store.close()


def test_state_changes_are_one_line_each() -> None:
    calm = {"delivered": 5, "retried": 0, "paused": None, "cap": False, "disk": None}
    down = {**calm, "retried": 3}
    lines, failing = changes(calm, down, False)
    assert failing and lines == ["delivery failing: the backend does not take spans (outage began); spans kept"]
    assert changes(down, {**down, "retried": 6}, True) == ([], True)  # still down: no new line
    lines, failing = changes(down, {**down, "delivered": 9}, True)
    assert lines == ["delivery resumed (outage ended)"] and not failing
    lines, _ = changes(calm, {**calm, "cap": True, "paused": "HTTP 401"}, False)
    assert lines == ["delivery paused on configuration: HTTP 401", "the spool is at its cap: requests get 429"]


def test_the_deploy_files_commands_run(tmp_path: Path) -> None:
    """docs/deploy: the systemd unit's ExecStart and the Kubernetes sidecar's command start a server that answers."""
    import re

    root = Path(__file__).resolve().parent.parent / "docs" / "deploy"
    unit = (root / "spool-serve.service").read_text()
    exec_start = re.search(r"^ExecStart=(.+)$", unit, re.M)
    manifest = (root / "sidecar.yaml").read_text()
    command = re.search(r"command: \[(.+)\]", manifest)
    assert exec_start and command
    for i, line in enumerate((exec_start.group(1), " ".join(c.strip(' "') for c in command.group(1).split(",")))):
        port = _free_port()
        argv = line.split()
        argv = [a for a in argv if Path(a).name != "spool"]  # the installed command; here: python -m spool
        argv = [f"127.0.0.1:{port}" if a.startswith(("127.0.0.1:", "0.0.0.0:")) else a for a in argv]
        argv = [str(tmp_path / f"d{i}.db") if a.endswith(".db") else a for a in argv]
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "SPOOL_SERVE_TOKEN": "t"}
        proc = subprocess.Popen([sys.executable, "-m", "spool", *argv], env=env, stderr=subprocess.PIPE, text=True)
        try:
            url = f"http://127.0.0.1:{port}"
            assert poll(lambda: _healthy(url), 30), argv  # noqa: B023 (called at once)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_sidecar_pattern_an_application_writes_the_file_and_serve_delivers_it(tmp_path: Path) -> None:
    from conftest import span, store_items

    path = tmp_path / "app.db"
    store_items(path, [span(i, end=True) for i in range(100)])  # an application's Spool(path): no sink
    with Receiver() as backend:
        env = {"SGP_API_KEY": "k", "SGP_ACCOUNT_ID": "a", "SGP_CLIENT_BASE_URL": backend.url}
        with serving(path, "--no-ingest", env=env) as serve:
            assert backend.wait_for(100, timeout=30)
            assert httpx.put(serve.url + "/v5/spans/batch", json={"items": []}).status_code == 404
            code, err = serve.stop()
    assert code == 0 and "stopped; 0 spans left" in err, err
