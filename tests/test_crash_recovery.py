"""kill -9 the correlator at random moments: the alert table must still equal
an uninterrupted run's (same ids, same count), through the embedded broker.

The input is a day-like stream over four topics with planted correlations of
several types (an event_count, a temporal across the Intune and VDI topics
with aliases, a value_count) and detections, hidden in noise that matches
nothing. "Done" is decided by the resume offsets the store holds (what was
produced per partition), never by the broker's end offsets.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from zonewatch.config import KafkaSettings

pytestmark = pytest.mark.integration

SEED = 20261127
BASE = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)

RULES = """
title: Crash test denied crossing
id: 0c1e6a52-7d7e-4f0b-9f33-000000000001
name: crash_fw_denied
logsource: {product: zonewatch, service: firewall}
detection:
  selection:
    zone.crossing: core->lgwan
    event.outcome: failure
  condition: selection
level: low
---
title: Crash test repeated denied crossings
id: 0c1e6a52-7d7e-4f0b-9f33-000000000002
correlation:
  type: event_count
  rules: [crash_fw_denied]
  group-by: [source.ip]
  timespan: 5m
  condition: {gte: 5}
level: high
---
title: Crash test non-compliant device
id: 0c1e6a52-7d7e-4f0b-9f33-000000000003
name: crash_noncompliant
logsource: {product: zonewatch, service: intune}
detection:
  selection:
    intune.compliance: noncompliant
  condition: selection
level: low
---
title: Crash test VDI session into the My Number pool
id: 0c1e6a52-7d7e-4f0b-9f33-000000000004
name: crash_vdi_mynumber
logsource: {product: zonewatch, service: vdi}
detection:
  selection:
    event.action: session-start
    vdi.pool: mynumber-pool
  condition: selection
level: low
---
title: Crash test non-compliant device then My Number session
id: 0c1e6a52-7d7e-4f0b-9f33-000000000005
correlation:
  type: temporal
  rules: [crash_noncompliant, crash_vdi_mynumber]
  group-by: [user]
  aliases:
    user:
      crash_noncompliant: intune.upn
      crash_vdi_mynumber: user.name
  timespan: 10m
level: high
---
title: Crash test blocked download
id: 0c1e6a52-7d7e-4f0b-9f33-000000000006
name: crash_gw_blocked
logsource: {product: zonewatch, service: gateway}
detection:
  selection:
    event.action: blocked
  condition: selection
level: low
---
title: Crash test many blocked domains
id: 0c1e6a52-7d7e-4f0b-9f33-000000000007
correlation:
  type: value_count
  rules: [crash_gw_blocked]
  group-by: [user.name]
  timespan: 2m
  condition: {field: url.domain, gte: 3}
level: medium
---
title: Crash test allowed traffic into My Number
id: 0c1e6a52-7d7e-4f0b-9f33-000000000008
logsource: {product: zonewatch, service: firewall}
detection:
  selection:
    zone.crossing: core->mynumber
    event.outcome: success
  condition: selection
