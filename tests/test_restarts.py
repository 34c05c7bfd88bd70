"""A deployment that survives its broker: restarts, recreated topics, offsets
that no longer fit the log (docs/deploy.md, "Offsets and checkpoints").

The broker-restart tests run their own embedded broker on a fixed port and
restart it (memory storage: a restart loses every topic), as an operator's
would; the others use the session's broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import orjson
import pytest
from conftest import ROOT
from hypothesis import given
from hypothesis import strategies as st
from kafka import KafkaAdminClient, TopicPartition
from zonewatch_cli import run_zonewatch

from zonewatch.app.broker import EmbeddedBroker, free_port
from zonewatch.config import KafkaSettings
from zonewatch.kafka import ensure_topics, log_bounds, make_producer
from zonewatch.offsets import OffsetReset, decide_start_offset, same_topic

TEST_RULES = ROOT / "tests" / "rules"

FORTI = (
    'date=2026-11-26 time={hms} devname="city-fw01" devid="FG200FTK23004711" tz="+0900" '
    'logid="0000000013" type="traffic" subtype="forward" level="notice" vd="root" '
    'srcip=10.10.{host} srcport={sport} srcintf="core" srcintfrole="lan" dstip=10.200.8.15 '
    'dstport=445 dstintf="lgwan" dstintfrole="lan" sessionid={sid} proto=6 action="accept" '
    'policyid=77 policytype="policy" service="SMB" duration=3 sentbyte=100 rcvdbyte=200'
)


def _lines(first: int, count: int) -> str:
    """FortiGate core -> LGWAN sessions, one host each (one alert each with tests/rules)."""
    rows = []
    for i in range(first, first + count):
        rows.append(
            FORTI.format(
                hms=f"11:{i // 60 % 60:02d}:{i % 60:02d}",
                host=f"{20 + i // 250}.{i % 250 + 1}",
                sport=40000 + i,
                sid=7000 + i,
            )
        )
    return "".join(row + "\n" for row in rows)


# -- the decision (pure) ----------------------------------------------------------------


@given(
    start=st.integers(0, 10_000),
    length=st.integers(0, 10_000),
    stored=st.one_of(st.none(), st.integers(0, 30_000)),
    recreated=st.booleans(),
)
def test_a_resume_offset_always_lies_within_the_log(
    start: int, length: int, stored: int | None, recreated: bool
) -> None:
    end = start + length
    offset, reason = decide_start_offset(stored, start, end, same_topic=not recreated)
    if stored is None:
        assert (offset, reason) == (None, None)
        return
    assert offset is not None and start <= offset <= end
    if reason is None:
        assert offset == stored  # a stored offset that fits is kept as it is
    else:
        assert offset == start  # every other case reads what the log still holds
    expected = (
        OffsetReset.TOPIC_RECREATED
        if recreated
        else OffsetReset.AHEAD_OF_END
        if stored > end
        else OffsetReset.LOG_TRUNCATED
        if stored < start
        else None
    )
    assert reason is expected


def test_unknown_topic_ids_never_count_as_a_recreated_topic() -> None:
    assert same_topic(None, "b") and same_topic("a", None) and same_topic("a", "a")
    assert not same_topic("a", "b")


# -- through a broker -------------------------------------------------------------------


def _env(bootstrap: str, tmp_path: Path, prefix: str = "zonewatch") -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ZONEWATCH_KAFKA__TOPIC_PREFIX": prefix,
        "ZONEWATCH_KAFKA__PARTITIONS": "2",
        "ZONEWATCH_KAFKA__SESSION_TIMEOUT_MS": "2000",
        "ZONEWATCH_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
        "ZONEWATCH_CONNECTORS__ZONES_FILE": str(ROOT / "rules" / "zones.yaml"),
        "ZONEWATCH_CONNECTORS__CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
    }


def _zonewatch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_zonewatch(*args, env=env)


def _ingest(env: dict[str, str], log: Path, *extra: str) -> subprocess.CompletedProcess:
    done = _zonewatch(
        env, "ingest", "firewall", "--format", "fortigate", "--file", str(log), *extra
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _correlate(env: dict[str, str], db: Path, group: str) -> subprocess.CompletedProcess:
    done = _zonewatch(
        env,
        "correlate",
        "--rules",
        str(TEST_RULES),
        "--db",
        str(db),
        "--group-id",
        group,
        "--idle-exit",
        "3",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _alerts(db: Path) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute("SELECT count(*) FROM alerts").fetchone()
    return int(row[0]) if row else 0


def _events(lines: str) -> list[dict]:
    return [orjson.loads(line) for line in lines.splitlines() if line.startswith("{")]


def _warnings(stderr: str, name: str) -> list[dict]:
    return [e for e in _events(stderr) if e.get("event") == name and e.get("level") == "warning"]


@pytest.mark.integration
def test_a_broker_restart_between_two_ingests_loses_and_hides_nothing_new(
    tmp_path: Path,
) -> None:
    """The issue's evidence: events ingested after a broker restart (memory
    storage: every topic and offset gone) arrive and are correlated; the
    connector and the correlator each say once what happened."""
    port = free_port()
    log, db = tmp_path / "fw.log", tmp_path / "alerts.duckdb"
    log.write_text(_lines(0, 30))
    broker = EmbeddedBroker(port=port).start()
    try:
        env = _env(broker.bootstrap, tmp_path)
        _ingest(env, log)
        _correlate(env, db, "restarts")
        assert _alerts(db) == 30
    finally:
        broker.stop()
    with EmbeddedBroker(port=port) as again:
        env = _env(again.bootstrap, tmp_path)
        with log.open("a") as fh:
            fh.write(_lines(30, 121))
        started = time.monotonic()
        ingested = _ingest(env, log)
        assert time.monotonic() - started < 30, "the ingest waited for a timeout"
        assert "read 121 records, produced 121 events" in ingested.stdout
        [warning] = _warnings(ingested.stderr, "checkpoint_not_in_kafka")
        assert warning["reason"] in {"topic_recreated", "ahead_of_end"}
        assert "broker lost its data" in warning["what_happened"]

        correlated = _correlate(env, db, "restarts")
        [reset] = _warnings(correlated.stderr, "stored_offsets_reset")
        assert reset["reason"] in {"topic_recreated", "ahead_of_end"}
        assert _alerts(db) == 30 + 121


def _count_alerts_live(env: dict[str, str], db: Path) -> int:
    """Through the running correlator's query endpoint (it holds the file)."""
    done = run_zonewatch(
        "query", "--db", str(db), "--format", "csv", "SELECT count(*) AS n FROM alerts", env=env
    )
    lines = done.stdout.strip().splitlines()
    return int(lines[-1]) if done.returncode == 0 and len(lines) == 2 else -1


