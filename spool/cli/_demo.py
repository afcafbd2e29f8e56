"""What `spool demo` runs: the whole story in ~20 seconds, with no credentials and no set-up.

A local SGP-compatible receiver on 127.0.0.1, a temporary spool file, and an agent-like workload (turns with LLM and
tool calls, nested, each span a start and an end event) written through the real `Spool` and `SGPSink`. Mid-run the
receiver refuses connections for a few seconds: the backlog grows on disk, then replays. The closing table proves
every span arrived: exit 0 when every produced span is at the receiver with its end, else 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._items import new_span_id
from ._flush import quiet_logs
from ._format import human_bytes, human_duration, plural

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from .._receiver import Receiver
    from .._spool import Spool

__all__ = ["DemoResult", "Workload", "demo", "run_demo"]

_QUESTIONS = (
    "Why did checkout latency spike at 02:10 UTC?",
    "Summarize yesterday's failed payment retries by region.",
    "Which feature flag changed before the error-rate alert?",
    "Draft a reply to the customer about invoice INV-20931.",
    "Find the slowest SQL query in the orders service this week.",
)
_MODELS = ("gpt-4o-mini", "claude-3-5-haiku", "llama-3.1-70b")
# name, SGP span type, min and max seconds (real agents take ~5x longer; scaled to fit the demo)
_TOOLS = (
    ("tool.search_docs", "DOCUMENT_SEARCH", 0.03, 0.15),
    ("tool.run_sql", "CODE_EXECUTION", 0.02, 0.20),
    ("tool.fetch_url", "EXTERNAL_ENDPOINT", 0.05, 0.30),
    ("tool.calculator", "CUSTOM", 0.005, 0.02),
)


# -- the workload -----------------------------------------------------------------------------------------------


class Workload:
    """Agent turns written as span start and end events into a spool; counts what it produced."""

    def __init__(self, spool: Spool, rng: random.Random) -> None:
        self.spool = spool
        self.rng = rng
        self.spans: set[tuple[str, str]] = set()
        self.events = 0
        self.open = 0

    @contextlib.asynccontextmanager
    async def span(
        self, trace_id: str, name: str, type_: str, parent_id: str | None = None, **fields: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Put the start event now and the end event (with whatever was added to the item) on exit."""
        item: dict[str, Any] = {
            "trace_id": trace_id,
            "id": new_span_id(),
            "name": name,
            "type": type_,
            "start_timestamp": datetime.now(UTC),
            **fields,
        }
        if parent_id is not None:
            item["parent_id"] = parent_id
        self.spool.put(item)
        self.spans.add((trace_id, item["id"]))
        self.events += 1
        self.open += 1
        yield item
        self.spool.put({**item, "end_timestamp": datetime.now(UTC), "status": "SUCCESS"})
        self.events += 1
        self.open -= 1

    async def _pause(self, lo: float, hi: float) -> None:
        await asyncio.sleep(self.rng.uniform(lo, hi))

    def _llm(self, prompt_tokens: int) -> dict[str, Any]:
        return {
            "model": self.rng.choice(_MODELS),
            "prompt_tokens": prompt_tokens,
            "completion_tokens": self.rng.randint(40, 600),
            "temperature": 0.2,
        }

    async def _tool(self, trace_id: str, parent_id: str, name: str, type_: str, lo: float, hi: float) -> None:
        args = {"query": self.rng.choice(_QUESTIONS)[:40], "limit": self.rng.randint(3, 20)}
        async with self.span(trace_id, name, type_, parent_id, input=args) as s:
            if name == "tool.search_docs":  # a retrieval with a rerank inside
                async with self.span(trace_id, "kb.retrieve", "KB_RETRIEVAL", s["id"], metadata={"k": 20}):
                    await self._pause(lo, hi)
                async with self.span(trace_id, "rerank", "RERANKING", s["id"], metadata={"top_n": 5}):
                    await self._pause(0.01, 0.04)
            else:
                await self._pause(lo, hi)
            s["output"] = {"rows": self.rng.randint(0, 50), "truncated": False}

    async def turn(self) -> None:
        """One agent turn: guardrail, 1-3 plan/act steps with parallel tool calls, an answer, a guardrail."""
        rng, trace_id = self.rng, new_span_id()
        question = rng.choice(_QUESTIONS)
        async with self.span(trace_id, "agent.turn", "AGENT_WORKFLOW", input={"user": question}) as root:
            rid = root["id"]
            async with self.span(trace_id, "guardrail.input", "GUARDRAIL", rid):
                await self._pause(0.005, 0.02)
            for step in range(rng.randint(1, 3)):
                async with self.span(trace_id, "llm.plan", "COMPLETION", rid, metadata=self._llm(800 + 400 * step)):
                    await self._pause(0.08, 0.40)
                tools = rng.sample(_TOOLS, rng.randint(1, 3))
                await asyncio.gather(*(self._tool(trace_id, rid, *t) for t in tools))
            async with self.span(trace_id, "llm.answer", "COMPLETION", rid, metadata=self._llm(2400)) as answer:
                await self._pause(0.10, 0.60)
                answer["output"] = {"text": "Here is what I found: " + "lorem ipsum " * rng.randint(5, 40)}
            async with self.span(trace_id, "guardrail.output", "OUTPUT_GUARDRAIL", rid):
                await self._pause(0.005, 0.02)
            root["output"] = {"answer_chars": rng.randint(200, 2000)}

    async def agent(self, stop_at: float) -> None:
        """Turns back to back until `stop_at` (loop time); the last turn always finishes."""
        loop = asyncio.get_running_loop()
        await self._pause(0.0, 1.0)
        while loop.time() < stop_at:
            await self.turn()


