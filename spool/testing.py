"""Test your own tracing set-up the way span-spool tests itself: a Scale GP-compatible span receiver in-process.

`Receiver` serves ``PUT /v5/spans/batch`` on 127.0.0.1 from a daemon thread, with the real API's validation and
upsert rules, records what it took (`spans`, `ended`, `requests`, `batches`, `wait_for`) and has fault switches
(`fail_status` with `fail_count` and `retry_after`, `latency`, `hang`, `max_body_bytes`, `refuse`/`resume`,
`reject_if`, `api_key`). Point a client at it with ``SGP_CLIENT_BASE_URL=receiver.url``. ``spool receiver`` is the
same server as a command. Not a production server: one process, spans kept in memory.
"""

from ._receiver import MAX_BATCH_ITEMS, MAX_ID_CHARS, Receiver

__all__ = ["MAX_BATCH_ITEMS", "MAX_ID_CHARS", "Receiver"]
