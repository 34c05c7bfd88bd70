"""Several correlators in one consumer group (``correlate --scale-out``).

The pure parts first: the hits/watermark records, the changelog that carries
a shard's state between members, and the shard's replay filter and
event-time merge. Then, through the embedded broker: two members of one
group, the second joining while the first works, find exactly the alerts
(same ids) of one single-member correlator over the same input.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_alerts_topic import _stored_ids, of_store, topic_records
from test_crash_recovery import (
    EVENT_COUNT,
    RULES,
    Correlator,
    Workload,
    kill_at_random_moments,
    make_workload,
    produce,
    run_to_end,
)

from correlator.scaleout.records import (
    ChangelogReader,
    Hit,
    RecordError,
    Watermark,
    carries_hits,
    changelog_records,
    decode,
    encode_hit,
    encode_hits,
    encode_watermark,
    key_partition,
    pack_state,
    unpack_state,
)
from correlator.scaleout.shard import ShardInput
from zonewatch.config import KafkaSettings
from zonewatch.kafka import correlation_topics, ensure_topics

FW0, FW1, VDI0 = ("zw.events.firewall", 0), ("zw.events.firewall", 1), ("zw.events.vdi", 0)


def hit(source: tuple[str, int], offset: int, t: float, user: str = "alice") -> Hit:
    return Hit(source, offset, t, f"2026-11-26T00:00:{t:09.6f}+00:00", ["r1"], {"user": user})


# -- records ----------------------------------------------------------------------


def test_a_hit_and_a_watermark_survive_the_wire() -> None:
    h = hit(FW1, 42, 12.5, "山田")
    back = decode(encode_hit(h))
    assert back == [h] and back[0].event_id == "zw.events.firewall:1:42"
    assert carries_hits(encode_hit(h))
    wm = decode(encode_watermark({FW0: 10.0, VDI0: 7.25}))
    assert isinstance(wm, Watermark) and wm.progress == {FW0: 10.0, VDI0: 7.25}
    assert not carries_hits(encode_watermark({FW0: 10.0}))


@given(
    st.lists(
        st.tuples(
            st.sampled_from([FW0, FW1, VDI0]),
            st.integers(0, 2**40),
            st.floats(0, 4e9),
            st.text(max_size=8),
            st.one_of(st.none(), st.floats(0, 4e9)),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_hits_sent_together_come_back_in_the_order_sent(
    parts: list[tuple[tuple[str, int], int, float, str, float | None]],
) -> None:
    # One record carries a batch's hits for a shard (a record costs the
    # Kafka client the same whatever its size).
    hits = [
        Hit(source, offset, t, "2026-11-26T00:00:00+00:00", ["r1", "r2"], {"u": user}, late)
        for source, offset, t, user, late in parts
    ]
    record = encode_hits([encode_hit(h) for h in hits])
    assert carries_hits(record)
    assert decode(record) == hits


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[1,2]", b'{"x": 1}', b'{"h": [1]}', b'{"hs": [{"h": [1]}]}', b'{"hs": 3}'],
)
def test_a_foreign_record_on_the_hits_topic_is_a_clear_error(raw: bytes) -> None:
    with pytest.raises(RecordError):
        decode(raw)


def test_key_partition_is_stable_and_spreads_keys() -> None:
    # The same in every process (no salted hash): pinned values.
    assert key_partition(("alice@city.example.jp",), 6) == key_partition(
        ("alice@city.example.jp",), 6
    )
    counts = Counter(key_partition((f"user{i}",), 4) for i in range(4000))
    assert set(counts) == {0, 1, 2, 3} and min(counts.values()) > 800


@given(st.binary(max_size=5000), st.integers(min_value=1, max_value=700))
def test_a_chunked_state_reads_back_whole(data: bytes, chunk: int) -> None:
    reader = ChangelogReader(3)
    reader.feed(changelog_records(3, 1, data, chunk=chunk))
    assert reader.latest == data and reader.generation == 1


def test_the_changelog_reader_keeps_the_newest_complete_generation() -> None:
    reader = ChangelogReader(0)
    reader.feed(changelog_records(0, 1, b"first" * 100, chunk=64))
    newer = list(changelog_records(0, 2, b"second" * 100, chunk=64))
    # A writer that died before the header: generation 2 is not current.
    reader.feed(newer[:-1])
    assert reader.latest == b"first" * 100
    reader.feed(newer[-1:])
    assert reader.latest == b"second" * 100
    # Other shards' records and tombstones are ignored.
    reader.feed([(b"1", b'{"gen": 9}'), (b"0/1/0", None), (b"10/1/0", b"x")])
    assert reader.latest == b"second" * 100


def test_a_changelog_missing_a_chunk_is_reported_not_misread() -> None:
    records = list(changelog_records(0, 1, b"abc" * 100, chunk=64))
    reader = ChangelogReader(0)
    with pytest.raises(RecordError, match="chunks"):
        reader.feed(records[1:])


def test_shard_state_packs_metadata_and_engine_bytes() -> None:
    meta, engine = unpack_state(pack_state({"hits_offset": 7}, b"\x00\x01engine"))
    assert meta == {"hits_offset": 7} and engine == b"\x00\x01engine"
    assert unpack_state(pack_state({"a": 1}, None)) == ({"a": 1}, None)


# -- internal topic names, one pair per group -----------------------------------


def test_each_group_has_its_own_internal_topics() -> None:
    kafka = KafkaSettings(topic_prefix="zw")
    assert kafka.scale_out_topics("zonewatch-correlator") == (
        "zw.correlation.zonewatch-correlator.hits",
        "zw.correlation.zonewatch-correlator.state",
    )
    assert kafka.scale_out_topics("soc_EU-2").state == "zw.correlation.soc_EU-2.state"
    # An upgraded deployment may keep the names every group shared before.
    assert kafka.scale_out_topics("any", legacy=True) == (
        "zw.correlation.hits",
        "zw.correlation.state",
    )


LEGAL = re.compile(r"[A-Za-z0-9._-]{1,249}")


@pytest.mark.parametrize(
    "group_id",
    ["soc.eu", "soc eu", "soc/eu", "監視", "x" * 300, "a.b_c", "zonewatch.correlator"],
)
def test_a_group_id_kafka_would_refuse_or_confuse_is_made_legal(group_id: str) -> None:
    from zonewatch.sources import group_topic_part

    part = group_topic_part(group_id)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,80}", part) and re.search(r"-[0-9a-f]{12}$", part)
    names = KafkaSettings(topic_prefix="p" * 150).scale_out_topics(group_id)
    assert all(LEGAL.fullmatch(name) for name in names)


GROUP_IDS = st.text(min_size=1, max_size=120).filter(str.strip)


@given(GROUP_IDS, GROUP_IDS)
def test_two_group_ids_never_share_topics(a: str, b: str) -> None:
    # Kafka takes '.' and '_' for the same in topic names: compare so too.
    kafka = KafkaSettings(topic_prefix="zw")
    same = [n.replace(".", "_") for n in kafka.scale_out_topics(a)] == [
        n.replace(".", "_") for n in kafka.scale_out_topics(b)
    ]
    assert same == (a == b)


@pytest.mark.parametrize(
    ("prefix", "group_id", "says"),
    [
        ("zw", "", "group id is empty"),
        ("zw", "  ", "group id is empty"),
        ("p" * 230, "g", "shorten kafka.topic_prefix"),
    ],
)
def test_a_group_id_that_cannot_name_topics_is_refused(prefix: str, group_id: str, says: str):
    from zonewatch.errors import ConfigError

    with pytest.raises(ConfigError, match=says):
        KafkaSettings(topic_prefix=prefix).scale_out_topics(group_id)


def test_the_configured_group_and_the_legacy_setting_choose_the_topics() -> None:
    from zonewatch.config import Settings

    settings = Settings(kafka={"topic_prefix": "zw"}, correlator={"group_id": "blue"})
    assert settings.scale_out_topics.hits == "zw.correlation.blue.hits"
    legacy = settings.updated(correlator={"scale_out_legacy_topics": True})
    assert legacy.scale_out_topics.state == "zw.correlation.state"


# -- the shard's input ----------------------------------------------------------


def test_a_shard_waits_for_every_source_partition() -> None:
    shard = ShardInput([FW0, FW1, VDI0])
    shard.offer(hit(FW0, 0, 10.0))
    shard.offer(hit(FW1, 0, 12.0))
    # Nothing from the VDI partition yet: a VDI hit older than 10 may still come.
    assert shard.release() == []
    shard.declare({VDI0: 11.0})
    assert [h.time for h in shard.release()] == [10.0]
    shard.offer(hit(VDI0, 5, 11.5))
    shard.declare({FW0: 20.0, VDI0: 20.0})
    assert [h.time for h in shard.release()] == [11.5, 12.0]
    assert shard.frontier() == 12.0


def test_a_replayed_hit_is_dropped() -> None:
    shard = ShardInput([FW0])
    assert shard.offer(hit(FW0, 3, 1.0))
    assert not shard.offer(hit(FW0, 3, 1.0))
    assert not shard.offer(hit(FW0, 2, 0.5))
    assert shard.offer(hit(FW0, 4, 2.0))
    assert shard.duplicates == 2
    shard.declare({FW0: 5.0})
    assert [h.offset for h in shard.release()] == [3, 4]


def test_watermarks_never_move_a_source_back() -> None:
    shard = ShardInput([FW0])
    shard.declare({FW0: 50.0})
    shard.declare({FW0: 20.0})  # a new owner resuming from an older offset
    assert shard.frontier() == 50.0


@given(
    st.lists(
        st.tuples(st.sampled_from([FW0, FW1, VDI0]), st.floats(0, 30, allow_nan=False)),
        max_size=60,
    ),
    st.integers(0, 60),
)
def test_release_is_in_event_time_order_and_a_snapshot_continues_identically(
    items: list[tuple[tuple[str, int], float]], cut: int
) -> None:
    # Each source partition in its own (Kafka) order, interleaved at random.
    offsets: Counter[tuple[str, int]] = Counter()
    clock: dict[tuple[str, int], float] = {}
    hits = []
    for source, step in items:
        clock[source] = clock.get(source, 0.0) + step
        hits.append(hit(source, offsets[source], clock[source]))
        offsets[source] += 1

    def run(shard: ShardInput, todo: list[Hit]) -> list[Any]:
        out = []
        for h in todo:
            shard.offer(h)
            shard.declare({h.source: h.time - 100})
            out += shard.release()
        return out

    whole = ShardInput([FW0, FW1, VDI0])
    released = run(whole, hits)
    whole.declare({FW0: 2000.0, FW1: 2000.0, VDI0: 2000.0})
    released += whole.release()
    assert [h.time for h in released] == sorted(h.time for h in hits)

    first = ShardInput([FW0, FW1, VDI0])
    part = run(first, hits[:cut])
    second = ShardInput.restore(first.snapshot())
    part += run(second, hits[cut:] + hits[:cut])  # the replay is dropped
    second.declare({FW0: 2000.0, FW1: 2000.0, VDI0: 2000.0})
    part += second.release()
    assert [(h.source, h.offset) for h in part] == [(h.source, h.offset) for h in released]


def test_a_hit_late_for_its_source_waits_aside_and_moves_no_progress() -> None:
    late = Hit(FW0, 7, 3.0, "2026-11-26T00:00:03+00:00", ["r1"], {"user": "bob"}, late=70.0)
    assert decode(encode_hit(late)) == [late]
    shard = ShardInput([FW0])
    shard.offer(hit(FW0, 6, 100.0))
    assert shard.offer(late)
    assert not shard.offer(late)  # a replay is dropped like any other
    assert shard.progress[FW0] == 100.0
    far = 253402300740.0  # progress stored before event times were bounded
    restored = ShardInput.restore({**shard.snapshot(), "progress": [[*FW0, far]]}, limit=1e10)
    assert restored.take_late() == [late] and restored.take_late() == []
    assert restored.progress[FW0] == float("-inf")  # cut back: nothing known
    shard.declare({FW0: 200.0})
    assert [h.offset for h in shard.release()] == [6]


# -- through the broker -----------------------------------------------------------


def produce_paced(
    kafka: KafkaSettings, records: list[tuple[str, str, bytes]], seconds: float
) -> None:
    """Records in event-time order, spread evenly over ``seconds``."""
    from zonewatch.kafka import make_producer

    producer = make_producer(kafka, linger_ms=5)
    started = time.monotonic()
    step = max(1, len(records) // 100)
    for i, (source, key, value) in enumerate(records):
        if i % step == 0:
            ahead = started + seconds * i / len(records) - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        producer.send(kafka.events_topic(source), key=key.encode(), value=value)
    producer.flush(timeout=120)
    producer.close()


def _offsets(db: Path) -> dict[tuple[str, int], int]:
    if not db.exists():
        return {}
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute('SELECT topic, "partition", next_offset FROM consumer_offsets')
        return {(t, p): o for t, p, o in rows.fetchall()}


def _alerts(db: Path) -> dict[str, str]:
    if not db.exists():
        return {}
    with duckdb.connect(str(db), read_only=True) as con:
        return dict(con.execute("SELECT id, rule_id FROM alerts").fetchall())


def _wait_for_changelog_state(kafka: KafkaSettings, group: str, timeout_s: float = 120) -> None:
    """Until some correlation shard's state is on the group's changelog topic."""
    from kafka import TopicPartition

    from zonewatch.kafka import log_bounds

    state = kafka.scale_out_topics(group).state
    tps = [TopicPartition(state, p) for p in range(kafka.partitions)]
    deadline = time.monotonic() + timeout_s
    while not any(b.end > b.start for b in log_bounds(kafka, tps).values()):
        assert time.monotonic() < deadline, "no shard state reached the changelog"
        time.sleep(0.2)


# A chain whose parent groups by other fields than its child (none at all
# here): scale-out files both under one shard key (routing.pinned_rules).
PINNED_PARENT = "0c1e6a52-7d7e-4f0b-9f33-000000000009"
RULES_WITH_PINNED_CHAIN = (
    RULES
    + f"""---
