"""Test your own tracing set-up the way span-spool tests itself: a sink in memory, and a Scale GP-compatible span
receiver in-process.

`MemorySink` is a `spool.Sink` that records the batches it took and fails or refuses them on command: for tests of
code that writes spans, with no server at all. For the HTTP path itself, `SGPSink` and `OTLPSink` take
``transport=httpx.MockTransport(handler)``.

`Receiver` serves ``PUT /v5/spans/batch`` on 127.0.0.1 from a daemon thread, with the real API's validation and
upsert rules, records what it took (`spans`, `ended`, `requests`, `batches`, `wait_for`) and has fault switches
(`fail_status` with `fail_count` and `retry_after`, `latency`, `hang`, `max_body_bytes`, `refuse`/`resume`,
`reject_if`, `api_key`). Point a client at it with ``SGP_CLIENT_BASE_URL=receiver.url``. ``spool receiver`` is the
same server as a command. Not a production server: one process, spans kept in memory.
"""

from ._memsink import MemorySink
from ._receiver import MAX_BATCH_ITEMS, MAX_ID_CHARS, Receiver

__all__ = ["MAX_BATCH_ITEMS", "MAX_ID_CHARS", "MemorySink", "Receiver"]
