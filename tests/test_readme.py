"""Every Python block in the README runs as written: each is a complete program, run in a fresh interpreter in an
empty directory, with the SDK's environment pointed at a real receiver on 127.0.0.1; what it traced must arrive (a
block with a receiver of its own asserts that itself)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spool.testing import Receiver

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README.read_text(), flags=re.M | re.S)


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i + 1}" for i in range(len(BLOCKS))])
def test_readme_block_runs_and_delivers(code: str, tmp_path: Path, receiver: Receiver) -> None:
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {
        **os.environ,
        "SGP_API_KEY": "readme-key",
        "SGP_ACCOUNT_ID": "readme-account",
        "SGP_CLIENT_BASE_URL": receiver.url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "SPOOL_PATH": str(tmp_path / "default.db"),
        "SPOOL_SHUTDOWN_TIMEOUT": "30",
    }
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    if "spool.testing" in code:  # runs a receiver of its own and asserts what it received
        assert receiver.requests == 0 and done.stdout.strip(), done.stdout
        return
    assert receiver.wait_for(1, timeout=30), f"nothing delivered; stdout={done.stdout!r} stderr={done.stderr!r}"
