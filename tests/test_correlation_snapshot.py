"""Snapshot format 2 (pickled rows): round trips, the previous release's
format 1 (JSON), and blobs that must be refused."""

from __future__ import annotations

import pickle
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_correlation_state import (
    DOMAINS,
    LATENESS,
    LOADED,
    USERS,
    engine,
    failed,
    jittered,
    summary,
    timelines,
    upload,
)

from correlator.correlation import CorrelationEngine, CorrelationSettings, CorrelationStateError
from correlator.correlation.snapshot import MAGIC as _MAGIC
from correlator.correlation.timeline import BASE, feed
from correlator.local import _decode_pending, _encode_pending
from zonewatch.models import Evidence

V1 = Path(__file__).parent / "data" / "correlation_state_v1.json"
# What tests/data/correlation_state_v1.json was made from, by the engine of
# commit 4b77e14 (format 1): engine(allowed_lateness_s=30) fed V1_HITS.
V1_HITS = [
    failed(0),
    failed(10),
    upload(5, DOMAINS[0]),
    upload(6, DOMAINS[1]),
    failed(100, USERS[1]),
    failed(200),
]
V1_HITS = [replace(h, event_id=f"line:{i + 1}") for i, h in enumerate(V1_HITS)]
V1_REST = [
    failed(201),
    failed(230, USERS[1]),
    upload(240, DOMAINS[2]),
    upload(250, DOMAINS[3]),
    failed(260, USERS[1]),
    failed(700),
]
V1_REST = [replace(h, event_id=f"rest:{i + 1}") for i, h in enumerate(V1_REST)]


def restored(blob: bytes) -> CorrelationEngine:
    return CorrelationEngine.restore(
        blob, LOADED.correlations, LOADED.resolve, CorrelationSettings(allowed_lateness_s=LATENESS)
    )


def test_a_format_1_snapshot_of_the_previous_release_restores_and_continues_identically():
    expected = feed(e := engine(allowed_lateness_s=30), LOADED, V1_HITS + V1_REST) + e.flush()
    old = CorrelationEngine.restore(
        V1.read_bytes(),
        LOADED.correlations,
        LOADED.resolve,
        CorrelationSettings(allowed_lateness_s=30),
    )
    assert old.metrics()["groups"] == 5
    assert old.metrics()["buffered_events"] == 1
    assert old.metrics()["open_absence_windows"] == 2
    got = feed(old, LOADED, V1_REST) + old.flush()
    assert summary(got) == summary(expected)
    assert expected  # the continuation does alert
    assert old.snapshot().startswith(_MAGIC)  # and is written in the new format


def test_a_format_1_partition_state_imports():
    # What format 1's export_partition(0) wrote: the partition, with its version.
    blob = orjson.dumps({**orjson.loads(V1.read_bytes())["partitions"]["0"], "version": 1})
    one = engine(allowed_lateness_s=30)
    one.import_partition(0, blob)
    assert one.metrics()["groups"] == 5
    assert summary(feed(one, LOADED, V1_REST) + one.flush())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timelines, st.integers(0, 2**32), st.data())
def test_every_way_through_the_snapshot_continues_identically(hits, seed, data):
    arrival = jittered(hits, seed)
    e = engine(allowed_lateness_s=LATENESS)
    expected = summary(feed(e, LOADED, arrival) + e.flush())
    cut = data.draw(st.integers(0, len(arrival)))

    first = engine(allowed_lateness_s=LATENESS)
    before = feed(first, LOADED, arrival[:cut])
    metrics = first.metrics()
    # snapshot() -> restore() -> snapshot() again -> restore()
    twice = restored(restored(first.snapshot()).snapshot())
    # export_partition() -> import_partition() into a fresh engine
    moved = engine(allowed_lateness_s=LATENESS)
    blob = first.export_partition(0)
    if blob is not None:
        moved.import_partition(0, blob)
    for other in (twice, moved):
        if cut:
            assert other.metrics()["groups"] == metrics["groups"]
            assert other.metrics()["buffered_events"] == metrics["buffered_events"]
            assert other.metrics()["open_absence_windows"] == metrics["open_absence_windows"]
        got = before + feed(other, LOADED, arrival[cut:]) + other.flush()
        assert summary(got) == expected


def test_restored_records_stay_shared_between_the_rules_they_feed():
    e = engine(allowed_lateness_s=0)
    feed(e, LOADED, [failed(0), failed(1)])
    back = restored(e.snapshot())
    count, ordered_absence = (
        back._parts[0].groups[c.index] for c in back.rules if c.type in ("event_count", "temporal")
    )
    (count_window,) = count.values()
    (temporal_window,) = ordered_absence.values()
    newest = count_window.recs[-1]
    assert any(rec is newest for rec in temporal_window.last)


