"""Watermarks, lateness, caps, eviction, suppression, snapshot/restore, reload."""

from __future__ import annotations

import random
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from correlator.correlation import CorrelationEngine, CorrelationSettings
from correlator.correlation.timeline import BASE, Hit, feed
from correlator.correlation.yaml_rules import load_rules_text

RULES = """
title: Failed login
id: 53ba33fd-3a50-4468-a5ef-c583635cfa92
name: failed_login
logsource: {product: zonewatch, service: vdi}
detection: {sel: {event.outcome: failure}, condition: sel}
---
title: Successful login
id: 4d0a2c83-c62c-4ed4-b475-c7e23a9269b8
name: successful_login
logsource: {product: zonewatch, service: vdi}
detection: {sel: {event.outcome: success}, condition: sel}
---
title: Web upload
id: 0b7a3c55-5f1e-4b55-9b5e-0f7b8c9d0e01
name: web_upload
logsource: {product: zonewatch, service: gateway}
detection: {sel: {http.request.method: POST}, condition: sel}
---
title: Multiple failed logons
id: a8418a5a-5fc4-46b5-b23b-6c73beb19d41
name: multiple_failed_login
correlation:
  type: event_count
  rules: [failed_login]
  group-by: [user.name]
  timespan: 2m
  condition: {gte: 3}
---
title: Failed logins followed by a successful login
id: b180ead8-d58f-40b2-ae54-c8940995b9b6
correlation:
  type: temporal_ordered
  rules: [multiple_failed_login, successful_login]
  group-by: [user.name]
  timespan: 5m
level: high
---
title: Failure without a later success
id: 1d7c0f0e-0000-4000-8000-000000000004
correlation:
  type: temporal
  rules: [failed_login, successful_login]
  group-by: [user.name]
  timespan: 3m
  condition: failed_login and not successful_login
---
title: Uploads to many sites
id: 1d7c0f0e-0000-4000-8000-000000000002
correlation:
  type: value_count
  rules: [web_upload]
  group-by: [user.name]
  timespan: 4m
  condition: {field: url.domain, gte: 3}
---
title: Upload volume
id: 1d7c0f0e-0000-4000-8000-000000000003
correlation:
  type: value_sum
  rules: [web_upload]
  group-by: [user.name]
  timespan: 10m
  condition: {field: http.request.bytes, gt: 900}
"""

LOADED = load_rules_text(RULES)
USERS = ["tanaka@city.example.lg.jp", "suzuki@city.example.lg.jp", "kato@city.example.lg.jp"]
DOMAINS = ["files.example.com", "paste.example.net", "drop.example.org", "box.example.jp"]


def engine(**kw) -> CorrelationEngine:
    return CorrelationEngine(LOADED.correlations, LOADED.resolve, CorrelationSettings(**kw))


def make_hit(i: int, seconds: float, kind: int, user: int, domain: int, size: int) -> Hit:
    event_id = f"line:{i:05d}"  # zero-padded: id order is input order on equal times
    fields = {"user.name": USERS[user]}
    if kind == 0:
        return Hit(
            seconds, ["failed_login"], {**fields, "event.outcome": "failure"}, event_id=event_id
        )
    if kind == 1:
        return Hit(
            seconds, ["successful_login"], {**fields, "event.outcome": "success"}, event_id=event_id
        )
    return Hit(
        seconds,
        ["web_upload"],
        {**fields, "url.domain": DOMAINS[domain], "http.request.bytes": size},
        event_id=event_id,
    )


timelines = st.lists(
    st.tuples(
        st.integers(0, 3000).map(lambda x: x / 2),  # half seconds: many equal times
        st.integers(0, 2),
        st.integers(0, 2),
        st.integers(0, 3),
        st.integers(0, 400),
    ),
    min_size=1,
    max_size=120,
).map(
    lambda rows: [
        make_hit(i, *row)
        for i, row in enumerate(sorted(rows, key=lambda r: r[0]))  # ids follow event time
    ]
)


