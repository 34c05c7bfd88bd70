"""How the alerts publisher finds, at start, the last record its store put on
the alerts topic (``publish._last_seq``), when other stores share the topic.

A fake consumer stands in for Kafka here: what is tested is the search and
its patience, on a log far larger than a test broker could be given; the
publisher's recovery through the broker is tests/test_alerts_topic.py's."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaError

from correlator.alerting.publish import HEADER_SEQ, HEADER_STORE, RECOVER_TIMEOUT_S, _last_seq

TP = TopicPartition("zonewatch.alerts", 0)


class Log:
    """One partition: ``ours`` maps offsets of this store's records to their
    ``pub_seq``; every other offset is another store's record. Each poll
    costs ``poll_s`` of the fake clock; ``stuck_at`` returns nothing from
    that offset on (an open transaction holding read_committed back)."""

    def __init__(self, size: int, ours: dict[int, int], poll_s: float, stuck_at: int | None):
        self.size, self.ours, self.poll_s, self.stuck_at = size, ours, poll_s, stuck_at
        self.now = 0.0
        self.pos = 0
        self.polls = 0

    def clock(self) -> float:
        return self.now

    def assign(self, tps: list[TopicPartition]) -> None:
        assert tps == [TP]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.pos = offset

    def position(self, tp: TopicPartition) -> int:
        return self.pos

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        self.now += self.poll_s
        self.polls += 1
        upto = min(self.size, self.pos + max_records)
        if self.stuck_at is not None:
            upto = min(upto, self.stuck_at)
        records = [self._record(o) for o in range(self.pos, upto)]
        self.pos = upto
        return {TP: records} if records else {}

    def _record(self, offset: int) -> Any:
        if offset in self.ours:
            headers = [(HEADER_STORE, b"store-a"), (HEADER_SEQ, str(self.ours[offset]).encode())]
        else:
            headers = [(HEADER_STORE, b"store-b"), (HEADER_SEQ, b"1")]
        return SimpleNamespace(offset=offset, headers=headers)


def test_the_last_record_behind_a_days_worth_of_others_is_found() -> None:
    # Our last record (seq 41) lies 300k records back; reading there takes
    # the fake clock well past the timeout (2 s a poll of 5,000 records),
    # but every poll brings records: the search goes on and finds it.
    size = 300_300
    log = Log(size, {10: 40, 250: 41}, poll_s=2.0, stuck_at=None)
    assert _last_seq(log, TP, 0, size, b"store-a", clock=log.clock) == 41  # type: ignore[arg-type]
    assert log.now > RECOVER_TIMEOUT_S


def test_the_newest_of_our_records_wins_and_the_search_stops_there() -> None:
    log = Log(100_000, {5: 3, 99_000: 9, 99_900: 12}, poll_s=0.01, stuck_at=None)
    assert _last_seq(log, TP, 0, 100_000, b"store-a", clock=log.clock) == 12  # type: ignore[arg-type]
    assert log.polls == 1  # the last 256 records held it
    log = Log(100_000, {}, poll_s=0.01, stuck_at=None)
    assert _last_seq(log, TP, 0, 100_000, b"store-a", clock=log.clock) == 0  # type: ignore[arg-type]


def test_a_read_that_brings_nothing_for_the_timeout_is_an_error_that_says_why() -> None:
    log = Log(10_000, {3: 1}, poll_s=1.0, stuck_at=9_900)
    with pytest.raises(KafkaError, match=r"nothing came for 60s.*open transaction"):
        _last_seq(log, TP, 0, 10_000, b"store-a", clock=log.clock)  # type: ignore[arg-type]
    assert log.now <= RECOVER_TIMEOUT_S + 2
