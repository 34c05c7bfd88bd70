"""How the console and the report read the alert store: the read-only query
path of ``zonewatch query``, with bound parameters only.

While a correlator writes the store, every query goes to its query endpoint
(one snapshot per query, on its own cursor). With none running, a page opens
the file read-only for the time of its queries and lets go, so `zonewatch
triage`, `query` and a starting correlator can open it between requests.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from correlator.store.alert_store import AlertStore
from correlator.store.server import endpoint_file, query_endpoint
from zonewatch.errors import StoreError

Params = Mapping[str, Any] | None

# How long a page waits for a writer (`zonewatch triage` with no correlator)
# that holds the file for a moment.
_LOCK_WAIT_S = 10.0


class Reader:
    """Runs read-only SQL for one page: ``reader.rows(sql, params)``."""

    def __init__(self, access: StoreAccess) -> None:
        self.access = access
        self._store: AlertStore | None = None

    def table(self, sql: str, params: Params = None, timeout_s: float = 20) -> pa.Table:
        if self._store is None and self.access.served():
            table = query_endpoint(self.access.db_path, sql, params, timeout_s)
            if table is not None:
                return table
        if self._store is None:  # no correlator (or a stale endpoint file)
            self._store = self.access.open_read_only()
        return self._store.query_arrow(sql, params, timeout_s)

    def rows(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        return self.table(sql, params).to_pylist()

    def value(self, sql: str, params: Params = None) -> Any:
        table = self.table(sql, params)
        return table.column(0)[0].as_py() if table.num_rows else None

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


class StoreAccess:
    """Opens a :class:`Reader` per page on the store at ``db_path``."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)

    def served(self) -> bool:
        """Whether a running correlator advertises an endpoint for the store."""
        return endpoint_file(self.db_path).exists()

    def migrate(self) -> None:
        """Bring a store no correlator holds to the current schema (a store
        written by an older zonewatch), so read-only pages can open it."""
        if self.served() or not self.db_path.exists():
            return
        with contextlib.suppress(StoreError):  # held by someone: they migrated it
            AlertStore(self.db_path, memory_limit=None).close()

    @contextlib.contextmanager
    def reader(self) -> Iterator[Reader]:
        reader = Reader(self)
        try:
            yield reader
        finally:
            reader.close()

    def open_read_only(self) -> AlertStore:
        deadline = time.monotonic() + _LOCK_WAIT_S
        while True:
            try:
                return AlertStore(self.db_path, read_only=True, memory_limit=None)
            except StoreError as exc:
                if "in use" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)  # `zonewatch triage` writes for a moment
