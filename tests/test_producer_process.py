"""The alerts topic's producer runs in a child process: it goes when its
parent goes, and a killed one is replaced without losing or doubling an
alert on the topic (through the embedded broker)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from correlator.alerting.publish import PUBLISH_FAILURES, AlertPublisher
from correlator.store import AlertStore
from tests.conftest import ROOT, wait_until
from tests.test_alerts_topic import _alert, of_store, topic_records
from zonewatch.config import KafkaSettings
from zonewatch.producer_process import ProducerProcess, ProducerProcessError

pytestmark = pytest.mark.integration


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may wait long for a reaper)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


PARENT = textwrap.dedent(
    """
    import sys, time
    from zonewatch.config import KafkaSettings
    from zonewatch.producer_process import ProducerProcess

    kafka = KafkaSettings(bootstrap_servers=sys.argv[1], topic_prefix=sys.argv[2])
    child = ProducerProcess(kafka, "zwtest-orphan-" + sys.argv[2], kafka.alerts_topic, [], "seq")
    print(child.open(), child.pid, flush=True)
    time.sleep(600)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_producer_process_exits_when_its_parent_is_killed(
    kafka_settings: KafkaSettings,
) -> None:
    from zonewatch.kafka import ensure_topics

    ensure_topics(kafka_settings)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, kafka_settings.bootstrap_servers,
         kafka_settings.topic_prefix],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )  # fmt: skip
    try:
        assert parent.stdout is not None
        partitions, child_pid = map(int, parent.stdout.readline().split())
        assert partitions == kafka_settings.partitions
        assert _running(child_pid)
        # Its command line names it and the transactional id, nothing secret.
        cmdline = Path(f"/proc/{child_pid}/cmdline").read_bytes().split(b"\0")
        assert b"zonewatch.producer_process" in cmdline
        assert f"zwtest-orphan-{kafka_settings.topic_prefix}".encode() in cmdline
    finally:
        parent.kill()
        parent.wait()
    wait_until(lambda: not _running(child_pid), 10, "the orphaned producer process to exit")


def test_closing_the_producer_process_ends_it_cleanly(kafka_settings: KafkaSettings) -> None:
    from zonewatch.kafka import ensure_topics

    ensure_topics(kafka_settings)
    topic = kafka_settings.alerts_topic
    child = ProducerProcess(kafka_settings, f"zwtest-{kafka_settings.topic_prefix}", topic, [], "s")
    assert child.open() == kafka_settings.partitions
    assert child.transact([(1, b"k", 0, b"{}"), (2, b"k", 0, b"{}")]) == 2
    assert child.close() == 0  # it saw the end of its socket and closed its producer


def test_a_producer_process_without_a_broker_says_why(tmp_path: Path) -> None:
    import socket

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    dead = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", connect_timeout_s=1)
    child = ProducerProcess(dead, "zwtest-no-broker", dead.alerts_topic, [], "s")
    # The child reports the error's type and message, then exits.
    with pytest.raises(ProducerProcessError, match=r"BrokerUnavailableError: .*127\.0\.0\.1"):
        child.open()
    assert child.close() == 1


def _failures() -> float:
    return float(PUBLISH_FAILURES._value.get())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_producer_process_is_replaced_and_each_alert_is_on_the_topic_once(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    from zonewatch.kafka import ensure_topics

    ensure_topics(kafka_settings)
    failures = _failures()
    with AlertStore(tmp_path / "alerts.duckdb") as store:
        # Small transactions: the kill lands while some are still to go.
        publisher = AlertPublisher(store, kafka_settings, transaction_records=5).start()
        try:
            store.write([_alert(i) for i in range(40)])
            wait_until(lambda: publisher.published > 0, 60, "a first transaction")
            first = publisher.producer_pid
            assert first is not None and _running(first)
            os.kill(first, signal.SIGKILL)
            store.write([_alert(i) for i in range(40, 80)])
            assert publisher.drain(90)
            second = publisher.producer_pid
            assert second is not None and second != first
        finally:
            publisher.stop()
        store_id = publisher.store_id
        _cols, rows = store.query("SELECT id FROM alerts")
    assert _failures() > failures  # the kill was seen (and retried), not missed
    assert second is not None and not _running(second)  # stopped with the publisher
    records = of_store(topic_records(kafka_settings), store_id)
    published: list[Any] = [orjson.loads(r.value)["id"] for r in records]
    assert [i for i, n in Counter(published).items() if n > 1] == []
    assert sorted(published) == sorted(r[0] for r in rows) == [f"alert-{i:04d}" for i in range(80)]


def test_the_producer_process_keeps_the_sasl_password_out_of_its_debug_log(
    kafka_bootstrap: str, capfd: pytest.CaptureFixture[str]
) -> None:
    from zonewatch.logs import configure_logging

    password = "zw-child-Secret-4711"
    sasl = KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="zonewatch-correlator",
        sasl_password=password,
        connect_timeout_s=5,
    )
    configure_logging("debug", json=True)  # the child follows: kafka-python at debug
    try:
        child = ProducerProcess(sasl, "zwtest-sasl", sasl.alerts_topic, [], "s")
        # The embedded broker has no SASL listener: the child's producer logs
        # what it tries, fails, and the child says so.
        with pytest.raises(ProducerProcessError) as failed:
            child.open()
        child.close()
    finally:
        configure_logging("warning", json=True)
    err = capfd.readouterr().err
    assert "Starting Kafka producer" in err  # the child's kafka-python logged at debug
    assert password not in err and password not in str(failed.value)


def test_in_process_a_failed_commit_is_retried_and_each_alert_is_on_the_topic_once(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """``correlator.publish_process=false`` (or an injected producer): the
    same publisher, its producer in this process; a commit that fails once
    is an ordinary publishing failure."""
    from zonewatch.kafka import ensure_topics, make_producer

    ensure_topics(kafka_settings)
    made: list[Any] = []

    def flaky(kafka: KafkaSettings, **options: Any) -> Any:
        producer = make_producer(kafka, **options)
        made.append(producer)
        if len(made) == 1:
            # The first producer's second commit fails after its records were sent.
            commit, calls = producer.commit_transaction, []

            def failing_commit() -> None:
                calls.append(1)
                if len(calls) == 2:
                    raise RuntimeError("commit lost")
                commit()

            producer.commit_transaction = failing_commit
        return producer

    failures = _failures()
    with AlertStore(tmp_path / "alerts.duckdb") as store:
        publisher = AlertPublisher(
            store, kafka_settings, transaction_records=5, make_producer=flaky
        ).start()
        try:
            store.write([_alert(i) for i in range(30)])
            assert publisher.drain(90)
            assert publisher.producer_pid is None  # no child process
        finally:
            publisher.stop()
        store_id = publisher.store_id
    assert _failures() > failures and len(made) >= 2  # failed, then a new producer
    records = of_store(topic_records(kafka_settings), store_id)
    published = sorted(orjson.loads(r.value)["id"] for r in records)
    assert published == [f"alert-{i:04d}" for i in range(30)]
