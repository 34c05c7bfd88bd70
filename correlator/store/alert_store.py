# size: AlertStore is the one writer of the DuckDB file (thread, lock, migrations, feeds);
# its SQL lives in writes.py and querying.py.
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import pyarrow as pa

from correlator.store import querying, writes
from correlator.store.guard import check_statement
from correlator.store.limits import QueryCancel, QueryLimits
from correlator.store.querying import table_rows
from correlator.store.rows import ArchivedEvent
from correlator.store.schema import (
    MAX_PUB_SEQ,
    MIGRATIONS,
    SCHEMA_VERSION,
    TRIAGE_STATUSES,
)
from correlator.store.state import (
    CheckpointNotStoredError,
    ChunkReader,
    StateWriter,
    is_out_of_memory,
    state_chunk_bytes,
)
from correlator.store.writes import Router, TriageChange
from zonewatch.errors import StoreError, TriageError
from zonewatch.logs import get_logger
from zonewatch.models import Alert
from zonewatch.sizes import parse_size

log = get_logger(__name__)

__all__ = ["AlertStore", "Router", "TriageChange", "default_router", "table_rows", "written_now"]

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
        self._feeds: list[Callable[[list[tuple[int, Alert | TriageChange]]], None]] = []
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
            # The last ``pub_seq`` given (schema.py, version 6): the writer
            # thread numbers what it commits from here, without gaps.
            row = self._con.execute(MAX_PUB_SEQ).fetchone()
            self._seq = int(row[0]) if row else 0
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
                migration = MIGRATIONS[version]
                for statement in migration(con) if callable(migration) else migration:
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
        batch = writes.build_batch(
            alerts, events, state or {}, offsets, self.router, self.path.parent
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
        change = partial(self._triage, alert_id, status, actor, via, note or None, assignee)
        with self._writer_lock:
            future = self._writer_thread().submit(change)
        return future.result()

    def _triage(
        self,
        alert_id: str,
        status: str,
        actor: str,
        via: str,
        note: str | None,
        assignee: str | None,
    ) -> TriageChange:
        with self._lock:
            seq = self._seq + 1
            change = writes.record_triage(
                self._con, self.path, alert_id, status, actor, via, note, assignee, seq
            )
            self._seq = seq
        self._feed([(seq, change)])
        return change

    def _store(self, batch: writes.Batch) -> list[str]:
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
            # Numbered in the transaction from the last pub_seq on, in order.
            first = self._seq - len(new) + 1
            by_id = {a.id: a for a in batch.alerts}
            self._feed([(first + i, by_id[aid]) for i, aid in enumerate(new)])
            self._notify()
        if batch.events is not None and self.events_retention:
            self._maybe_prune()
        if skipped is not None:
            raise skipped
        return new

    def _transaction(self, batch: writes.Batch, checkpoint: bool) -> list[str]:
        new = writes.store_batch(
            self._con,
            batch,
            checkpoint=checkpoint,
            events_per_insert=self.events_per_insert,
            state_chunk=self.state_chunk,
            seq=self._seq,
        )
        self._seq += len(new)
        return new

    def flush(self) -> None:
        """Wait until every submitted batch is stored (or failed)."""
        with self._writer_lock:
            writer = self._writer
        if writer is not None:
            writer.submit(lambda: None).result()

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

    @property
    def last_seq(self) -> int:
        """The ``pub_seq`` of the last alert or triage change committed."""
        return self._seq

    def on_stored(self, callback: Callable[[list[tuple[int, Alert | TriageChange]]], None]) -> None:
        """Call ``callback`` (cheap, non-blocking) on the writer thread after a
        commit, with what it stored that is published: the new alerts and
        triage changes with their ``pub_seq``, in that order."""
        self._feeds.append(callback)

    def _feed(self, items: list[tuple[int, Alert | TriageChange]]) -> None:
        for callback in list(self._feeds):
            try:
                callback(items)
            except Exception:
                log.exception("store_feed_failed")

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
        return querying.run(self.cursor(), sql, params, timeout_s, self.query_limits, cancel)

    def query(
        self,
        sql: str,
        params: Mapping[str, Any] | Sequence[Any] | None = None,
        timeout_s: float = 30,
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one read-only statement; column names and rows as tuples."""
        table = self.query_arrow(sql, params, timeout_s)
        return querying.table_rows(table)

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
