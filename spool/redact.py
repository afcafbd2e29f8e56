"""Redaction before the disk: what `redact=` takes (on `Spool`, every processor and front), and `scrub()`, a ready one.

A redactor is any callable that gets each item (a Scale GP item `dict`, or an OpenTelemetry span's attributes for an
`otlp` spool) and returns it changed, or None to drop it; what it returns is what is stored and sent, and nothing
unredacted is ever written. A dropped item, and one whose redactor raised, is counted in `dropped_redacted` (and
logged once); the redactor never raises into the application. It runs on the spool's database thread, just before
the commit (so `put` stays as fast as without it), on the item as stored (its JSON, parsed); an item of 16 KiB or
more is redacted in `put` itself, before its large strings are set apart.

`Redactor` is for redactors that can tell from an item's encoded JSON that it surely holds nothing to redact
(`screen`): the spool then calls them only for the items that might. `scrub()` is one.
"""

from __future__ import annotations

import abc
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["REDACTED", "Redactor", "Scrub", "scrub"]

REDACTED = "[REDACTED]"
"""What a scrubbed value becomes."""

SECRET_WORDS = ("password", "passwd", "secret", "api_key", "apikey", "authorization", "cookie", "private_key")
"""A key holding one of these (lowercase, `-` and `.` read as `_`) holds a secret; so does `token` or `*_token`."""

_VALUE = re.compile(
    r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{8,}=*"  # a bearer token
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)",  # a private key block
    re.S,
)
_SCREEN = (b"passw", b"secret", b'key":', b'token":', b"authori", b"cookie", b"bearer", b"-----begin")
"""Substrings of an item's lowercased JSON without which it surely holds nothing `Scrub` would change."""


class Redactor(abc.ABC):
    """A redactor with a cheap test on the item's encoded JSON (`screen`): items it says False for are stored as
    they are, without a call."""

    @abc.abstractmethod
    def __call__(self, item: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The item as it may be stored, or None to drop it."""

    def screen(self, body: bytes) -> bool:
        """False when the item whose JSON is `body` surely holds nothing to redact (True: call the redactor)."""
        return True


class Scrub(Redactor):
    """Replaces the values of keys that name a secret, bearer tokens and private-key blocks inside any string, at
    any depth, with `REDACTED`; counts what it replaced (`scrubbed`). Returns a changed copy (the caller's item is
    never modified), or the item itself when there was nothing to scrub. Never drops an item."""

    def __init__(self, words: Iterable[str] = SECRET_WORDS) -> None:
        self.words = tuple(w.lower() for w in words)
        self._screen = {*_SCREEN, *(w.replace("_", sep).encode() for w in self.words for sep in "_-.")}
        self.scrubbed = 0
        """Values replaced so far (keys and strings)."""
        self._lock = threading.Lock()

    def screen(self, body: bytes) -> bool:
        low = body.lower()
        return any(s in low for s in self._screen)

    def secret_key(self, key: object) -> bool:
        k = str(key).lower().replace("-", "_").replace(".", "_")
        return k == "token" or k.endswith("_token") or any(w in k for w in self.words)

    def __call__(self, item: Mapping[str, Any]) -> Mapping[str, Any]:
        out, n = self._walk(item)
        if n:
            with self._lock:
                self.scrubbed += n
        return out  # type: ignore[no-any-return]

    def _walk(self, value: Any) -> tuple[Any, int]:
        if isinstance(value, str):
            new, n = _VALUE.subn(_masked, value)
            return (new, n) if n else (value, 0)
        if isinstance(value, Mapping):
            changed: dict[Any, Any] | None = None
            total = 0
            for k, v in value.items():
                if self.secret_key(k) and v not in (None, "", REDACTED):
                    new, n = REDACTED, 1
                else:
                    new, n = self._walk(v)
                if n:
                    changed = changed if changed is not None else dict(value)
                    changed[k] = new
                    total += n
            return (changed, total) if changed is not None else (value, 0)
        if isinstance(value, list | tuple):
            parts = [self._walk(v) for v in value]
            total = sum(n for _, n in parts)
            return ([v for v, _ in parts], total) if total else (value, 0)
        return value, 0


def _masked(m: re.Match[str]) -> str:
    return "Bearer " + REDACTED if m.group(0)[:6].lower() == "bearer" else REDACTED


def scrub(words: Iterable[str] = SECRET_WORDS) -> Scrub:
    """A ready redactor: values of keys naming a secret (`password`, `api_key`, `secret`, `token`, `authorization`,
    `cookie`, ... : `SECRET_WORDS`, or `words`), bearer tokens and private-key blocks become `REDACTED`; its
    `scrubbed` counts them."""
    return Scrub(words)