def test_a_blob_naming_anything_else_is_refused():
    class Boom:
        def __reduce__(self):
            return (print, ("owned",))

    evil = _MAGIC + pickle.dumps({"version": 2, "rules": [], "partitions": {0: Boom()}})
    with pytest.raises(CorrelationStateError, match="start without it"):
        restored(evil)
    with pytest.raises(CorrelationStateError, match="start it empty"):
        engine().import_partition(0, evil)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (_MAGIC + pickle.dumps({"version": 3}), "format 3, this release reads 2 and 1"),
        (b'{"version": 7}', "format 7, this release reads 2 and 1"),
        (b"\x00garbage", "not a correlation state"),
        (_MAGIC + b"\x80\x05truncated", "unreadable"),
    ],
)
def test_other_formats_are_refused_with_advice(blob, message):
    with pytest.raises(CorrelationStateError, match=message):
        restored(blob)


def _through_the_merger_state(when: datetime) -> datetime:
    """A time as the stream hands it to the engine after a restart: events
    waiting in the merger are checkpointed as JSON and come back through
    pydantic, with its own tzinfo class (pydantic_core.TzInfo)."""
    evidence = Evidence(event_id="x", time=when)
    _, event, back, t = _decode_pending(_encode_pending(([], {}, evidence, when.timestamp())))
    assert event == back.event
    assert t == when.timestamp()  # the stream hands the engine this time
    return back.time


@pytest.mark.parametrize(
    "base",
    [
        _through_the_merger_state(BASE),
        BASE.astimezone(ZoneInfo("Asia/Tokyo")),
        BASE.astimezone(timezone(timedelta(hours=9), "JST")),
    ],
    ids=["pydantic-tzinfo", "zoneinfo", "fixed-offset"],
)
def test_times_with_any_tzinfo_snapshot_restore_and_continue_identically(base):
    # The kill -9 crash test (tests/test_crash_recovery.py) failed with format
    # 2 as first written: the pickle named pydantic_core's TzInfo, which the
    # restricted unpickler refuses, so every restart after one had discarded
    # the state ("correlation_state_discarded") and alerts went missing or
    # fired twice. Format 1 wrote times as RFC 3339 and kept their offset.
    hits = V1_HITS + V1_REST
    e = engine(allowed_lateness_s=30)
    expected = summary(feed(e, LOADED, hits, base) + e.flush())
    assert expected
    for cut in range(len(hits) + 1):
        first = engine(allowed_lateness_s=30)
        got = feed(first, LOADED, hits[:cut], base)
        metrics = first.metrics()
        blob = first.snapshot()
        back = CorrelationEngine.restore(
            blob, LOADED.correlations, LOADED.resolve, CorrelationSettings(allowed_lateness_s=30)
        )
        moved = engine(allowed_lateness_s=30)
        part = first.export_partition(0)
        if part is not None:
            moved.import_partition(0, part)
        for other in (back, moved):
            assert other.metrics()["groups"] == metrics["groups"]
            assert other.metrics()["buffered_events"] == metrics["buffered_events"]
            rest = feed(other, LOADED, hits[cut:], base) + other.flush()
            assert summary(got + rest) == expected


def test_restored_times_keep_their_instant_and_offset():
    base = BASE.astimezone(ZoneInfo("Asia/Tokyo"))
    e = engine(allowed_lateness_s=30)
    feed(e, LOADED, [failed(0), failed(1)], base)
    back = restored(e.snapshot())
    before = [item[3][2] for item in e._parts[0].buffer]
    after = [item[3][2] for item in back._parts[0].buffer]
    assert before and after == before
    assert [t.utcoffset() for t in after] == [timedelta(hours=9)] * len(after)
    assert all(t.tzinfo.__class__ is timezone for t in after)


def test_state_the_restore_would_refuse_fails_at_the_snapshot():
    # A value outside JSON and datetimes (here in the event kept as evidence)
    # must stop the checkpoint, not be found missing at the next restart.
    e = engine(allowed_lateness_s=30)
    feed(e, LOADED, [replace(failed(0), fields={**failed(0).fields, "amount": Decimal(1)})])
    with pytest.raises(pickle.PicklingError, match=r"decimal\.Decimal cannot be part"):
        e.snapshot()


# tests/data/correlation_state_v2.bin: format 2 as the engine wrote it before
# it was split into parts (commit 7e23eab): the bench's rules
# (bench/bench_correlation.py RULES) after the first 600 of
# make_events(1200, 20), lateness 5 s, evidence without bodies.
V2 = Path(__file__).parent / "data" / "correlation_state_v2.bin"


def test_a_format_2_snapshot_of_the_engine_before_the_split_continues_identically():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    try:
        import bench_correlation as bench
    finally:
        sys.path.pop(0)
    from correlator.correlation.yaml_rules import load_rules_text

    loaded = load_rules_text(bench.RULES)
    cfg = CorrelationSettings(allowed_lateness_s=5, keep_event_in_evidence=False)
    items = bench.make_events(1200, 20, 0)
    whole = CorrelationEngine(loaded.correlations, loaded.resolve, cfg)
    expected = [a.id for a in whole.process_many(items) + whole.flush()]
    back = CorrelationEngine.restore(V2.read_bytes(), loaded.correlations, loaded.resolve, cfg)
    got = [a.id for a in back.process_many(items[600:]) + back.flush()]
    assert len(expected) == 10
    assert got == expected
