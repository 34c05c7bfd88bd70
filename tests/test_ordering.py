"""The event-time merge of several partitions (pure, with a fake clock)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from test_event_time import DENIED, LOADED

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


def test_an_input_remembers_its_newest_time_across_revocation_and_restart() -> None:
    clock = FakeClock()
    merger: EventTimeMerger[str] = EventTimeMerger(idle_s=1.0, clock=clock)
    merger.expect("fw")
    merger.add("fw", 100.0, "a")
    merger.observe("fw", 250.0)  # records that matched nothing still move it on
    assert merger.newest("fw") == 250.0
    merger.forget("fw")  # revoked: waits for nothing, remembers where it was
    assert merger.frontier() == float("inf")
    assert merger.newest("fw") == 250.0
    merger.expect("fw")
    assert merger.frontier() == 250.0
    restored: EventTimeMerger[str] = EventTimeMerger(idle_s=1.0, clock=clock)
    assert restored.restore_progress(merger.progress()) == 0
    assert restored.newest("fw") == 250.0


def test_a_restored_time_beyond_the_limit_is_left_out() -> None:
    merger: EventTimeMerger[str] = EventTimeMerger(idle_s=1.0, clock=FakeClock())
    far = 253402300740.0  # 9999-12-31T23:59Z: stored before event times were bounded
    rows = [[["fw", 0], 100.0, "a"], [["fw", 0], far, "z"]]
    assert merger.restore(rows, lambda p: p, limit=1000.0) == 1
    assert merger.restore_progress([[["fw", 0], far], [["vdi", 1], 90.0]], limit=1000.0) == 1
    assert merger.newest(("fw", 0)) == 100.0 and merger.newest(("vdi", 1)) == 90.0
    assert merger.drain() == ["a"]


LATENESS = 60.0


def _stream(
    inputs: list[list[tuple[float, int]]], rnd: random.Random
) -> tuple[list[str], int, int]:
    """The stream loop's event-time logic over in-memory inputs, with polls
    cut at random: lateness judged per input (late_watermark), the rest
    merged, the engine fed. Returns alert ids, events found late per input,
    and events the engine itself found late."""
    from datetime import UTC, datetime

    from correlator.correlation import CorrelationEngine, CorrelationSettings
    from correlator.ordering import late_watermark
    from zonewatch.models import Evidence

    engine = CorrelationEngine(
        LOADED.correlations, LOADED.resolve, CorrelationSettings(allowed_lateness_s=LATENESS)
    )
    merger: EventTimeMerger[tuple] = EventTimeMerger(idle_s=1.0, clock=FakeClock())
    for i in range(len(inputs)):
        merger.expect(i)
    positions = [0] * len(inputs)
    alerts, late_inputs = [], 0
    while any(p < len(q) for p, q in zip(positions, inputs, strict=True)):
        i = rnd.choice([k for k, q in enumerate(inputs) if positions[k] < len(q)])
        chunk = inputs[i][positions[i] : positions[i] + rnd.randint(1, 6)]
        newest = merger.newest(i)
        late = []
        for n, (t, ip) in enumerate(chunk, start=positions[i]):
            event = {"@timestamp": "", "source": {"ip": f"10.0.0.{ip}"}}
            evidence = Evidence(
                event_id=f"in{i}:{n:04d}", time=datetime.fromtimestamp(t, UTC), event=event
            )
            watermark = late_watermark(newest, LATENESS)
            if t < watermark:
                late.append(([DENIED], event, evidence, t, watermark))
            else:
                merger.add(i, t, ([DENIED], event, evidence, t))
            newest = max(newest, t)
        positions[i] += len(chunk)
        late_inputs += len(late)
        merger.observe(i, newest)
        merger.polled({i}, behind={k for k, q in enumerate(inputs) if positions[k] < len(q)})
        alerts += engine.process_many(merger.release())
        alerts += engine.process_late(late)
    alerts += engine.process_many(merger.drain()) + engine.flush()
    return sorted(a.id for a in alerts), late_inputs, engine.stats.late_events - late_inputs


@settings(deadline=None)  # the first example compiles the rules
@given(
    st.lists(
        st.lists(
            st.tuples(st.floats(0, 3000, allow_nan=False), st.integers(0, 3)),
            min_size=1,
            max_size=40,
        ),
        min_size=1,
        max_size=4,
    ),
    st.integers(0, 2**16),
    st.integers(0, 2**16),
)
def test_whether_an_event_is_late_does_not_depend_on_how_polls_cut_the_input(
    inputs: list[list[tuple[float, int]]], seed_a: int, seed_b: int
) -> None:
    # Inputs in arbitrary (offset) order: events far behind their input's
    # newest are late, decided by the input alone; everything else reaches
    # the engine in time for it, however the polls were cut.
    expected_late = 0
    for records in inputs:
        newest = float("-inf")
        for t, _ in records:
            expected_late += t < newest - LATENESS
            newest = max(newest, t)
    first = _stream(inputs, random.Random(seed_a))
    second = _stream(inputs, random.Random(seed_b))
    assert first == second
    assert first[1] == expected_late
    assert first[2] == 0  # the engine never found an on-time event late


def test_idle_inputs_move_time_on_from_where_they_stopped_not_to_the_wall_clock() -> None:
    # A replay of a day eleven days ago pauses for a moment (a busy producer):
    # the watermark moves on at the wall clock's pace from the replay's own
    # time, so the replay's next events are not eleven days late.
    clock = FakeClock()
    clock.now = 5_000.0
    merger: EventTimeMerger[str] = EventTimeMerger(idle_s=1.0, clock=clock)
    day = 1_796_000_000.0 - 11 * 86_400
    merger.add("firewall", day + 60, "fw")
    merger.add("vdi", day + 30, "vdi")
    for _ in range(3):
        merger.polled()
    clock.now += 0.5
    assert merger.idle_frontier() == day + 60  # not quiet for idle_s yet: no further
    clock.now += 4.5
    assert merger.release() == ["vdi", "fw"]
    assert merger.frontier() == float("inf")  # both idle
    assert merger.idle_frontier() == day + 60 + 4.0
    # Nothing read at all: time has nothing to move on from.
    assert EventTimeMerger[str](clock=clock).idle_frontier() == float("-inf")


def test_a_restored_input_is_quiet_since_the_restart_not_since_the_clock_epoch() -> None:
    clock = FakeClock()
    clock.now = 86_400.0  # a machine up for a day
    merger: EventTimeMerger[str] = EventTimeMerger(idle_s=1.0, clock=clock)
    merger.restore_progress([("firewall", 1_000.0)])
    clock.now += 3.0
    assert merger.idle_frontier() == 1_002.0


def test_a_quiet_input_with_a_delivery_delay_holds_the_frontier_for_that_delay() -> None:
    now = [100.0]
    held = {"slow"}
    merger: EventTimeMerger[str] = EventTimeMerger(
        idle_s=1.0,
        clock=lambda: now[0],
        idle_polls=1,
        hold=lambda key, newest, quiet, empty: (
            newest + max(0.0, quiet - 600) if key in held else None
        ),
    )
    merger.expect("fast")
    merger.expect("slow")
    merger.add("slow", 9_300.0, "slow-old")
    merger.add("fast", 9_300.0, "old")
    merger.add("fast", 9_900.0, "new")
    merger.polled(["fast", "slow"], behind=[])
    now[0] += 5  # both inputs quiet and read to their end
    merger.polled([], behind=[])
    # "slow" holds the frontier at its newest time: "new" waits
    assert merger.frontier() == 9_300.0
    assert sorted(merger.release()) == ["old", "slow-old"]
    now[0] += 700  # quiet longer than its delay: it moves on at the clock's pace
    assert merger.frontier() == 9_300.0 + 105
    now[0] += 500
    assert merger.release() == ["new"]
    # A delayed input that has delivered nothing holds from the furthest read.
    merger.expect("slow2")
    held.add("slow2")
    merger.polled([], behind=[])
    now[0] += 5
    assert merger.frontier() == 9_900.0