def _wait_for_alerts(env: dict[str, str], db: Path, n: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while (found := _count_alerts_live(env, db)) < n:
        assert proc.poll() is None, "the correlator exited"
        assert time.monotonic() < deadline, f"{found} of {n} alerts after 120 s"
        time.sleep(0.5)
    assert found == n


@pytest.mark.integration
def test_a_running_correlator_carries_on_after_its_broker_restarts(tmp_path: Path) -> None:
    """The broker goes away under a running correlator and comes back empty:
    the group re-forms, the stored offsets no longer fit, one warning, and
    the events ingested after the restart are correlated."""
    port = free_port()
    log, db, err = tmp_path / "fw.log", tmp_path / "alerts.duckdb", tmp_path / "correlate.err"
    log.write_text(_lines(0, 20))
    broker = EmbeddedBroker(port=port).start()
    env = _env(broker.bootstrap, tmp_path)
    correlator = None
    try:
        _ingest(env, log)
        with err.open("wb") as stderr:
            correlator = subprocess.Popen(
                [sys.executable, "-m", "zonewatch", "correlate", "--rules", str(TEST_RULES),
                 "--db", str(db), "--group-id", "live"],
                env={**os.environ, **env, "ZONEWATCH_LOG_JSON": "true"},
                stdout=subprocess.DEVNULL, stderr=stderr,
            )  # fmt: skip
        _wait_for_alerts(env, db, 20, correlator)
        broker.stop()
        broker = EmbeddedBroker(port=port).start()
        with log.open("a") as fh:
            fh.write(_lines(20, 50))
        _ingest(env, log)
        _wait_for_alerts(env, db, 70, correlator)
    finally:
        if correlator is not None:
            correlator.send_signal(signal.SIGTERM)
            correlator.wait(60)
        broker.stop()
    assert correlator.returncode == 0
    [reset] = _warnings(err.read_text(), "stored_offsets_reset")
    assert reset["reason"] in {"topic_recreated", "ahead_of_end"}


@pytest.mark.integration
def test_a_recreated_topic_is_read_from_its_start_even_when_it_grew_past_the_offset(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """Offsets within the new log's bounds are not enough: the topic id says
    the log is another one."""
    env = _env(str(kafka_settings.bootstrap_servers), tmp_path, kafka_settings.topic_prefix)
    log, db = tmp_path / "fw.log", tmp_path / "alerts.duckdb"
    log.write_text(_lines(0, 10))
    _ingest(env, log)
    _correlate(env, db, f"{kafka_settings.topic_prefix}-g")
    assert _alerts(db) == 10

    topic = kafka_settings.events_topic("firewall")
    admin = KafkaAdminClient(bootstrap_servers=kafka_settings.bootstrap_servers)
    try:
        admin.delete_topics([topic])
        deadline = time.monotonic() + 10
        while topic in admin.list_topics():
            assert time.monotonic() < deadline, "the topic was not deleted"
            time.sleep(0.1)
    finally:
        admin.close()
    ensure_topics(kafka_settings, [topic])
    # More events than before: every stored offset lies inside the new log.
    producer = make_producer(kafka_settings)
    new = _events(_parse(env, _lines(100, 40)))
    for i, ev in enumerate(new):
        producer.send(topic, value=orjson.dumps(ev), partition=i % 2)
    producer.flush()
    producer.close()

    correlated = _correlate(env, db, f"{kafka_settings.topic_prefix}-g")
    [reset] = _warnings(correlated.stderr, "stored_offsets_reset")
    assert reset["reason"] == "topic_recreated"
    assert _alerts(db) == 10 + 40


def _parse(env: dict[str, str], text: str) -> str:
    done = run_zonewatch(
        "parse", "--source", "firewall", "--format", "fortigate", "-", env=env, stdin=text
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.integration
def test_offsets_beyond_the_end_of_the_log_are_moved_to_its_start(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """A store whose offsets lie past the end (its topic lost records since):
    the embedded broker would silently return nothing from there."""
    from correlator.store import AlertStore

    env = _env(str(kafka_settings.bootstrap_servers), tmp_path, kafka_settings.topic_prefix)
    log, db = tmp_path / "fw.log", tmp_path / "alerts.duckdb"
    log.write_text(_lines(0, 12))
    _ingest(env, log)
    topic = kafka_settings.events_topic("firewall")
    store = AlertStore(db)
    try:
        store.write([], offsets={(topic, 0): 500, (topic, 1): 500})
    finally:
        store.close()
    correlated = _correlate(env, db, f"{kafka_settings.topic_prefix}-g")
    [reset] = _warnings(correlated.stderr, "stored_offsets_reset")
    assert reset["reason"] == "ahead_of_end"
    assert reset["partitions"] == {f"{topic}:0": "500 -> 0", f"{topic}:1": "500 -> 0"}
    assert _alerts(db) == 12
    assert (
        "stored_offsets_reset" not in _correlate(env, db, f"{kafka_settings.topic_prefix}-g").stderr
    )


@pytest.mark.integration
def test_log_bounds_come_from_fetch_answers_not_list_offsets(
    kafka_settings: KafkaSettings,
) -> None:
    """The embedded broker answers end_offsets() in record batches; the bounds
    must count records on it as on Apache Kafka."""
    topic = kafka_settings.topic("bounds")
    ensure_topics(kafka_settings, [topic], partitions=2)
    producer = make_producer(kafka_settings, linger_ms=50)
    for i in range(1000):
        producer.send(topic, value=b"x", partition=0 if i < 700 else 1)
    producer.flush()
    producer.close()
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    bounds = log_bounds(kafka_settings, tps)
    assert [(bounds[tp].start, bounds[tp].end) for tp in tps] == [(0, 700), (0, 300)]
    assert bounds[tps[0]].topic_id and bounds[tps[0]].topic_id == bounds[tps[1]].topic_id


@pytest.mark.integration
def test_a_truncated_log_resumes_at_its_start_and_counts_the_lost_records(
    kafka_settings: KafkaSettings,
) -> None:
    """Retention (here: DeleteRecords) removed records nobody read. The
    embedded broker does not implement DeleteRecords: this runs against
    Apache Kafka (KAFKA_BOOTSTRAP_SERVERS)."""
    from correlator.resume import resume_offsets

    topic = kafka_settings.topic("truncated")
    ensure_topics(kafka_settings, [topic], partitions=1)
    producer = make_producer(kafka_settings)
    for _ in range(100):
        producer.send(topic, value=b"x", partition=0)
    producer.flush()
    producer.close()
    tp = TopicPartition(topic, 0)
    admin = KafkaAdminClient(bootstrap_servers=kafka_settings.bootstrap_servers)
    try:
        admin.delete_records({tp: 60})
    except Exception as exc:  # the embedded broker drops the connection
        pytest.skip(f"the broker does not implement DeleteRecords ({type(exc).__name__})")
    finally:
        admin.close()
    resume = resume_offsets(kafka_settings, [tp], {tp: 25}, {})
    assert resume.seek == {tp: 60}
    assert resume.moved == {tp: (25, 60, OffsetReset.LOG_TRUNCATED)}
