"""The versioned DuckDB schema of the alert store and its migrations.

Each migration is a list of statements applied in one transaction; the store
records the highest applied version in ``schema_version``. A store written by
a newer zonewatch is refused rather than guessed at.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import duckdb

SCHEMA_VERSION = 8

# 60 bits of md5(id), the column the existence check of a write reads instead
# of the ids (see ``_V2``). md5 rather than DuckDB's hash(): the stored keys
# must stay valid across DuckDB versions. Not unique; equal keys are only
# candidates, confirmed on the id.
ID_KEY = "('0x' || left(md5({id}), 15))::BIGINT"


def by_id_key(columns: str, ids_table: str, *, keyed: bool = False) -> str:
    """SELECT ``columns`` of the alerts whose ``id_key`` matches one of the ids
    in ``ids_table`` (a column ``id``, or with ``keyed`` a column ``id_key``
    of their keys already): a superset of the alerts with those ids, so
    compare the ids of the rows returned.

    Two steps on purpose: a hash join that projects the wanted columns reads
    them for every stored alert (~50 ms at 1M alerts), while the inner
    query reads only ``id_key`` and the outer one fetches the few matching
    rows by ``rowid``."""
    key = "id_key" if keyed else ID_KEY.format(id="id")
    return (
        f"SELECT {columns} FROM alerts WHERE rowid IN "
        f"(SELECT rowid FROM alerts WHERE id_key IN (SELECT {key} FROM {ids_table}))"
    )


# The outbox's columns after ``seq``, in versions 1 and 3 alike: version 3
# copies the rows over with ``SELECT *``, so the two must not drift apart.
_OUTBOX_COLUMNS = """alert_id VARCHAR NOT NULL,
        destination VARCHAR NOT NULL,
        state VARCHAR NOT NULL DEFAULT 'pending',  -- pending | sending | delivered | rejected
        created_at TIMESTAMPTZ NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        unknown_outcomes INTEGER NOT NULL DEFAULT 0,
        last_attempt_at TIMESTAMPTZ,
        delivered_at TIMESTAMPTZ,
        last_status INTEGER,
        last_error VARCHAR,
        digest_of INTEGER               -- number of alerts sent in the same digest card"""

# The archive's columns (``events``, versions 1 and 8 alike).
_EVENTS_COLUMNS = """
        event_id VARCHAR NOT NULL,
        topic VARCHAR,
        "partition" INTEGER,
        "offset" BIGINT,
        time TIMESTAMPTZ NOT NULL,
        ingest_time TIMESTAMPTZ NOT NULL,
        source VARCHAR,                -- intune | gateway | firewall | vdi
        dataset VARCHAR,
        user_name VARCHAR,             -- lower-cased user.name (else source.user.name)
        host_name VARCHAR,
        device_id VARCHAR,
        source_ip VARCHAR,
        destination_ip VARCHAR,
        destination_domain VARCHAR,
        zone_source VARCHAR,
        zone_destination VARCHAR,
        zone_crossing VARCHAR,
        action VARCHAR,
        outcome VARCHAR,
        {event}