# -- watching ---------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    produced: int
    backlog: int
    at_receiver: int
    down: bool


@dataclass
class DemoResult:
    produced: int
    events: int
    arrived_ended: int
    missing: int
    writes: int
    requests: int
    unique_events: int
    max_backlog: int
    outage_s: float
    dropped: int
    dead: int
    elapsed_s: float
    samples: list[Sample] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.produced > 0 and self.arrived_ended == self.produced

    @property
    def duplicates(self) -> int:
        """Events the receiver took more than once (at-least-once delivery re-sends after a lost answer)."""
        return self.writes - self.unique_events

    @property
    def coalesced(self) -> int:
        """Start events never sent because their end replaced them on disk first."""
        return max(0, self.events - self.unique_events)


_BARS = "▁▂▃▄▅▆▇█"


def sparkline(samples: list[Sample], step: float = 0.25, floor: int = 200) -> RenderableType:
    """Backlog over time, one character per `step` seconds (the highest backlog in it), red while the receiver
    was down. The scale is the highest backlog so far, at least `floor`, so a small backlog stays low."""
    from rich.text import Text

    buckets: dict[int, tuple[int, bool]] = {}
    for s in samples:
        i = int(s.t / step)
        peak, down = buckets.get(i, (0, False))
        buckets[i] = (max(peak, s.backlog), down or s.down)
    top = max([floor, *(b for b, _ in buckets.values())])
    text = Text()
    for i in range(max(buckets, default=-1) + 1):
        peak, down = buckets.get(i, (0, False))
        text.append(_BARS[min(len(_BARS) - 1, peak * len(_BARS) // (top + 1))], style="red" if down else "green")
    return text


def live_view(s: Sample, samples: list[Sample], down_since: float | None) -> RenderableType:
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    rx = (
        Text(f"DOWN, refusing connections for {s.t - down_since:.1f}s", style="bold red")
        if down_since is not None
        else Text("up", style="green")
    )
    grid.add_row("elapsed", f"{s.t:5.1f}s")
    grid.add_row("receiver", rx)
    rate = s.produced / s.t if s.t > 0 else 0.0
    grid.add_row("produced", f"{s.produced:,} spans ({rate:,.0f}/s)")
    grid.add_row("on disk", Text(f"{s.backlog:,} spans waiting", style="yellow" if s.backlog > 500 else ""))
    grid.add_row("at receiver", plural(s.at_receiver, "span"))
    grid.add_row("backlog", sparkline(samples))
    grid.add_row("", Text("one mark per 0.25s; red: receiver down", style="dim"))
    return grid


def plain_line(s: Sample) -> str:
    state = "DOWN" if s.down else "up  "
    return (
        f"  {s.t:5.1f}s  receiver {state}  produced {s.produced:6,}  backlog {s.backlog:6,}  "
        f"at receiver {s.at_receiver:6,}"
    )


def final_table(r: DemoResult) -> RenderableType:
    from rich.table import Table
    from rich.text import Text

    t = Table(title="spool demo: result", title_justify="left", show_header=False, box=None, padding=(0, 2, 0, 0))
    t.add_column(style="bold", no_wrap=True)
    t.add_column()
    mark = Text(" ✓", style="bold green") if r.ok else Text(" ✗", style="bold red")
    t.add_row("produced", f"{r.produced:,} spans ({r.events:,} start/end events)")
    t.add_row(
        "delivered",
        Text.assemble(f"{r.arrived_ended:,} / {r.produced:,} spans at the receiver, all ended", mark)
        if r.ok
        else Text.assemble(f"{r.arrived_ended:,} / {r.produced:,} spans arrived ended ({r.missing:,} missing)", mark),
    )
    t.add_row("duplicates", f"{r.duplicates:,} events received twice (delivery is at-least-once)")
    t.add_row("max backlog", f"{r.max_backlog:,} spans on disk")
    t.add_row("outage", f"{human_duration(r.outage_s)} with the receiver refusing connections")
    t.add_row(
        "receiver writes",
        f"{r.writes:,} in {r.requests:,} requests ({r.coalesced:,} starts merged into ends)",
    )
    t.add_row("dropped / dead", f"{r.dropped:,} / {r.dead:,}")
    t.add_row("time", human_duration(r.elapsed_s))
    return t


# -- the run ----------------------------------------------------------------------------------------------------


async def run_demo(
    console: Console,
    workdir: Path,
    *,
    seconds: float = 10.0,
    outage: float = 3.5,
    agents: int = 40,
    seed: int | None = None,
) -> DemoResult:
    """Run the workload for `seconds` against a local receiver that is down for `outage` seconds from ~30% in;
    deliver the rest and count what arrived. Live view on a terminal, one line per second otherwise."""
    from .._config import SpoolConfig
    from .._receiver import Receiver
    from .._sink import SGPSink
    from .._spool import Spool

    t0 = time.monotonic()
    with Receiver("127.0.0.1", 0) as rx:
        console.print(
            "[bold]spool demo[/]: agents write spans into a spool file; a local receiver stands in for Scale GP "
            "and goes down mid-run.",
            soft_wrap=True,
        )
        console.print(f"  receiver    {rx.url}  (PUT /v5/spans/batch, no credentials needed)", soft_wrap=True)
        console.print(f"  spool file  {workdir / 'spans.db'}  (temporary)", soft_wrap=True)
        sink = SGPSink(api_key="demo", account_id="demo", base_url=rx.url)
        config = SpoolConfig(
            flush_interval=0.5,
            batch_size=100,
            backoff_initial=0.1,
            backoff_max=0.5,
            max_attempts=3,
            cooldown_max=1.0,
            shutdown_timeout=10.0,
        )
        spool = Spool(workdir / "spans.db", sink=sink, config=config)
        try:
            work = Workload(spool, random.Random(seed))
            # Warm up: the first send loads the SDK's configuration (about a second); one small trace does it.
            with console.status("connecting to the receiver ...") if console.is_terminal else contextlib.nullcontext():
                async with work.span(new_span_id(), "demo.warmup", "CUSTOM"):
                    pass
                await spool.flush(timeout=30)
            result = await _run(console, rx, spool, work, seconds=seconds, outage=outage, agents=agents)
        finally:
            await spool.aclose(timeout=0)
        result.elapsed_s = time.monotonic() - t0
        return result


async def _run(
    console: Console, rx: Receiver, spool: Spool, work: Workload, *, seconds: float, outage: float, agents: int
) -> DemoResult:
    loop = asyncio.get_running_loop()
    start = loop.time()
    outage_at = min(3.0, seconds * 0.3)
    samples: list[Sample] = []
    down_since: float | None = None
    outage_s = 0.0
    tty = console.is_terminal

    def note(msg: str) -> None:
        console.print(f"  {loop.time() - start:5.1f}s  {msg}", soft_wrap=True)

    async def sample() -> Sample:
        st = await spool.stats()
        s = Sample(loop.time() - start, len(work.spans), st.pending, len(rx.spans), down_since is not None)
        samples.append(s)
        return s

    async def outage_script() -> None:
        nonlocal down_since, outage_s
        await asyncio.sleep(outage_at)
        await asyncio.to_thread(rx.refuse)
        down_since = loop.time() - start
        note(f"receiver DOWN for {outage:g}s: spans keep coming and wait on disk")
        await asyncio.sleep(outage)
        await asyncio.to_thread(rx.resume)
        outage_s = loop.time() - start - down_since
        down_since = None
        note("receiver back UP: replaying the backlog")

    note(f"{agents} agents start producing traces of nested LLM and tool spans for {seconds:g}s")
    stop_at = start + seconds
    tasks = [asyncio.create_task(work.agent(stop_at)) for _ in range(agents)]
    script = asyncio.create_task(outage_script())
    try:
        if tty:
            from rich.live import Live

            with Live(console=console, refresh_per_second=8, transient=False) as live:
                while not all(t.done() for t in tasks) or not script.done():
                    s = await sample()
                    live.update(live_view(s, samples, down_since))
                    await asyncio.sleep(0.1)
                note("workload done: flushing what is left")
                ok = await spool.flush(timeout=20)
                s = await sample()
                live.update(live_view(s, samples, None))
        else:
            next_line = 0.0
            while not all(t.done() for t in tasks) or not script.done():
                s = await sample()
                if s.t >= next_line:
                    console.print(plain_line(s), soft_wrap=True)
                    next_line += 1.0
                await asyncio.sleep(0.1)
            note("workload done: flushing what is left")
            ok = await spool.flush(timeout=20)
            console.print(plain_line(await sample()), soft_wrap=True)
        for t in tasks:
            t.result()  # a bug in the workload should show, not hide behind a count
    finally:
        for t in (*tasks, script):
            t.cancel()
        await asyncio.gather(*tasks, script, return_exceptions=True)
    note("all delivered" if ok else "some spans are still pending")
    st = await spool.stats()
    return _tally(work, rx, samples, outage_s, st.dropped_total, st.dead)


def _tally(work: Workload, rx: Receiver, samples: list[Sample], outage_s: float, dropped: int, dead: int) -> DemoResult:
    spans = rx.spans
    arrived = sum(1 for key in work.spans if (got := spans.get(key)) is not None and got.get("end_timestamp"))
    received = rx.received_ids
    return DemoResult(
        produced=len(work.spans),
        events=work.events,
        arrived_ended=arrived,
        missing=len(work.spans) - arrived,
        writes=len(received),
        requests=len(rx.batches),
        unique_events=len(set(received)),
        max_backlog=max((s.backlog for s in samples), default=0),
        outage_s=outage_s,
        dropped=dropped,
        dead=dead,
        elapsed_s=0.0,
        samples=samples,
    )


def demo(seconds: float, outage: float, keep: bool) -> int:
    """Run the demo on the terminal; the exit code: 0 when every span arrived, else 1 (130: interrupted)."""
    from rich.console import Console

    console = Console(highlight=False)
    workdir = Path(tempfile.mkdtemp(prefix="spool-demo-"))
    try:
        try:
            with quiet_logs():
                result = asyncio.run(run_demo(console, workdir, seconds=seconds, outage=outage))
        except KeyboardInterrupt:
            console.print("interrupted")
            return 130
        console.print()
        console.print(final_table(result))
        console.print()
        if result.ok:
            console.print("[bold green]PASS[/]: every span the agents produced reached the receiver, ended.")
        else:
            console.print(f"[bold red]FAIL[/]: {plural(result.missing, 'span')} did not arrive ended.")
    finally:
        if keep:
            size = sum(f.stat().st_size for f in workdir.iterdir() if f.is_file())
            console.print(
                f"kept {workdir} ({human_bytes(size)}); try: spool stats --path {workdir / 'spans.db'}", soft_wrap=True
            )
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            console.print(f"removed the temporary files in {workdir}", soft_wrap=True)
    sys.stdout.flush()
    return 0 if result.ok else 1
