"""The DuckDB alert store, its read-only query service and the query endpoint.

``AlertStore(path)`` opens (and migrates) the store; ``store.write(...)`` is
the one transaction per batch; ``store.query(sql)`` runs read-only SQL;
``serve_queries(store)`` starts the local endpoint that ``zonewatch query``
uses while the correlator runs (see :mod:`correlator.store.server`).
"""

from typing import TYPE_CHECKING

from zonewatch.lazy import lazy_exports

if TYPE_CHECKING:
    from correlator.store.alert_store import AlertStore, Router, default_router
    from correlator.store.rows import ArchivedEvent
    from correlator.store.server import QueryServer, query_endpoint, serve_queries
    from correlator.store.state import CheckpointNotStoredError, StateWriter

# name -> module, imported on first use (zonewatch/lazy.py)
_EXPORTS = {
    "AlertStore": "correlator.store.alert_store",
    "Router": "correlator.store.alert_store",
    "default_router": "correlator.store.alert_store",
    "ArchivedEvent": "correlator.store.rows",
    "QueryServer": "correlator.store.server",
    "query_endpoint": "correlator.store.server",
    "serve_queries": "correlator.store.server",
    "CheckpointNotStoredError": "correlator.store.state",
    "StateWriter": "correlator.store.state",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "AlertStore",
    "ArchivedEvent",
    "CheckpointNotStoredError",
    "QueryServer",
    "Router",
    "StateWriter",
    "default_router",
    "query_endpoint",
    "serve_queries",
]