def summary(alerts):
    return [(a.id, a.rule_id, [e.event_id for e in a.evidence]) for a in alerts]


def ordered_run(hits):
    e = engine(allowed_lateness_s=0)
    return summary(feed(e, LOADED, hits) + e.flush())


LATENESS = 30.0


def jittered(hits, seed):
    """Arrival order where no event arrives later than LATENESS after a newer one."""
    rnd = random.Random(seed)
    return sorted(hits, key=lambda h: h.seconds + rnd.uniform(0, LATENESS))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timelines, st.integers(0, 2**32))
def test_shuffling_within_the_lateness_changes_nothing(hits, seed):
    expected = ordered_run(hits)
    e = engine(allowed_lateness_s=LATENESS)
    got = summary(feed(e, LOADED, jittered(hits, seed)) + e.flush())
    assert got == expected
    assert e.stats.late_events == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timelines, st.integers(0, 2**32))
def test_the_time_the_stream_hands_over_changes_nothing(hits, seed):
    # The stream passes each event's epoch seconds (it ordered events by
    # them); the engine must then do exactly what it does converting itself.
    arrival = jittered(hits, seed)
    own, given_time = engine(allowed_lateness_s=LATENESS), engine(allowed_lateness_s=LATENESS)
    expected = feed(own, LOADED, arrival) + own.flush()
    got = feed(given_time, LOADED, arrival, with_time=True) + given_time.flush()
    assert got == expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timelines, st.integers(0, 2**32), st.data())
def test_a_restored_engine_continues_identically(hits, seed, data):
    arrival = jittered(hits, seed)
    e = engine(allowed_lateness_s=LATENESS)
    expected = summary(feed(e, LOADED, arrival) + e.flush())

    cut = data.draw(st.integers(0, len(arrival)))
    first = engine(allowed_lateness_s=LATENESS)
    got = feed(first, LOADED, arrival[:cut])
    restored = CorrelationEngine.restore(
        first.snapshot(),
        LOADED.correlations,
        LOADED.resolve,
        CorrelationSettings(allowed_lateness_s=LATENESS),
    )
    got += feed(restored, LOADED, arrival[cut:]) + restored.flush()
    assert summary(got) == expected


def failed(s, user=USERS[0], partition=0, event_id=None):
    return Hit(
        s, ["failed_login"], {"user.name": user, "event.outcome": "failure"}, partition, event_id
    )


def test_events_wait_for_the_watermark():
    e = engine(allowed_lateness_s=60)
    assert feed(e, LOADED, [failed(0), failed(1), failed(2)]) == []
    assert e.metrics()["buffered_events"] == 3
    alerts = e.advance_watermark(0, BASE + timedelta(seconds=62))
    assert [a.rule_id for a in alerts] == []  # the chain's inner rule does not alert alone
    assert e.metrics()["buffered_events"] == 0


def test_each_partition_has_its_own_watermark():
    e = engine(allowed_lateness_s=10)
    feed(e, LOADED, [failed(0, partition=0), failed(100, USERS[1], partition=1)])
    assert e.metrics()["buffered_events"] == 2
    e.advance_watermark(1, BASE + timedelta(seconds=200))
    assert e.metrics()["buffered_events"] == 1  # partition 0 still waits


def test_late_events_are_counted_logged_and_left_out_by_default():
    hits = [
        failed(100, event_id="a"),
        failed(0, event_id="b"),
        failed(101, event_id="c"),
        failed(102, event_id="d"),
    ]
    e = engine(allowed_lateness_s=10)
    with capture_logs() as logs:
        feed(e, LOADED, hits)
        e.flush()
    assert e.stats.late_events == 1
    assert [entry["event_id"] for entry in logs if entry["event"] == "correlation_late_event"] == [
        "b"
    ]
    assert e.stats.late_applied == 0