"""

_V1 = [
    """
    CREATE TABLE schema_version (
        version INTEGER NOT NULL,
        applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE rules (
        rule_id VARCHAR NOT NULL,
        sha256 VARCHAR NOT NULL,
        version INTEGER NOT NULL,      -- 1 for the first text seen of a rule id, then 2, 3 ...
        title VARCHAR,
        level VARCHAR,
        tags VARCHAR[],
        path VARCHAR,
        text VARCHAR,
        loaded_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (rule_id, sha256)
    )
    """,
    """
    CREATE TABLE alerts (
        id VARCHAR PRIMARY KEY,
        rule_id VARCHAR NOT NULL,
        rule_title VARCHAR NOT NULL,
        level VARCHAR NOT NULL,
        tags VARCHAR[],
        rule_hash VARCHAR,
        rule_version INTEGER,
        type VARCHAR NOT NULL,
        group_values JSON,
        window_start TIMESTAMPTZ,
        window_end TIMESTAMPTZ,
        first_seen TIMESTAMPTZ NOT NULL,
        last_seen TIMESTAMPTZ NOT NULL,
        ingest_time TIMESTAMPTZ NOT NULL,
        zone_crossing VARCHAR,
        origin VARCHAR NOT NULL,       -- stream | hunt | match
        status VARCHAR NOT NULL DEFAULT 'new',
        evidence_count INTEGER NOT NULL
    )
    """,
    # No key on evidence: rows are only written together with a newly
    # inserted alert, so the write's check for known alert ids keeps them unique.
    """
    CREATE TABLE alert_evidence (
        alert_id VARCHAR NOT NULL,
        ordinal INTEGER NOT NULL,
        event_id VARCHAR NOT NULL,
        topic VARCHAR,
        "partition" INTEGER,
        "offset" BIGINT,
        line BIGINT,
        event_time TIMESTAMPTZ NOT NULL,
        event JSON
    )
    """,
    # The retro-hunt archive. Key fields are columns so a timeline over
    # millions of events reads a few narrow columns, not the JSON.
    f"CREATE TABLE events ({_EVENTS_COLUMNS.format(event='event JSON NOT NULL')})",
    "CREATE SEQUENCE outbox_seq START 1",
    # One row per (alert, destination). URLs never live here: a destination
    # is a name the sender resolves from env or the secrets file.
    f"""
    CREATE TABLE outbox (
        seq BIGINT PRIMARY KEY DEFAULT nextval('outbox_seq'),
        {_OUTBOX_COLUMNS}
    )
    """,
    """
    CREATE TABLE state (
        key VARCHAR PRIMARY KEY,
        value BLOB NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )
    """,
    """
    CREATE TABLE consumer_offsets (
        topic VARCHAR NOT NULL,
        "partition" INTEGER NOT NULL,
        next_offset BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (topic, "partition")
    )
    """,
]

# Version 2: ``alerts`` without its primary key. Maintaining the ART index of
# the key was most of what DuckDB spent inserting and committing a batch of
# alerts; ``AlertStore.write`` already looks the batch's ids up in the same
# transaction, and there is one writer, so it alone keeps replays out. That
# lookup reads ``id_key`` (8 bytes a row) rather than the ids: with 1M alerts
# a hash join on the 32-character ids took ~50 ms per batch, the keys ~5 ms.
# The table is rebuilt (DuckDB cannot drop a primary key), rows kept in order.
_V2 = [
    f"""
    CREATE TABLE alerts_v2 (
        id VARCHAR NOT NULL,           -- deterministic; unique because writes skip known ids
        rule_id VARCHAR NOT NULL,
        rule_title VARCHAR NOT NULL,
        level VARCHAR NOT NULL,
        tags VARCHAR[],
        rule_hash VARCHAR,
        rule_version INTEGER,
        type VARCHAR NOT NULL,
        group_values JSON,
        window_start TIMESTAMPTZ,
        window_end TIMESTAMPTZ,
        first_seen TIMESTAMPTZ NOT NULL,
        last_seen TIMESTAMPTZ NOT NULL,
        ingest_time TIMESTAMPTZ NOT NULL,
        zone_crossing VARCHAR,
        origin VARCHAR NOT NULL,       -- stream | hunt | match
        status VARCHAR NOT NULL DEFAULT 'new',
        evidence_count INTEGER NOT NULL,
        id_key BIGINT NOT NULL         -- {ID_KEY.format(id="id")}, for lookups by id
    )
    """,
    f"""
    INSERT INTO alerts_v2
    SELECT *, {ID_KEY.format(id="id")} FROM alerts ORDER BY rowid
    """,
    "DROP TABLE alerts",
    "ALTER TABLE alerts_v2 RENAME TO alerts",
]

# Version 3: ``outbox`` without the primary key on ``seq``. Maintaining its
# ART index cost ~3.7k of the ~76k instructions a write spends per alert
# (callgrind, batches of 5k), and ``seq`` comes from a sequence, so it is
# unique without one. The sender's reads and updates filter on
# ``destination``/``state`` or a few ``seq`` values, which the min/max
# statistics of each row group (``seq`` only grows) narrow down. The table is
# rebuilt (DuckDB cannot drop a key), rows and their ``seq`` kept.
_V3 = [
    f"""
    CREATE TABLE outbox_v3 (
        seq BIGINT NOT NULL DEFAULT nextval('outbox_seq'),  -- unique: only the sequence fills it
        {_OUTBOX_COLUMNS}
    )
    """,
    "INSERT INTO outbox_v3 SELECT * FROM outbox ORDER BY seq",
    "DROP TABLE outbox",
    "ALTER TABLE outbox_v3 RENAME TO outbox",
]

# Triage (self-contained, so it can be renumbered): who handles an alert and
# where it stands. ``alerts.status`` keeps the current status (new ->
# acknowledged -> closed, or false_positive) so SQL and saved queries see it;
# ``assignee`` the current assignee; every change is a row of
# ``triage_history``, written in the same transaction as the update
# (``AlertStore.triage``). The history is what an audit reads; the columns on
# ``alerts`` are its latest state.
_V4_TRIAGE = [
    "ALTER TABLE alerts ADD COLUMN assignee VARCHAR",
    "ALTER TABLE alerts ADD COLUMN status_changed_at TIMESTAMPTZ",
    """
    CREATE TABLE triage_history (
        alert_id VARCHAR NOT NULL,
        changed_at TIMESTAMPTZ NOT NULL,
        actor VARCHAR NOT NULL,        -- who: the console's session user or the CLI's OS user
        via VARCHAR NOT NULL,          -- cli | console
        from_status VARCHAR NOT NULL,
        to_status VARCHAR NOT NULL,
        from_assignee VARCHAR,
        to_assignee VARCHAR,
        note VARCHAR
    )
    """,
]

# Version 5: state values in rows of a few KiB (``state_chunks``). A value
# stored as one BLOB needed four to five times its size in DuckDB's buffer
# pool (a 100 MB correlation snapshot failed under the default 512MB limit,
# and every restart failed again on the same state). Small rows are spilled
# to ``<db>.tmp`` like any other insert; DuckDB pins a vector of 2048 of them
# at a time, so ``AlertStore`` sizes the rows from its memory limit
# (``state_chunk_bytes``). A value is its rows in ``seq`` order; writing a key
# replaces all its rows in the batch's transaction. Rows of ``state`` left by
# earlier versions are still read, until the key is written again. No key:
# DuckDB refuses to insert a key deleted earlier in the same transaction.
_V5 = [
    """
    CREATE TABLE state_chunks (
        key VARCHAR NOT NULL,
        seq INTEGER NOT NULL,          -- 0, 1, ... : the value is the rows in this order
        value BLOB NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )
    """,
]

# Version 6: ``pub_seq``, the store's order of what it publishes to the
# alerts topic (correlator/alerting/publish.py): every stored alert and every
# triage change gets the next number, one sequence over both tables, gapless,
# in commit order (the writer thread assigns it, ``AlertStore._seq``). The
# publisher resumes after the highest number the topic holds. Rows stored
# before are numbered in their order: alerts as inserted, then triage changes.
_V6_PUBLISH = [
    "ALTER TABLE alerts ADD COLUMN pub_seq BIGINT",
    "ALTER TABLE triage_history ADD COLUMN pub_seq BIGINT",
    """
    UPDATE alerts SET pub_seq = r.n
    FROM (SELECT rowid AS rid, row_number() OVER (ORDER BY rowid) AS n FROM alerts) r
    WHERE alerts.rowid = r.rid
    """,
    """
    UPDATE triage_history SET pub_seq = r.n + (SELECT count(*) FROM alerts)
    FROM (
        SELECT rowid AS rid, row_number() OVER (ORDER BY changed_at, rowid) AS n
        FROM triage_history
    ) r
    WHERE triage_history.rowid = r.rid
    """,
]

# Version 7: ``alerts.late``, true when some evidence arrived behind the
# watermark and was applied late (``correlator.late_horizon_s``). Rows
# stored before it read false.
_V7_LATE = [
    "ALTER TABLE alerts ADD COLUMN late BOOLEAN DEFAULT false",
]


def zstd_for_strings(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether this database file can store strings compressed with zstd
    (DuckDB >= 1.2 and a file of a storage version that has it). Tried in a
    transaction of its own that is rolled back: a failed statement would
    abort the caller's."""
    probe = con.cursor()
    try:
        probe.execute("BEGIN")
        probe.execute("CREATE TABLE _zw_zstd_probe (v VARCHAR USING COMPRESSION zstd)")
        return True
    except duckdb.Error:
        return False
    finally:
        with contextlib.suppress(duckdb.Error):
            probe.execute("ROLLBACK")
        probe.close()


def _v8_archive_zstd(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Version 8: the archive's ``event`` JSON compressed with zstd. DuckDB's
    own choice for it (dictionary, FSST) cost ~2-4 µs of CPU per event at
    each checkpoint and stored ~200 bytes per event of a typical firewall
    record; zstd costs less to write and is 3-4 times smaller, for scans of
    the JSON ~10 % slower (the narrow columns are unchanged). A store whose
    archive holds events already keeps its format (rebuilding it would copy
    the whole archive at start); so does a file whose storage version has no
    zstd for strings."""
    if not zstd_for_strings(con):
        return []
    if con.execute("SELECT count(*) FROM (SELECT 1 FROM events LIMIT 1)").fetchone() != (0,):
        return []
    return [
        "DROP TABLE events",
        "CREATE TABLE events ("
        + _EVENTS_COLUMNS.format(event="event JSON NOT NULL USING COMPRESSION zstd")
        + ")",
    ]


# A migration: its statements, or a function of the store that returns them.
Migration = list[str] | Callable[[duckdb.DuckDBPyConnection], list[str]]

# version -> what brings a store from version-1 to version
MIGRATIONS: dict[int, Migration] = {
    1: _V1,
    2: _V2,
    3: _V3,
    4: _V4_TRIAGE,
    5: _V5,
    6: _V6_PUBLISH,
    7: _V7_LATE,
    8: _v8_archive_zstd,
}

# The highest ``pub_seq`` a store holds (0 when it holds none).
MAX_PUB_SEQ = (
    "SELECT greatest((SELECT coalesce(max(pub_seq), 0) FROM alerts), "
    "(SELECT coalesce(max(pub_seq), 0) FROM triage_history))"
)

TABLES = (
    "alerts",
    "alert_evidence",
    "events",
    "rules",
    "outbox",
    "state",
    "state_chunks",
    "consumer_offsets",
    "triage_history",
)

# The triage statuses; any may follow any (reopening a closed alert is
# acknowledging it again), and every change is recorded.
TRIAGE_STATUSES = ("new", "acknowledged", "closed", "false_positive")
