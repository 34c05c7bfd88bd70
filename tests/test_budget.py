"""The correlator's memory settings must hold together, checked at start-up
(issue 20, point 3): exit 78 with what to change, not a crash at the first flood."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from correlator.budget import check_memory_budget, host_memory, store_memory_bytes
from zonewatch.config import CorrelatorSettings
from zonewatch.errors import ConfigError

GIB = 1 << 30


def test_the_defaults_need_about_two_and_a_third_gib() -> None:
    need = check_memory_budget(CorrelatorSettings(), memory=4 * GIB)
    # 1 GiB of state, half of it again while checkpointed, 512MB of store, the rest
    assert 2.2 * GIB < need < 2.4 * GIB
    with pytest.raises(ConfigError, match="Lower max_state_bytes or store_memory_limit"):
        check_memory_budget(CorrelatorSettings(), memory=2 * GIB)
    small = CorrelatorSettings(max_state_bytes=256 << 20, max_groups_per_rule=500_000)
    assert check_memory_budget(small, memory=2 * GIB) < 1.2 * GIB


def test_a_store_too_small_to_write_the_state_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"store_memory_limit 16MB is too small.*32MB"):
        check_memory_budget(CorrelatorSettings(store_memory_limit="16MB"), memory=64 * GIB)
    assert check_memory_budget(CorrelatorSettings(store_memory_limit="32MB"), memory=64 * GIB)


def test_a_per_rule_cap_the_state_cap_always_pre_empts_is_refused() -> None:
    cfg = CorrelatorSettings(max_state_bytes=100 << 20, max_groups_per_rule=1_000_000)
    with pytest.raises(ConfigError, match=r"Lower max_groups_per_rule to at most 249,660"):
        check_memory_budget(cfg, memory=64 * GIB)
    cfg = CorrelatorSettings(max_state_bytes=100 << 20, max_groups_per_rule=249_660)
    assert check_memory_budget(cfg, memory=64 * GIB)


def test_memory_limits_are_read_as_duckdb_reads_them() -> None:
    assert store_memory_bytes("512MB") == pytest.approx(512e6, rel=0.001)
    assert store_memory_bytes("1 GiB") == GIB
    assert store_memory_bytes("100 megabytes") == pytest.approx(100e6, rel=0.001)
    assert store_memory_bytes(None) is None and store_memory_bytes("none") is None
    with pytest.raises(ConfigError, match="use a size such as 512MB"):
        store_memory_bytes("lots")
    # Without a limit DuckDB takes up to 80% of the memory.
    unlimited = CorrelatorSettings(store_memory_limit="none")
    assert check_memory_budget(unlimited, memory=10 * GIB) > 9 * GIB
    memory = host_memory()
    assert memory is not None and memory > 256 << 20


def test_zonewatch_correlate_exits_78_before_it_reaches_kafka(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9",  # nothing listens: would be exit 69
        ZONEWATCH_CORRELATOR__STORE_MEMORY_LIMIT="16MB",
    )
    done = subprocess.run(
        [sys.executable, "-m", "zonewatch", "correlate", "--db", str(tmp_path / "zw.duckdb")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78, done.stderr[-2000:]
    assert "store_memory_limit 16MB is too small" in done.stderr
    assert not (tmp_path / "zw.duckdb").exists()