def test_late_events_may_update_windows():
    # generate on the chain makes its inner event_count alert on its own
    text = RULES.replace(
        "  timespan: 5m\nlevel: high", "  timespan: 5m\n  generate: true\nlevel: high"
    )
    assert text != RULES
    loaded = load_rules_text(text)
    hits = [failed(100, event_id="a"), failed(101, event_id="c"), failed(50, event_id="b")]
    for update, fired in ((False, 0), (True, 1)):
        e = CorrelationEngine(
            loaded.correlations,
            loaded.resolve,
            CorrelationSettings(allowed_lateness_s=10, late_events_update_windows=update),
        )
        alerts = feed(e, loaded, hits) + e.flush()
        assert len([a for a in alerts if a.type == "event_count"]) == fired


def test_state_is_evicted_by_event_time():
    e = engine(allowed_lateness_s=0)
    feed(e, LOADED, [failed(i, f"user{i}@city.example.lg.jp") for i in range(50)])
    assert e.metrics()["groups_by_rule"]["a8418a5a-5fc4-46b5-b23b-6c73beb19d41"] == 50
    e.advance_watermark(0, BASE + timedelta(hours=1))
    assert e.metrics()["groups"] == 0
    assert e.stats.evicted_expired >= 100  # the event_count and the absence rule's groups


def test_group_cap_evicts_the_oldest_and_says_so():
    e = engine(allowed_lateness_s=0, max_groups_per_rule=20)
    with capture_logs() as logs:
        feed(e, LOADED, [failed(i / 100, f"user{i}@city.example.lg.jp") for i in range(100)])
    assert max(e.metrics()["groups_by_rule"].values()) <= 20
    assert e.stats.cap_hits > 0 and e.stats.evicted_cap > 0
    assert any(entry["event"] == "correlation_group_cap_reached" for entry in logs)


def test_memory_cap_evicts():
    e = engine(allowed_lateness_s=0, max_state_bytes=20_000)
    with capture_logs() as logs:
        feed(e, LOADED, [failed(i * 2, f"user{i}@city.example.lg.jp") for i in range(200)])
    # new groups are checked for; events added to existing groups only at scans
    assert e.state_bytes_estimate() <= 20_000 * 1.1
    assert e.metrics()["groups"] < 100  # of 400 groups made
    assert any(entry["event"] == "correlation_state_cap_reached" for entry in logs)


def test_shedding_takes_the_oldest_groups_of_the_rules_holding_the_most():
    # What the stream does when the store had no memory for the state: a
    # flood of 100 users failing once each fills two rules; three users
    # uploading hold a few groups of two others, which keep all of theirs.
    e = engine(allowed_lateness_s=0)
    flood = [failed(i, f"user{i:03d}@city.example.lg.jp") for i in range(100)]
    uploads = [upload(100 + k, DOMAINS[0], user) for k, user in enumerate(USERS)]
    feed(e, LOADED, flood + uploads)
    before = e.metrics()
    assert before["groups"] == 206 and before["open_absence_windows"] == 100
    count_rule, absence_rule = (
        "a8418a5a-5fc4-46b5-b23b-6c73beb19d41",
        "1d7c0f0e-0000-4000-8000-000000000004",
    )
    evicted = e.shed(0.5)
    # Half of the groups go (103): down to a common level of 48 for the two
    # large rules, the small ones keep their 3.
    assert {k: v for k, v in evicted.items() if v} == {count_rule: 52, absence_rule: 52}
    after = e.metrics()
    assert after["groups_by_rule"][count_rule] == after["groups_by_rule"][absence_rule] == 48
    assert after["open_absence_windows"] == 48  # evicted groups take their windows along
    assert e.stats.evicted_store == 104 and e.stats.evicted_cap == 0
    # The newest kept their state: the absence windows of users 52 to 99
    # still resolve (no success followed), those of the evicted never will.
    resolved = e.advance_watermark(0, BASE + timedelta(minutes=10)) + e.flush()
    alone = [a for a in resolved if a.rule_id == absence_rule]
    assert sorted(a.group["user.name"] for a in alone) == [
        f"user{i:03d}@city.example.lg.jp" for i in range(52, 100)
    ]


