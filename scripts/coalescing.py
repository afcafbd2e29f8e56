"""Writes saved by start/end coalescing on an agent-like workload, and the cost of isolating a poison span.

    uv run python scripts/coalescing.py [--agents 20] [--requests 3] [--scale 0.1] [--seed 1] [--json]

Coalescing: concurrent agents each serve a few requests. A request is a nested tree of spans with mixed durations,
as an LLM agent produces them: `request` > `turn` x 2-4 > `llm` (0.3-4 s), `tool` x 0-3 (10 ms-3 s, some with a
`retrieval` child of 5-300 ms), with short think-time gaps. Every span puts a start event when it opens and an end
event when it closes, through a real `Spool` with its default drain triggers (`flush_interval` 4 s, `flush_trigger`
200 puts) and the real `SGPSink` to the local receiver. Wall time is compressed by `--scale` (0.1: a 4 s interval
runs in 0.4 s, a 2 s LLM call in 0.2 s; durations and `flush_interval` shrink together, so the ratios are the same).
A span whose end arrives while its start is still pending is sent once (ended); one that outlives a drain is sent
twice (start, then end). Printed: events put, receiver writes, writes saved, and the split by span kind.

Poison isolation: one span in a batch of 50 is rejected (HTTP 422 for any batch containing it). For each of the 50
positions, a fresh spool flushes the batch; the requests it took are counted at the receiver (bisection that skips
sending the second half whole when the first half went through; plain bisection would be 1 + 2 * ceil(log2 50) = 13).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spool import SGPSink, Spool, SpoolConfig
from spool._items import new_span_id
from spool.testing import Receiver


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Workload:
    """Puts the start and end events of nested agent spans; remembers each span's kind."""

    def __init__(self, spool: Spool, rnd: random.Random, scale: float) -> None:
        self.spool, self.rnd, self.scale = spool, rnd, scale
        self.events = 0
        self.kind: dict[str, str] = {}

    async def sleep(self, lo: float, hi: float) -> None:
        await asyncio.sleep(self.rnd.uniform(lo, hi) * self.scale)

    async def span(self, kind: str, trace: str, parent: str | None, body: Any) -> None:
        span_id = new_span_id()
        self.kind[span_id] = kind
        item: dict[str, Any] = {"trace_id": trace, "id": span_id, "name": kind, "start_timestamp": _now()}
        if parent is not None:
            item["parent_id"] = parent
        self.spool.put(item)
        self.events += 1
        await body(span_id)
        self.spool.put({**item, "end_timestamp": _now()})
        self.events += 1

    async def request(self) -> None:
        trace = new_span_id()

        async def turn(parent: str) -> None:
            await self.span("llm", trace, parent, lambda _: self.sleep(0.3, 4.0))
            for _ in range(self.rnd.randint(0, 3)):
                await self.sleep(0.0, 0.05)

                async def tool(me: str) -> None:
                    if self.rnd.random() < 0.4:
                        await self.span("retrieval", trace, me, lambda _: self.sleep(0.005, 0.3))
                    await self.sleep(0.01, 3.0)

                await self.span("tool", trace, parent, tool)

        async def request(root: str) -> None:
            for _ in range(self.rnd.randint(2, 4)):
                await self.span("turn", trace, root, turn)
                await self.sleep(0.0, 0.1)

        await self.span("request", trace, None, request)


