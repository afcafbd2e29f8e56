"""`spool.Sink`, the whole contract, and what the HTTP sinks and `MemorySink` make of it: through httpx's
`MockTransport` where the answer is what is tested (the network path is tested against real servers elsewhere)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from conftest import FAST, span

from spool import (
    CredentialsError,
    EndpointError,
    OTLPSink,
    RejectedError,
    SGPSink,
    Sink,
    Spool,
    TransientError,
)
from spool.testing import MemorySink


def test_a_sink_without_send_blocking_cannot_be_made_and_the_rest_has_defaults() -> None:
    class Nothing(Sink):
        pass

    with pytest.raises(TypeError, match="send_blocking"):
        Nothing()  # type: ignore[abstract]

    class Minimal(Sink):
        def send_blocking(self, bodies: Sequence[bytes], *, timeout: float) -> None:
            return None

    sink = Minimal()
    assert sink.format == "sgp" and dict(sink.counters()) == {}
    assert sink.prepare() is None and sink.close() is None
    assert "URL" in sink.endpoint_setting and "credentials" in sink.credentials_setting


@pytest.mark.parametrize(
    ("status", "kind"),
    [(200, None), (401, CredentialsError), (404, EndpointError), (422, RejectedError), (503, TransientError)],
)
def test_sgp_sink_through_a_mock_transport_says_what_each_answer_means(status: int, kind: type | None) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json={"detail": "no"} if status >= 400 else {"items": []})

    sink = SGPSink("secret-key-1234", "acct", "http://sgp.test", transport=httpx.MockTransport(handler))
    if kind is None:
        sink.send_blocking([b'{"id":"a"}'], timeout=5)
    else:
        with pytest.raises(kind) as err:
            sink.send_blocking([b'{"id":"a"}'], timeout=5)
        assert "secret-key-1234" not in str(err.value)
    assert seen[0].method == "PUT" and seen[0].url.path == "/v5/spans/batch"
    assert seen[0].content == b'{"items":[{"id":"a"}]}'
    assert seen[0].headers["x-api-key"] == "secret-key-1234"


def test_otlp_sink_counts_a_partial_success_in_its_counters_and_the_spools_metrics(tmp_path: Path) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    answer = ExportTraceServiceResponse()
    answer.partial_success.rejected_spans = 2
    answer.partial_success.error_message = "two too old"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=answer.SerializeToString(), headers={"content-type": "application/x-protobuf"}
        )

    sink = OTLPSink("http://collector.test/v1/traces", headers={}, transport=httpx.MockTransport(handler))
    from spool._otlpwire import field

    row = field(1, b"") + field(2, field(2, b"\x0a\x10" + b"t" * 16 + b"\x12\x08" + b"s" * 8))
    sink.send_blocking([row], timeout=5)
    assert dict(sink.counters()) == {"partial_rejected": 2}

    async def metrics() -> object:
        async with Spool(tmp_path / "otlp.db", sink=sink, config=FAST) as sp:
            return sp.metrics(gauges=False)["partial_rejected"]

    assert asyncio.run(metrics()) == 2


def test_a_user_sinks_counters_and_settings_reach_metrics_and_last_error(tmp_path: Path) -> None:
    class Counting(MemorySink):
        credentials_setting = "ACME_KEY"

        def counters(self) -> dict[str, int]:
            return {"acme_bytes": sum(map(len, self.bodies))}

    sink = Counting()

    async def go() -> tuple[object, object, bool]:
        async with Spool(tmp_path / "s.db", sink=sink, config=FAST) as sp:
            sp.put(span(1))
            assert await sp.flush(10)
            sink.fail(CredentialsError("HTTP 401: bad key", status=401, detail="bad key"))
            sp.put(span(2))
            blocked = not await sp.flush(10)
            return sp.metrics(gauges=False)["acme_bytes"], (await sp.stats()).last_error, blocked

    acme_bytes, last_error, blocked = asyncio.run(go())
    assert acme_bytes == len(sink.bodies[0]) and blocked
    assert "credentials refused" in str(last_error)


def test_memory_sink_records_fails_rejects_and_holds_on_command() -> None:
    sink = MemorySink()
    sink.send_blocking([b"a", b"b"], timeout=1)
    sink.fail(TransientError("down"), times=2)
    for _ in range(2):
        with pytest.raises(TransientError):
            sink.send_blocking([b"c"], timeout=1)
    sink.reject_if(lambda body: body == b"bad")
    with pytest.raises(RejectedError):
        sink.send_blocking([b"ok", b"bad"], timeout=1)
    sink.reject_if(None)
    sink.hold()
    with pytest.raises(TransientError, match="held"):
        sink.send_blocking([b"late"], timeout=0.01)
    sink.release()
    sink.send_blocking([b"d"], timeout=1)
    assert sink.batches == [[b"a", b"b"], [b"d"]] and sink.requests == 6
    assert sink.wait_for(3, timeout=0) and not sink.wait_for(4, timeout=0)
