"""The event-time merge of several partitions (pure, with a fake clock)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from correlator.ordering import EventTimeMerger


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_backlog_of_one_source_waits_for_the_other_source_to_catch_up() -> None:
    clock = FakeClock()
    merger: EventTimeMerger[str] = EventTimeMerger(idle_s=1.0, clock=clock)
    # The consumer fetched the whole firewall day before the first VDI record.
    for t, name in [(100, "fw-0900"), (200, "fw-1000"), (900, "fw-1700")]:
        merger.add("firewall", t, name)
    merger.add("vdi", 150, "vdi-0930")
    assert merger.release() == ["fw-0900", "vdi-0930"]
    merger.add("vdi", 300, "vdi-1100")
    assert merger.release() == ["fw-1000", "vdi-1100"]
    # VDI goes quiet; after idle_s and idle_polls it no longer holds the firewall back.
    assert merger.release() == []
    clock.now = 1.5
    assert merger.release() == []  # no poll has come back empty for it yet
    for _ in range(3):
        merger.polled({"firewall"})
    assert merger.release() == ["fw-1700"]


def test_slow_processing_does_not_make_a_busy_input_look_idle() -> None:
    clock = FakeClock()
    merger: EventTimeMerger[str] = EventTimeMerger(idle_s=1.0, clock=clock, idle_polls=3)
    merger.expect("vdi")
    merger.add("firewall", 500, "fw")
    clock.now = 30.0  # one huge batch took 30 s to process; VDI has not been polled since
    merger.polled({"firewall"})
    assert merger.release() == []


def test_an_assigned_input_holds_the_others_back_until_it_delivers_or_idles() -> None:
    clock = FakeClock()
    merger: EventTimeMerger[int] = EventTimeMerger(idle_s=1.0, clock=clock)
    merger.expect("intune")
    merger.add("gateway", 10, 1)
    merger.add("gateway", 20, 2)
    assert merger.release() == []
    clock.now = 2.0
    merger.polled({"gateway"})
    merger.polled()
    merger.polled()
    assert merger.release() == [1, 2]


def test_an_input_with_unread_records_never_turns_idle_however_long_polls_take() -> None:
    # Restart after a crash: the firewall backlog comes in 2000-record polls
    # while the VDI partition's records sit in fetch buffers for many polls.
    clock = FakeClock()
    merger: EventTimeMerger[str] = EventTimeMerger(idle_s=1.0, clock=clock)
    merger.expect("firewall")
    merger.expect("vdi")
    for second in range(1, 20):
        merger.add("firewall", 100.0 * second, f"fw-{second}")
        clock.now = float(second)
        merger.polled({"firewall"}, behind={"firewall", "vdi"})
        assert merger.release() == []
    merger.add("vdi", 150.0, "vdi-150")
    merger.polled({"vdi"}, behind={"firewall"})
    assert merger.release() == ["fw-1", "vdi-150"]
    # Caught up and quiet for idle_s and idle_polls: it stops holding back.
    clock.now = 30.0
    for _ in range(3):
        merger.polled(set(), behind=set())
    assert merger.release() == [f"fw-{s}" for s in range(2, 20)]


def test_revoked_inputs_are_forgotten_and_drain_empties_everything() -> None:
    clock = FakeClock()
    merger: EventTimeMerger[str] = EventTimeMerger(idle_s=5.0, clock=clock)
    merger.add("a", 5, "a5")
    merger.add("b", 1, "b1")
    merger.add("b", 9, "b9")
    assert merger.release() == ["b1", "a5"]
    merger.forget("a")
    assert merger.release() == ["b9"]
    merger.add("c", 3, "c3")
    merger.add("d", 2, "d2")
    assert merger.drain() == ["d2", "c3"]
    assert len(merger) == 0


def test_snapshot_and_restore_keep_the_buffer() -> None:
    merger: EventTimeMerger[dict] = EventTimeMerger(idle_s=1.0, clock=FakeClock())
    merger.add(("zonewatch.events.vdi", 0), 7.0, {"n": 1})
    merger.add(("zonewatch.events.fw", 1), 3.0, {"n": 2})
    rows = merger.snapshot(lambda item: item)
    restored: EventTimeMerger[dict] = EventTimeMerger(idle_s=1.0, clock=FakeClock())
    restored.restore([[list(k), t, p] for k, t, p in rows], lambda p: p)  # as JSON gives it back
    assert restored.drain() == [{"n": 2}, {"n": 1}]


@given(
    st.lists(
        st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=30),
        min_size=1,
        max_size=5,
    ),
    st.randoms(use_true_random=False),
)
def test_interleaved_arrival_of_ordered_inputs_comes_out_globally_ordered(
    inputs: list[list[int]], rnd: random.Random
) -> None:
    clock = FakeClock()
    merger: EventTimeMerger[tuple[int, int, int]] = EventTimeMerger(idle_s=1.0, clock=clock)
    queues = [sorted(times) for times in inputs]
    positions = [0] * len(queues)
    for i in range(len(queues)):
        merger.expect(i)
    out: list[tuple[int, int, int]] = []
    while any(p < len(q) for p, q in zip(positions, queues, strict=True)):
        i = rnd.choice([i for i, q in enumerate(queues) if positions[i] < len(q)])
        for _ in range(rnd.randint(1, 5)):  # a fetch returns a chunk of one partition
            if positions[i] < len(queues[i]):
                t = queues[i][positions[i]]
                merger.add(i, t, (t, i, positions[i]))
                positions[i] += 1
        out.extend(merger.release())
    clock.now = 10.0  # everything is idle now
    for _ in range(3):
        merger.polled()
    out.extend(merger.release())
    assert len(out) == sum(len(q) for q in queues)
    assert [t for t, _, _ in out] == sorted(t for t, _, _ in out)
