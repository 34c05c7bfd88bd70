"""Per-event fast paths of detection give exactly what the general paths give.

- ``event_time``: one ``fromisoformat`` (and a memo of the last stamp) for the
  ``...Z`` form the connectors emit, ``parse_event_time`` for everything else;
- shared tests: rules of a block that share a test evaluate it once
  (``codegen._shared_tests``), in the same order, with the same hits;
- ``RuleSet.matcher(source)``: ``match`` with the route resolved once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from correlator.detection import (
    SOURCES,
    EventTimeError,
    codegen,
    compiler,
    event_time,
    rules_from_yaml,
)
from correlator.detection.alerts import parse_event_time

# -- event_time -----------------------------------------------------------------

MOMENTS = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)


@st.composite
def stamp(draw: st.DrawFn) -> str:
    """Timestamps in the canonical form and in the forms around it."""
    moment = draw(MOMENTS)
    suffix = draw(st.sampled_from(["Z", "Z", "z", "ZZ", "+00:00", "-00:00", "offset", ""]))
    if suffix == "offset":
        moment = moment.astimezone(timezone(timedelta(minutes=draw(st.integers(-840, 840)))))
        suffix = moment.strftime("%z")
    sep = draw(st.sampled_from(["T", "T", " "]))
    body = moment.strftime(f"%Y-%m-%d{sep}%H:%M:%S")
    digits = draw(st.sampled_from([0, 3, 6]))
    if digits:
        body += "." + f"{moment.microsecond:06d}"[:digits]
    pad = draw(st.sampled_from(["", "", " ", "\t"]))
    return pad + body + suffix + draw(st.sampled_from(["", "", " "]))


def _general(raw: Any) -> datetime | type[EventTimeError]:
    try:
        return parse_event_time(raw)
    except EventTimeError:
        return EventTimeError


def _fast(raw: Any) -> datetime | type[EventTimeError]:
    try:
        return event_time({"@timestamp": raw} if raw is not None else {})
    except EventTimeError:
        return EventTimeError


def _same(a: datetime | type[EventTimeError], b: datetime | type[EventTimeError]) -> bool:
    if isinstance(a, datetime) and isinstance(b, datetime):
        return a == b and a.tzinfo is UTC and b.tzinfo is UTC
    return a is b


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(stamp(), st.text(max_size=30), st.integers(), st.none()), max_size=8))
def test_event_time_fast_path_equals_the_general_parser(raws: list[Any]) -> None:
    # Several in a row, repeats included: the memo of the last stamp must
    # never hand one event's time to another.
    for raw in [*raws, *raws[:2]]:
        assert _same(_fast(raw), _general(raw)), raw


def test_event_time_canonical_forms() -> None:
    assert event_time({"@timestamp": "2025-04-01T09:30:00.123Z"}) == datetime(
        2025, 4, 1, 9, 30, 0, 123000, tzinfo=UTC
    )
    assert event_time({"@timestamp": "2025-04-01T09:30:00Z"}) == datetime(
        2025, 4, 1, 9, 30, tzinfo=UTC
    )
    # An offset is converted to UTC; the memo does not leak between stamps.
    assert event_time({"@timestamp": "2025-04-01T09:30:00+09:00"}) == datetime(
        2025, 4, 1, 0, 30, tzinfo=UTC
    )
    assert event_time({"@timestamp": "2025-04-01T09:30:01Z"}).second == 1
    assert event_time({"@timestamp": "2025-04-01T09:30:01Z"}).second == 1
    for bad in ("2025-04-01T25:00:00Z", "yesterday Z", "Z", "2025-04-01T09:30:00"):
        with pytest.raises(EventTimeError):
            event_time({"@timestamp": bad})
    with pytest.raises(EventTimeError, match="no @timestamp"):
        event_time({})


# -- shared tests in generated code --------------------------------------------------

# A small pool of selections, so that generated rules share tests often.
ITEMS: list[tuple[str, Any]] = [
    ("zone.crossing", "vdi->lgwan"),
    ("zone.crossing", "core->lgwan"),
    ("event.action", "accept"),
    ("destination.port", 22),
    ("destination.port", 3389),
    ("destination.port|gte", 3000),
    ("rule.name|endswith", "7"),
    ("rule.name|contains", "policy"),
    ("source.ip|cidr", "10.10.0.0/16"),
    ("user.name", None),
    ("user.name|exists", True),
]


@st.composite
def shared_rule(draw: st.DrawFn, n: int) -> dict[str, Any]:
    picks = draw(st.lists(st.sampled_from(ITEMS), min_size=1, max_size=4))
    sel = dict(picks)
    filt = dict(draw(st.lists(st.sampled_from(ITEMS), min_size=1, max_size=2)))
    condition = draw(st.sampled_from(["sel", "sel", "sel and not filter", "sel or filter"]))
    return {
        "title": f"r{n}",
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "logsource": {"product": "zonewatch", "service": "firewall"},
        "detection": {"sel": sel, "filter": filt, "condition": condition},
    }


@st.composite
def firewall_event(draw: st.DrawFn) -> dict[str, Any]:
    port = st.one_of(st.sampled_from([22, 3389, 3001, 80]), st.sampled_from(["22", "03389"]))
    text = st.sampled_from(["vdi->lgwan", "VDI->LGWAN", "core->lgwan", "accept", "policy-17", "x"])
    event: dict[str, Any] = {"event": {"dataset": "firewall"}}
    if draw(st.booleans()):
        event["zone"] = {"crossing": draw(st.one_of(text, st.lists(text, max_size=2)))}
    if draw(st.booleans()):
        event["event"]["action"] = draw(text)
    if draw(st.booleans()):
        event["destination"] = {"port": draw(st.one_of(port, st.none()))}
    if draw(st.booleans()):
        event["rule"] = {"name": draw(text)}
    if draw(st.booleans()):
        event["source"] = {"ip": draw(st.sampled_from(["10.10.1.1", "10.20.0.1", "x"]))}
    if draw(st.booleans()):
        event["user"] = {"name": draw(st.one_of(text, st.none()))}
    return event


@contextmanager
def no_sharing() -> Iterator[None]:
    saved = codegen._SHARE_DEPTH
    codegen._SHARE_DEPTH = 0
    try:
        yield
    finally:
        codegen._SHARE_DEPTH = saved


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(1, 24).flatmap(lambda n: st.tuples(*(shared_rule(i) for i in range(n)))),
    st.lists(firewall_event(), min_size=1, max_size=12),
    st.booleans(),
)
def test_shared_tests_fire_the_same_rules_in_the_same_order(
    rules: tuple[dict[str, Any], ...], events: list[dict[str, Any]], index: bool
) -> None:
    text = "---\n".join(yaml.safe_dump(r, sort_keys=False) for r in rules)
    shared = rules_from_yaml(text, index=index, eager=True)
    with no_sharing():
        plain = rules_from_yaml(text, index=index, eager=True)
    assert shared.errors == plain.errors == []
    for e in events:
        assert [r.title for r in shared.match(e)] == [r.title for r in plain.match(e)], e


def test_rules_sharing_a_test_evaluate_it_once() -> None:
    docs = [
        {
            "title": f"port {n}",
            "logsource": {"product": "zonewatch", "service": "firewall"},
            "detection": {
                "sel": {"zone.crossing": "vdi->lgwan", "destination.port": 3000 + n},
                "condition": "sel",
            },
        }
        for n in range(6)
    ]
    rs = rules_from_yaml("---\n".join(yaml.safe_dump(d) for d in docs), pipeline="none")
    members = [(r, compiler.compile_rule(r.sigma, f"r{n}_")) for n, r in enumerate(rs.detections)]
    source = codegen.generate_group("g", members).full_source()
    with no_sharing():
        unshared = codegen.generate_group("g", members).full_source()
    assert source.count("== 'vdi->lgwan'") == 1
    assert unshared.count("== 'vdi->lgwan'") == 6
    event = {"zone": {"crossing": "vdi->lgwan"}, "destination": {"port": 3004}}
    assert [r.title for r in rs.match(event)] == ["port 4"]


def test_the_same_list_test_in_two_rules_is_spelled_the_same() -> None:
    """List-valued fields test through a predicate object; two rules with the same
    test share it, so their generated tests are equal text."""
    rule = {
        "logsource": {"product": "zonewatch", "service": "firewall"},
        "detection": {"sel": {"rule.name|endswith": "7"}, "condition": "sel"},
    }
    rs = rules_from_yaml(
        "---\n".join(yaml.safe_dump({**rule, "title": t}) for t in ("a", "b")), pipeline="none"
    )
    a, b = (compiler.compile_rule(r.sigma, f"r{n}_") for n, r in enumerate(rs.detections))
    assert a.conjuncts == b.conjuncts and a.expr == b.expr
    hit = {"rule": {"name": ["x", "policy-17"]}}
    assert [r.title for r in rs.match(hit)] == ["a", "b"]


# -- matcher --------------------------------------------------------------------------


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(1, 8).flatmap(lambda n: st.tuples(*(shared_rule(i) for i in range(n)))),
    st.lists(firewall_event(), min_size=1, max_size=6),
)
def test_matcher_is_match_with_the_source_fixed(
    rules: tuple[dict[str, Any], ...], events: list[dict[str, Any]]
) -> None:
    docs = list(rules)
    # Rules of other sources and of every source, so routes hold 0, 1 or 2 groups.
    docs.append({**rules[0], "title": "any", "logsource": {"product": "zonewatch"}})
    docs.append(
        {**rules[0], "title": "vdi", "logsource": {"product": "zonewatch", "service": "vdi"}}
    )
    rs = rules_from_yaml("---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs))
    for source in [*SOURCES, None, "unknown"]:
        matcher = rs.matcher(source)
        for e in events:
            assert [r.title for r in matcher(e)] == [r.title for r in rs.match(e, source)]
