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
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from zonewatch.errors import StoreError, TriageError

if TYPE_CHECKING:
    from correlator.store.alert_store import AlertStore

_MAX_NOTE = 4000
_MAX_NAME = 200
# A reader (a console request, ``zonewatch query``) may hold the file for a
# moment; a change waits this long for it before giving up.
_LOCK_WAIT_S = 10.0


def _text(value: Any, limit: int, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TriageError(f"{what} must be text")
    cleaned = "".join(ch for ch in value if ch.isprintable() or ch in "\n\t").strip()
    if len(cleaned) > limit:
        raise TriageError(f"{what} is longer than {limit} characters")
    return cleaned


def change_as_json(change: Any) -> dict[str, Any]:
    out = asdict(change)
    out["changed_at"] = change.changed_at.isoformat()
    return out


def serve_triage(store: AlertStore, request: Mapping[str, Any]) -> dict[str, Any]:
    """The endpoint's side: apply one triage request to ``store``."""
    change = store.triage(
        str(request.get("alert_id", "")),
        str(request.get("status", "")),
        actor=_text(request.get("actor"), _MAX_NAME, "actor") or "unknown",
        via=_text(request.get("via"), 20, "via") or "cli",
        note=_text(request.get("note"), _MAX_NOTE, "the note"),
        assignee=_text(request.get("assignee"), _MAX_NAME, "the assignee"),
    )
    return change_as_json(change)


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
    from correlator.store.server import connect_endpoint

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
    from correlator.store.alert_store import AlertStore

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
