"""Hostile forensic queries: what an attacker or an unlucky analyst would send
to `zonewatch query`. Every one must be refused with a message (QueryError),
never run, and never take the correlator down (issue 20, point 1).

``refused(tmp)`` builds the list; ``tmp`` is a folder the queries try to
write into, so a test can check that nothing appeared there.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from correlator.store.guard import PURE_TABLE_FUNCTIONS

# Where a table function can hide inside one SELECT. ``{f}`` is the call.
WRAPPERS = (
    "SELECT * FROM {f}",
    "FROM {f}",
    "/* a comment first */ SELECT * FROM {f}",
    "SELECT * FROM (SELECT * FROM {f})",
    "SELECT * FROM (FROM {f}) AS t",
    "WITH x AS (SELECT * FROM {f}) SELECT * FROM x",
    "WITH x AS MATERIALIZED (SELECT * FROM {f}) SELECT 1",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r, {f} WHERE n < 2) "
    "SELECT * FROM r",
    "SELECT * FROM alerts, LATERAL (SELECT * FROM {f})",
    "SELECT * FROM alerts JOIN {f} ON true",
    "SELECT 1 UNION ALL SELECT 1 FROM {f}",
    "SELECT 1 EXCEPT SELECT 1 FROM {f}",
    "SELECT 1 WHERE EXISTS (SELECT * FROM {f})",
    "SELECT (SELECT count(*) FROM {f})",
    "SELECT list_transform([1], x -> (SELECT count(*) FROM {f}))",
    "SELECT * FROM alerts WHERE id IN (SELECT 1 FROM {f})",
    "SELECT * FROM alerts ORDER BY (SELECT 1 FROM {f})",
    "SELECT count(*) FILTER (WHERE EXISTS (SELECT 1 FROM {f})) FROM alerts",
    "SELECT sum(1) OVER (ORDER BY (SELECT 1 FROM {f}))",
    "SELECT level FROM alerts GROUP BY level HAVING (SELECT count(*) FROM {f}) > 0",
    "SUMMARIZE SELECT * FROM {f}",
    "DESCRIBE SELECT * FROM {f}",
    "EXPLAIN SELECT * FROM {f}",
    "EXPLAIN ANALYZE SELECT * FROM {f}",
)


def side_effect_calls(tmp: Path) -> list[str]:
    """The table functions of the issue that changed settings or the file
    from inside a SELECT (the first aborted the correlator), and friends."""
    return [
        f"enable_logging(level='trace', storage='file', storage_path='{tmp}/log')",
        "enable_logging(level='trace')",
        "disable_logging()",
        "checkpoint()",
        "force_checkpoint()",
        "register_external_resource_type('x')",
        "truncate_duckdb_logs()",
        "enable_profiling()",
        "system.main.checkpoint()",
        '"CHECKPOINT"()',
        "query('SELECT * FROM checkpoint()')",
        "query_table('alerts')",
        "read_csv('/etc/passwd')",
        "glob('/etc/*')",
    ]


def unlisted_table_functions() -> list[str]:
    """Every table function this DuckDB has that is not on the allow-list."""
    with duckdb.connect(":memory:") as con:
        rows = con.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions() "
            "WHERE function_type IN ('table', 'table_macro') ORDER BY 1"
        ).fetchall()
    return [r[0] for r in rows if r[0].lower() not in PURE_TABLE_FUNCTIONS]


def classic_escapes(tmp: Path) -> list[str]:
    return [
        # files and the network
        f"COPY alerts TO '{tmp}/stolen.csv'",
        f"COPY (SELECT * FROM alerts) TO '{tmp}/stolen.parquet' (FORMAT parquet)",
        "COPY alerts FROM '/etc/passwd'",
        f"EXPORT DATABASE '{tmp}/export'",
        f"IMPORT DATABASE '{tmp}/export'",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM '/etc/*'",
        "SELECT * FROM 'https://example.com/x.csv'",
        'SELECT * FROM "/etc/hostname"',
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM read_blob('/etc/hostname')",
        "SELECT * FROM read_json('https://example.com/x.json')",
        "SELECT * FROM read_json_auto('/etc/hostname')",
        "SELECT * FROM read_parquet('/tmp/*.parquet')",
        "SELECT * FROM parquet_metadata('/tmp/x.parquet')",
        "SELECT * FROM sniff_csv('/etc/passwd')",
        "SELECT * FROM read_duckdb('/tmp/other.duckdb')",
        "SELECT * FROM glob('/home/*')",
        "SELECT content FROM read_text('/proc/self/environ')",
        "SELECT getenv('HOME')",
        # other databases
        f"ATTACH '{tmp}/other.duckdb' AS o",
        "ATTACH ':memory:' AS m",
        "DETACH zonewatch",
        "USE system",
        # extensions
        "INSTALL httpfs",
        "FORCE INSTALL httpfs",
        "LOAD httpfs",
        "UPDATE EXTENSIONS",
        "UPDATE EXTENSIONS (httpfs)",
        # settings
        "SET enable_external_access = true",
        "SET GLOBAL lock_configuration = false",
        "RESET lock_configuration",
        "SET VARIABLE x = 1",
        "SET threads = 1",
        "PRAGMA database_list",
        "PRAGMA enable_profiling",
        "PRAGMA force_checkpoint",
        "CALL checkpoint()",
        "CALL enable_logging(level='trace')",
        "CHECKPOINT",
        "FORCE CHECKPOINT",
        "VACUUM",
        "ANALYZE",
        # macros, objects, writes
        "CREATE MACRO m(x) AS x",
        "CREATE TEMP MACRO m(x) AS x",
        "CREATE TEMP TABLE t AS SELECT 1",
        "CREATE VIEW v AS SELECT * FROM alerts",
        "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
        "CREATE SEQUENCE s",
        "DROP TABLE alerts",
        "DELETE FROM alerts",
        "UPDATE outbox SET state = 'delivered'",
        "INSERT INTO alerts (id) VALUES ('x')",
        "TRUNCATE alerts",
        "ALTER TABLE alerts ADD COLUMN x INT",
        "WITH d AS (DELETE FROM alerts RETURNING id) SELECT * FROM d",
        "WITH d AS (UPDATE outbox SET state = 'x' RETURNING 1) SELECT * FROM d",
        "EXPLAIN ANALYZE DELETE FROM alerts",
        "EXPLAIN INSERT INTO alerts (id) VALUES ('x')",
        "SELECT nextval('outbox_seq')",
        "SELECT setval('outbox_seq', 1)",
        "SELECT setseed(0.5)",
        "SELECT write_log('hello', level := 'error')",
        "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))",
        # several statements, transactions
        "SELECT 1; DELETE FROM alerts",
        "SELECT 1; SELECT 2",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "ABORT",
        "PIVOT alerts ON level",
        # nothing at all, or nonsense
        "",
        "   ",
        "-- only a comment",
        "SELEC 1",
        "SELECT " + "(" * 3000 + "1" + ")" * 3000,
    ]


def refused(tmp: Path) -> list[str]:
    calls = side_effect_calls(tmp)
    wrapped = [w.format(f=call) for call in calls for w in WRAPPERS]
    unlisted = [f"SELECT * FROM {name}()" for name in unlisted_table_functions()]
    return wrapped + unlisted + classic_escapes(tmp)


# Harmless reads that must keep working: the fence must not be a wall.
ANSWERED = (
    "SELECT count(*) FROM alerts",
    "SELECT * FROM range(3)",
    "SELECT * FROM generate_series(1, 3)",
    "SELECT * FROM unnest([1, 2, 3])",
    "SELECT * FROM json_each('{\"a\": 1}')",
    "SELECT table_name FROM duckdb_tables() ORDER BY 1",
    "SELECT * FROM duckdb_columns() WHERE table_name = 'alerts'",
    "SELECT * FROM pragma_table_info('alerts')",
    "SELECT name, value FROM duckdb_settings() WHERE name = 'lock_configuration'",
    "SUMMARIZE alerts",
    "DESCRIBE alerts",
    "SHOW TABLES",
    "EXPLAIN SELECT * FROM alerts",
    "EXPLAIN ANALYZE SELECT count(*) FROM alerts",
    "FROM alerts LIMIT 1",
    "WITH x AS (SELECT level FROM alerts) SELECT level, count(*) FROM x GROUP BY ALL",
    "SELECT current_setting('enable_external_access')",
    "SELECT * FROM events e JOIN alert_evidence v ON v.event_id = e.event_id LIMIT 5",
)
