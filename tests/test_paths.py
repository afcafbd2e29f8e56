"""Paths an operator or an attacker reaches: symbolic links, directories made on the way, a directory as --path,
a missing directory for the files `import` and `recover` write."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from conftest import in_fork, span, store_items
from test_cli_broken import spool_cmd

from spool import Spool, SpoolError


@pytest.mark.parametrize("dangling", [True, False], ids=["dangling", "to-a-spool"])
def test_a_symlinked_spool_path_is_refused(tmp_path: Path, dangling: bool) -> None:
    """A dangling link would make SQLite create the file wherever it points (another directory, another user's)."""
    target = tmp_path / "elsewhere" / "target.db"
    target.parent.mkdir()
    if not dangling:
        store_items(target, [span(1)])
    link = tmp_path / "spans.db"
    link.symlink_to(target)
    with pytest.raises(SpoolError, match="is a symbolic link; give the file's real path"):
        Spool(link)
    assert target.exists() == (not dangling)  # nothing was created through the link
    out = spool_cmd("stats", "--path", str(link))
    assert out.returncode == 2 and "is a symbolic link" in out.stderr and "Traceback" not in out.stderr


def test_directories_the_spool_creates_are_0700_whatever_the_umask(tmp_path: Path) -> None:
    def work() -> dict[str, int]:
        os.umask(0)

        async def main() -> None:
            async with Spool(tmp_path / "a" / "b" / "spans.db") as sp:
                sp.put(span(1))

        asyncio.run(main())
        return {d: os.stat(tmp_path / d).st_mode & 0o777 for d in ("a", "a/b", "a/b/spans.db")}

    assert in_fork(work) == {"a": 0o700, "a/b": 0o700, "a/b/spans.db": 0o600}


def test_a_directory_given_as_path_says_so(tmp_path: Path) -> None:
    with pytest.raises(SpoolError, match="is a directory"):
        Spool(tmp_path)
    for cmd in (["stats"], ["dead", "list"], ["check"]):
        out = spool_cmd(*cmd, "--path", str(tmp_path))
        assert out.returncode == 2 and f"{tmp_path} is a directory" in out.stderr, out.stderr


def test_import_and_recover_never_create_a_missing_directory(tmp_path: Path) -> None:
    lines = tmp_path / "in.jsonl"
    lines.write_text('{"trace_id": "t", "id": "s", "name": "n", "start_timestamp": "2026-11-28T10:00:00Z"}\n')
    missing = tmp_path / "no" / "such"
    out = spool_cmd("import", str(lines), "--path", str(missing / "spans.db"))
    assert out.returncode == 2 and f"{missing} does not exist" in out.stderr
    store_items(tmp_path / "src.db", [span(1)])
    out = spool_cmd("recover", "--path", str(tmp_path / "src.db"), "--out", str(missing / "new.db"))
    assert out.returncode == 2 and f"{missing} does not exist" in out.stderr
    assert not (tmp_path / "no").exists()
