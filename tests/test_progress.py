"""The idle rule both correlator modes and the merger share (correlator/progress.py)."""

from __future__ import annotations

from correlator.ordering import EventTimeMerger
from correlator.progress import IdleRule, ProgressPolicy


def test_an_input_is_idle_only_read_to_its_end_empty_and_quiet_for_polls_and_time() -> None:
    rule = IdleRule(idle_s=1.0, idle_polls=3)
    assert rule.idle(quiet_s=1.0, quiet_polls=3)
    assert not rule.idle(quiet_s=0.9, quiet_polls=10)  # polls alone: a burst of polls
    assert not rule.idle(quiet_s=60.0, quiet_polls=2)  # time alone: one slow poll
    assert not rule.idle(quiet_s=60.0, quiet_polls=10, behind=True)  # a backlog to read
    assert not rule.idle(quiet_s=60.0, quiet_polls=10, buffered=1)  # items still buffered


def test_time_moves_an_idle_input_on_from_its_newest_time_at_the_clocks_pace() -> None:
    assert IdleRule(idle_s=1.0).progress(newest=500.0, quiet_s=0.5) == 500.0
    assert IdleRule(idle_s=1.0).progress(newest=500.0, quiet_s=31.0) == 530.0


def test_each_source_has_its_own_rule_and_the_others_the_default() -> None:
    slow = IdleRule(idle_s=5.0)
    policy = ProgressPolicy(IdleRule(idle_s=1.0), {"intune": slow})
    assert policy.rule("intune") is slow
    assert policy.rule("firewall") == IdleRule(idle_s=1.0)
    assert policy.rule(None) == IdleRule(idle_s=1.0)
    assert ProgressPolicy.of(2.0).rule("vdi") == IdleRule(idle_s=2.0)


def test_the_merger_holds_back_for_a_slow_source_by_its_own_rule() -> None:
    now = [0.0]
    rules = {"fast": IdleRule(idle_s=1.0), "slow": IdleRule(idle_s=10.0)}
    merger: EventTimeMerger[str] = EventTimeMerger(
        clock=lambda: now[0], rule_of=lambda key: rules[key] if key in rules else IdleRule()
    )
    merger.add("fast", 5.0, "f5")
    merger.observe("slow", 1.0)
    merger.polled(["fast", "slow"], behind=[])
    assert merger.release() == []  # slow is at 1.0, fast's item waits
    for _ in range(3):
        merger.polled([], behind=[])
    now[0] = 2.0  # quiet past fast's idle_s, not slow's
    assert merger.release() == []
    now[0] = 11.0  # slow is idle too
    assert merger.release() == ["f5"]
    # Both idle: time moves the frontier on from the furthest input, by its rule.
    assert merger.idle_frontier() == 5.0 + (11.0 - 1.0)
