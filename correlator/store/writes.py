"""The DuckDB half of the store's writes, run on its writer thread: a batch
(alerts, evidence, outbox rows, the events archive, state, offsets) in one
transaction, and a triage change in another.

``build_batch`` is the other half, in the caller's thread: the Arrow tables
of a batch (``rows.py``), so DuckDB only inserts them. ``AlertStore.submit``
joins the two and orders the batches; it also decides what a failure means
(``CheckpointNotStoredError`` when only the checkpoint did not fit).
"""

from __future__ import annotations

import contextlib
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from correlator.store import rows
from correlator.store.rows import ArchivedEvent
from correlator.store.schema import ID_KEY, by_id_key
from correlator.store.state import StateSpool, StateWriter, spool
from zonewatch.errors import StoreError, TriageError
from zonewatch.logs import get_logger
from zonewatch.models import Alert

log = get_logger(__name__)

Router = Callable[[Alert], Sequence[str]]

# Whether any key of the registered batch is stored (``schema.by_id_key``
# then tells which ids).
_KNOWN_KEY = "SELECT 1 FROM alerts WHERE id_key IN (SELECT id_key FROM _zw_alerts) LIMIT 1"


@dataclass(frozen=True, slots=True)
class TriageChange:
    """One recorded triage change (a row of ``triage_history``)."""

    alert_id: str
    changed_at: datetime
    actor: str
    via: str
    from_status: str
    to_status: str
    from_assignee: str | None
    to_assignee: str | None
    note: str | None


@dataclass(slots=True)
class Batch:
    """One write, built and ready for DuckDB (``AlertStore.submit``)."""

    alerts: list[Alert]  # each id once
    alerts_table: pa.Table | None  # with ``destinations``
    evidence_table: pa.Table | None
    sends: int  # outbox rows
    events: pa.Table | None
    state: list[tuple[str, bytes]]
    # State from writers (``StateSpool``): with ``offsets``, the batch's
    # checkpoint, which a write short of memory leaves out.
    streams: list[tuple[str, StateSpool]]
    offsets: list[list[Any]]
    now: datetime
    events_sql: str = rows.EVENTS_INSERT_SQL  # stores ``events`` (rows.py)


def build_batch(
    alerts: Sequence[Alert],
    events: Sequence[ArchivedEvent],
    state: Mapping[str, bytes | StateWriter],
    offsets: Mapping[tuple[str, int], int] | None,
    router: Router,
    spool_dir: Path,
) -> Batch:
    """A write's Arrow tables and state, built in the caller's thread: each
    alert id once, state writers run into spools (``state.StateSpool``). A
    writer that raises is raised here, and its spools are closed."""
    unique: dict[str, Alert] = {}
    for alert in alerts:
        unique.setdefault(alert.id, alert)
    now = datetime.now(UTC)
    kept = list(unique.values())
    alerts_table, evidence_table, sends = (
        alert_rows(kept, now, events, router) if kept else (None, None, 0)
    )
    streams: list[tuple[str, StateSpool]] = []
    try:
        for key, value in state.items():
            if callable(value):
                streams.append((key, spool(value, spool_dir)))
    except BaseException:
        for _, spooled in streams:
            spooled.close()
        raise
    return Batch(
        kept,
        alerts_table,
        evidence_table,
        sends,
        # Stored by ``rows.EVENTS_INSERT_SQL``, which reads the columns.
        rows.events_table(events, now) if events else None,
        [(k, bytes(v)) for k, v in state.items() if not callable(v)],
        streams,
        [[t, p, o, now] for (t, p), o in offsets.items()] if offsets else [],
        now,
        rows.EVENTS_INSERT_SQL if rows.has_flat_keys(events) else rows.EVENTS_INSERT_NESTED_SQL,
    )


