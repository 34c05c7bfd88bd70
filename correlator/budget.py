"""The correlator's memory, checked at start-up (issue 20, point 3).

What one ``zonewatch correlate`` process holds, and what bounds it
(CPython 3.11, DuckDB 2.0, measured with ``bench/bench_state.py``):

- The correlation state: at most ``max_state_bytes``, as the engine estimates
  it (about 420 B a group and 200 B a record it holds, plus each event body
  kept in evidence at 4.5 times its JSON: ~6 KB for a parsed FortiGate
  event). Above it the least recently updated groups go.
- A checkpoint: the state is pickled into a spool (a temporary file past
  4 MB) and inserted a megabyte at a time, never held as one object.
  Pickle's memo of the objects it wrote is the transient cost (an event
  body is dozens of objects). ``bench/bench_state.py``, 250k FortiGate
  denies from distinct sources, shipped rules, default settings: 465k
  groups, 1,052 MB estimated, 1,470 MB RSS; the checkpoint peaked 794 MB
  above that, DuckDB's buffer pool (at most 488 MiB) included, so ~0.3 of
  the state for the memo. ``SNAPSHOT_SHARE`` rounds it up to a half.
- The store: DuckDB's buffer pool, ``store_memory_limit``. The state goes in
  rows of limit/16384 bytes, of which DuckDB pins 2048 at a time when it
  commits (an eighth of the limit); the rest spills to ``<db>.tmp``. So the
  store writes a state of any size in that memory, but needs a floor for
  the rows and the rest of a batch (``MIN_MEMORY_LIMIT``, 32MB).
- The rest (rules, Python, Kafka buffers, the lateness buffers): ~250 MB.

Defaults: 1 GiB of state, 0.5 GiB while it is checkpointed, 512MB of store,
0.25 GiB: about 2.3 GiB. ``check_memory_budget`` refuses settings that
cannot hold together (``ConfigError``, exit 78) rather than letting the
kernel or DuckDB stop the correlator at the first flood:

1. a store memory limit DuckDB does not read, or below the floor;
2. a per-rule group cap the state cap always pre-empts
   (``max_groups_per_rule`` groups of 420 B above ``max_state_bytes``): one
   rule's flood would then evict every rule's groups, and the per-rule cap,
   meant to keep a flood to its own rule, would never be reached;
3. state, its checkpoint, the store and the rest above the memory of the
   host or container (cgroup limit).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import duckdb

from correlator.correlation.eviction import GROUP_BYTES
from correlator.store.state import MIN_MEMORY_LIMIT
from zonewatch.config import CorrelatorSettings
from zonewatch.errors import ConfigError
from zonewatch.sizes import parse_size

SNAPSHOT_SHARE = 0.5  # of the state, while a checkpoint pickles it
BASELINE_BYTES = 256 << 20  # rules, Python, Kafka buffers
# DuckDB without a memory limit takes up to this share of RAM.
_DUCKDB_DEFAULT_SHARE = 0.8
_CGROUP_FILES = (
    Path("/sys/fs/cgroup/memory.max"),  # v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # v1
)


def store_memory_bytes(limit: str | None) -> int | None:
    """Bytes DuckDB makes of a memory limit (None: no limit set, or "none")."""
    if not limit:
        return None
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = '{limit.replace(chr(39), '')}'")
        row = con.execute("SELECT current_setting('memory_limit')").fetchone()
    except duckdb.Error as exc:
        raise ConfigError(
            f"invalid setting correlator.store_memory_limit {limit!r}: use a size such as "
            "512MB or 2GB"
        ) from exc
    finally:
        con.close()
    value = parse_size(str(row[0])) if row else None
    return None if value is None or value >= 1 << 60 else value  # "none": no limit


def host_memory() -> int | None:
    """Memory this process may use: the container's limit, else the RAM."""
    found: list[int] = []
    for path in _CGROUP_FILES:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            found.append(int(text))
    with contextlib.suppress(ValueError, OSError):  # no such sysconf name here
        found.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return min(found) if found else None


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def check_memory_budget(cfg: CorrelatorSettings, memory: int | None = None) -> int:
    """Raise ``ConfigError`` if the settings cannot hold together (module
    docstring); return the bytes the process may reach. ``memory``: of the
    host (default: ``host_memory()``)."""
    memory = host_memory() if memory is None else memory
    store = store_memory_bytes(cfg.store_memory_limit)
    if store is not None and store < MIN_MEMORY_LIMIT:
        raise ConfigError(
            f"correlator.store_memory_limit {cfg.store_memory_limit} is too small: the alert "
            f"store needs at least 32MB to write the correlation state; raise it"
        )
    per_rule = cfg.max_groups_per_rule * GROUP_BYTES
    if per_rule > cfg.max_state_bytes:
        raise ConfigError(
            f"correlator.max_groups_per_rule ({cfg.max_groups_per_rule:,} groups, about "
            f"{per_rule:,} bytes at {GROUP_BYTES} B a group) is more than "
            f"correlator.max_state_bytes ({cfg.max_state_bytes:,}) allows: the state cap would "
            "always evict first, across every rule, and one rule's flood would push out the "
            f"others' groups. Lower max_groups_per_rule to at most "
            f"{cfg.max_state_bytes // GROUP_BYTES:,} or raise max_state_bytes"
        )
    if store is None:
        store = int(_DUCKDB_DEFAULT_SHARE * memory) if memory else 0
    need = int(cfg.max_state_bytes * (1 + SNAPSHOT_SHARE)) + store + BASELINE_BYTES
    if memory is not None and need > memory:
        raise ConfigError(
            f"correlator.max_state_bytes ({_gib(cfg.max_state_bytes)}, and half as much again "
            f"while a checkpoint writes it) with correlator.store_memory_limit "
            f"({_gib(store)}) needs about {_gib(need)}, more than the {_gib(memory)} this "
            "host or container has: the correlator would be killed before its caps apply. "
            "Lower max_state_bytes or store_memory_limit"
        )
    return need
