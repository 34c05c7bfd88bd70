"""The DuckDB alert store: one read-write connection per process.

Writes go through :meth:`AlertStore.write`, one transaction per batch that
covers alerts, their evidence, outbox rows, the optional event archive,
correlation state and consumed offsets, so "durable" means all of them or
none. Forensic queries run on cursors of the same connection (DuckDB allows
one writing process), each in a READ ONLY transaction with a timeout.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import accumulate
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from correlator.store import rows
from correlator.store.guard import check_statement
from correlator.store.limits import QueryCancel, QueryLimits, collect
from correlator.store.rows import ArchivedEvent
from correlator.store.schema import (
    ID_KEY,
    MIGRATIONS,
    SCHEMA_VERSION,
    TRIAGE_STATUSES,
    by_id_key,
)
from correlator.store.state import (
    CheckpointNotStoredError,
    ChunkReader,
    StateSpool,
    StateWriter,
    is_out_of_memory,
    spool,
    state_chunk_bytes,
)
from zonewatch.errors import QueryError, StoreError, TriageError
from zonewatch.logs import get_logger
from zonewatch.models import Alert
from zonewatch.sizes import parse_size

log = get_logger(__name__)

Router = Callable[[Alert], Sequence[str]]

_CONNECT_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    # Extensions must never be fetched or loaded behind an analyst's query.
    "autoinstall_known_extensions": "false",
    "autoload_known_extensions": "false",
    # DuckDB checkpoints the WAL into the file once it reaches this size, and
    # each checkpoint rewrites the partly filled last row group of the tables
    # it appends to. At the default 16 MB that happened every ~30k archived
    # events; at 64 MB inserting and committing 300k archived events took
    # 15-25% less time (wall and CPU, 3 runs). The price: up to 64 MB of WAL
    # to replay when the store opens after a crash, about a second.
    "checkpoint_threshold": "64MB",
}


# Set once the store is open (and migrated), for the whole database instance.
# External access off: no query on any cursor can reach files or the network.
# The configuration locked last: nothing can change a setting afterwards, not
# even a table function that does it from inside a SELECT (enable_logging,
# enable_profiling ...; the guard refuses those first). Replacement scans of
# Python variables off: a table name never resolves to an object of ours.
_LOCKDOWN = (
    "SET enable_external_access = false",
    "SET allow_community_extensions = false",
    "SET python_enable_replacements = false",
    "SET lock_configuration = true",
)

# Rows per Arrow batch of a query result: DuckDB's vector size. The result
# caps are checked per batch, so a batch must stay small.
_RESULT_BATCH_ROWS = 2048


# Whether any key of the registered batch is stored (``schema.by_id_key``
# then tells which ids).
_KNOWN_KEY = "SELECT 1 FROM alerts WHERE id_key IN (SELECT id_key FROM _zw_alerts) LIMIT 1"


def default_router(alert: Alert) -> Sequence[str]:
    """Every alert to the ``default`` webhook, except retro-hunt hits.

    Hunt hits are about the past; paging the duty officer for them would be
    noise, so they stay in the store unless a router says otherwise.
    """
    return () if alert.origin == "hunt" else ("default",)


def _now() -> datetime:
    return datetime.now(UTC)


def written_now(write: Callable[[], list[str]]) -> Future[list[str]]:
    """``write()`` run at once, as a finished future: ``submit`` for a store
    that has no writer thread (a hunt's sink, a test's)."""
    done: Future[list[str]] = Future()
    try:
        done.set_result(write())
    except Exception as exc:
        done.set_exception(exc)
    return done


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
class _Batch:
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


class AlertStore:
    """Alerts, evidence, outbox, events archive, rules, state and offsets in DuckDB."""

    def __init__(
        self,
        path: Path | str,
        read_only: bool = False,
        *,
        router: Router = default_router,
        events_retention: timedelta | None = None,
        memory_limit: str | None = "512MB",
        query_limits: QueryLimits | None = None,
    ) -> None:
        self.path = Path(path)
        self.query_limits = query_limits or QueryLimits()
        self.memory_limit = memory_limit
        self.read_only = read_only
        self.router = router
        self.events_retention = events_retention
        self._lock = threading.RLock()
        self._listeners: list[Callable[[], None]] = []
        self._last_prune = 0.0
        # What closes with the store, before its connection (the query endpoint).
        self._on_close: list[Callable[[], None]] = []
        # The writer thread (``submit``), the last batch given to it, and the
        # error that stopped it.
        self._writer_lock = threading.Lock()
        self._writer: ThreadPoolExecutor | None = None
        self._last: Future[list[str]] | None = None
        self._failed: BaseException | None = None
        self._con = self._connect()
        try:
            self._migrate()
            self.state_chunk = self._state_chunk()
            self.events_per_insert = self._events_per_insert()
            for statement in _LOCKDOWN:
                self._con.execute(statement)
        except BaseException:
            self._con.close()
            raise

    # -- opening -----------------------------------------------------------

    def _connect(self) -> duckdb.DuckDBPyConnection:
        if not self.read_only:
            _private_files(self.path)
        if self.read_only and not self.path.exists():
            raise StoreError(
                f"no alert store at {self.path}: run `zonewatch correlate` first or pass --db PATH"
            )
        if not self.read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the folder of the alert store {self.path}: {exc.strerror}; "
                    "set correlator.db_path to a writable place"
                ) from exc
        try:
            return duckdb.connect(str(self.path), read_only=self.read_only, config=self._config())
        except duckdb.IOException as exc:
            text = str(exc)
            if "lock" in text.lower():
                raise StoreError(
                    f"the alert store {self.path} is in use by another process (a running "
                    "`zonewatch correlate`?): query it through that process with `zonewatch "
                    "query`, or stop it first"
                ) from exc
            raise StoreError(f"cannot open the alert store {self.path}: {text}") from exc
        except (duckdb.InvalidInputException, duckdb.ParserException) as exc:
            if "memory" in str(exc).lower():
                raise StoreError(
                    f"invalid memory limit {self.memory_limit!r} for the alert store: use a "
                    "size such as 512MB or 2GB (correlator.store_memory_limit)"
                ) from exc
            raise StoreError(f"cannot open the alert store {self.path}: {exc}") from exc
        except duckdb.Error as exc:
            raise StoreError(f"cannot open the alert store {self.path}: {exc}") from exc

    def _config(self) -> dict[str, str | bool | int | float | list[str]]:
        config = dict(_CONNECT_CONFIG)
        if self.memory_limit:
            # DuckDB's buffer pool takes up to 80% of RAM by default, so a
            # long-running correlator grew with the events archive it scanned.
            # Above the limit, operators spill to files next to the store.
            config["memory_limit"] = self.memory_limit
            config["temp_directory"] = f"{self.path}.tmp"
        return config

    def _state_chunk(self) -> int:
        """Bytes per ``state_chunks`` row, from the limit DuckDB applies
        (it reads sizes in more forms than we do: ask it)."""
        row = self._con.execute("SELECT current_setting('memory_limit')").fetchone()
        try:
            return state_chunk_bytes(str(row[0]) if row else self.memory_limit)
        except ValueError:
            return state_chunk_bytes(None)

    def _events_per_insert(self) -> int:
        """Archived events per ``INSERT``: reading the columns out of the JSON
        takes memory per row of the statement, and planning one costs ~5 ms;
        a 512MB store takes 8,192 at a time, a 32MB one 512."""
        row = self._con.execute("SELECT current_setting('memory_limit')").fetchone()
        try:
            limit = parse_size(str(row[0])) if row else 2**40
        except ValueError:
            limit = 2**40
        return max(256, min(16_384, limit // 65_536))

    def _migrate(self) -> None:
        con = self._con
        has_version = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_version'"
        ).fetchone()
        current = 0
        if has_version and has_version[0]:
            row = con.execute("SELECT max(version) FROM schema_version").fetchone()
            current = int(row[0] or 0) if row else 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"the alert store {self.path} has schema version {current}, newer than this "
                f"zonewatch understands ({SCHEMA_VERSION}): upgrade zonewatch"
            )
        if current == SCHEMA_VERSION:
            return
        if self.read_only:
            raise StoreError(
                f"the alert store {self.path} has schema version {current}, expected "
                f"{SCHEMA_VERSION}: open it once read-write (`zonewatch correlate`) to migrate"
            )
        con.begin()
        try:
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    con.execute(statement)
                con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
            con.commit()
        except BaseException:
            con.rollback()
            raise
        log.info("store_migrated", path=str(self.path), from_version=current, to=SCHEMA_VERSION)

    # -- writing -----------------------------------------------------------

    def _writable(self) -> None:
        if self.read_only:
            raise StoreError(f"the alert store {self.path} was opened read-only")

    def write(
        self,
        alerts: Sequence[Alert],
        *,
        events: Sequence[ArchivedEvent] = (),
        state: Mapping[str, bytes | StateWriter] | None = None,
        offsets: Mapping[tuple[str, int], int] | None = None,
    ) -> list[str]:
        """Store one batch atomically; return the ids of alerts that were new.

        Alerts already stored (a replay after a crash) are skipped with their
        evidence and outbox rows, so a replay never notifies twice. After a
        failed write the store refuses every later one (``submit``): reopen it.
        ``CheckpointNotStoredError`` (see ``submit``) is not a failure.
        """
        return self.submit(alerts, events=events, state=state, offsets=offsets).result()

    def submit(
        self,
        alerts: Sequence[Alert],
        *,
        events: Sequence[ArchivedEvent] = (),
        state: Mapping[str, bytes | StateWriter] | None = None,
        offsets: Mapping[tuple[str, int], int] | None = None,
    ) -> Future[list[str]]:
        """``write`` in two halves: the Arrow batches are built here, in the
        caller's thread, and DuckDB stores them on the store's writer thread
        while the caller goes on (the stream polls and correlates the next
        batch meanwhile). The future gives the ids of the new alerts, or
        raises ``StoreError``.

        Batches are stored in the order submitted, one at a time: a submit
        waits until the batch before it is stored, so a caller that outpaces
        DuckDB waits here. Once a batch fails, every later one fails too
        without being stored: a later batch's offsets must never cover a
        batch that was lost.

        DuckDB gives up the GIL while it works but takes it back often: with
        Python's default switch interval (5 ms) each of those waits behind the
        caller's thread, so the two halves do not overlap.
        ``correlator.runtime.tune_process()`` shortens it.

        A ``state`` value is bytes, or a ``StateWriter``: a function that
        writes the value to the binary file it is given. Writers run here, in
        the caller's thread, into a spool that goes to a temporary file past
        a few megabytes (``state.StateSpool``); the writer thread inserts it
        a megabyte at a time: a large state is never one object. Values go
        to ``state_chunks`` in rows of ``state_chunk`` bytes, which DuckDB
        spills beyond its memory limit like any insert.

        Writers' values and ``offsets`` are the batch's checkpoint. If DuckDB
        runs out of memory storing the batch, the store rolls it back and
        stores it again without them; the future then raises
        ``CheckpointNotStoredError`` (with the ids of the alerts stored), the
        previous checkpoint stays in force, and later batches are taken as
        usual. A writer that raises is raised here, and nothing is stored.
        """
        self._writable()
        unique: dict[str, Alert] = {}
        for alert in alerts:
            unique.setdefault(alert.id, alert)
        now = _now()
        kept = list(unique.values())
        alerts_table, evidence_table, sends = (
            self._rows(kept, now, events) if kept else (None, None, 0)
        )
        state = state or {}
        streams: list[tuple[str, StateSpool]] = []
        try:
            for key, value in state.items():
                if callable(value):
                    streams.append((key, spool(value, self.path.parent)))
        except BaseException:
            for _, spooled in streams:
                spooled.close()
            raise
        batch = _Batch(
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
        with self._writer_lock:
            writer, before = self._writer_thread(), self._last
        if before is not None:
            futures_wait([before])  # one batch in the writer at a time
        future = writer.submit(self._store, batch)
        with self._writer_lock:
            self._last = future
        return future

    def _writer_thread(self) -> ThreadPoolExecutor:
        """The one thread that writes to DuckDB (call with ``_writer_lock``)."""
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="zonewatch-store-writer")
        return self._writer

    def triage(
        self,
        alert_id: str,
        status: str,
        *,
        actor: str,
        via: str,
        note: str | None = None,
        assignee: str | None = None,
    ) -> TriageChange:
        """Set an alert's status (and assignee, unless None; "" clears it) and
        record the change in ``triage_history``, in one transaction.

        It runs on the writer thread, between two batches of the stream, so
        it never races a write: an alert a batch stores again (a replay) is
        skipped there and keeps its triage. Raises :class:`TriageError` when
        no stored alert has this id or the status is unknown."""
        self._writable()
        if status not in TRIAGE_STATUSES:
            raise TriageError(f"unknown status {status!r}: use one of {', '.join(TRIAGE_STATUSES)}")
        change = partial(self._apply_triage, alert_id, status, actor, via, note or None, assignee)
        with self._writer_lock:
            future = self._writer_thread().submit(change)
        return future.result()

    def _apply_triage(
        self,
        alert_id: str,
        status: str,
        actor: str,
        via: str,
        note: str | None,
        assignee: str | None,
    ) -> TriageChange:
        key = ID_KEY.format(id="?")
        now = _now()
        with self._lock:
            con = self._con
            con.begin()
            try:
                row = con.execute(
                    f"SELECT status, assignee FROM alerts WHERE id_key = {key} AND id = ?",
                    [alert_id, alert_id],
                ).fetchone()
                if row is None:
                    raise TriageError(
                        f"no alert {alert_id!r} in {self.path}: check the id "
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
                    "INSERT INTO triage_history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    ],
                )
                con.commit()
            except BaseException as exc:
                con.rollback()
                if isinstance(exc, duckdb.Error):
                    raise StoreError(
                        f"triage of {alert_id} failed, nothing changed: {exc}"
                    ) from exc
                raise
        log.info("alert_triaged", alert_id=alert_id, status=status, via=via)
        return TriageChange(
            alert_id, now, actor, via, before_status, status, before_assignee, after_assignee, note
        )

    def _store(self, batch: _Batch) -> list[str]:
        """The DuckDB half of a write, on the writer thread."""
        skipped: CheckpointNotStoredError | None = None
        try:
            if self._failed is not None:
                raise StoreError(
                    f"alert store write refused: an earlier write failed ({self._failed}); "
                    "restart to resume from the last stored offsets"
                )
            with self._lock:
                try:
                    new = self._transaction(batch, checkpoint=True)
                except BaseException as exc:
                    if not (batch.streams and is_out_of_memory(exc)):
                        raise
                    # Short of memory: keep the alerts flowing (and the
                    # archive), leave the checkpoint to the next one.
                    new = self._transaction(batch, checkpoint=False)
                    skipped = CheckpointNotStoredError(
                        f"the checkpoint did not fit in the alert store's memory "
                        f"(memory_limit {self.memory_limit}): {str(exc).splitlines()[0]}",
                        new,
                    )
                    log.warning(
                        "checkpoint_not_stored",
                        reason=str(exc).splitlines()[0][:200],
                        state=[key for key, _ in batch.streams],
                        state_bytes=sum(spooled.size for _, spooled in batch.streams),
                        alerts_stored=len(new),
                    )
        except BaseException as exc:
            self._failed = exc
            if isinstance(exc, duckdb.Error):
                raise StoreError(f"alert store write failed, nothing stored: {exc}") from exc
            raise
        finally:
            for _, spooled in batch.streams:
                spooled.close()
        if new:
            self._notify()
        if batch.events is not None and self.events_retention:
            self._maybe_prune()
        if skipped is not None:
            raise skipped
        return new

    def _transaction(self, batch: _Batch, checkpoint: bool) -> list[str]:
        """One transaction storing ``batch``; with its checkpoint (streamed
        state, offsets) or without. Rolled back if anything fails."""
        con = self._con
        con.begin()
        try:
            new = self._insert_alerts(batch) if batch.alerts else []
            if batch.events is not None:
                # Unregistered only on success: in a failed transaction
                # unregister() raises too, hiding the error that matters
                # (the next register() replaces the view anyway).
                sql = batch.events_sql.format(table="_zw_events")
                step = self.events_per_insert
                for start in range(0, batch.events.num_rows, step):
                    con.register("_zw_events", batch.events.slice(start, step))
                    con.execute(sql)
                con.unregister("_zw_events")
            for key, value in batch.state:
                self._put_state(key, (value,), batch.now)
            if checkpoint:
                for key, spooled in batch.streams:
                    self._put_state(key, spooled.batches(), batch.now)
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

    def _put_state(self, key: str, parts: Iterable[bytes], now: datetime) -> None:
        """Replace ``key``'s value by ``parts`` (in order), in rows of
        ``state_chunk`` bytes: each part one Arrow batch whose rows are
        slices of it."""
        con = self._con
        con.execute("DELETE FROM state_chunks WHERE key = ?", [key])
        con.execute("DELETE FROM state WHERE key = ?", [key])  # written by an earlier version
        chunk = self.state_chunk
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
            self._put_state(key, (b"",), now)

    def flush(self) -> None:
        """Wait until every submitted batch is stored (or failed)."""
        with self._writer_lock:
            writer = self._writer
        if writer is not None:
            writer.submit(lambda: None).result()

    def _insert_alerts(self, batch: _Batch) -> list[str]:
        """Insert the alerts not stored yet, their evidence and outbox rows;
        return their ids.

        Every DuckDB call costs about a million instructions whatever the batch
        size, so one registered table serves the lookup of known ids, the
        alerts and the outbox rows; the evidence goes in without a view.
        """
        con = self._con
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
                    ingest_time, zone_crossing, origin, evidence_count, id_key, late)
                SELECT a.id, a.rule_id, a.rule_title, a.level, a.tags, a.rule_hash, r.version,
                    a.type, a.group_values, a.window_start, a.window_end, a.first_seen,
                    a.last_seen, a.ingest_time, a.zone_crossing, a.origin, a.evidence_count,
                    a.id_key, a.late
                FROM _zw_alerts a
                LEFT JOIN rules r ON r.rule_id = a.rule_id AND r.sha256 = a.rule_hash
                """
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

    def _rows(
        self, alerts: list[Alert], now: datetime, archived: Sequence[ArchivedEvent]
    ) -> tuple[pa.Table, pa.Table, int]:
        """The ``alerts`` rows, with a ``destinations`` column (the router's
        names for each alert, each once), the evidence rows, and the number of
        outbox rows."""
        alerts_table, evidence_table = rows.alert_tables(alerts, now, archived)
        names = [dict.fromkeys(self.router(a)) for a in alerts]
        offsets = pa.array([0, *accumulate(map(len, names))], pa.int32())
        flat = pa.array([d for ds in names for d in ds], pa.string())
        destinations = pa.ListArray.from_arrays(offsets, flat)
        return alerts_table.append_column("destinations", destinations), evidence_table, len(flat)

    def register_rules(self, rules: Iterable[Any]) -> None:
        """Record every rule version loaded (objects with id, title, level, tags,
        sha256, text, path); a changed text gets the next version number."""
        self._writable()
        now = _now()
        with self._lock:
            con = self._con
            con.begin()
            try:
                for rule in rules:
                    rule_id = str(rule.id)
                    sha = str(rule.sha256)
                    known = con.execute(
                        "SELECT count(*) FILTER (WHERE sha256 = ?), coalesce(max(version), 0) "
                        "FROM rules WHERE rule_id = ?",
                        [sha, rule_id],
                    ).fetchone()
                    if known and known[0]:
                        continue
                    version = (known[1] if known else 0) + 1
                    con.execute(
                        "INSERT INTO rules VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            rule_id,
                            sha,
                            version,
                            getattr(rule, "title", None),
                            getattr(rule, "level", None),
                            [str(t) for t in (getattr(rule, "tags", None) or [])],
                            str(getattr(rule, "path", "") or "") or None,
                            getattr(rule, "text", None),
                            now,
                        ],
                    )
                con.commit()
            except BaseException:
                con.rollback()
                raise

    def prune_events(self, before: datetime) -> int:
        """Delete archived events older than ``before``; return how many."""
        self._writable()
        with self._lock:
            row = self._con.execute(
                "DELETE FROM events WHERE time < ? RETURNING 1", [before]
            ).fetchall()
        return len(row)

    def _maybe_prune(self) -> None:
        # Retention is coarse on purpose: one DELETE an hour is enough.
        if self.events_retention is None or time.monotonic() - self._last_prune < 3600:
            return
        self._last_prune = time.monotonic()
        removed = self.prune_events(_now() - self.events_retention)
        if removed:
            log.info("events_pruned", removed=removed)

    # -- reading state -----------------------------------------------------

    def load_state(self, key: str) -> bytes | None:
        """A state value, whole (None if never written)."""
        source = self.open_state(key)
        if source is None:
            return None
        with source:
            return source.read()

    def open_state(self, key: str) -> BinaryIO | None:
        """A state value as a binary file that fetches its rows a few
        megabytes at a time (None if never written); close it when done."""
        with self._lock:
            found = self._con.execute(
                "SELECT count(*), coalesce(sum(octet_length(value)), 0) "
                "FROM state_chunks WHERE key = ?",
                [key],
            ).fetchone()
            rows, size = (int(found[0]), int(found[1])) if found else (0, 0)
            if not rows:  # a value written by an earlier version
                row = self._con.execute("SELECT value FROM state WHERE key = ?", [key]).fetchone()
                return io.BytesIO(bytes(row[0])) if row else None
        cursor = self.cursor()

        def fetch(lo: int, hi: int) -> list[tuple[int, bytes]]:
            got = cursor.execute(
                "SELECT seq, value FROM state_chunks WHERE key = ? AND seq >= ? AND seq < ? "
                "ORDER BY seq",
                [key, lo, hi],
            ).fetchall()
            return [(int(seq), bytes(value)) for seq, value in got]

        reader = ChunkReader(fetch, rows, size, on_close=cursor.close)
        return io.BufferedReader(reader, 1 << 16)

    def load_offsets(self) -> dict[tuple[str, int], int]:
        with self._lock:
            found = self._con.execute(
                'SELECT topic, "partition", next_offset FROM consumer_offsets'
            ).fetchall()
        return {(t, int(p)): int(o) for t, p, o in found}

    # -- notifications -----------------------------------------------------

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (cheap, non-blocking) after a batch adds alerts."""
        self._listeners.append(callback)

    def _notify(self) -> None:
        for callback in list(self._listeners):
            try:
                callback()
            except Exception:
                log.exception("commit_listener_failed")

    # -- cursors and queries -----------------------------------------------

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor on this store's database, for use in one thread."""
        with self._lock:
            return self._con.cursor()

    def query_arrow(
        self,
        sql: str,
        params: Mapping[str, Any] | Sequence[Any] | None = None,
        timeout_s: float = 30,
        *,
        cancel: QueryCancel | None = None,
    ) -> pa.Table:
        """Run one read-only statement; the result as an Arrow table.

        ``timeout_s`` is capped by ``query_limits.max_timeout_s``; ``cancel``
        stops the query from another thread (the query endpoint's, when its
        client goes away). A result above the row or byte cap is cut and
        says so (``limits.truncation(table)``).
        """
        check_statement(sql)
        limits = self.query_limits
        timeout = limits.timeout(timeout_s)
        control = cancel or QueryCancel()
        cur = self.cursor()
        finished = threading.Event()
        watchdog = threading.Thread(
            target=_watch, args=(cur, control, timeout, finished), daemon=True
        )
        try:
            cur.execute("BEGIN TRANSACTION READ ONLY")
            watchdog.start()
            try:
                relation = cur.sql(sql, params=_params(params))
                if relation is None:  # only SELECT/EXPLAIN get here, but be explicit
                    return pa.table({})
                table = collect(relation.to_arrow_reader(_RESULT_BATCH_ROWS), limits, control)
                if control.cancelled:
                    raise duckdb.InterruptException("cancelled between batches")
                return table
            except duckdb.InterruptException as exc:
                if control.reason == "timeout":
                    if timeout < float(timeout_s):
                        raise QueryError(
                            f"query cancelled after {timeout:g} s, the server's maximum "
                            "(correlator.query_max_timeout_s): narrow it (--since/--until, LIMIT)"
                        ) from exc
                    raise QueryError(
                        f"query cancelled after {timeout:g} s: narrow it (--since/--until, "
                        "LIMIT) or raise --timeout"
                    ) from exc
                raise QueryError(f"query cancelled: {control.reason or 'interrupted'}") from exc
            except duckdb.Error as exc:
                raise QueryError(_query_message(exc)) from exc
            finally:
                finished.set()
                control.cancel("finished")  # wakes the watchdog
                watchdog.join()
                with contextlib.suppress(duckdb.Error):
                    cur.execute("ROLLBACK")
        finally:
            cur.close()
            # Arrow keeps freed buffers for reuse; a large result must not
            # stay in the correlator's memory once it is sent.
            pa.default_memory_pool().release_unused()

    def query(
        self,
        sql: str,
        params: Mapping[str, Any] | Sequence[Any] | None = None,
        timeout_s: float = 30,
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one read-only statement; column names and rows as tuples."""
        table = self.query_arrow(sql, params, timeout_s)
        return table_rows(table)

    def on_close(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` when the store closes, after the last write and before
        the connection goes (``server.serve_queries`` stops its endpoint so)."""
        self._on_close.append(hook)

    def close(self) -> None:
        """Store what was submitted, then close."""
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.shutdown(wait=True)
        hooks, self._on_close = self._on_close, []
        for hook in reversed(hooks):
            hook()
        with self._lock:
            self._con.close()

    def __enter__(self) -> AlertStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _private_files(db: Path) -> None:
    """Keep the store's files to its owner: alerts, evidence and archived
    events are personal data, and they were 0644 (issue 20).

    DuckDB creates the file, the WAL and spill files with the process's
    umask, and deletes and recreates the WAL at every checkpoint, so a mode
    set once does not last: the process's umask is made private (group and
    others lose every bit) for as long as it runs. Files of an older store
    that are already open to others are narrowed too.
    """
    os.umask(os.umask(0o077) | 0o077)
    for path in (db, db.with_name(db.name + ".wal"), db.with_name(db.name + ".tmp")):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            mode = path.stat().st_mode
            if mode & 0o077:
                path.chmod(0o700 if stat.S_ISDIR(mode) else 0o600)


def _watch(
    cur: duckdb.DuckDBPyConnection,
    control: QueryCancel,
    timeout_s: float,
    finished: threading.Event,
) -> None:
    """Interrupt ``cur`` when the query is cancelled or out of time.

    Again and again until it ends: DuckDB clears the interrupt flag when a
    statement starts, so an interrupt that lands just before (the client
    went away at once) would be lost.
    """
    if not control.wait(timeout_s):
        control.cancel("timeout")
    while not finished.is_set():
        cur.interrupt()
        finished.wait(0.05)


def table_rows(table: pa.Table) -> tuple[list[str], list[tuple[Any, ...]]]:
    columns = table.column_names
    data = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return columns, list(zip(*data, strict=True)) if data else []


def _params(params: Mapping[str, Any] | Sequence[Any] | None) -> Any:
    if params is None:
        return None
    if isinstance(params, Mapping):
        return dict(params)
    return list(params)


def _query_message(exc: duckdb.Error) -> str:
    text = str(exc).strip()
    if isinstance(exc, duckdb.PermissionException):
        return f"refused: {text.splitlines()[0]} (queries cannot read files or the network)"
    if "read-only" in text and isinstance(
        exc, duckdb.TransactionException | duckdb.InvalidInputException
    ):
        # a write hidden in EXPLAIN ANALYZE, nextval(), ...: the READ ONLY
        # transaction (or the read-only file) stopped it
        return "refused: the alert store is read-only for queries"
    return text