_UPLOADS = "title: Uploads to many sites\nid: 1d7c0f0e-0000-4000-8000-000000000002\n"
SUPPRESSED = RULES.replace(_UPLOADS, _UPLOADS + "suppress: {window: 30m}\n")


def upload(s, domain, user=USERS[2]):
    return Hit(
        s, ["web_upload"], {"user.name": user, "url.domain": domain, "http.request.bytes": 1}
    )


def test_suppress_keeps_one_alert_per_window_and_key():
    loaded = load_rules_text(SUPPRESSED)
    scan = [upload(i * 10, DOMAINS[i % 4]) for i in range(30)] + [
        upload(i * 10, DOMAINS[i % 4], USERS[0]) for i in range(3)
    ]
    later = [upload(2000 + i, DOMAINS[i]) for i in range(3)]
    e = CorrelationEngine(
        loaded.correlations, loaded.resolve, CorrelationSettings(allowed_lateness_s=0)
    )
    alerts = [
        a
        for a in feed(e, loaded, sorted(scan, key=lambda h: h.seconds) + later) + e.flush()
        if a.type == "value_count"
    ]
    assert [a.group["user.name"] for a in alerts] == [USERS[2], USERS[0], USERS[2]]
    assert e.stats.suppressed == 9  # 30 uploads = 10 windows of 3 sites, 9 of them inside 30 min


def test_partition_state_hands_over():
    one = engine(allowed_lateness_s=0)
    feed(one, LOADED, [failed(0, partition=3), failed(1, partition=3)])
    state = one.export_partition(3)
    assert one.metrics()["groups"] == 0
    two = engine(allowed_lateness_s=0)
    two.import_partition(3, state)
    alerts = feed(
        two,
        LOADED,
        [failed(2, partition=3), Hit(3, ["successful_login"], {"user.name": USERS[0]}, 3)],
    )
    assert [a.rule_id for a in alerts] == ["b180ead8-d58f-40b2-ae54-c8940995b9b6"]


def test_reload_keeps_unchanged_rules_and_drops_changed_ones():
    e = engine(allowed_lateness_s=0)
    feed(e, LOADED, [failed(0), failed(1), upload(0, DOMAINS[0]), upload(1, DOMAINS[1])])
    changed = load_rules_text(
        RULES.replace(
            "condition: {field: url.domain, gte: 3}", "condition: {field: url.domain, gte: 2}"
        )
    )
    reloaded = e.reload(changed.correlations, changed.resolve)
    by_rule = reloaded.metrics()["groups_by_rule"]
    assert by_rule["a8418a5a-5fc4-46b5-b23b-6c73beb19d41"] == 1  # unchanged: kept
    assert by_rule["1d7c0f0e-0000-4000-8000-000000000002"] == 0  # changed: starts empty
    alerts = feed(
        reloaded, changed, [failed(2), Hit(3, ["successful_login"], {"user.name": USERS[0]})]
    )
    assert [a.rule_id for a in alerts] == ["b180ead8-d58f-40b2-ae54-c8940995b9b6"]


def test_a_corrupt_snapshot_is_refused_with_advice():
    import pytest

    from correlator.correlation import CorrelationStateError

    with pytest.raises(CorrelationStateError, match="start without it"):
        CorrelationEngine.restore(
            b'{"version": 1, "partitions": {"0": {}}}', LOADED.correlations, LOADED.resolve
        )