def store_batch(
    con: duckdb.DuckDBPyConnection,
    batch: Batch,
    *,
    checkpoint: bool,
    events_per_insert: int,
    state_chunk: int,
    seq: int,
) -> list[str]:
    """One transaction storing ``batch``; with its checkpoint (streamed
    state, offsets) or without. Rolled back if anything fails. Returns the
    ids of the alerts that were new, numbered ``pub_seq`` seq + 1, seq + 2, ...
    in order."""
    con.begin()
    try:
        new = insert_alerts(con, batch, seq) if batch.alerts else []
        if batch.events is not None:
            # Unregistered only on success: in a failed transaction
            # unregister() raises too, hiding the error that matters
            # (the next register() replaces the view anyway).
            sql = batch.events_sql.format(table="_zw_events")
            step = events_per_insert
            for start in range(0, batch.events.num_rows, step):
                con.register("_zw_events", batch.events.slice(start, step))
                con.execute(sql)
            con.unregister("_zw_events")
        for key, value in batch.state:
            put_state(con, key, (value,), batch.now, state_chunk)
        if checkpoint:
            for key, spooled in batch.streams:
                put_state(con, key, spooled.batches(), batch.now, state_chunk)
            if batch.offsets:
                con.executemany(
                    "INSERT OR REPLACE INTO consumer_offsets VALUES (?, ?, ?, ?)",
                    batch.offsets,
                )
        con.commit()
    except BaseException:
        # A failed COMMIT has already ended the transaction.
        with contextlib.suppress(duckdb.TransactionException):
            con.rollback()
        raise
    return new