level: high
"""

EVENT_COUNT = "0c1e6a52-7d7e-4f0b-9f33-000000000002"
TEMPORAL = "0c1e6a52-7d7e-4f0b-9f33-000000000005"
VALUE_COUNT = "0c1e6a52-7d7e-4f0b-9f33-000000000007"
DETECTION = "0c1e6a52-7d7e-4f0b-9f33-000000000008"


@dataclass
class Workload:
    records: list[tuple[str, str, bytes]]  # (source, key, value), in produce order
    expected: Counter[str]  # alerts per rule id an exact run must find


def _ts(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _fw(t: datetime, user: str, src: str, dst: str, crossing: str, outcome: str) -> dict[str, Any]:
    return {
        "@timestamp": _ts(t),
        "event": {"kind": "event", "category": ["network"], "outcome": outcome},
        "source": {"ip": src, "port": 50000},
        "destination": {"ip": dst, "port": 445},
        "user": {"name": user},
        "zone": {"crossing": crossing},
    }


def make_workload(n: int, seed: int = SEED) -> Workload:
    """About ``n`` events over ``n / 20`` seconds of event time (20 events/s),
    each topic in event-time order, with planted correlations."""
    rng = random.Random(seed)
    span = n / 20.0
    timed: list[tuple[datetime, int, str, str, dict[str, Any]]] = []
    seq = iter(range(10**9))

    def add(t: datetime, source: str, key: str, event: dict[str, Any]) -> None:
        timed.append((t, next(seq), source, key, event))

    def at(offset_s: float) -> datetime:
        return BASE + timedelta(seconds=round(offset_s, 3))

    expected: Counter[str] = Counter()
    planted = max(4, n // 500)
    for i in range(planted):
        # event_count: 5 or 6 denies from one host within 5 minutes (fires
        # once); near misses: 4 denies, or 5 spread over 6 minutes.
        t0 = rng.uniform(0, span - 400)
        ip = f"10.10.{i // 200}.{i % 200 + 10}"
        kind = i % 3
        count = 4 if kind == 1 else 5 + (i % 2)
        step = 90.0 if kind == 2 else rng.uniform(5, 50)
        # Two denies of a firing burst share a timestamp: ties must resolve alike.
        offsets = [0, 1, 2, 3, 4, 5] if kind == 2 else [0, 1, 2, 2, 3, 4]
        for k in range(count):
            when = at(t0 + step * offsets[k])
            add(
                when,
                "firewall",
                f"fwuser{i}",
                _fw(when, f"fwuser{i}", ip, "10.200.8.15", "core->lgwan", "failure"),
            )
        if kind == 0:
            expected[EVENT_COUNT] += 1
        # temporal across topics: non-compliant then a My Number session
        # within 10 minutes (fires); near miss after 11 minutes.
        user = f"tuser{i}@city.example.jp"
        t1 = rng.uniform(0, span - 900)
        gap = 660.0 if i % 4 == 3 else rng.uniform(1, 590)
        when = at(t1)
        add(
            when,
            "intune",
            user,
            {"@timestamp": _ts(when), "intune": {"compliance": "noncompliant", "upn": user}},
        )
        when = at(t1 + gap)
        add(
            when,
            "vdi",
            user,
            {
                "@timestamp": _ts(when),
                "event": {"action": "session-start"},
                "user": {"name": user.upper()},
                "vdi": {"pool": "mynumber-pool"},
            },
        )
        if i % 4 != 3:
            expected[TEMPORAL] += 1
        # value_count: blocked downloads from 3 distinct domains in 2 minutes.
        guser = f"guser{i}"
        t2 = rng.uniform(0, span - 200)
        domains = 3 if i % 2 == 0 else 2
        for k in range(4):
            when = at(t2 + 20 * k)
            add(
                when,
                "gateway",
                guser,
                {
                    "@timestamp": _ts(when),
                    "event": {"action": "blocked"},
                    "user": {"name": guser},
                    "url": {"domain": f"d{k % domains}.example.com"},
                },
            )
        if domains == 3:
            expected[VALUE_COUNT] += 1
        when = at(rng.uniform(0, span))
        add(
            when,
            "firewall",
            f"fwuser{i}",
            _fw(when, f"fwuser{i}", ip, "10.30.1.5", "core->mynumber", "success"),
        )
        expected[DETECTION] += 1
    sources = ("firewall", "gateway", "intune", "vdi")
    while len(timed) < n:
        when = at(rng.uniform(0, span))
        source = sources[rng.randrange(4)]
        user = f"user{rng.randrange(500)}"
        if source == "firewall":
            event = _fw(when, user, "10.10.99.1", "10.50.20.17", "core->vdi", "success")
        elif source == "gateway":
            event = {
                "@timestamp": _ts(when),
                "event": {"action": "allowed"},
                "user": {"name": user},
            }
        elif source == "intune":
            event = {"@timestamp": _ts(when), "intune": {"compliance": "compliant", "upn": user}}
        else:
            event = {
                "@timestamp": _ts(when),
                "event": {"action": "session-start"},
                "user": {"name": user},
                "vdi": {"pool": "core-pool"},
            }
        add(when, source, user, event)
    timed.sort(key=lambda r: (r[0], r[1]))
    return Workload([(s, k, orjson.dumps(e)) for _, _, s, k, e in timed], expected)


def produce(kafka: KafkaSettings, workload: Workload) -> None:
    from zonewatch.kafka import ensure_topics, make_producer

    ensure_topics(kafka)
    producer = make_producer(kafka, linger_ms=20)
    for source, key, value in workload.records:
        producer.send(kafka.events_topic(source), key=key.encode(), value=value)
    producer.flush(timeout=120)
    producer.close()


class Correlator:
    """``zonewatch correlate`` as a child process with its log in a file."""

    def __init__(
        self,
        kafka: KafkaSettings,
        rules: Path,
        db: Path,
        group: str,
        log: Path,
        extra: tuple[str, ...] = (),
    ):
        self.log = log
        self.log_from = log.stat().st_size if log.exists() else 0
        env = dict(
            os.environ,
            KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers or "",
            ZONEWATCH_KAFKA__TOPIC_PREFIX=kafka.topic_prefix,
            ZONEWATCH_KAFKA__PARTITIONS=str(kafka.partitions),
            # Short checkpoints, so kills land between, during and after them.
            ZONEWATCH_CORRELATOR__CHECKPOINT_INTERVAL_S="1",
            # A killed member holds its partitions until its session times
            # out; every restart waits that long (static membership, which
            # would avoid it, is not answered by the embedded broker).
            ZONEWATCH_KAFKA__SESSION_TIMEOUT_MS="2000",
            ZONEWATCH_KAFKA__HEARTBEAT_INTERVAL_MS="500",
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zonewatch",
                "correlate",
                "--rules",
                str(rules),
                "--db",
                str(db),
                "--group-id",
                group,
                "--idle-exit",
                "3",
                *extra,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
        )

    def wait_assigned(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if b"partitions_assigned" in self.log.read_bytes()[self.log_from :]:
                return
            time.sleep(0.05)
        assert self.proc.poll() is None or self.proc.returncode == 0, self.log.read_text()[-3000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def finish(self, timeout_s: float = 240) -> None:
        try:
            code = self.proc.wait(timeout=timeout_s)
        finally:
            self.kill()
        assert code == 0, self.log.read_text()[-3000:]


def kill_at_random_moments(
    start: Callable[[], Correlator],
    times: int,
    rng: random.Random,
    most_s: float,
    least_s: float = 0.0,
) -> int:
    """Start a correlator ``times`` times and ``kill -9`` each a random while
    (``least_s`` to ``most_s``) after it got its partitions; how many were
    still running."""
    kills = 0
    for _ in range(times):
        proc = start()
        proc.wait_assigned()
        time.sleep(rng.uniform(least_s, most_s))
        if proc.proc.poll() is None:
            kills += 1
        proc.kill()
    return kills


def stored(db: Path) -> tuple[dict[str, str], int]:
    """Alerts (id -> rule id) and the sum of stored resume offsets."""
    with duckdb.connect(str(db), read_only=True) as con:
        alerts = dict(con.execute("SELECT id, rule_id FROM alerts").fetchall())
        row = con.execute("SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets").fetchone()
    return alerts, int(row[0]) if row else 0


def run_to_end(
    kafka: KafkaSettings, rules: Path, db: Path, group: str, log: Path, n: int
) -> dict[str, str]:
    # --idle-exit ends a run once it has been idle; a run that stops early
    # (e.g. an idle moment under load) is simply followed by another.
    for _ in range(4):
        Correlator(kafka, rules, db, group, log).finish()
        alerts, done = stored(db)
        if done >= n:
            return alerts
    raise AssertionError(f"the store covers {done} of {n} events after four runs")


def clean_and_killed(
    kafka: KafkaSettings,
    rules: Path,
    tmp_path: Path,
    n: int,
    times: int,
    rng: random.Random,
    most_s: float,
) -> tuple[dict[str, str], dict[str, str], int]:
    """An uninterrupted run over the topics, then runs of another group
    killed ``times`` times at random moments and finished: the alerts of
    each (id -> rule id), and how many runs were still going when killed."""
    prefix = kafka.topic_prefix
    clean = run_to_end(
        kafka, rules, tmp_path / "clean.duckdb", f"{prefix}-clean", tmp_path / "clean.log", n
    )
    db, log = tmp_path / "crashed.duckdb", tmp_path / "crashed.log"
    group = f"{prefix}-crashed"
    kills = kill_at_random_moments(
        lambda: Correlator(kafka, rules, db, group, log), times, rng, most_s
    )
    return clean, run_to_end(kafka, rules, db, group, log, n), kills


@pytest.mark.slow
def test_kill_9_at_random_moments_gives_the_alerts_of_a_clean_run(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    workload = make_workload(100_000)
    produce(kafka_settings, workload)
    clean, crashed, kills = clean_and_killed(
        kafka_settings,
        rules,
        tmp_path,
        len(workload.records),
        12,
        random.Random(SEED),
        most_s=2.5,
    )
    assert Counter(clean.values()) == workload.expected
    assert kills >= 10
    assert len(crashed) == len(clean)
    assert sorted(crashed) == sorted(clean)
