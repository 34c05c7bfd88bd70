"""Triage changes (status, assignee, note) to stored alerts, from any process.

DuckDB has one writer. While ``zonewatch correlate`` runs, it is the writer:
a change is sent to its query endpoint (``{"op": "triage", ...}``) and its
store applies it on the writer thread, between two batches of the stream
(``AlertStore.triage``). With no correlator serving the store, the change
opens the file read-write for the moment it takes.

Scaled out (``--scale-out``), every member stores the alerts it raised in its
own ``--db``: an alert's triage lives in the store of the member that raised
it, and a change sent to another member's store is refused (no such alert).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from correlator.store.alert_store import AlertStore
from correlator.store.server import connect_endpoint, serve_triage
from zonewatch.errors import StoreError, TriageError

# A reader (a console request, ``zonewatch query``) may hold the file for a
# moment; a change waits this long for it before giving up.
_LOCK_WAIT_S = 10.0


def apply_triage(
    db_path: Path | str,
    alert_id: str,
    status: str,
    *,
    actor: str,
    via: str,
    note: str | None = None,
    assignee: str | None = None,
) -> dict[str, Any]:
    """Change an alert's triage through the process that writes ``db_path``
    (a running correlator), or in the file itself when none does. Returns the
    recorded change; raises :class:`TriageError` (unknown alert or status) or
    :class:`StoreError` (store unavailable)."""
    request = {
        "op": "triage",
        "alert_id": alert_id,
        "status": status,
        "actor": actor,
        "via": via,
        "note": note,
        "assignee": assignee,
    }
    connected = connect_endpoint(db_path)
    if connected is not None:
        sock, address = connected
        sock.settimeout(60)
        try:
            sock.sendall(orjson.dumps({**request, "token": address.get("token")}) + b"\n")
            with sock.makefile("rb") as stream:
                header = orjson.loads(stream.readline(1 << 20) or b"{}")
        except (OSError, orjson.JSONDecodeError) as exc:
            raise StoreError(f"the correlator's endpoint failed mid-answer: {exc}") from exc
        finally:
            sock.close()
        if header.get("ok"):
            change: dict[str, Any] = header["change"]
            return change
        error = str(header.get("error", "the endpoint closed the connection"))
        if header.get("kind") == "triage":
            raise TriageError(error)
        raise StoreError(f"the correlator serving {db_path} refused the change: {error}")
    with _open_for_writing(Path(db_path)) as store:
        return serve_triage(store, request)


def _open_for_writing(path: Path) -> AlertStore:
    if not path.exists():
        raise StoreError(f"no alert store at {path}: pass --db PATH")
    deadline = time.monotonic() + _LOCK_WAIT_S
    while True:
        try:
            return AlertStore(path)
        except StoreError as exc:
            if "in use" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.05)  # a reader holds the file; it lets go within a request