def put_state(
    con: duckdb.DuckDBPyConnection, key: str, parts: Iterable[bytes], now: datetime, chunk: int
) -> None:
    """Replace ``key``'s value by ``parts`` (in order), in rows of ``chunk``
    bytes: each part one Arrow batch whose rows are slices of it."""
    con.execute("DELETE FROM state_chunks WHERE key = ?", [key])
    con.execute("DELETE FROM state WHERE key = ?", [key])  # written by an earlier version
    seq = 0
    for data in parts:
        if not data and seq:
            continue
        n = max(1, -(-len(data) // chunk))
        bounds = array("i", (min(i * chunk, len(data)) for i in range(n + 1)))
        values = pa.BinaryArray.from_buffers(
            pa.binary(), n, [None, pa.py_buffer(bounds), pa.py_buffer(data)]
        )
        table = pa.table(
            {
                "key": pa.array([key] * n, pa.string()),
                "seq": pa.array(range(seq, seq + n), pa.int32()),
                "value": values,
                "updated_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
            }
        )
        con.from_arrow(table).insert_into("state_chunks")
        seq += n
    if not seq:  # an empty value is one empty row
        put_state(con, key, (b"",), now, chunk)


def insert_alerts(con: duckdb.DuckDBPyConnection, batch: Batch, seq: int) -> list[str]:
    """Insert the alerts not stored yet (``pub_seq`` from ``seq`` + 1 on, in
    order), their evidence and outbox rows; return their ids.

    Every DuckDB call costs about a million instructions whatever the batch
    size, so one registered table serves the lookup of known ids, the
    alerts and the outbox rows; the evidence goes in without a view.
    """
    alerts_table, evidence_table, sends = batch.alerts_table, batch.evidence_table, batch.sends
    assert alerts_table is not None and evidence_table is not None
    ids = [a.id for a in batch.alerts]
    con.register("_zw_alerts", alerts_table)
    try:
        # With no key on alerts.id, this lookup (in the write's transaction,
        # and writes are serialised) is what keeps a replay out. Planning
        # a statement costs more than running it on a batch: the common
        # case (no key known) takes one with a single subquery.
        existing: set[str] = set()
        if con.execute(_KNOWN_KEY).fetchone():
            found = con.execute(by_id_key("id", "_zw_alerts", keyed=True)).fetchall()
            existing = {r[0] for r in found}
        if existing:  # a replay: keep the rows of the new alerts only
            ids = [i for i in ids if i not in existing]
            if not ids:
                return []
            known = pa.array(list(existing), pa.string())
            alerts_table = alerts_table.filter(
                pc.invert(pc.is_in(alerts_table["id"], value_set=known))
            )
            evidence_table = evidence_table.filter(
                pc.invert(pc.is_in(evidence_table["alert_id"], value_set=known))
            )
            sends = pc.sum(pc.list_value_length(alerts_table["destinations"])).as_py() or 0
            con.register("_zw_alerts", alerts_table)  # in place of the first
        con.execute(
            """
            INSERT INTO alerts (id, rule_id, rule_title, level, tags, rule_hash, rule_version,
                type, group_values, window_start, window_end, first_seen, last_seen,
                ingest_time, zone_crossing, origin, evidence_count, id_key, pub_seq, late)
            SELECT a.id, a.rule_id, a.rule_title, a.level, a.tags, a.rule_hash, r.version,
                a.type, a.group_values, a.window_start, a.window_end, a.first_seen,
                a.last_seen, a.ingest_time, a.zone_crossing, a.origin, a.evidence_count,
                a.id_key, ? + row_number() OVER (ORDER BY a.ord), a.late
            FROM _zw_alerts a
            LEFT JOIN rules r ON r.rule_id = a.rule_id AND r.sha256 = a.rule_hash
            """,
            [seq],
        )
        # Its columns in the table's order: no view to register and drop.
        con.from_arrow(evidence_table).insert_into("alert_evidence")
        if sends:
            # The outbox sequence follows the alerts, then the router's
            # order of an alert's destinations. A webhook's own rows need
            # only ``ord`` (an alert names a destination once), but
            # DuckDB's sort is not stable, so the order is made total.
            con.execute(
                "INSERT INTO outbox (alert_id, destination, created_at) "
                "SELECT id, unnest(destinations), ? FROM _zw_alerts "
                "ORDER BY ord, unnest(range(len(destinations)))",
                [batch.now],
            )
    finally:
        con.unregister("_zw_alerts")
    return ids


def alert_rows(
    alerts: list[Alert], now: datetime, archived: Sequence[ArchivedEvent], router: Router
) -> tuple[pa.Table, pa.Table, int]:
    """The ``alerts`` rows, with a ``destinations`` column (the router's
    names for each alert, each once), the evidence rows, and the number of
    outbox rows."""
    alerts_table, evidence_table = rows.alert_tables(alerts, now, archived)
    names = [dict.fromkeys(router(a)) for a in alerts]
    offsets = pa.array([0, *accumulate(map(len, names))], pa.int32())
    flat = pa.array([d for ds in names for d in ds], pa.string())
    destinations = pa.ListArray.from_arrays(offsets, flat)
    return alerts_table.append_column("destinations", destinations), evidence_table, len(flat)


def record_triage(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    alert_id: str,
    status: str,
    actor: str,
    via: str,
    note: str | None,
    assignee: str | None,
    seq: int,
) -> TriageChange:
    """Set an alert's status (and assignee unless None) and record the change
    in ``triage_history`` as ``pub_seq`` ``seq``, in one transaction
    (``AlertStore.triage``)."""
    key = ID_KEY.format(id="?")
    now = datetime.now(UTC)
    con.begin()
    try:
        row = con.execute(
            f"SELECT status, assignee FROM alerts WHERE id_key = {key} AND id = ?",
            [alert_id, alert_id],
        ).fetchone()
        if row is None:
            raise TriageError(
                f"no alert {alert_id!r} in {path}: check the id "
                "(zonewatch query recent-alerts); scaled out, each member's store "
                "holds the alerts that member raised"
            )
        before_status, before_assignee = row
        after_assignee = before_assignee if assignee is None else (assignee or None)
        con.execute(
            f"UPDATE alerts SET status = ?, assignee = ?, status_changed_at = ? "
            f"WHERE id_key = {key} AND id = ?",
            [status, after_assignee, now, alert_id, alert_id],
        )
        con.execute(
            "INSERT INTO triage_history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                alert_id,
                now,
                actor,
                via,
                before_status,
                status,
                before_assignee,
                after_assignee,
                note,
                seq,
            ],
        )
        con.commit()
    except BaseException as exc:
        con.rollback()
        if isinstance(exc, duckdb.Error):
            raise StoreError(f"triage of {alert_id} failed, nothing changed: {exc}") from exc
        raise
    log.info("alert_triaged", alert_id=alert_id, status=status, via=via)
    return TriageChange(
        alert_id, now, actor, via, before_status, status, before_assignee, after_assignee, note
    )