title: Scale-out test repeated denied bursts anywhere
id: {PINNED_PARENT}
correlation:
  type: event_count
  rules: [{EVENT_COUNT}]
  timespan: 1h
  condition: {{gte: 2}}
  generate: true
level: high
"""
)


def run_two_members(
    kafka: KafkaSettings,
    rules: Path,
    workload: Workload,
    tmp_path: Path,
    group: str,
    seconds: float,
) -> list[Path]:
    """Two ``--scale-out`` members: the first works while the first half of
    the workload is produced over ``seconds / 2``; the second joins once the
    first has written shard state to the changelog, and takes source
    partitions and correlation shards (with their open windows) from it. The
    second half waits for the second member: conditions, not timing, so load
    cannot reorder it. Runs end when idle; follow-ups (one member, then the
    other) go on until every partition is covered by one store or the other.
    Returns the two stores."""
    internal = correlation_topics(kafka.scale_out_topics(group))
    ensure_topics(kafka)
    ensure_topics(kafka, list(internal), configs=internal)
    n = len(workload.records)
    half = n // 2
    feeder = threading.Thread(
        target=produce_paced, args=(kafka, workload.records[:half], seconds / 2)
    )
    log = tmp_path / "scaled.log"
    dbs = [tmp_path / "a.duckdb", tmp_path / "b.duckdb"]
    scale = ("--scale-out",)
    a = Correlator(kafka, rules, dbs[0], group, log, scale)
    a.wait_assigned()
    feeder.start()
    _wait_for_changelog_state(kafka, group)
    b = Correlator(kafka, rules, dbs[1], group, tmp_path / "b.log", scale)
    b.wait_assigned()
    feeder.join()
    produce_paced(kafka, workload.records[half:], seconds / 2)
    a.finish()
    b.finish()
    rng = random.Random(7)
    for _ in range(4):
        done: dict[tuple[str, int], int] = {}
        for db in dbs:
            for key, offset in _offsets(db).items():
                done[key] = max(done.get(key, 0), offset)
        if sum(o for (t, _), o in done.items() if ".events." in t) >= n:
            break
        Correlator(kafka, rules, rng.choice(dbs), group, log, scale).finish()
    return dbs


@pytest.mark.integration
def test_two_members_of_one_group_find_the_alerts_of_one(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES_WITH_PINNED_CHAIN)
    workload = make_workload(30_000)
    n = len(workload.records)
    prefix = kafka_settings.topic_prefix

    # Events arrive at a steady pace while the first member works; the
    # second joins midway and takes source partitions and correlation shards
    # (with their open windows, from the changelog) from it.
    group, log = f"{prefix}-scaled", tmp_path / "scaled.log"
    dbs = run_two_members(kafka_settings, rules, workload, tmp_path, group, seconds=12.0)
    scaled = {**_alerts(dbs[0]), **_alerts(dbs[1])}
    assert all(_alerts(db) for db in dbs), "both members raised alerts"
    # The second member took over shards from the first.
    assert re.search(r'"shards_restored": \[[0-9]', (tmp_path / "b.log").read_text())

    clean = run_to_end(
        kafka_settings, rules, tmp_path / "one.duckdb", f"{prefix}-one", tmp_path / "one.log", n
    )
    assert Counter(r for r in clean.values() if r != PINNED_PARENT) == workload.expected
    assert PINNED_PARENT in clean.values()
    assert "correlations_on_one_shard" in log.read_text()
    assert sorted(scaled) == sorted(clean), (log.read_text()[-3000:], time.time())
    # The alerts topic holds each member store's alerts once (the guarantee
    # ``--scale-out`` gives: once per member store, correlator/alerting/README.md).
    records = topic_records(kafka_settings)
    for db in dbs:
        ids, store_id = _stored_ids(db)
        on_topic = [orjson.loads(r.value)["id"] for r in of_store(records, store_id)]
        assert sorted(on_topic) == ids, (
            f"{db.name}: {len(on_topic)} on the topic, {len(ids)} stored"
        )


def run_scaled_to_end(
    kafka: KafkaSettings, rules: Path, db: Path, group: str, log: Path, n: int
) -> dict[str, str]:
    """One ``--scale-out`` member, run until its store covers ``n`` events."""
    for _ in range(4):
        Correlator(kafka, rules, db, group, log, ("--scale-out",)).finish()
        if sum(o for (t, _), o in _offsets(db).items() if ".events." in t) >= n:
            return _alerts(db)
    raise AssertionError(f"{group} did not read all {n} events in four runs")


@pytest.mark.integration
def test_two_groups_on_one_prefix_each_find_the_alerts_of_one(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    # The second group starts once the first has left its shard state behind:
    # with one changelog per prefix it restored that state and dropped every
    # hit as a replay (no correlation alert at all).
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    workload = make_workload(4_000, seed=3)
    produce(kafka_settings, workload)
    # What a version with shared topics left: each group says so once, at its
    # first start on its own topics, and does not touch them.
    from zonewatch.sources import legacy_scale_out_topics

    ensure_topics(kafka_settings, list(legacy_scale_out_topics(kafka_settings.topic_prefix)))
    n, prefix = len(workload.records), kafka_settings.topic_prefix
    found = {
        group: run_scaled_to_end(
            kafka_settings, rules, tmp_path / f"{group}.duckdb", group, tmp_path / "log", n
        )
        for group in (f"{prefix}-blue", f"{prefix}.red")
    }
    first, second = found.values()
    assert Counter(first.values()) == workload.expected
    assert sorted(second) == sorted(first), (tmp_path / "log").read_text()[-3000:]
    assert (tmp_path / "log").read_text().count('"event": "legacy_scale_out_topics"') == 2


def _replay_ending_in_a_burst() -> Workload:
    """Ten minutes of a past day's allowed crossings from a dozen hosts, the
    last of them five denied crossings from one host within its final 20
    seconds: the burst's alert resolves only once time passes the end of
    the replay (the engine applies events a lateness window behind)."""
    from datetime import timedelta

    from test_crash_recovery import BASE, _fw

    records: list[tuple[str, str, bytes]] = []
    for i in range(1200):
        when = BASE + timedelta(seconds=i * 0.5)
        ip = f"10.20.0.{i % 12 + 10}"
        event = _fw(when, f"user{i % 12}", ip, "10.200.8.15", "core->internet", "success")
        records.append(("firewall", ip, orjson.dumps(event)))
    end = BASE + timedelta(seconds=600)
    for k in range(5):
        when = end + timedelta(seconds=4 * k)
        event = _fw(when, "burst", "10.30.0.9", "10.200.8.15", "core->lgwan", "failure")
        records.append(("firewall", "10.30.0.9", orjson.dumps(event)))
    return Workload(records, Counter({EVENT_COUNT: 1}))


@pytest.mark.integration
@pytest.mark.parametrize("members", [1, 2])
def test_an_idle_exit_of_scaled_out_members_ends_as_if_time_had_caught_up(
    kafka_settings: KafkaSettings, tmp_path: Path, members: int
) -> None:
    # A batch run over a past day's logs (--idle-exit) ends with the alerts
    # of its last minute, as one correlator's does: every member declares
    # the wall clock for its idle sources and waits for its shards to hear
    # it from the others before it leaves.
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    workload = _replay_ending_in_a_burst()
    group = f"{kafka_settings.topic_prefix}-batch"
    internal = correlation_topics(kafka_settings.scale_out_topics(group))
    ensure_topics(kafka_settings)
    ensure_topics(kafka_settings, list(internal), configs=internal)
    log = tmp_path / "members.log"
    dbs = [tmp_path / f"m{k}.duckdb" for k in range(members)]
    running = [Correlator(kafka_settings, rules, db, group, log, ("--scale-out",)) for db in dbs]
    for member in running:
        member.wait_assigned()
    produce(kafka_settings, workload)
    for member in running:
        member.finish()
    found: dict[str, str] = {}
    for db in dbs:
        found.update(_alerts(db))
    assert Counter(found.values()) == workload.expected, log.read_text()[-3000:]


@pytest.mark.integration
def test_zonewatch_topics_creates_a_groups_topics_and_tells_of_the_shared_ones(
    kafka_settings: KafkaSettings,
) -> None:
    import os
    import subprocess
    import sys

    from zonewatch.sources import legacy_scale_out_topics

    prefix = kafka_settings.topic_prefix
    legacy = legacy_scale_out_topics(prefix)
    ensure_topics(kafka_settings, list(legacy))  # left by a version before per-group topics
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers or "",
        "ZONEWATCH_KAFKA__TOPIC_PREFIX": prefix,
    }

    def topics(*extra: str, **more_env: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "zonewatch", "topics", *extra]
        done = subprocess.run(argv, env={**env, **more_env}, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done

    done = topics("--group-id", "soc.eu")
    assert f"{prefix}.correlation.soc_eu-" in done.stdout and ".state\tcreated" in done.stdout
    assert f"{legacy.state} are from a version that shared them" in done.stderr
    kept = topics(ZONEWATCH_CORRELATOR__SCALE_OUT_LEGACY_TOPICS="true")
    assert f"{legacy.hits}\texists" in kept.stdout and "note:" not in kept.stderr


# -- rules a repartitioned correlator refuses -------------------------------------

CHAIN = """
title: Denied
id: 6f0d7c1e-0000-4000-8000-000000000001
name: denied
logsource: {product: zonewatch, service: firewall}
detection: {sel: {event.outcome: failure}, condition: sel}
---
title: Denied burst per host
id: 6f0d7c1e-0000-4000-8000-000000000002
name: burst
correlation: {type: event_count, rules: [denied], group-by: [source.ip, user.name],
              timespan: 5m, condition: {gte: 5}}
