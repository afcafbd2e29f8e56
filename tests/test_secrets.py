"""Secrets stay secret: credential values never reach `last_error`, the file, logs, `Error:` lines or reprs; a key
with surrounding whitespace (a file-mounted secret) is stripped. Real sinks, the real receiver, real CLI runs."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import FAST, span

from spool import OTLPSink, SGPSink, Spool, SpoolConfigError
from spool.testing import Receiver

KEY = "sk-live-7f3a9c1e5b2d4f6a8c0e"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.secret-token-value"
PASSWORD = "hunter2-pass"


def _file_text(path: Path) -> str:
    """Every byte of the spool's files, as text: what a stolen file or a backup would show."""
    return "".join(p.read_bytes().decode("latin-1") for p in path.parent.glob(path.name + "*"))


def test_a_key_with_a_trailing_newline_is_stripped_and_delivers(
    spool_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Receiver(api_key=KEY) as rx:
        monkeypatch.setenv("SGP_API_KEY", KEY + "\n")  # a file-mounted secret
        monkeypatch.setenv("SGP_ACCOUNT_ID", "acct\n")
        monkeypatch.setenv("SGP_CLIENT_BASE_URL", rx.url)

        async def main() -> bool:
            async with Spool(spool_path, sink=SGPSink(), config=FAST) as sp:
                sp.put(span(1))
                return await sp.flush(30)

        assert asyncio.run(main()) and len(rx.spans) == 1


def _deliver_sgp(path: Path, sink: SGPSink) -> None:
    async def main() -> None:
        async with Spool(path, sink=sink, config=replace(FAST, shutdown_timeout=0.0)) as sp:
            sp.put(span(1))
            await sp.flush(2)

    asyncio.run(main())


def _deliver_otlp(path: Path, sink: OTLPSink) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from spool.otel import SpoolSpanProcessor

    provider = TracerProvider()
    processor = SpoolSpanProcessor(path, sink=sink, config=replace(FAST, shutdown_timeout=0.0))
    provider.add_span_processor(processor)
    with provider.get_tracer("t").start_as_current_span("x"):
        pass
    processor.force_flush(2000)
    provider.shutdown()


def test_credential_values_never_reach_last_error_the_file_logs_or_reprs(
    spool_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that refuses the key, an endpoint whose URL carries a password, a header value no header may carry:
    each failure is recorded in `last_error` and logged, and no credential value shows anywhere."""
    with Receiver(api_key="the-right-key") as rx:
        url = rx.url.replace("http://", f"http://user:{PASSWORD}@") + "/nowhere"
        cases = [
            (_deliver_sgp, SGPSink(api_key=KEY, account_id="a", base_url=rx.url), "credentials refused"),
            (_deliver_otlp, OTLPSink(endpoint=url, headers={"authorization": f"Bearer {TOKEN}"}), "HTTP 404"),
            (_deliver_otlp, OTLPSink(endpoint=rx.url + "/v1/traces", headers={"api-key": f"{TOKEN}\x00"}), "failed"),
        ]
        for i, (deliver, sink, error) in enumerate(cases):
            path = spool_path.with_name(f"s{i}.db")
            assert PASSWORD not in repr(sink) and TOKEN not in repr(sink) and KEY not in repr(sink)
            caplog.clear()
            with caplog.at_level(logging.DEBUG, logger="spool"):
                deliver(path, sink)  # type: ignore[operator]
            last_error = sqlite3.connect(path).execute("SELECT value FROM meta WHERE key = 'last_error'").fetchone()
            assert last_error is not None and error in last_error[0], (i, last_error)
            shown = caplog.text + _file_text(path)
            for secret in (KEY, TOKEN, PASSWORD):
                assert secret not in shown, (i, secret, shown[-2000:])


def test_config_errors_name_the_setting_never_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"Authorization: Bearer {TOKEN}")
    with pytest.raises(SpoolConfigError) as info:
        OTLPSink(endpoint="http://127.0.0.1:1/v1/traces")
    assert "OTEL_EXPORTER_OTLP_HEADERS" in str(info.value) and TOKEN not in str(info.value)
    with pytest.raises(SpoolConfigError) as info:
        SGPSink(api_key=KEY, account_id="a", base_url=f"ftp://u:{PASSWORD}@host")
    assert PASSWORD not in str(info.value)


def test_spool_flush_error_lines_show_no_credential(spool_path: Path) -> None:
    from conftest import store_items

    store_items(spool_path, [span(1)])
    with Receiver(api_key="the-right-key") as rx:
        env = {**os.environ, "SGP_API_KEY": KEY, "SGP_ACCOUNT_ID": "a", "SGP_CLIENT_BASE_URL": rx.url}
        out = subprocess.run(
            [sys.executable, "-m", "spool", "flush", "--path", str(spool_path)], env=env, capture_output=True, text=True
        )
    assert out.returncode == 2 and "credentials refused" in out.stderr
    assert KEY not in out.stdout + out.stderr + _file_text(spool_path)
