"""Hostile queries against a live correlator's query endpoint (issue 20,
point 1): `zonewatch correlate` runs as a child process, consuming from the
session's broker, while several hundred hostile queries go to its endpoint.
Every one ends in a refusal with a message; the correlator keeps running,
keeps its settings, writes no file, keeps detecting, and its memory stays
bounded by the result caps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from correlator.store import query_endpoint
from correlator.store.limits import truncation
from tests.conftest import ROOT, wait_until
from tests.hostile_sql import ANSWERED, refused
from tests.test_query_live import direct_crossing
from zonewatch.config import KafkaSettings
from zonewatch.errors import QueryError

pytestmark = pytest.mark.integration

RULES = ROOT / "tests" / "rules"
MAX_ROWS = 100_000
MAX_MB = 32
MAX_TIMEOUT_S = 5


@dataclass
class LiveCorrelator:
    proc: subprocess.Popen[bytes]
    db: Path
    log: Path
    tmp: Path
    kafka: KafkaSettings

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def rss_mb(self, field: str = "VmRSS") -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith(field + ":"))
        return int(line.split()[1]) / 1024

    def alerts(self) -> int:
        table = query_endpoint(self.db, "SELECT count(*) AS n FROM alerts")
        assert table is not None, "the endpoint stopped answering"
        return int(table.to_pylist()[0]["n"])


def produce(kafka: KafkaSettings, first: int, n: int) -> None:
    from zonewatch.kafka import make_producer

    producer = make_producer(kafka)
    for i in range(first, first + n):
        producer.send(kafka.events_topic("firewall"), key=b"k", value=direct_crossing(i))
    producer.flush()
    producer.close()


@pytest.fixture(scope="module")
def live(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveCorrelator]:
    from zonewatch.kafka import ensure_topics

    tmp = tmp_path_factory.mktemp("hostile")
    kafka = KafkaSettings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=f"zwtest-{uuid.uuid4().hex[:8]}"
    )
    ensure_topics(kafka)
    db = tmp / "zonewatch.duckdb"
    log = tmp / "correlate.log"
    env = dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        ZONEWATCH_KAFKA__TOPIC_PREFIX=kafka.topic_prefix,
        ZONEWATCH_KAFKA__SESSION_TIMEOUT_MS="2000",
        ZONEWATCH_KAFKA__HEARTBEAT_INTERVAL_MS="500",
        ZONEWATCH_CORRELATOR__QUERY_MAX_ROWS=str(MAX_ROWS),
        ZONEWATCH_CORRELATOR__QUERY_MAX_RESULT_MB=str(MAX_MB),
        ZONEWATCH_CORRELATOR__QUERY_MAX_TIMEOUT_S=str(MAX_TIMEOUT_S),
        ZONEWATCH_LOG_JSON="true",
    )
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "zonewatch", "correlate", "--rules", str(RULES),
             "--db", str(db), "--group-id", f"zwtest-{uuid.uuid4().hex[:8]}"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    live = LiveCorrelator(proc, db, log, tmp, kafka)
    try:
        wait_until(
            lambda: not live.alive() or b"partitions_assigned" in log.read_bytes(),
            90,
            "the correlator to start",
        )
        assert live.alive(), live.log_text()[-3000:]
        produce(kafka, 0, 3)
        wait_until(lambda: live.alerts() == 3, 60, "the first three alerts")
        yield live
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_hostile_queries_are_refused_and_the_correlator_keeps_detecting(
    live: LiveCorrelator,
) -> None:
    hostile = refused(live.tmp)
    assert len(hostile) > 300
    answered = []
    for sql in hostile:
        try:
            table = query_endpoint(live.db, sql, timeout_s=10)
        except QueryError as exc:
            assert str(exc).strip(), sql
        else:
            answered.append((sql, table))
        assert live.alive(), f"{sql!r} stopped the correlator:\n{live.log_text()[-3000:]}"
    assert answered == []
    for sql in ANSWERED:
        assert query_endpoint(live.db, sql) is not None, sql
    # Nothing changed a setting, wrote a file or logged a traceback ...
    settings = query_endpoint(
        live.db,
        "SELECT current_setting('enable_external_access') AS ext, "
        "current_setting('lock_configuration') AS locked",
    )
    assert settings is not None and settings.to_pylist() == [{"ext": False, "locked": True}]
    ours = ("zonewatch.duckdb", "correlate.log")
    assert [p.name for p in live.tmp.iterdir() if not p.name.startswith(ours)] == []
    assert "Traceback" not in live.log_text()
    # ... and detection goes on: new events still raise alerts.
    produce(live.kafka, 100, 2)
    wait_until(lambda: live.alerts() == 5, 60, "alerts of events sent after the hostile queries")


def test_a_huge_result_is_cut_at_the_row_cap_and_memory_goes_back(live: LiveCorrelator) -> None:
    before = live.rss_mb()
    # 3e8 rows took the correlator from 0.22 to 2.6 GB, and it stayed there.
    table = query_endpoint(
        live.db, "SELECT i, i::VARCHAR AS s FROM range(300000000) t(i)", timeout_s=60
    )
    assert table is not None and table.num_rows == MAX_ROWS
    assert "truncated at 100,000 rows" in (truncation(table) or "")
    wide = query_endpoint(live.db, "SELECT repeat('x', 10000) AS s FROM range(1000000)")
    assert wide is not None and 0 < wide.num_rows < MAX_ROWS
    assert f"{MAX_MB} MB" in (truncation(wide) or "")
    assert wide.nbytes <= (MAX_MB + 1) << 20
    after = live.rss_mb()
    peak = live.rss_mb("VmHWM")
    print(f"correlator RSS {before:.0f} MB -> {after:.0f} MB, peak {peak:.0f} MB")
    assert after < before + 150
    assert peak < before + 400
    assert live.alive()


def test_a_timeout_above_the_server_maximum_is_capped(live: LiveCorrelator) -> None:
    start = time.monotonic()
    with pytest.raises(QueryError, match=f"after {MAX_TIMEOUT_S} s, the server's maximum"):
        query_endpoint(
            live.db, "SELECT sum(hash(i)) FROM range(10000000000000) t(i)", timeout_s=1e9
        )
    assert time.monotonic() - start < MAX_TIMEOUT_S + 15
    for bad in (float("inf"), float("nan"), -1, 0):
        with pytest.raises(QueryError, match="give a number of seconds above 0"):
            query_endpoint(live.db, "SELECT 1", timeout_s=bad)
    assert live.alive()


def test_store_and_wal_are_private_to_the_correlator_user(live: LiveCorrelator) -> None:
    wal = live.db.with_name(live.db.name + ".wal")
    produce(live.kafka, 200, 1)  # a write, so the WAL exists
    wait_until(wal.exists, 30, "the WAL")
    for path in (live.db, wal, live.db.with_name(live.db.name + ".query.json")):
        assert oct(path.stat().st_mode & 0o777) == "0o600", path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["UPDATE EXTENSIONS"], "refused UPDATE EXTENSIONS statement"),
        (["--timeout", "inf", "SELECT 1"], "give a number of seconds above 0"),
        (["-f", "json", "SELECT '294247-01-01'::TIMESTAMP AS t"], None),
        (["-f", "table", "SELECT 'infinity'::TIMESTAMP AS t, '10000-01-01'::DATE AS d"], None),
        (
            ["SELECT * FROM enable_logging(level='trace', storage='file', storage_path='/tmp/x')"],
            "refused table function enable_logging()",
        ),
    ],
)
def test_client_errors_end_in_a_message_not_a_traceback(
    live: LiveCorrelator, args: list[str], message: str | None
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "zonewatch", "query", "--db", str(live.db), *args],
        capture_output=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "ZONEWATCH_LOG_LEVEL": "warning"},
    )
    err = done.stderr.decode()
    assert "Traceback" not in err
    if message is None:
        assert done.returncode == 0, err
        assert b"294247" in done.stdout or b"10000-01-01" in done.stdout
    else:
        assert done.returncode == 2 and message in err
    assert live.alive()
