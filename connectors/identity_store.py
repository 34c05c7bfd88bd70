"""The learned identity map in files every connector shares (``<checkpoint_dir>/identity/``).

Each learning source (``identity``, ``intune``, ``vdi``: ``LEARNERS``) keeps
what it observed in ``<source>.json``; every connector reads all the files
and fills its events from their union (``connectors/bindings.py``). Files
and not a topic: a connector needs the map at start, before its first
event, and "read a topic to its end" is what the embedded broker cannot
answer reliably (DESIGN.md); in the compose deployment the connectors share
the ``zonewatch-data`` volume.

Writes: with each commit of the learning connector, at most every
``persist_interval_s``, under a lock and merged with what another connector
of the same source wrote meanwhile; observations older than the binding
lifetime plus ``RETAIN_S`` are dropped on the way. Reads: the files' change
times are checked at most every ``reload_interval_s``; a changed file
rebuilds the view. A restart loads the files again, so nothing learned is
lost with the process.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import orjson

from connectors.bindings import IdentityMap, Limits, annotate_session, fill, learn
from connectors.state import locked, write_atomic
from zonewatch.logs import get_logger

log = get_logger(__name__)

LEARNERS = frozenset({"identity", "intune", "vdi"})
# Kept past their lifetime, for events that arrive late.
RETAIN_S = 24 * 3600.0


class IdentityStore:
    def __init__(
        self,
        directory: Path | str | None,
        source: str,
        *,
        limits: Limits | None = None,
        static: dict[str, str] | None = None,
        reload_interval_s: float = 2.0,
        persist_interval_s: float = 5.0,
    ):
        self.directory = Path(directory) if directory is not None else None
        self.source = source
        self.learns = source in LEARNERS
        self.limits = limits or Limits()
        self.static = dict(static or {})
        self.reload_interval_s = reload_interval_s
        self.persist_interval_s = persist_interval_s
        self.own = IdentityMap(self.limits)
        self.view = IdentityMap(self.limits)
        self._mtimes: dict[str, float] = {}
        self._checked = 0.0
        self._persisted = time.monotonic()
        if self.learns and self.path is not None:
            self.own.merge(self._read(self.path))
            self.own.changed = False
        self._rebuild()

    @property
    def path(self) -> Path | None:
        return self.directory / f"{self.source}.json" if self.directory is not None else None

    # -- the event path ------------------------------------------------------------
    def enrich_before(self, event: dict[str, Any]) -> None:
        """Before identity normalization: user from the address or the host."""
        fill(self.view, event)

    def enrich_after(self, event: dict[str, Any]) -> None:
        """After normalization: sign-ins during an open restricted VDI session."""
        annotate_session(self.view, event)

    def observe(self, event: dict[str, Any]) -> None:
        if self.learns:
            learn(self.own, event, self.view)

    # -- files ------------------------------------------------------------------------
    def _files(self) -> list[Path]:
        if self.directory is None:
            return []
        try:
            return sorted(self.directory.glob("*.json"))
        except OSError:
            return []

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("identity_map_unreadable", path=str(path), error=str(exc))
            return {}
        return data if isinstance(data, dict) else {}

    def _rebuild(self) -> None:
        view = IdentityMap(self.limits)
        view.add_static_devices(self.static)
        for path in self._files():
            if path != self.path:
                view.merge(self._read(path))
            with contextlib.suppress(OSError):
                self._mtimes[str(path)] = path.stat().st_mtime
        view.merge(self.own.snapshot())
        view.changed = False
        self.view = view

    def refresh(self) -> None:
        """Pick up what other connectors wrote (cheap unless a file changed)."""
        if self.directory is None:
            return
        now = time.monotonic()
        if now - self._checked < self.reload_interval_s:
            return
        self._checked = now
        current: dict[str, float] = {}
        for path in self._files():
            if path == self.path:
                continue
            with contextlib.suppress(OSError):
                current[str(path)] = path.stat().st_mtime
        others = {k: v for k, v in self._mtimes.items() if k != str(self.path)}
        if current != others:
            self._rebuild()
            log.debug("identity_map_reloaded", files=len(current))

    def persist(self, force: bool = False) -> None:
        """Write what this source learned (merged with the file) when it changed."""
        if not self.learns or self.path is None or not self.own.changed:
            return
        now = time.monotonic()
        if not force and now - self._persisted < self.persist_interval_s:
            return
        self._persisted = now
        with locked(self.path):
            self.own.merge(self._read(self.path))
            self.own.expire(self.own.newest - RETAIN_S)
            write_atomic(self.path, orjson.dumps({"version": 1, **self.own.snapshot()}))
        self.own.changed = False
