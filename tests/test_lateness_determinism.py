"""Out-of-order input beyond the allowed lateness (issue #20, point 5), through
the embedded broker: which events are late depends on the input and the
stored state only, so runs over the same input agree however polls, fetches
and idle time cut it, and a run killed with ``kill -9`` again and again
stores exactly the alerts of an uninterrupted one.

The rule, as ``correlator/ordering.py`` states it: an event is late when it
is older than the newest event time read before it on its own partition,
less ``allowed_lateness_s``. The test computes that from the topics alone
and holds the correlator to it.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition
from test_crash_recovery import (
    EVENT_COUNT,
    RULES,
    TEMPORAL,
    VALUE_COUNT,
    Workload,
    clean_and_killed,
    make_workload,
    produce,
    run_to_end,
    stored,
)

from zonewatch.config import SOURCES, KafkaSettings, Settings

pytestmark = pytest.mark.integration

LATENESS_S = 60.0


def out_of_order(n: int, seed: int) -> Workload:
    """``make_workload``'s day, sent in arrival order: most events a few
    seconds after their time, one in ten minutes late (61-400 s), so every
    partition has stragglers well beyond the allowed lateness."""
    base = make_workload(n, seed=seed)
    rng = random.Random(seed)
    arrivals = []
    for i, (source, key, value) in enumerate(base.records):
        t = datetime.fromisoformat(orjson.loads(value)["@timestamp"])
        delay = rng.uniform(61, 400) if rng.random() < 0.1 else rng.uniform(0, 20)
        arrivals.append((t + timedelta(seconds=delay), i, source, key, value))
    arrivals.sort(key=lambda a: (a[0], a[1]))
    return Workload([(s, k, v) for _, _, s, k, v in arrivals], base.expected)


def correlated(event: dict[str, Any]) -> bool:
    """Whether an event matches a detection rule some correlation of RULES reads."""
    zone, ev = event.get("zone") or {}, event.get("event") or {}
    return (
        (zone.get("crossing") == "core->lgwan" and ev.get("outcome") == "failure")
        or (event.get("intune") or {}).get("compliance") == "noncompliant"
        or (ev.get("action") == "session-start" and event["vdi"]["pool"] == "mynumber-pool")
        or ev.get("action") == "blocked"
    )


def read_partitions(kafka: KafkaSettings, n: int) -> dict[TopicPartition, list[Any]]:
    """Every record of the event topics, per partition in offset order."""
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=None)
    tps = [
        TopicPartition(kafka.events_topic(s), p) for s in SOURCES for p in range(kafka.partitions)
    ]
    consumer.assign(tps)
    consumer.seek_to_beginning()
    records: dict[TopicPartition, list[Any]] = {tp: [] for tp in tps}
    while sum(map(len, records.values())) < n:
        for tp, batch in consumer.poll(500).items():
            records[tp] += batch
    consumer.close()
    return {tp: sorted(batch, key=lambda r: r.offset) for tp, batch in records.items()}


def event_time(record: Any) -> float:
    return datetime.fromisoformat(orjson.loads(record.value)["@timestamp"]).timestamp()


def keeps_commit_metadata(kafka: KafkaSettings) -> bool:
    """Whether the broker returns the metadata committed with an offset
    (Apache Kafka does; the embedded tansu answers null)."""
    from kafka import OffsetAndMetadata

    tp = TopicPartition(kafka.events_topic("vdi"), 0)
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=f"{kafka.topic_prefix}-metadata-probe",
        enable_auto_commit=False,
    )
    try:
        consumer.commit({tp: OffsetAndMetadata(0, "probe", -1)})
        return consumer.committed(tp, metadata=True).metadata == "probe"
    finally:
        consumer.close()


def late_by_the_rule(kafka: KafkaSettings, n: int) -> int:
    """Correlated events late for their partition, from the topics alone."""
    late = 0
    for batch in read_partitions(kafka, n).values():
        newest = float("-inf")
        for record in batch:
            t = event_time(record)
            late += correlated(orjson.loads(record.value)) and t < newest - LATENESS_S
            newest = max(newest, t)
    return late


def run_in_process(
    kafka: KafkaSettings, rules: Path, db: Path, n: int, consumer: dict[str, Any], **correlator: Any
) -> tuple[dict[str, str], int]:
    """One uninterrupted run; its alerts and the late events it counted."""
    from correlator.service import CorrelatorService

    settings = Settings().updated(
        kafka=kafka,
        correlator={
            "rules": [rules],
            "db_path": db,
            "group_id": f"{kafka.topic_prefix}-{db.stem}",
            "allowed_lateness_s": LATENESS_S,
            **correlator,
        },
    )
    with CorrelatorService(settings, extra_consumer_opts=consumer) as service:
        service.start()
        stats = service.run(idle_timeout_s=3)
        assert stats.consumed == n
        late = service.correlation.stats.late_events
    return stored(db)[0], late


def test_runs_cut_differently_find_the_same_alerts_and_the_same_late_events(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    workload = out_of_order(20_000, seed=20)
    produce(kafka_settings, workload)
    n = len(workload.records)
    expected_late = late_by_the_rule(kafka_settings, n)
    assert expected_late > 20

    runs = {
        "defaults": run_in_process(kafka_settings, rules, tmp_path / "a.duckdb", n, {}),
        "small polls, fast": run_in_process(
            kafka_settings,
            rules,
            tmp_path / "b.duckdb",
            n,
            {},
            max_batch=97,
            poll_timeout_ms=20,
            input_idle_s=0.1,
        ),
        "small fetches": run_in_process(
            kafka_settings,
            rules,
            tmp_path / "c.duckdb",
            n,
            {"max_partition_fetch_bytes": 8 << 10, "fetch_max_bytes": 32 << 10},
            max_batch=500,
            input_idle_s=2.0,
        ),
    }
    first_alerts, _ = runs["defaults"]
    for name, (alerts, late) in runs.items():
        assert late == expected_late, name
        assert sorted(alerts) == sorted(first_alerts), name
    found = Counter(first_alerts.values())
    assert all(found[rule] > 0 for rule in (EVENT_COUNT, TEMPORAL, VALUE_COUNT)), found


@pytest.mark.slow
def test_kill_9_over_out_of_order_input_stores_no_extra_alert(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    workload = out_of_order(40_000, seed=21)
    produce(kafka_settings, workload)
    clean, killed, kills = clean_and_killed(
        kafka_settings, rules, tmp_path, len(workload.records), 8, random.Random(21), most_s=2.0
    )
    assert kills >= 6
    assert sorted(set(killed) - set(clean)) == [], "alerts an uninterrupted run never raised"
    assert sorted(killed) == sorted(clean)


@pytest.mark.slow
def test_scaled_out_members_judge_lateness_as_one_member_does(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """Two ``--scale-out`` members, the second joining while the input
    arrives: source partitions move between them with their newest time
    (committed as offset metadata), so together they store exactly the
    alerts of one single-member run over the same out-of-order input."""
    from test_scale_out import _alerts, run_two_members

    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    workload = out_of_order(20_000, seed=22)
    n = len(workload.records)
    prefix = kafka_settings.topic_prefix
    group = f"{prefix}-scaled"
    dbs = run_two_members(kafka_settings, rules, workload, tmp_path, group, seconds=10.0)
    scaled = {**_alerts(dbs[0]), **_alerts(dbs[1])}
    # Each source offset the group committed carries its partition's newest
    # event time up to there: what the next owner judges lateness from (the
    # embedded broker drops commit metadata; Apache Kafka keeps it).
    consumer = KafkaConsumer(bootstrap_servers=kafka_settings.bootstrap_servers, group_id=group)
    keeps = keeps_commit_metadata(kafka_settings)
    for tp, records in read_partitions(kafka_settings, n).items():
        if not records:  # a source without input (identity here) has nothing to commit
            continue
        committed = consumer.committed(tp, metadata=True)
        assert committed is not None and 0 < committed.offset <= len(records), tp
        if keeps:  # (the Kafka commit may trail the stores; it is for the next owner)
            newest = max(event_time(r) for r in records[: committed.offset])
            assert orjson.loads(committed.metadata or "null") == {"newest": newest}, tp
    consumer.close()
    one = run_to_end(
        kafka_settings, rules, tmp_path / "one.duckdb", f"{prefix}-one", tmp_path / "one.log", n
    )
    assert sorted(set(scaled) - set(one)) == [], "alerts one member never raised"
    assert sorted(scaled) == sorted(one)
