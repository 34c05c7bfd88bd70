"""The DuckDB alert store, its read-only query service and the query endpoint.

``AlertStore(path)`` opens (and migrates) the store; ``store.write(...)`` is
the one transaction per batch; ``store.query(sql)`` runs read-only SQL;
``serve_queries(store)`` starts the local endpoint that ``zonewatch query``
uses while the correlator runs (see :mod:`correlator.store.server`).
"""

from correlator.store.alert_store import AlertStore, Router, default_router
from correlator.store.rows import ArchivedEvent
from correlator.store.server import QueryServer, query_endpoint, serve_queries
from correlator.store.state import CheckpointNotStoredError, StateWriter

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
