"""How often the stream loop writes to DuckDB, without a broker.

Caught up, every poll's alerts are written at once (Teams hears at once).
Working through a backlog (full polls), the loop gathers several polls into
one write; nothing is lost on the way and the end of the run writes the rest.
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import TopicPartition

from correlator.hunt import _ArchiveConsumer, _Record
from correlator.store.alert_store import written_now
from zonewatch.config import Settings
from zonewatch.errors import StoreError

RULES = Path(__file__).parent / "rules"
TOPIC = "zonewatch.events.firewall"


class CountingStore:
    """The Store protocol; remembers what each write carried."""

    def __init__(self) -> None:
        self.writes: list[tuple[int, int]] = []  # (alerts, archived events)
        self.ids: set[str] = set()

    def write(
        self, alerts: Any, *, events: Any = (), state: Any = None, offsets: Any = None
    ) -> list[str]:
        self.writes.append((len(alerts), len(events)))
        new = [a.id for a in alerts if a.id not in self.ids]
        self.ids.update(new)
        return new

    def submit(
        self, alerts: Any, *, events: Any = (), state: Any = None, offsets: Any = None
    ) -> Future[list[str]]:
        return written_now(lambda: self.write(alerts, events=events, offsets=offsets))

    def load_state(self, key: str) -> bytes | None:
        return None

    def load_offsets(self) -> dict[tuple[str, int], int]:
        return {}


def direct_crossing(i: int) -> dict[str, Any]:
    """An event tests/rules/direct_crossing.yml alerts on."""
    return {
        "@timestamp": f"2026-11-26T01:{i // 60:02d}:{i % 60:02d}Z",
        "event": {"dataset": "firewall", "outcome": "success"},
        "source": {"ip": f"10.10.1.{i % 200 + 2}"},
        "zone": {"source": "core", "destination": "lgwan", "crossing": "core->lgwan"},
    }


def run(polls: list[int], max_batch: int) -> CountingStore:
    from correlator.service import load_ruleset
    from correlator.stream import StreamCorrelator

    batches, offset = [], 0
    for size in polls:
        records = [
            _Record(TOPIC, 0, o, orjson.dumps(direct_crossing(o)))
            for o in range(offset, offset + size)
        ]
        batches.append({TopicPartition(TOPIC, 0): records})
        offset += size
    settings = Settings().updated(
        correlator={"max_batch": max_batch, "write_batch_events": 20, "write_delay_s": 3600}
    )
    store = CountingStore()
    consumer = _ArchiveConsumer(iter(batches))
    loop = StreamCorrelator(
        settings, load_ruleset([RULES], "ecs"), store, consumer=consumer, finite=True
    )
    consumer.loop = loop
    loop.run(end_of_input=True)
    return store


def test_a_backlog_is_written_in_fewer_bigger_writes_and_nothing_is_lost() -> None:
    store = run([4] * 10, max_batch=4)  # every poll full: a backlog
    written = [w for w in store.writes if w != (0, 0)]
    # 4 alerts + 4 archived events per poll; a write once 20 rows wait.
    assert len(written) < 10
    assert all(a + e >= 20 for a, e in written[:-1])
    assert sum(a for a, _ in written) == 40 and len(store.ids) == 40
    assert sum(e for _, e in written) == 40


def test_caught_up_every_poll_is_written_at_once() -> None:
    store = run([3] * 5, max_batch=4)  # polls not full: caught up
    written = [w for w in store.writes if w != (0, 0)]
    assert written == [(3, 3)] * 5


class HeldStore(CountingStore):
    """Stores a batch only when the test says so, as a slow DuckDB would."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[Future[list[str]], Any]] = []

    def submit(
        self, alerts: Any, *, events: Any = (), state: Any = None, offsets: Any = None
    ) -> Future[list[str]]:
        held: Future[list[str]] = Future()
        self.held.append((held, alerts))
        return held

    def store_all(self) -> None:
        for held, alerts in self.held:
            if not held.done():
                held.set_result(self.write(alerts))

    def fail_next(self) -> None:
        next(h for h, _ in self.held if not h.done()).set_exception(StoreError("disk full"))


class CommitRecorder(_ArchiveConsumer):
    def __init__(self) -> None:
        super().__init__()
        self.commits: list[dict[TopicPartition, int]] = []

    def commit(self, offsets: Any = None) -> None:
        self.commits.append({tp: o.offset for tp, o in offsets.items()})


def held_loop() -> tuple[Any, HeldStore, CommitRecorder]:
    from correlator.service import load_ruleset
    from correlator.stream import StreamCorrelator

    # Every write is a checkpoint with offsets; polls below max_batch are written at once.
    settings = Settings().updated(correlator={"checkpoint_interval_s": 0, "max_batch": 100})
    store, consumer = HeldStore(), CommitRecorder()
    loop = StreamCorrelator(
        settings, load_ruleset([RULES], "ecs"), store, consumer=consumer, finite=True
    )
    return loop, store, consumer


def poll(first: int, size: int) -> dict[TopicPartition, list[_Record]]:
    records = [
        _Record(TOPIC, 0, o, orjson.dumps(direct_crossing(o))) for o in range(first, first + size)
    ]
    return {TopicPartition(TOPIC, 0): records}


def test_kafka_hears_of_offsets_only_once_their_batch_is_stored() -> None:
    loop, store, consumer = held_loop()
    tp = TopicPartition(TOPIC, 0)
    loop.process_batch(poll(0, 3))
    assert len(store.held) == 1 and consumer.commits == []  # not stored yet: nothing committed
    store.store_all()
    loop.process_batch(poll(3, 2))  # the loop goes on while the second batch is stored
    assert consumer.commits == [{tp: 3}]
    store.store_all()
    loop.checkpoint()  # as at shutdown: waits for what is in the store
    assert consumer.commits == [{tp: 3}, {tp: 5}]
    assert loop.stats.new_alerts == 5 and len(store.ids) == 5


def test_after_a_failed_write_no_later_offsets_are_committed() -> None:
    loop, store, consumer = held_loop()
    loop.process_batch(poll(0, 3))
    store.fail_next()
    with pytest.raises(StoreError, match="disk full"):
        loop.process_batch(poll(3, 2))
    assert consumer.commits == []
