"""The `serve` figures of scripts/bench.py (`--only serve`): `spool serve` as its own process, fed over loopback.

- `ingest`: durable ingest of OTLP protobuf requests of 512 spans (the official exporter's encoding, done before the
  clock starts), the backend down so that ingest alone is timed; two senders at once, each waiting for its answer
  (200 = committed). Against the same rows put in-process (`Spool.put_rows` + `commit` per request) in the same run.
- `paced`: requests of 512 spans at 5k spans/s while `serve` delivers to a loopback collector (the receiver); each
  acknowledgement's latency (p50, p99) and what is still pending once the sending stops.
- `rss`: `serve`'s resident memory once the `ingest` backlog is in its file, and again after the `paced` run.
- `baseline`: the same spans sent by the official `OTLPSpanExporter` straight to the collector (spans/s).

`uv run python scripts/bench_serve.py --backlog 1000000` fills a file with a million spans through `serve` (the
backend down) and prints its RSS after every 50,000; `--soak 600` sends 5k spans/s for ten minutes while it delivers,
and prints its RSS and acknowledgement p99 every 30 s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["bench_serve"]

BATCH = 512


def _spans(n: int) -> list[Any]:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    tracer = provider.get_tracer("bench", "1.0")
    out = []
    for i in range(n):
        attrs = {"i": i, "http.route": "/checkout", "gen_ai.request.model": "gpt-4o", "input.value": "x" * 400}
        with tracer.start_as_current_span("chat", attributes=attrs) as s:
            pass
        out.append(s)
    return out


def _bodies(spans: list[Any]) -> list[bytes]:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    return [encode_spans(spans[i : i + BATCH]).SerializeToString() for i in range(0, len(spans), BATCH)]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Serve:
    def __init__(self, path: Path, endpoint: str, **env_extra: str) -> None:
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "SPOOL_SHUTDOWN_TIMEOUT": "1", **env_extra}
        cmd = [sys.executable, "-m", "spool", "serve", "--path", str(path), "--listen", f"127.0.0.1:{self.port}"]
        self.proc = subprocess.Popen([*cmd, "--sink", "otlp"], env=env, stderr=subprocess.DEVNULL)
        import httpx

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("spool serve did not come up")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def _post_all(url: str, bodies: list[bytes], senders: int = 2) -> float:
    """Seconds to have every body acknowledged, `senders` at once."""
    import httpx

    headers = {"content-type": "application/x-protobuf"}
    parts = [bodies[i::senders] for i in range(senders)]
    failures: list[int] = []

    def send(part: list[bytes]) -> None:
        with httpx.Client(timeout=60) as client:
            for body in part:
                r = client.post(url + "/v1/traces", content=body, headers=headers)
                if r.status_code != 200:
                    failures.append(r.status_code)

    threads = [threading.Thread(target=send, args=(p,)) for p in parts]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(f"serve refused {len(failures)} requests: {sorted(set(failures))}")
    return time.perf_counter() - t0


def _in_process(bodies: list[bytes], tmp: Path) -> float:
    """Seconds to put and commit the same rows in-process, a request's rows per commit."""
    from spool import Spool, SpoolConfig
    from spool._ingest import otlp_rows
    from spool.testing import MemorySink

    rows = [otlp_rows(b, False, 1 << 20).rows for b in bodies]

    async def run() -> float:
        async with Spool(tmp / "inproc.db", sink=MemorySink("otlp"), config=SpoolConfig(flush_interval=3600)) as sp:
            t0 = time.perf_counter()
            for part in rows:
                sp.put_rows(part)
                await sp.commit()
            return time.perf_counter() - t0

    return asyncio.run(run())


