"""A throttled detection rule through the embedded broker: one alert per host
and window, the same after ``kill -9`` at random moments as without, and the
same in ``zonewatch match`` and ``zonewatch hunt`` as in the stream.

Reuses the kill -9 harness of ``test_crash_recovery.py``.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from tests.test_crash_recovery import (
    Correlator,
    Workload,
    kill_at_random_moments,
    produce,
    run_to_end,
)
from zonewatch.config import KafkaSettings

pytestmark = pytest.mark.integration

SEED = 20261206
BASE = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
WINDOW_S = 600.0
RULE_ID = "7d1f0c2a-6b3e-4c5d-9e8f-a0b1c2d3e4f5"

RULES = f"""
title: SMB From Core Into LGWAN, Once Per Host
id: {RULE_ID}
status: test
level: critical
suppress: {{window: 10m, fields: [source.ip]}}
logsource: {{product: zonewatch, service: firewall}}
detection:
  selection:
    zone.crossing: core->lgwan
    event.outcome: success
  condition: selection
"""


# The same connections throttled per crossing: one entity whose events are
# spread over every input partition, so runs and replays read them in
# different orders. Whatever the order, no two alerts fall within a window
# and every connection is within a window of one.
ACROSS_ID = "7d1f0c2a-6b3e-4c5d-9e8f-a0b1c2d3e4f6"
ACROSS = f"""
title: SMB From Core Into LGWAN, Once Per Crossing
id: {ACROSS_ID}
status: test
level: high
suppress: {{window: 10m, fields: [zone.crossing]}}
logsource: {{product: zonewatch, service: firewall}}
detection:
  selection:
    zone.crossing: core->lgwan
    event.outcome: success
  condition: selection
"""


def _fw(t: datetime, src: str, crossing: str) -> dict[str, Any]:
    return {
        "@timestamp": t.isoformat().replace("+00:00", "Z"),
        "event": {"dataset": "firewall", "kind": "event", "outcome": "success"},
        "source": {"ip": src, "port": 51544},
        "destination": {"ip": "10.20.1.15", "port": 445},
        "network": {"transport": "tcp"},
        "zone": {"crossing": crossing},
    }


def make_workload(n: int, hosts: int, seed: int = SEED) -> tuple[Workload, list[tuple[str, float]]]:
    """About ``n`` firewall events over two hours; ``hosts`` laptops repeat
    forbidden SMB into LGWAN in bursts, keyed by source address as the
    firewall connector keys them. Returns the workload (``expected``: alerts
    per host an exact throttle raises) and the alerts' (host, time)."""
    rng = random.Random(seed)
    timed: list[tuple[float, int, str, dict[str, Any]]] = []
    span = 7200.0
    for h in range(hosts):
        ip = f"10.10.{h // 200}.{h % 200 + 10}"
        t = rng.uniform(0, 1800)
        while t < span:
            # Bursts a few seconds apart, pauses up to a quarter of an hour.
            t = round(t + rng.choice((rng.uniform(0.5, 20), rng.uniform(20, 900))), 3)
            if t < span:
                timed.append(
                    (t, len(timed), ip, _fw(BASE + timedelta(seconds=t), ip, "core->lgwan"))
                )
    while len(timed) < n:
        t = round(rng.uniform(0, span), 3)
        ip = f"10.10.99.{rng.randrange(250)}"
        timed.append((t, len(timed), ip, _fw(BASE + timedelta(seconds=t), ip, "core->vdi")))
    timed.sort(key=lambda r: (r[0], r[1]))
    expected: Counter[str] = Counter()
    alerts: list[tuple[str, float]] = []
    last: dict[str, float] = {}
    for t, _, ip, event in timed:
        if event["zone"]["crossing"] != "core->lgwan":
            continue
        if ip not in last or t - last[ip] >= WINDOW_S:
            last[ip] = t
            expected[ip] += 1
            alerts.append((ip, t))
    records = [("firewall", ip, orjson.dumps(e)) for _, _, ip, e in timed]
    return Workload(records, expected), alerts


