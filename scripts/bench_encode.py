"""OTLP encoding cost per span, of one or more checkouts side by side (paired, alternating rounds).

    uv run python scripts/bench_encode.py /tmp/before-worktree .

Each checkout runs in a process of its own, on the same 20,000 LLM-like SDK spans (six attributes, one ~600-char
string among them, one event); each round times `OTLPEncoder.encode` over all of them; the best of five rounds per
checkout and pairing is printed, for `rounds` alternating pairs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
import spool._otlpencode as m
assert m.__file__.startswith(sys.argv[1]), m.__file__
provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
tracer = provider.get_tracer("bench", "1.0")
spans = []
for i in range(20000):
    attrs = {"i": i, "route": "/checkout", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
             "llm.token_count.total": 1234, "input.value": "x" * 600}
    with tracer.start_as_current_span("chat gpt-4o", attributes=attrs) as s:
        s.add_event("first token", {"t": 1.5})
    spans.append(s)
encode = m.OTLPEncoder().encode
best = 1e9
for _ in range(5):
    t = time.perf_counter()
    for s in spans:
        encode(s)
    best = min(best, time.perf_counter() - t)
print(f"{best / len(spans) * 1e6:.2f}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkouts", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for r in range(args.rounds):
        cells = []
        for checkout in args.checkouts:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(checkout.resolve())], capture_output=True, text=True, check=True
            )
            cells.append(f"{checkout}: {out.stdout.strip()} µs/span")
        print(f"pair {r + 1}: " + " | ".join(cells))


if __name__ == "__main__":
    main()
