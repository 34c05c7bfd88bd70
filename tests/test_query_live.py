"""`zonewatch query` in another process while the correlator consumes from
Kafka and writes: answers come through the query endpoint and are consistent."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from tests.conftest import ROOT
from zonewatch.config import CorrelatorSettings, KafkaSettings, Settings

pytestmark = pytest.mark.integration

RULES = ROOT / "tests" / "rules"  # fixed rules: the shipped pack may evolve
T0 = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)


def direct_crossing(i: int) -> bytes:
    """A firewall-allowed core->LGWAN connection: one critical alert each."""
    return orjson.dumps(
        {
            "@timestamp": (T0 + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
            "event": {"dataset": "firewall.panos", "action": "allow", "outcome": "success"},
            "source": {"ip": f"10.20.{i // 250 % 250}.{i % 250}", "port": 40000 + i % 20000},
            "destination": {"ip": "10.40.0.8", "port": 445},
            "user": {"name": f"user{i % 40}@city.example.lg.jp"},
            "zone": {"source": "core", "destination": "lgwan", "crossing": "core->lgwan"},
        }
    )


def query_process(db: Path, sql: str) -> dict:
    env = {**os.environ, "ZONEWATCH_LOG_LEVEL": "warning"}
    done = subprocess.run(
        [sys.executable, "-m", "zonewatch", "query", "--db", str(db), "-f", "jsonl", sql],
        capture_output=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr.decode()
    return orjson.loads(done.stdout)


def live_settings(kafka_settings: KafkaSettings, db: Path) -> Settings:
    """A correlator on the fixed rules, writing ``db``, in a group of its own."""
    return Settings(
        kafka=kafka_settings,
        correlator=CorrelatorSettings(
            rules=[RULES], db_path=db, group_id=f"zwtest-{uuid.uuid4().hex[:8]}", max_batch=50
        ),
    )


class CrossingFeed:
    """Produces direct crossings (one alert each) in small paced chunks, so
    the correlator keeps writing, until ``stop()``."""

    def __init__(self, kafka_settings: KafkaSettings) -> None:
        from zonewatch.kafka import ensure_topics, make_producer

        ensure_topics(kafka_settings)
        self.topic = kafka_settings.events_topic("firewall")
        self.producer = make_producer(kafka_settings)
        self.produced = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._produce)

    def _produce(self) -> None:
        while not self.stopping.wait(0.05):
            for _ in range(20):
                i = self.produced
                self.producer.send(
                    self.topic, key=f"user{i % 40}".encode(), value=direct_crossing(i)
                )
                self.produced += 1
            self.producer.flush()

    def start(self) -> CrossingFeed:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.producer.close()


def test_query_while_correlate_writes(tmp_path: Path, kafka_settings: KafkaSettings) -> None:
    from correlator.service import CorrelatorService
    from correlator.store.server import serve_queries

    db = tmp_path / "zonewatch.duckdb"
    settings = live_settings(kafka_settings, db)
    feed = CrossingFeed(kafka_settings)

    with CorrelatorService(settings) as service:
        service.start()
        serve_queries(service.store)
        runner = threading.Thread(
            target=service.run,
            kwargs={"until": lambda s: feed.stopping.is_set() and s.consumed >= feed.produced},
        )
        feed.start()
        runner.start()
        answers = []
        try:
            sql = (
                "SELECT (SELECT count(*) FROM alerts) AS a, "
                "(SELECT count(*) FROM alert_evidence) AS e, "
                "(SELECT count(*) FROM outbox) AS o, "
                "(SELECT coalesce(sum(next_offset), 0)::BIGINT FROM consumer_offsets) AS offsets"
            )
            while len(answers) < 3 or answers[-1]["a"] == 0:
                answers.append(query_process(db, sql))
        finally:
            feed.stop()
            runner.join(timeout=60)
        assert not runner.is_alive()
        final = service.store.query("SELECT count(*) FROM alerts")[1][0][0]
        stored_offsets = sum(service.store.load_offsets().values())
    for answer in answers:
        # One evidence event and one outbox row per alert, always: each answer
        # sees whole transactions. Resume offsets are checkpointed with the
        # correlation state, so they may trail the alerts but never lead them.
        assert answer["e"] == answer["a"] == answer["o"]
        assert answer["offsets"] <= answer["a"]
    assert stored_offsets == feed.produced  # the final checkpoint covers everything
    assert any(0 < a["a"] < final for a in answers)  # answered while it wrote
    assert final == feed.produced