def bench_serve(n: int, paced_s: float, tmp: Path, rx: Any) -> dict[str, Any]:
    import httpx

    spans = _spans(n)
    bodies = _bodies(spans)
    out: dict[str, Any] = {"spans": n, "batch": BATCH}
    inproc_s = _in_process(bodies, tmp)
    serve = _Serve(tmp / "serve.db", "http://127.0.0.1:9")  # the backend down: ingest alone
    try:
        serve_s = _post_all(serve.url, bodies)
        out["rss_backlog_mb"] = serve.rss_mb()
    finally:
        serve.stop()
    out["ingest_spans_per_s"] = n / serve_s
    out["inproc_spans_per_s"] = n / inproc_s
    out["ingest_ratio"] = inproc_s / serve_s

    rx.reset()
    serve = _Serve(tmp / "paced.db", rx.url)
    try:
        interval = BATCH / 5000  # 5k spans/s
        latencies: list[float] = []
        headers = {"content-type": "application/x-protobuf"}
        with httpx.Client(timeout=60) as client:
            t_next = time.perf_counter()
            i = 0
            end = t_next + paced_s
            while time.perf_counter() < end:
                body = bodies[i % len(bodies)]
                i += 1
                t = time.perf_counter()
                r = client.post(serve.url + "/v1/traces", content=body, headers=headers)
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise RuntimeError(f"serve answered {r.status_code}")
                t_next += interval
                time.sleep(max(0.0, t_next - time.perf_counter()))
        time.sleep(1.0)
        pending = httpx.get(serve.url + "/metrics").text
        left = next((float(line.split()[1]) for line in pending.splitlines() if line.startswith("spool_pending ")), -1)
        out["paced_rss_mb"] = serve.rss_mb()
    finally:
        serve.stop()
    latencies.sort()
    out["ack_p50_ms"] = statistics.median(latencies) * 1e3
    out["ack_p99_ms"] = latencies[int(len(latencies) * 0.99) - 1] * 1e3
    out["paced_requests"] = len(latencies)
    out["pending_1s_after"] = left

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    rx.reset()
    exporter = OTLPSpanExporter(endpoint=rx.url + "/v1/traces")
    t0 = time.perf_counter()
    for i in range(0, n, BATCH):
        exporter.export(spans[i : i + BATCH])
    out["baseline_spans_per_s"] = n / (time.perf_counter() - t0)
    exporter.shutdown()
    return out


def backlog_rss(total: int, tmp: Path) -> list[tuple[int, float]]:
    """`serve`'s RSS while `total` spans pile up in its file (the backend down), sent in chunks of 50,000 new spans:
    (spans in the file, RSS MB) after each chunk."""
    serve = _Serve(tmp / "backlog.db", "http://127.0.0.1:9", SPOOL_MAX_BYTES=str(8 << 30))  # (a 1M backlog: > 1 GiB)
    out = []
    try:
        sent = 0
        while sent < total:
            _post_all(serve.url, _bodies(_spans(min(50_000, total - sent))))
            sent += min(50_000, total - sent)
            out.append((sent, serve.rss_mb()))
    finally:
        serve.stop()
    return out


def soak(seconds: float, tmp: Path, rx: Any) -> list[tuple[float, float, float]]:
    """`serve` taking 5k spans/s (requests of 512, new ids every round) while delivering to `rx`, for `seconds`:
    (elapsed s, RSS MB, ack p99 ms of the last 30 s) every 30 s."""
    import httpx

    bodies = _bodies(_spans(20 * BATCH))
    serve = _Serve(tmp / "soak.db", rx.url)
    out: list[tuple[float, float, float]] = []
    headers = {"content-type": "application/x-protobuf"}
    try:
        with httpx.Client(timeout=60) as client:
            t0 = t_next = mark = time.perf_counter()
            latencies: list[float] = []
            i = 0
            while time.perf_counter() - t0 < seconds:
                t = time.perf_counter()
                client.post(serve.url + "/v1/traces", content=bodies[i % len(bodies)], headers=headers)
                latencies.append(time.perf_counter() - t)
                i += 1
                t_next += BATCH / 5000
                time.sleep(max(0.0, t_next - time.perf_counter()))
                if time.perf_counter() - mark >= 30:
                    latencies.sort()
                    out.append((time.perf_counter() - t0, serve.rss_mb(), latencies[int(len(latencies) * 0.99)] * 1e3))
                    print(f"{out[-1][0]:6.0f} s: RSS {out[-1][1]:.1f} MB, ack p99 {out[-1][2]:.1f} ms", flush=True)
                    latencies, mark = [], time.perf_counter()
    finally:
        serve.stop()
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench import ReceiverProcess

    if len(sys.argv) > 2 and sys.argv[1] == "--soak":
        rx = ReceiverProcess()
        try:
            with tempfile.TemporaryDirectory() as d:
                soak(float(sys.argv[2]), Path(d), rx)
        finally:
            rx.close()
        sys.exit(0)
    if len(sys.argv) > 2 and sys.argv[1] == "--backlog":
        with tempfile.TemporaryDirectory() as d:
            for spans, mb in backlog_rss(int(sys.argv[2]), Path(d)):
                print(f"{spans:>9,} spans in the file: RSS {mb:.1f} MB", flush=True)
        sys.exit(0)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rx = ReceiverProcess()
    try:
        with tempfile.TemporaryDirectory() as d:
            for key, value in bench_serve(n, 10.0, Path(d), rx).items():
                print(f"{key}: {value:,.2f}" if isinstance(value, float) else f"{key}: {value}")
    finally:
        rx.close()