def test_partition_snapshots_cover_only_what_changed_and_restore_identically():
    hits = [failed(i * 7, USERS[i % 3], partition=i % 2, event_id=f"e{i:03d}") for i in range(40)]
    hits += [
        Hit(300, ["successful_login"], {"user.name": u}, p, f"ok{p}{u}")
        for p in (0, 1)
        for u in USERS
    ]
    expected = summary(feed(engine(allowed_lateness_s=20), LOADED, hits))

    e = engine(allowed_lateness_s=20)
    got = feed(e, LOADED, hits[:25])
    stored = e.snapshot_partitions()
    assert set(stored) == {0, 1}
    got += feed(e, LOADED, [h for h in hits[25:30] if h.partition == 1])
    changed = e.snapshot_partitions()
    assert set(changed) == {1}  # partition 0 saw nothing since the last checkpoint
    stored.update(changed)
    restored = CorrelationEngine.restore_partitions(
        stored, LOADED.correlations, LOADED.resolve, CorrelationSettings(allowed_lateness_s=20)
    )
    got += feed(restored, LOADED, [h for h in hits[25:30] if h.partition == 0] + hits[30:])
    assert sorted(summary(got)) == sorted(expected)
    assert expected  # the timeline does produce alerts


DENIES = """
title: Denied into LGWAN
id: 6f1f2b4e-0c1d-4e55-9a61-000000000001
name: denied
logsource: {product: zonewatch, service: firewall}
detection: {sel: {event.outcome: failure}, condition: sel}
---
title: Repeated denies from one source
id: 6f1f2b4e-0c1d-4e55-9a61-000000000002
correlation: {type: event_count, rules: [denied], group-by: [source.ip], timespan: 5m,
              condition: {gte: 5}}
---
title: Port scan from one source
id: 6f1f2b4e-0c1d-4e55-9a61-000000000003
correlation: {type: value_count, rules: [denied], group-by: [source.ip], timespan: 5m,
              condition: {field: destination.port, gte: 10}}
"""
FORTIGATE_DENY = (
    'date=2026-11-26 time=11:{mm:02d}:{ss:02d} devname="city-fw01" devid="FG200FTK23004711" '
    'tz="+0900" logid="0000000013" type="traffic" subtype="forward" level="notice" vd="root" '
    'srcip={src} srcport={sport} srcintf="wan1" srcintfrole="wan" dstip=10.200.5.10 dstport=22 '
    'dstintf="lgwan" dstintfrole="lan" sessionid={sid} proto=6 action="deny" policyid=0 '
    'policytype="policy" service="SSH" duration=0 sentbyte=0 rcvdbyte=0'
)


def test_the_state_cap_counts_the_event_bodies_held_in_evidence():
    # The stream keeps event bodies in evidence: a parsed firewall event is
    # ~6 KB of dicts, fifteen times a group. A cap that counted groups and
    # records only let a flood of distinct sources grow the state to three
    # times the cap (issue 20, point 3).
    import tracemalloc

    import orjson

    from connectors.inputs import Record
    from connectors.pipeline import Pipeline
    from correlator.stream import evidence_of
    from zonewatch.zones import load_zone_map

    parse = Pipeline("firewall", "fortigate", zones=load_zone_map("rules/zones.yaml")).handle
    raws = []
    for i in range(4000):
        line = FORTIGATE_DENY.format(
            mm=i // 800,
            ss=i // 20 % 40,
            src=f"100.64.{i // 250}.{i % 250 + 1}",
            sport=40000 + i,
            sid=i,
        )
        events, letter = parse(Record(line.encode()))
        assert letter is None
        raws.append(orjson.dumps(events[0]))
    loaded = load_rules_text(DENIES)
    cap = 4_000_000
    e = CorrelationEngine(
        loaded.correlations,
        loaded.resolve,
        CorrelationSettings(allowed_lateness_s=0, max_state_bytes=cap),
    )
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, raw in enumerate(raws):
        event = orjson.loads(raw)
        when = BASE + timedelta(seconds=i / 20)
        evidence = evidence_of("zonewatch.events.firewall", 0, i, when, event)
        e.process(["6f1f2b4e-0c1d-4e55-9a61-000000000001"], event, evidence, t=when.timestamp())
    del event, evidence
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert e.stats.evicted_cap > 0 and e.stats.cap_hits > 0
    assert held < cap * 1.2, held
    assert 0.7 < e.state_bytes_estimate() / held < 1.3
