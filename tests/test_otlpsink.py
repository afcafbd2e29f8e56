"""`OTLPSink`'s configuration from the standard OTEL_EXPORTER_OTLP_* variables, and the OTLP status mapping."""

from __future__ import annotations

import pytest

from spool import CredentialsError, EndpointError, OTLPSink, RejectedError, SpoolConfigError, TransientError
from spool._otlpsink import DEFAULT_ENDPOINT, classify_otlp, otlp_endpoint, otlp_headers


def test_endpoint_from_the_environment() -> None:
    assert otlp_endpoint({}) == DEFAULT_ENDPOINT == "http://localhost:4318/v1/traces"
    assert otlp_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}) == "http://c:4318/v1/traces"
    both = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x"}
    assert otlp_endpoint(both) == "http://t/x"  # the signal's own variable, as is


def test_headers_from_the_environment() -> None:
    env = {"OTEL_EXPORTER_OTLP_HEADERS": "api-key=a%20b, x-tenant=7"}
    assert otlp_headers(env) == {"api-key": "a b", "x-tenant": "7"}
    env["OTEL_EXPORTER_OTLP_TRACES_HEADERS"] = "only=this"
    assert otlp_headers(env) == {"only": "this"}
    with pytest.raises(SpoolConfigError, match="OTEL_EXPORTER_OTLP_HEADERS: entry 2 is not key=value"):
        otlp_headers({"OTEL_EXPORTER_OTLP_HEADERS": "a=1,nope"})


def test_sink_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")
    sink = OTLPSink()
    assert sink.endpoint == "http://collector:4318/v1/traces" and sink.timeout == 2.5
    assert repr(sink) == "OTLPSink(endpoint='http://collector:4318/v1/traces')"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")
    with pytest.raises(SpoolConfigError, match="OTEL_EXPORTER_OTLP_TIMEOUT='soon'"):
        OTLPSink()
    with pytest.raises(SpoolConfigError, match="not an http"):
        OTLPSink("collector:4318")


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, None),
        (202, None),
        (400, RejectedError),
        (413, RejectedError),
        (401, CredentialsError),
        (403, CredentialsError),
        (404, EndpointError),
        (408, TransientError),
        (429, TransientError),
        (502, TransientError),
        (503, TransientError),
        (504, TransientError),
        (500, TransientError),
    ],
)
def test_status_mapping(status: int, kind: type[Exception] | None) -> None:
    err = classify_otlp(status, b"{}", "3")
    assert (err is None) if kind is None else type(err) is kind
    if status == 429:
        assert isinstance(err, TransientError) and err.retry_after == 3.0


def test_a_connection_failure_names_the_url_it_tried_without_credentials() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = OTLPSink(f"http://user:secret-pw@127.0.0.1:{port}/v1/traces")
    with pytest.raises(TransientError) as info:
        sink.send_blocking([b""], timeout=5)
    assert f"connection to http://user:***@127.0.0.1:{port}/v1/traces failed" in str(info.value)
    assert "secret-pw" not in str(info.value)
