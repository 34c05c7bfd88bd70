"""A second correlator joining the group while correlation rules are loaded.

State hand-over between processes is not built (correlator/correlation/
README.md, "Scale-out"): the running correlator must say, loudly and with
the partitions concerned, that correlations across them will be missed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_crash_recovery import RULES

from zonewatch.config import SOURCES, KafkaSettings

pytestmark = pytest.mark.integration

LINE = b"correlation_needs_the_whole_group"


def test_a_second_member_in_the_group_is_reported_with_the_partitions_it_took(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    from zonewatch.kafka import ensure_topics, make_consumer

    ensure_topics(kafka_settings)
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    log = tmp_path / "correlate.log"
    group = f"{kafka_settings.topic_prefix}-scale"
    env = dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=kafka_settings.bootstrap_servers or "",
        ZONEWATCH_KAFKA__TOPIC_PREFIX=kafka_settings.topic_prefix,
        ZONEWATCH_KAFKA__PARTITIONS=str(kafka_settings.partitions),
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zonewatch",
            "correlate",
            "--rules",
            str(rules),
            "--db",
            str(tmp_path / "a.duckdb"),
            "--group-id",
            group,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    second = None
    try:
        deadline = time.monotonic() + 60
        while b"partitions_assigned" not in log.read_bytes():
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.1)
        assert LINE not in log.read_bytes()  # alone, it holds every partition

        topics = [kafka_settings.events_topic(s) for s in SOURCES]
        second = make_consumer(kafka_settings, group, topics)

        def reported() -> bool:
            """The second member's current partitions are named in a report.
            Under load a slow member may rejoin and the group rebalance
            more than once: what counts is a report of what it holds now."""
            second.poll(timeout_ms=200)
            taken = {f"{tp.topic}:{tp.partition}" for tp in second.assignment()}
            lines = [x for x in log.read_text().splitlines() if LINE.decode() in x]
            return bool(taken) and any(all(name in x for name in taken) for x in lines)

        deadline = time.monotonic() + 120
        while not reported():
            assert time.monotonic() < deadline, log.read_text()[-2000:]
    finally:
        if second is not None:
            second.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
