"""What `spool stats` computes and draws, kept free of typer so the command can answer without it.

`collect_stats` computes a dict, `plain_stats` draws it (the live view too): a new detail is a key in the dict and a
row in `ROWS`.
`fast_stats` answers the plain forms (`spool stats [--json] [--path P]`) before typer is imported: typer parses
options through pydantic, which alone costs more than the 300 ms that `spool stats` may take on a 1M-row spool.
Anything else (`--help`, an option it does not know) falls through to the typer command in `cmd_stats`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._config import SpoolConfig
from .._store import TOP_TRACES_MAX_ROWS, Store
from ._format import human_bytes, human_count, human_duration

if TYPE_CHECKING:
    pass

__all__ = [
    "ROWS",
    "collect_stats",
    "fast_stats",
    "plain_stats",
    "print_stats",
    "watch_stats",
]


def collect_stats(store: Store, *, detail: bool = True, all_traces: bool = False) -> dict[str, Any]:
    """The `SpoolStats` fields of `store` (exactly those keys: the `--json` contract), and with `detail` the keys
    of `Store.stats_detail` after them: `attempts_buckets`, `top_traces` (None above `TOP_TRACES_MAX_ROWS` pending
    rows unless `all_traces`: counting them scans an index, which would break the 300 ms budget on a 1M-row
    spool), `last_error_at` (epoch seconds or None), `moved_aside`, `dropped_memory`."""
    data = store.stats().to_dict()
    if not detail:
        return data
    limit = None if all_traces else TOP_TRACES_MAX_ROWS
    data.update(store.stats_detail(data["pending"], top_max_rows=limit))
    return data


def _count(v: Any) -> str:
    return human_count(int(v))


def _text(v: Any) -> str:
    return "-" if v is None else str(v)


def _buckets(v: dict[str, int]) -> str:
    return "   ".join(f"{k}: {human_count(n)}" for k, n in v.items())


def _traces(v: list[dict[str, Any]] | None) -> str:
    if v is None:
        return f"not counted above {human_count(TOP_TRACES_MAX_ROWS)} pending (--traces counts them)"
    return "\n".join(f"{human_count(t['pending'])}  {t['trace_id']}" for t in v) or "-"


def _when(v: float | None) -> str:
    if v is None:
        return "-"
    import time
    from datetime import UTC, datetime

    at = datetime.fromtimestamp(v, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{at} ({human_duration(time.time() - v)} ago)"


ROWS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("format", "format", _text),
    ("pending", "pending", _count),
    ("inflight", "in flight", _count),
    ("dead", "dead letters", _count),
    ("oldest_age_s", "oldest pending", human_duration),
    ("attempts_buckets", "by failed attempts", _buckets),
    ("top_traces", "top traces", _traces),
    ("db_bytes", "size on disk", human_bytes),
    ("delivered_total", "delivered (total)", _count),
    ("dropped_total", "dropped (total)", _count),
    ("dropped_memory", "dropped (memory)", _count),
    ("last_error", "last error", _text),
    ("last_error_at", "last error at", _when),
    ("moved_aside", "moved aside", _text),
]
"""(key, label, formatter) per table row, in order; keys missing from the data are skipped."""


def _shown(data: dict[str, Any], key: str) -> bool:
    """A table row for `key`: when the data has it (`moved_aside` only once something was moved aside,
    `dropped_memory` only once there was such a drop)."""
    return key in data and (key not in ("moved_aside", "dropped_memory") or bool(data[key]))


def print_stats(store: Store, as_json: bool, *, detail: bool = False, all_traces: bool = False) -> None:
    """Print the stats of `store`: one JSON object (the detail keys only with `detail`), or a table for people
    (always with the detail)."""
    data = collect_stats(store, detail=detail or not as_json, all_traces=all_traces)
    if as_json:
        print(json.dumps(data))
        return
    print(plain_stats(data, str(store.path), color=sys.stdout.isatty() and "NO_COLOR" not in os.environ))


_ALERT = {"dead": "31", "last_error": "31", "dropped_total": "33", "moved_aside": "33"}  # red/yellow when set


def plain_stats(data: dict[str, Any], title: str, *, color: bool) -> str:
    """The stats table as text (ANSI colours with `color`), for every view: plain text rather than a rich table,
    because importing rich alone would take half of `spool stats`' 300 ms budget on a 1M-row spool."""

    def paint(text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if color else text

    rows = [(label, key, fmt(data[key])) for key, label, fmt in ROWS if _shown(data, key)]
    width = max(len(label) for label, _, _ in rows)
    lines = [paint(title, "1")]
    for label, key, text in rows:
        first, *rest = text.split("\n")
        if key in _ALERT and data[key]:
            first = paint(first, _ALERT[key]) + ("  (spool dead list)" if key == "dead" else "")
        lines.append(f"{paint(label.ljust(width), '1')}  {first}")
        lines.extend(" " * (width + 2) + more for more in rest)
    return "\n".join(lines)


def fast_stats(argv: Sequence[str]) -> int | None:
    """Run `spool stats` for `argv` (the arguments after `stats`) without typer; the exit code, or None when
    `argv` is not a plain `[--json] [--path P]` and the typer command should handle it."""
    as_json, path = False, None
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--json" and not as_json:
            as_json = True
        elif arg in ("--path", "-p") and path is None and args and not args[0].startswith("-"):
            path = args.pop(0)
        elif arg.startswith("--path=") and path is None and len(arg) > 7:
            path = arg[7:]
        else:
            return None
    from ._boundary import ERRORS, open_store, report

    try:
        with open_store(Path(path) if path is not None else None) as store:
            print_stats(store, as_json)
    except ERRORS as exc:
        return report(exc)
    return 0


class _Followed:
    """The spool at a path, for `--watch`: opened again when the file there is no longer the one open (moved aside,
    as a running spool does with a damaged file; renamed; replaced), or when it comes back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._store: Store | None = None

    def frame(self, read: Callable[[Store], str]) -> str:
        """`read(store)` of the file at the path now, or the one line that says why there is none."""
        from ._boundary import ERRORS, error_line

        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            inode = None
        if self._store is not None and self._store.inode != inode:
            self.close()
        if inode is None:
            return f"Error: no spool at {self.path}"
        try:
            if self._store is None:
                self._store = Store(self.path, SpoolConfig.defaults(), create=False, readonly=True)
            return read(self._store)
        except ERRORS as exc:
            self.close()
            return f"Error: {error_line(exc)}"

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def watch_stats(path: Path, as_json: bool, interval: float, *, detail: bool = False, all_traces: bool = False) -> None:
    """Read the spool at `path` every `interval` seconds until Ctrl-C, following the path (a file moved aside or
    renamed: the file now there, or `no spool at PATH`): a rich Live table on a terminal; with `as_json` one JSON
    object per line; otherwise (a pipe, a file) one plain table per interval, each flushed as it is written, so
    `spool stats --watch > log` and `| tee` see every frame."""
    import time

    followed = _Followed(path)

    def as_line(store: Store) -> str:
        return json.dumps(collect_stats(store, detail=detail, all_traces=all_traces))

    def as_table(color: bool, title: str) -> Callable[[Store], str]:
        return lambda store: plain_stats(collect_stats(store, all_traces=all_traces), title, color=color)

    try:
        if as_json or not sys.stdout.isatty():
            while True:
                if as_json:
                    line = followed.frame(as_line)
                    print(line if line.startswith("{") else json.dumps({"error": line[7:]}), flush=True)
                else:
                    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                    print(followed.frame(as_table(False, f"{path}   {stamp}")) + "\n", flush=True)
                time.sleep(interval)
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        title = f"{path}   (every {interval:g}s, Ctrl-C to stop)"

        def view() -> Text:
            return Text.from_ansi(followed.frame(as_table(True, title)))

        with Live(view(), console=Console(), auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(view(), refresh=True)
    except KeyboardInterrupt:
        return
    finally:
        followed.close()
