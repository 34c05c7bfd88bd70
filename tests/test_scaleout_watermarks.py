"""What a ``--scale-out`` member tells the correlation shards about its quiet
inputs (``RepartitionedCorrelation._emit_watermarks``), with and without a
source's delivery delay (``correlator.sources.<source>.max_delivery_delay_s``,
issue #17 late logs).

The member reads the firewall topic and both VDI partitions to their ends and
then hears nothing for 30 s. The firewall is live (its newest event is 10 s
old); one VDI partition last delivered an event 900 s old, the other nothing
at all. The same rule holds in the single loop (tests/test_ordering.py,
tests/test_source_lateness_stream.py through the broker).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from kafka import TopicPartition

from correlator.correlation.clock import SourceClock
from correlator.progress import ProgressPolicy
from correlator.scaleout.stage import RepartitionedCorrelation
from zonewatch.config import CorrelatorSettings, KafkaSettings

WALL0 = 1_800_000_000.0  # the wall clock when the member read its inputs
IDLE_S = 5.0
QUIET_S = 30.0
DELAY_S = 600.0


class CaughtUpGroup:
    """A consumer group member that has read every assigned partition to its end."""

    def __init__(self, assigned: list[TopicPartition], hits_topic: str) -> None:
        self.assigned = assigned
        self.hits_topic = hits_topic

    def assignment(self) -> set[TopicPartition]:
        return {*self.assigned, TopicPartition(self.hits_topic, 0)}

    def highwater(self, tp: TopicPartition) -> int:
        return 7

    def position(self, tp: TopicPartition) -> int:
        return 7

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1}


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int]] = []

    def send(self, topic: str, value: bytes, partition: int, **_: Any) -> None:
        self.sent.append((topic, value, partition))


def declared(
    delay: float, exiting: bool = False, shard_frontiers: tuple[float, ...] = ()
) -> tuple[dict[tuple[str, int], float], RepartitionedCorrelation]:
    """The watermarks a member declares after its inputs were quiet for 30 s
    (``exiting``: its idle exit begins then), and the member."""
    kafka = KafkaSettings(topic_prefix="zw")
    firewall, vdi = kafka.events_topic("firewall"), kafka.events_topic("vdi")
    sources = {"vdi": {"max_delivery_delay_s": delay}} if delay else {}
    clock = SourceClock.from_settings(CorrelatorSettings(sources=sources))
    now = [0.0]
    producer = Recorder()
    stage = RepartitionedCorrelation(
        None,
        producer,
        kafka,
        ProgressPolicy.of(IDLE_S, idle_polls=0),
        ("zw.hits", "zw.state"),
        clock=lambda: now[0],
        wall=lambda: WALL0 + now[0],
        source_clock=clock,
    )
    group = CaughtUpGroup(
        [TopicPartition(firewall, 0), TopicPartition(vdi, 0), TopicPartition(vdi, 1)], "zw.hits"
    )
    stage.loop = SimpleNamespace(group=group)  # type: ignore[assignment]
    stage.progressed((firewall, 0), WALL0 - 10)
    stage.progressed((vdi, 0), WALL0 - 900)
    stage._emit_watermarks(force=True)  # the member sees its assignment: quiet from now
    producer.sent.clear()
    now[0] = QUIET_S
    stage.shards = {p: SimpleNamespace(frontier=f) for p, f in enumerate(shard_frontiers)}  # type: ignore[misc]
    if exiting:
        stage.begin_exit()
    else:
        stage._emit_watermarks(force=True)
    values = {value for topic, value, _ in producer.sent if topic == "zw.hits"}
    assert {p for _, _, p in producer.sent} == {0, 1}, "every shard hears it"
    assert len(values) == 1, "every shard hears the same"
    return {(t, p): v for t, p, v in orjson.loads(values.pop())["wm"]}, stage


@pytest.mark.parametrize("delay", [DELAY_S, 0.0], ids=["vdi-delay-10m", "no-delay"])
def test_a_quiet_delayed_source_holds_the_shards_back_for_its_delay(delay: float) -> None:
    kafka = KafkaSettings(topic_prefix="zw")
    firewall, vdi = kafka.events_topic("firewall"), kafka.events_topic("vdi")
    wm, _ = declared(delay)
    moved = QUIET_S - IDLE_S  # quiet inputs move on at the clock's pace once idle
    assert wm[(firewall, 0)] == WALL0 - 10 + moved
    if delay:
        # The VDI partition that delivered holds at its newest event for the
        # delay; the one that delivered nothing at the wall clock less the delay.
        assert wm[(vdi, 0)] == WALL0 - 900
        assert wm[(vdi, 1)] == WALL0 + QUIET_S - DELAY_S
    else:
        # Nothing held: the VDI partition moves on from its own time, the empty
        # one goes as far as the member's furthest input.
        assert wm[(vdi, 0)] == WALL0 - 900 + moved
        assert wm[(vdi, 1)] == wm[(firewall, 0)]


def test_a_delayed_source_quiet_longer_than_its_delay_moves_on_at_the_clocks_pace() -> None:
    # The hold ends after the delay: 600 s after the last event, the VDI
    # partition's time moves on from its newest as a quiet input's does.
    clock = SourceClock.from_settings(
        CorrelatorSettings(sources={"vdi": {"max_delivery_delay_s": DELAY_S}})
    )
    held = clock.idle_hold("vdi", WALL0 - 900, DELAY_S + 100)
    assert held == WALL0 - 900 + 100


@pytest.mark.parametrize("delay", [DELAY_S, 0.0], ids=["vdi-delay-10m", "no-delay"])
def test_an_idle_exit_declares_every_quiet_input_caught_up_with_the_wall_clock(
    delay: float,
) -> None:
    # `--idle-exit` over a past day: the member ends as if time had caught
    # up, as the single loop does (delays included): every idle input at the
    # wall clock less the idle window.
    wm, _ = declared(delay, exiting=True)
    assert set(wm.values()) == {WALL0 + QUIET_S - IDLE_S}


def test_an_exiting_member_waits_until_its_shards_have_passed_the_moment_it_began() -> None:
    began = WALL0 + QUIET_S
    # A shard still held back by another member's source (a member working
    # on, or one whose declaration has not come yet): not ready.
    _, stage = declared(0.0, exiting=True, shard_frontiers=(began - IDLE_S, WALL0 - 900))
    assert not stage.ready_to_exit()
    # Every shard released up to the exit (another member's clock may trail
    # by as much as the idle window): ready.
    _, stage = declared(0.0, exiting=True, shard_frontiers=(began - IDLE_S, began - 2 * IDLE_S))
    assert stage.ready_to_exit()
    # A member that owns no shard has nothing to wait for.
    _, stage = declared(0.0, exiting=True)
    assert stage.ready_to_exit()


def test_a_batchs_hits_for_a_shard_travel_in_one_record_ahead_of_the_watermark() -> None:
    from datetime import UTC, datetime

    from correlator.scaleout.outgoing import HITS_RECORD_BYTES
    from correlator.scaleout.records import Watermark, decode

    kafka = KafkaSettings(topic_prefix="zw")
    firewall = kafka.events_topic("firewall")
    producer = Recorder()
    engine = SimpleNamespace(
        referenced_rule_ids=["r1"], group_keys=lambda ids, event: [(event["user"],)]
    )
    stage = RepartitionedCorrelation(
        engine,  # type: ignore[arg-type]
        producer,
        kafka,
        ProgressPolicy.of(IDLE_S, idle_polls=0),
        ("zw.hits", "zw.state"),
        clock=lambda: 0.0,
        wall=lambda: WALL0,
    )
    stage.loop = SimpleNamespace(  # type: ignore[assignment]
        group=CaughtUpGroup([TopicPartition(firewall, 0)], "zw.hits")
    )
    when = datetime.fromtimestamp(WALL0, UTC)

    def offer(offset: int, user: str, pad: int = 0) -> None:
        record = SimpleNamespace(topic=firewall, partition=0, offset=offset)
        event = {"user": user, "pad": "x" * pad}
        stage.offer(["r1"], record, event, None, when, WALL0 + offset, None)  # type: ignore[arg-type]
        stage.progressed((firewall, 0), WALL0 + offset)

    users = ["alice", "bob", "carol", "dave", "erin", "frank"]
    for offset in range(30):
        offer(offset, users[offset % len(users)])
    assert producer.sent == [], "hits wait for the end of the batch"
    stage._emit_watermarks(force=True)
    by_shard: dict[int, list[Any]] = {}
    for topic, value, p in producer.sent:
        assert topic == "zw.hits"
        by_shard.setdefault(p, []).append(decode(value))
    assert set(by_shard) == {0, 1}
    offered = 0
    for records in by_shard.values():
        # One record of hits, then the watermark that covers them.
        hits, watermark = records
        assert isinstance(watermark, Watermark) and not isinstance(hits, Watermark)
        assert [h.offset for h in hits] == sorted(h.offset for h in hits)
        offered += len(hits)
    assert offered == 30
    # A batch of large hits is sent as it grows, each record under the cap.
    producer.sent.clear()
    for offset in range(30, 40):
        offer(offset, "alice", pad=HITS_RECORD_BYTES // 4)
    stage.hits_out.send()
    hits_records = [value for _, value, _ in producer.sent]
    assert len(hits_records) >= 3
    assert all(len(value) < 2 * HITS_RECORD_BYTES for value in hits_records)
    assert [h.offset for v in hits_records for h in decode(v)] == list(range(30, 40))  # type: ignore[union-attr]
