"""Large repeated strings stored once: a system prompt that every span of an agent carries costs one copy in memory
and on disk, however many spans carry it. I/O-free.

A `Split` is an encoded item with one such string cut out of its bytes: `body` holds `""` where the string's JSON
was (`at`), and `data` is that JSON, quotes included, shared by every item that carries the string. `whole` puts it
back: the bytes sent, exported and dead-lettered are always exactly those `put` encoded.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

from ._items import Encoded

__all__ = ["MIN_BODY", "MIN_STRING", "Blobs", "Split", "key64", "whole"]

MIN_BODY = 16 * 1024
"""Items whose bytes are shorter are never looked into (the put hot path pays one length check)."""
MIN_STRING = 4096
"""Strings shorter than this (in characters) stay in the item."""
_MAX_DEPTH = 8
_QUOTE = b'""'
_BEFORE, _AFTER = frozenset(b":[,"), frozenset(b",]}")


class Split(NamedTuple):
    """An `Encoded` item whose largest repeated string is kept apart (see the module)."""

    trace_id: str
    span_id: str
    is_end: bool
    body: bytes
    key: int
    at: int
    data: bytes


def whole(body: bytes, at: int, data: bytes) -> bytes:
    """The item's bytes: `data` back in the place of the `""` at `at` in `body`."""
    return b"".join((body[:at], data, body[at + 2 :]))


def key64(data: bytes) -> int:
    """64 bits of BLAKE2b of `data` as a signed SQLite integer, stable across processes: the key of a blob's row in
    `blobs` (a collision is detected by comparing the bytes, and the item is then stored whole) and of a span in the
    record of delivered ends (`spool._store.span_key`)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


class Blobs:
    """The large strings of recent items, up to `max_bytes` of them (oldest use forgotten first). A string seen a
    second time is cut out of the items that carry it from then on. Thread-safe (one lock, taken only for items of
    `MIN_BODY` bytes or more)."""

    def __init__(self, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._seen: dict[str, tuple[int, bytes] | None] = {}  # None: seen once
        self._bytes = 0
        self._lock = threading.Lock()

    def split(self, enc: Encoded, item: Mapping[str, Any]) -> Encoded | Split:
        """`enc` with its largest repeated string cut out, or `enc` itself (small, nothing repeated, or the string
        not found where a value goes)."""
        if len(enc.body) < MIN_BODY:
            return enc
        strings = _large_strings(item)
        if not strings:
            return enc
        with self._lock:
            best = self._best(strings)
        if best is None:
            return enc
        key, data = best
        body = enc.body
        at = _find(body, data)
        end = at + len(data)
        if at <= 0 or body[at - 1] not in _BEFORE or end >= len(body) or body[end] not in _AFTER:
            return enc
        return Split(enc.trace_id, enc.span_id, enc.is_end, b"".join((body[:at], _QUOTE, body[end:])), key, at, data)

    def _best(self, strings: list[str]) -> tuple[int, bytes] | None:
        """The key and JSON of the longest of `strings` seen before; remembers the others."""
        best: tuple[int, bytes] | None = None
        for s in strings:
            if s not in self._seen:  # new: remember it, keep it in this item
                self._seen[s] = None
                self._bytes += len(s)
                continue
            known = self._seen.pop(s)
            if known is None:  # the second time: worth a key
                data = orjson.dumps(s)
                known = (key64(data), data)
                self._bytes += len(data)
            self._seen[s] = known  # (moved to the newest end)
            if best is None or len(known[1]) > len(best[1]):
                best = known
        self._forget()
        return best

    def _forget(self) -> None:
        while self._bytes > self.max_bytes and self._seen:
            s, known = next(iter(self._seen.items()))
            del self._seen[s]
            self._bytes -= len(s) + (0 if known is None else len(known[1]))


def _find(body: bytes, data: bytes) -> int:
    """`body.find(data)`, ~100x faster for a long `data`: its first 64 bytes found, then the rest compared in place
    (bytes.find of a 50 KB needle takes ~90 µs)."""
    prefix = data[:64]
    at = body.find(prefix)
    while at >= 0 and not body.startswith(data, at):
        at = body.find(prefix, at + 1)
    return at


def _large_strings(item: Mapping[str, Any]) -> list[str]:
    """The strings of at least `MIN_STRING` characters inside the item's containers (top-level strings are ids,
    names and timestamps), each container walked once."""
    out: list[str] = []
    seen: set[int] = set()
    stack: list[tuple[object, int]] = [(v, 1) for v in item.values() if isinstance(v, dict | list | tuple)]
    while stack:
        v, depth = stack.pop()
        if id(v) in seen or depth > _MAX_DEPTH:
            continue
        seen.add(id(v))
        for child in v.values() if isinstance(v, dict) else v:  # type: ignore[attr-defined]
            if type(child) is str:
                if len(child) >= MIN_STRING:
                    out.append(child)
            elif isinstance(child, dict | list | tuple):
                stack.append((child, depth + 1))
    return out