async def coalescing(agents: int, requests: int, scale: float, seed: int) -> dict[str, Any]:
    defaults = SpoolConfig()
    cfg = replace(defaults, flush_interval=defaults.flush_interval * scale)
    with Receiver() as rx, tempfile.TemporaryDirectory() as tmp:
        sink = SGPSink(api_key="k", account_id="a", base_url=rx.url)
        async with Spool(Path(tmp) / "spans.db", sink=sink, config=cfg) as sp:
            assert await sp.flush(timeout=30)  # warm up: the SDK configured, so the first drain is not late
            work = Workload(sp, random.Random(seed), scale)

            async def agent() -> None:
                for _ in range(requests):
                    await work.request()
                    await work.sleep(0.0, 1.0)

            t0 = time.monotonic()
            await asyncio.gather(*(agent() for _ in range(agents)))
            assert await sp.flush(timeout=60)
            elapsed = time.monotonic() - t0
        spans = len(work.kind)
        assert len(rx.spans) == spans and rx.ended == spans, "not every span arrived ended"
        sent: dict[str, int] = {}
        seen_end: set[str] = set()
        for _, span_id, is_end in rx.received_ids:
            assert span_id not in seen_end, "a start arrived after its end"
            if is_end:
                seen_end.add(span_id)
            sent[span_id] = sent.get(span_id, 0) + 1
        by_kind: dict[str, dict[str, int]] = {}
        for span_id, kind in work.kind.items():
            k = by_kind.setdefault(kind, {"spans": 0, "writes": 0})
            k["spans"] += 1
            k["writes"] += sent[span_id]
        return {
            "agents": agents,
            "requests_per_agent": requests,
            "scale": scale,
            "flush_interval_s": cfg.flush_interval,
            "flush_trigger": cfg.flush_trigger,
            "elapsed_s": round(elapsed, 2),
            "spans": spans,
            "events_put": work.events,
            "receiver_writes": rx.writes,
            "http_requests": rx.requests,
            "writes_saved": work.events - rx.writes,
            "writes_saved_pct": round(100 * (work.events - rx.writes) / work.events, 1),
            "by_kind": by_kind,
        }


async def poison_cost(batch: int = 50) -> dict[str, Any]:
    cfg = SpoolConfig(batch_size=batch, flush_interval=60, flush_trigger=1_000_000, commit_interval=0.001)
    counts: list[int] = []
    with Receiver() as rx, tempfile.TemporaryDirectory() as tmp:
        sink = SGPSink(api_key="k", account_id="a", base_url=rx.url)
        for pos in range(batch):
            rx.reset()
            poison = f"s{pos}"
            rx.reject_if = lambda item, poison=poison: "bad span" if item["id"] == poison else None
            async with Spool(Path(tmp) / f"p{pos}.db", sink=sink, config=cfg) as sp:
                assert await sp.flush(timeout=5)  # the drainer's first round: nothing yet
                for i in range(batch):
                    sp.put({"trace_id": "t", "id": f"s{i}", "name": "n", "start_timestamp": _now()})
                assert await sp.flush(timeout=30)
                st = await sp.stats()
                assert st.dead == 1 and st.delivered_total == batch - 1
            assert len(rx.spans) == batch - 1
            counts.append(rx.requests)
    return {
        "batch": batch,
        "requests_min": min(counts),
        "requests_mean": round(statistics.fmean(counts), 2),
        "requests_max": max(counts),
        "plain_bisection": 1 + 2 * math.ceil(math.log2(batch)),
        "per_position": counts,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=20, help="concurrent agents")
    ap.add_argument("--requests", type=int, default=3, help="requests per agent")
    ap.add_argument("--scale", type=float, default=0.1, help="wall-time compression (durations and flush_interval)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    logging.getLogger("spool").setLevel(logging.ERROR)  # the poison runs would log one warning each
    co = asyncio.run(coalescing(args.agents, args.requests, args.scale, args.seed))
    po = asyncio.run(poison_cost())
    if args.json:
        print(json.dumps({"coalescing": co, "poison": {k: v for k, v in po.items()}}))
        return 0
    print(
        f"coalescing: {co['agents']} agents x {co['requests_per_agent']} requests, {co['spans']} spans, "
        f"flush_interval {co['flush_interval_s']:g}s (4 s x scale {co['scale']:g}), trigger {co['flush_trigger']}"
    )
    print(f"  events put        {co['events_put']:>7}   (a per-event exporter sends this many)")
    print(f"  receiver writes   {co['receiver_writes']:>7}   in {co['http_requests']} requests")
    print(f"  writes saved      {co['writes_saved']:>7}   ({co['writes_saved_pct']}%; 50% is the most possible)")
    for kind, k in sorted(co["by_kind"].items()):
        print(f"    {kind:<10} {k['spans']:>6} spans  {k['writes'] / k['spans']:.2f} writes/span")
    print(
        f"poison isolation, 1 bad span in a batch of {po['batch']}: requests min {po['requests_min']} / "
        f"mean {po['requests_mean']} / max {po['requests_max']} (plain bisection: {po['plain_bisection']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
