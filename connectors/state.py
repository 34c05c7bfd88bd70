"""Parser state kept per source, not per input: ``<checkpoint_dir>/state/<source>.json``.

A format lists the ``ctx.state`` keys that describe the source rather than one
stream (``Format.shared_state``): the devices Intune knows, the users' last
sign-in positions. The per-input checkpoint still carries them (so a Kafka
transaction holds state and position together); this file carries them from
one input to the next, so tomorrow's export file, or a Graph poller that
replaces the export, compares against today's state instead of announcing
every device again.

Which copy wins on start: each key in the file has the wall-clock time it was
saved, each checkpoint the time its state was taken (``state_at``); the newer
one is used. Writers lock the file while they read, update their keys and
replace it, so two connectors of one source do not lose each other's keys
(two writers of the same key: the last commit wins).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from zonewatch.errors import ConfigError
from zonewatch.logs import get_logger

log = get_logger(__name__)

STATE_AT = "state_at"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``path`` (``<path>.lock``) between processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` at once (temp file, fsync, rename)."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class SharedState:
    def __init__(self, directory: Path | str, source: str, keys: tuple[str, ...]):
        self.path = Path(directory) / "state" / f"{source}.json"
        self.keys = keys

    def _read(self) -> dict[str, Any]:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigError(
                f"source state {self.path} is unreadable ({exc}); move it away to start over "
                "(every device is then announced again)"
            ) from exc
        keys = data.get("keys") if isinstance(data, dict) else None
        return keys if isinstance(keys, dict) else {}

    def merge_into(self, state: dict[str, Any], taken_at: float | None) -> list[str]:
        """Put the file's keys into ``state`` where they are newer than ``taken_at``
        (the checkpoint's ``state_at``; None: no checkpoint). Returns the keys taken."""
        if not self.keys:
            return []
        stored = self._read()
        taken: list[str] = []
        for key in self.keys:
            entry = stored.get(key)
            if not isinstance(entry, dict) or "value" not in entry:
                continue
            saved_at = float(entry.get("saved_at") or 0.0)
            if taken_at is None or key not in state or saved_at > taken_at:
                state[key] = entry["value"]
                taken.append(key)
        if taken:
            log.info("source_state_loaded", path=str(self.path), keys=taken)
        return taken

    def save(self, state: dict[str, Any], now: float | None = None) -> None:
        """Write this writer's keys (those present in ``state``), keeping the others."""
        mine = {k: state[k] for k in self.keys if k in state}
        if not mine:
            return
        saved_at = time.time() if now is None else now
        with locked(self.path):
            stored = self._read()
            for key, value in mine.items():
                stored[key] = {"saved_at": saved_at, "value": value}
            write_atomic(self.path, orjson.dumps({"version": 1, "keys": stored}))
