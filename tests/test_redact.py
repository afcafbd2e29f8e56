"""`redact=`: what is stored and sent is the redacted item, on every way in; `spool.redact.scrub()`."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import FAST, span

from spool import Spool, SyncSpoolTracingProcessor
from spool.redact import REDACTED, Scrub, scrub
from spool.testing import MemorySink

SECRET = "sk-live-7f3a9c2e11"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.payload.sig"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----"


def _leaky(i: int = 1) -> dict[str, Any]:
    return span(
        i,
        end=True,
        input={"messages": [{"role": "user", "content": f"call it with Authorization: Bearer {TOKEN}"}]},
        metadata={"api_key": SECRET, "prompt_tokens": 12, "llm.token_count.total": 40, "cert": PEM},
    )


def _file_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_scrub_replaces_secret_keys_bearer_tokens_and_key_blocks_and_leaves_the_rest() -> None:
    s = scrub()
    item = _leaky()
    out = s(item)
    assert out["metadata"]["api_key"] == REDACTED and out["metadata"]["cert"] == REDACTED
    assert out["input"]["messages"][0]["content"] == f"call it with Authorization: Bearer {REDACTED}"
    assert out["metadata"]["prompt_tokens"] == 12 and out["metadata"]["llm.token_count.total"] == 40
    assert s.scrubbed == 3
    assert item["metadata"]["api_key"] == SECRET  # the caller's item is left alone
    for key in ("Password", "x-api-key", "client_secret", "Set-Cookie", "access_token", "auth.token", "private_key"):
        assert s.secret_key(key), key
    for key in ("tokens", "input_tokens", "token_count", "keyword", "author"):
        assert not s.secret_key(key), key
    clean = span(2)
    assert s(clean) is clean and not s.screen(orjson.dumps(clean))
    assert s.screen(orjson.dumps(_leaky()))


def test_a_spool_with_scrub_writes_and_sends_no_secret(tmp_path: Path) -> None:
    sink = MemorySink()
    path = tmp_path / "s.db"

    async def go() -> dict[str, Any]:
        async with Spool(path, sink=sink, config=FAST, redact=scrub()) as sp:
            sp.put(_leaky(1))
            sp.put(span(2))
            await sp.commit()
            stored = _file_bytes(path)
            assert await sp.flush(10)
            assert SECRET.encode() not in stored and TOKEN.encode() not in stored and b"MIIEow" not in stored
            return sp.metrics(gauges=False)

    m = asyncio.run(go())
    sent = b"".join(sink.bodies)
    assert SECRET.encode() not in sent and TOKEN.encode() not in sent
    assert {i["id"] for i in sink.items()} == {"span-1", "span-2"} and m["dropped_redacted"] == 0


@pytest.mark.parametrize("outcome", ["drop", "raise"])
def test_a_redactor_that_drops_or_raises_drops_the_item_counted_and_never_raises(tmp_path: Path, outcome: str) -> None:
    def redactor(item: Mapping[str, Any]) -> Mapping[str, Any] | None:
        if item["id"] == "span-1":
            if outcome == "raise":
                raise RuntimeError(f"redactor broke on {SECRET}")
            return None
        return item

    path = tmp_path / "s.db"

    async def go() -> dict[str, Any]:
        async with Spool(path, config=FAST, redact=redactor) as sp:
            sp.put(_leaky(1))  # never raises
            sp.put(span(2))
            await sp.commit()
            assert (await sp.stats()).pending == 1
            return sp.metrics(gauges=False)

    m = asyncio.run(go())
    assert m["dropped_redacted"] == 1 and SECRET.encode() not in _file_bytes(path)


def test_the_agentex_processor_stores_and_sends_the_redacted_item(tmp_path: Path) -> None:
    sink = MemorySink()
    proc = SyncSpoolTracingProcessor(tmp_path / "p.db", sink=sink, config=FAST, redact=scrub())
    try:
        proc.on_span_end(_leaky(1))
        assert proc.flush(10)
        assert _file_bytes(tmp_path / "p.db").find(SECRET.encode()) == -1
    finally:
        proc.shutdown()
    assert sink.items()[0]["metadata"]["api_key"] == REDACTED and proc.dropped == 0


def test_the_opentelemetry_processor_redacts_attributes_and_event_attributes_of_otlp_spans(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from spool.otel import SpoolSpanProcessor

    sink = MemorySink("otlp")
    redactor = scrub()
    proc = SpoolSpanProcessor(tmp_path / "otel.db", sink=sink, config=FAST, redact=redactor)
    provider = TracerProvider()
    provider.add_span_processor(proc)
    with provider.get_tracer("t").start_as_current_span("call", attributes={"http.api_key": SECRET, "n": 1}) as s:
        s.add_event("request", {"headers": f"Authorization: Bearer {TOKEN}"})
    assert proc.force_flush(10_000)
    provider.shutdown()
    sent = b"".join(sink.bodies)
    assert len(sink.bodies) == 1 and SECRET.encode() not in sent and TOKEN.encode() not in sent
    assert REDACTED.encode() in sent and b"call" in sent
    assert redactor.scrubbed == 2
    assert isinstance(redactor, Scrub)
