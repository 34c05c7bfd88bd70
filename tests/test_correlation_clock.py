"""The event clock and lateness buffer on their own (correlation/clock.py)."""

from __future__ import annotations

import random

from correlator.correlation.clock import LatenessBuffer, SourceClock
from correlator.correlation.settings import CorrelationSettings


def _drain(buf: LatenessBuffer, wm: float) -> list[str]:
    out = []
    while (item := buf.pop_due(wm)) is not None:
        out.append(item[1])
    return out


def _feed(buf: LatenessBuffer, events: list[tuple[float, str]]) -> list[str]:
    """What a caller does per event: late ones aside, hold, advance, release."""
    released: list[str] = []
    for t, eid in events:
        wm = buf.observe(t)
        if buf.is_late(t):
            released.append("late:" + eid)
            continue
        buf.hold(t, eid, (eid, t), [])
        buf.advance(wm)
        released += _drain(buf, buf.frontier)
    return released


def test_built_from_settings_the_watermark_trails_the_newest_time_by_the_lateness():
    buf = LatenessBuffer.from_settings(CorrelationSettings(allowed_lateness_s=60))
    assert buf.observe(1000.0) == 940.0
    assert buf.observe(900.0) == 940.0  # an older event does not move it back
    assert buf.watermark == 940.0


def test_arrival_order_within_the_lateness_does_not_change_the_release_order():
    events = [(1000.0 + i, f"e{i:03d}") for i in range(200)]
    rng = random.Random(5)
    for _ in range(20):
        # each event arrives up to 20 s of event time late: within the lateness
        shuffled = sorted(events, key=lambda e: e[0] + rng.uniform(0, 20))
        buf = LatenessBuffer(30)
        got = _feed(buf, shuffled) + _drain(buf, float("inf"))
        assert got == [eid for _, eid in events]


def test_ties_in_time_are_released_by_event_id():
    buf = LatenessBuffer(0)
    for eid in ("c", "a", "b"):
        buf.hold(5.0, eid, (eid,), [])
    assert _drain(buf, 5.0) == ["a", "b", "c"]


def test_an_event_behind_the_frontier_is_late():
    buf = LatenessBuffer(10)
    got = _feed(buf, [(100.0, "a"), (120.0, "b"), (105.0, "c"), (112.0, "d")])
    assert got == ["a", "late:c"]  # frontier 110 after b; d (112) waits for it
    assert len(buf) == 2


def test_a_snapshot_restores_a_buffer_that_continues_identically():
    events = [(float(t), f"e{t}") for t in (5, 3, 9, 8, 12, 11, 30, 29, 31)]
    whole = LatenessBuffer(10)
    first = _feed(whole, events[:5])
    rest_whole = _feed(whole, events[5:]) + _drain(whole, float("inf"))

    cut = LatenessBuffer(10)
    assert _feed(cut, events[:5]) == first
    back = LatenessBuffer(10)
    back.restore(cut.snapshot())
    assert back.snapshot()[:3] == cut.snapshot()[:3]
    assert [e[1] for e in back.items()] == [e[1] for e in cut.items()]
    assert _feed(back, events[5:]) + _drain(back, float("inf")) == rest_whole


def test_clamp_drops_what_lies_beyond_the_limit_and_rewinds_the_clock():
    buf = LatenessBuffer(10)
    for t, eid in [(100.0, "a"), (105.0, "b"), (9e9, "future")]:
        buf.observe(t)
        buf.hold(t, eid, (eid, t), [])
    assert buf.clamp(200.0) == 1
    buf.rewind(buf.newest_held(), scan_every=5)
    assert buf.max_t == 105.0
    assert buf.watermark == 95.0
    assert _drain(buf, buf.watermark) == []
    assert _drain(buf, float("inf")) == ["a", "b"]


def test_source_clock_from_settings_gives_each_source_its_lateness_and_delay():
    from zonewatch.config import CorrelatorSettings

    cfg = CorrelatorSettings(
        allowed_lateness_s=60,
        sources={
            "vdi": {"allowed_lateness_s": 300, "max_delivery_delay_s": 600},
            "intune": {"max_delivery_delay_s": 120},
        },
    )
    clock = SourceClock.from_settings(cfg)
    assert clock.lateness("vdi") == 300
    assert clock.lateness("intune") == clock.lateness("firewall") == clock.lateness(None) == 60
    assert clock.max_lateness == 300
    assert clock.late_watermark("vdi", 1000.0) == 700.0
    # A quiet input of a delayed source holds the watermark at its newest time
    # for the delay, then moves on at the clock's pace; others hold nothing.
    assert clock.idle_hold("vdi", newest=9_000.0, quiet_for=300.0) == 9_000.0
    assert clock.idle_hold("vdi", newest=9_000.0, quiet_for=1_000.0) == 9_400.0
    assert clock.idle_hold("firewall", newest=9_000.0, quiet_for=1_000.0) is None
    # An input that has delivered nothing holds no further than the wall clock
    # less the delay (newest: the furthest of the others).
    assert clock.idle_hold("vdi", newest=9_990.0, quiet_for=5.0, wall=10_000.0) == 9_400.0
    assert clock.idle_hold("vdi", newest=100.0, quiet_for=5.0, wall=10_000.0) == 100.0


def test_an_unknown_source_is_refused_with_the_known_ones():
    import pytest
    from pydantic import ValidationError

    from zonewatch.config import CorrelatorSettings

    with pytest.raises(ValidationError, match=r"unknown source.*vdl.*firewall"):
        CorrelatorSettings(sources={"vdl": {"max_delivery_delay_s": 600}})