def _stored(db: Path, rule_id: str = RULE_ID) -> list[tuple[str, str, str, float]]:
    """(id, origin, key, event time) of every stored alert of ``rule_id``."""
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            """SELECT id, origin,
                      coalesce(group_values->>'$."source.ip"', group_values->>'$."zone.crossing"'),
                      epoch(first_seen)
               FROM alerts WHERE rule_id = ? ORDER BY first_seen, id""",
            [rule_id],
        ).fetchall()
    return [(i, o, h, float(t)) for i, o, h, t in rows]


def _one_per_window(alerts: list[tuple[str, str, str, float]]) -> None:
    by_host: dict[str, list[float]] = defaultdict(list)
    for _, _, host, t in alerts:
        by_host[host].append(t)
    for host, times in by_host.items():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(g >= WINDOW_S - 1e-3 for g in gaps), (host, times)


def _every_connection_near_one(
    alerts: list[tuple[str, str, str, float]], times: list[float]
) -> None:
    """Every matching event is within a window of an alert (nothing dropped
    that no stored alert stands for)."""
    import bisect

    stored = sorted(t for _, _, _, t in alerts)
    for t in times:
        i = bisect.bisect_left(stored, t)
        near = [abs(stored[j] - t) for j in (i - 1, i) if 0 <= j < len(stored)]
        assert near and min(near) < WINDOW_S + 1e-3, t


def test_a_throttled_rule_alerts_once_per_host_and_window_across_kill_9(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    both = tmp_path / "both.yml"
    both.write_text(RULES + "---" + ACROSS)
    workload, planted = make_workload(40_000, hosts=60)
    produce(kafka_settings, workload)
    n = len(workload.records)
    prefix = kafka_settings.topic_prefix

    clean_db = tmp_path / "clean.duckdb"
    run_to_end(kafka_settings, both, clean_db, f"{prefix}-clean", tmp_path / "clean.log", n)
    clean = _stored(clean_db)
    base = BASE.timestamp()
    assert Counter(h for _, _, h, _ in clean) == workload.expected
    assert sorted((h, round(t - base, 3)) for _, _, h, t in clean) == sorted(
        (h, round(t, 3)) for h, t in planted
    )
    assert sum(workload.expected.values()) < 0.3 * sum(
        1 for r in workload.records if b"core->lgwan" in r[2]
    )

    db, log = tmp_path / "crashed.duckdb", tmp_path / "crashed.log"
    group = f"{prefix}-crashed"
    kills = kill_at_random_moments(
        lambda: Correlator(kafka_settings, both, db, group, log),
        6,
        random.Random(SEED),
        most_s=2.0,
    )
    run_to_end(kafka_settings, both, db, group, log, n)
    crashed = _stored(db)
    _one_per_window(crashed)
    assert kills >= 4
    assert [a[0] for a in crashed] == [a[0] for a in clean]
    matching = [orjson.loads(v) for _, _, v in workload.records if b"core->lgwan" in v]
    times = [datetime.fromisoformat(e["@timestamp"]).timestamp() for e in matching]
    for db_path in (clean_db, db):
        across = _stored(db_path, ACROSS_ID)
        _one_per_window(across)
        _every_connection_near_one(across, times)
        assert len(across) >= (max(times) - min(times)) / (2 * WINDOW_S)
    # The runs after the first rebuilt the throttle from the stored alerts.
    assert b'"event": "detection_throttle_restored"' in log.read_bytes()

    # `zonewatch hunt` over the archive finds exactly the stream's alerts
    # (same ids: it stores nothing new).
    from correlator.hunt import run_hunt

    hunted = run_hunt(clean_db, [rules])
    assert (hunted.alerts, hunted.new_alerts) == (len(clean), 0)

    # `zonewatch match` over the same events in the same order alerts on the
    # same hosts at the same times.
    from correlator.detection import load_rules, run_offline

    events = [(i, orjson.loads(value)) for i, (_, _, value) in enumerate(workload.records, 1)]
    matched = list(run_offline(events, load_rules([rules])))
    assert sorted((a.group["source.ip"], a.first_seen.timestamp()) for a in matched) == sorted(
        (h, t) for _, _, h, t in clean
    )
