from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from spool import SpoolConfig, SpoolConfigError, default_path


def test_defaults_match_the_contract() -> None:
    c = SpoolConfig()
    assert (c.batch_size, c.flush_interval, c.flush_trigger, c.max_attempts) == (50, 4.0, 200, 4)
    assert (c.backoff_initial, c.backoff_max, c.lease_seconds, c.shutdown_timeout) == (0.4, 20.0, 60.0, 10.0)
    assert c.max_item_bytes == 1024 * 1024 and c.max_bytes == 1024**3
    assert c.overflow == "drop_newest" and c.synchronous == "NORMAL"
    assert 0 < c.commit_interval < 0.05
    assert c.lease_seconds > c.request_timeout


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SpoolConfig().batch_size = 3  # type: ignore[misc]


def test_environment_fallback_only_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPOOL_BATCH_SIZE", "7")
    monkeypatch.setenv("SPOOL_LEASE_SECONDS", "90")
    monkeypatch.setenv("SPOOL_SHUTDOWN_TIMEOUT", "1.5")
    monkeypatch.setenv("SPOOL_OVERFLOW", "DROP_OLDEST")
    monkeypatch.setenv("SPOOL_SYNCHRONOUS", "full")
    c = SpoolConfig()
    assert (c.batch_size, c.lease_seconds, c.shutdown_timeout) == (7, 90.0, 1.5)
    assert c.overflow == "drop_oldest" and c.synchronous == "FULL"
    assert SpoolConfig(batch_size=50).batch_size == 50


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 1001}, "batch_size"),
        ({"overflow": "drop_all"}, "overflow"),
        ({"synchronous": "OFF"}, "synchronous"),
        ({"lease_seconds": 10.0, "request_timeout": 10.0}, "lease_seconds"),
        ({"flush_interval": 0}, "flush_interval"),
    ],
)
def test_out_of_range_names_the_field(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(SpoolConfigError, match=name) as info:
        SpoolConfig(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPOOL_BATCH_SIZE", "lots")
    with pytest.raises(SpoolConfigError, match="SPOOL_BATCH_SIZE"):
        SpoolConfig()


def test_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_path() == tmp_path / "span-spool" / "spans.db"
    monkeypatch.setenv("SPOOL_PATH", str(tmp_path / "x.db"))
    assert default_path() == tmp_path / "x.db"
    monkeypatch.delenv("SPOOL_PATH")
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_path() == Path.home() / ".local" / "state" / "span-spool" / "spans.db"
