"""The DuckDB alert store, its read-only query service and the query endpoint.

``AlertStore(path)`` opens (and migrates) the store; ``store.write(...)`` is
the one transaction per batch; ``store.query(sql)`` runs read-only SQL;
``serve_queries(store)`` starts the local endpoint that ``zonewatch query``
uses while the correlator runs (see :mod:`correlator.store.server`).
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from correlator.store.alert_store import AlertStore, Router, default_router
    from correlator.store.rows import ArchivedEvent
    from correlator.store.server import QueryServer, query_endpoint, serve_queries
    from correlator.store.state import CheckpointNotStoredError, StateWriter

# name -> module: imported on first use, so that importing a submodule (the
# command line's, for --help) does not load the whole package.
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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