---
title: Bursts per user
id: 6f0d7c1e-0000-4000-8000-000000000003
correlation: {type: event_count, rules: [burst], group-by: [GROUP], timespan: 1h,
              condition: {gte: 2}}
"""


def _engine(text: str) -> Any:
    from correlator.correlation import CorrelationEngine
    from correlator.correlation.yaml_rules import load_rules_text

    loaded = load_rules_text(text)
    return CorrelationEngine(loaded.correlations, loaded.resolve)


def test_a_chain_grouping_by_other_fields_than_its_child_is_pinned_to_one_shard() -> None:
    from correlator.correlation.routing import PIN_KEY

    # A parent grouping by user only would gather children of many shards:
    # the chain (child and parent) is filed under one key instead.
    misaligned = _engine(CHAIN.replace("GROUP", "user.name"))
    assert sorted(misaligned.rules[i].title for i in misaligned.pinned) == [
        "Bursts per user",
        "Denied burst per host",
    ]
    event = {"source": {"ip": "10.1.2.3"}, "user": {"name": "Ito"}}
    denied = "6f0d7c1e-0000-4000-8000-000000000001"
    assert misaligned.group_keys([denied], event) == {PIN_KEY}
    aligned = _engine(CHAIN.replace("GROUP", "source.ip, user.name"))
    assert aligned.pinned == frozenset()
    assert aligned.group_keys([denied], event) == {("10.1.2.3", "ito")}


def _alert_ids(text: str, hits: list[Any], shards: int) -> list[str]:
    """The alert ids of ``shards`` repartitioned engines together, each
    applying only the keys of its shard (as correlator/scaleout/stage.py
    does); ``shards=1`` is one correlator."""
    from correlator.correlation import CorrelationEngine, CorrelationSettings
    from correlator.correlation.timeline import feed
    from correlator.correlation.yaml_rules import load_rules_text

    loaded = load_rules_text(text)
    ids = []
    for p in range(shards):
        engine = CorrelationEngine(
            loaded.correlations, loaded.resolve, CorrelationSettings(allowed_lateness_s=0)
        )

        def accept(key: tuple[Any, ...], p: int = p) -> bool:
            return key_partition(key, shards) == p

        alerts = feed(engine, loaded, hits, accept_key=accept) + engine.flush()
        ids += [a.id for a in alerts]
    return sorted(ids)


def _denied_bursts(seed: int) -> list[Any]:
    from correlator.correlation.timeline import Hit

    rng = random.Random(seed)
    users = ["ito", "kato", "sato"]
    hosts = [f"10.0.0.{i}" for i in range(6)]
    t, hits = 0.0, []
    for i in range(1500):
        t += 900 if rng.random() < 0.02 else rng.choice([1, 2, 3, 5, 10])
        fields = {"source.ip": rng.choice(hosts), "user.name": rng.choice(users)}
        hits.append(Hit(t, ["denied"], fields, event_id=f"fw:0:{i}"))
    return hits


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shards_together_find_the_alerts_of_one_engine_even_for_a_misaligned_chain(seed):
    hits = _denied_bursts(seed)
    for group in ("user.name", "source.ip, user.name"):
        text = CHAIN.replace("GROUP", group)
        one = _alert_ids(text, hits, 1)
        assert len(one) >= 5  # bursts of bursts
        assert _alert_ids(text, hits, 4) == one


def test_without_the_pin_a_misaligned_chain_would_split(monkeypatch):
    # The check above can fail: filing the chain by group key loses parents.
    from correlator.correlation import routing as routing_module

    hits = _denied_bursts(1)
    text = CHAIN.replace("GROUP", "user.name")
    one = _alert_ids(text, hits, 1)
    monkeypatch.setattr(routing_module, "pinned_rules", lambda rules: frozenset())
    assert _alert_ids(text, hits, 4) != one


@pytest.mark.integration
@pytest.mark.slow
def test_a_scaled_out_member_killed_at_random_moments_loses_and_repeats_nothing(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    workload = make_workload(30_000, seed=11)
    group = f"{kafka_settings.topic_prefix}-killed"
    internal = correlation_topics(kafka_settings.scale_out_topics(group))
    ensure_topics(kafka_settings)
    ensure_topics(kafka_settings, list(internal), configs=internal)
    produce(kafka_settings, workload)
    n = len(workload.records)
    db, log = tmp_path / "scaled.duckdb", tmp_path / "scaled.log"
    kills = kill_at_random_moments(
        lambda: Correlator(kafka_settings, rules, db, group, log, ("--scale-out",)),
        5,
        random.Random(5),
        most_s=3.0,
        least_s=0.5,
    )
    assert kills >= 3
    for _ in range(4):
        Correlator(kafka_settings, rules, db, group, log, ("--scale-out",)).finish()
        if sum(o for (t, _), o in _offsets(db).items() if ".events." in t) >= n:
            break
    assert Counter(_alerts(db).values()) == workload.expected
