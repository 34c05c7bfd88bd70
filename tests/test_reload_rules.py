"""SIGHUP reloads the rules of a running ``zonewatch correlate``: an unchanged
correlation keeps its open window, a removed one drops its state, a new one
starts."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import orjson
import pytest

from tests.conftest import cli_env
from zonewatch.config import KafkaSettings

pytestmark = pytest.mark.integration

DETECTIONS = """
title: Reload test denied crossing
id: 5b0f3c1e-1111-4a7e-8d2a-000000000001
name: reload_fw_denied
logsource: {product: zonewatch, service: firewall}
detection:
  selection: {zone.crossing: core->lgwan, event.outcome: failure}
  condition: selection
level: low
---
title: Reload test non-compliant device
id: 5b0f3c1e-1111-4a7e-8d2a-000000000002
name: reload_noncompliant
logsource: {product: zonewatch, service: intune}
detection:
  selection: {intune.compliance: noncompliant}
  condition: selection
level: low
---
title: Reload test My Number session
id: 5b0f3c1e-1111-4a7e-8d2a-000000000003
name: reload_vdi_mynumber
logsource: {product: zonewatch, service: vdi}
detection:
  selection: {event.action: session-start, vdi.pool: mynumber-pool}
  condition: selection
level: low
"""

KEPT = """
title: Reload test three denied crossings
id: 5b0f3c1e-1111-4a7e-8d2a-0000000000a1
correlation:
  type: event_count
  rules: [reload_fw_denied]
  group-by: [source.ip]
  timespan: 10m
  condition: {gte: 3}
level: high
"""

REMOVED = """
title: Reload test non-compliant then My Number
id: 5b0f3c1e-1111-4a7e-8d2a-0000000000a2
correlation:
  type: temporal
  rules: [reload_noncompliant, reload_vdi_mynumber]
  group-by: [user]
  aliases:
    user: {reload_noncompliant: intune.upn, reload_vdi_mynumber: user.name}
  timespan: 10m
level: high
"""

ADDED = """
title: Reload test any My Number session
id: 5b0f3c1e-1111-4a7e-8d2a-0000000000a3
correlation:
  type: event_count
  rules: [reload_vdi_mynumber]
  group-by: [user.name]
  timespan: 10m
  condition: {gte: 1}
level: medium
"""

USER = "sato.k@city.example.jp"


def _ago(seconds: float) -> str:
    # Live timestamps: once every input is caught up and quiet the wall clock
    # moves the watermark, so a live stream's events must be near now.
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()


def _deny(ts: str) -> dict[str, object]:
    return {
        "@timestamp": ts,
        "event": {"outcome": "failure"},
        "source": {"ip": "10.10.23.90"},
        "zone": {"crossing": "core->lgwan"},
        "user": {"name": USER},
    }


def _produce(kafka: KafkaSettings, records: list[tuple[str, dict[str, object]]]) -> None:
    from zonewatch.kafka import make_producer

    producer = make_producer(kafka)
    for source, event in records:
        producer.send(kafka.events_topic(source), key=USER.encode(), value=orjson.dumps(event))
    producer.flush(timeout=30)
    producer.close()


def _await(
    what: str,
    check: Callable[[], bool],
    timeout_s: float = 60,
    diagnose: Callable[[], str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    detail = f"\n{diagnose()[-4000:]}" if diagnose else ""
    raise AssertionError(f"timed out waiting for {what}{detail}")


def test_sighup_keeps_unchanged_windows_drops_removed_rules_and_starts_new_ones(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    from zonewatch.kafka import ensure_topics

    ensure_topics(kafka_settings)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "detections.yml").write_text(DETECTIONS)
    (rules / "kept.yml").write_text(KEPT)
    (rules / "removed.yml").write_text(REMOVED)
    db = tmp_path / "alerts.duckdb"
    log = tmp_path / "correlate.log"
    env = cli_env(
        kafka_settings,
        # Events here are stamped "now"; a lateness of a few seconds lets them
        # through the wall-clock watermark of an idle stream, as in production.
        ZONEWATCH_CORRELATOR__ALLOWED_LATENESS_S="5",
    )
    zw = [sys.executable, "-m", "zonewatch"]

    def query(sql: str) -> str:
        out = subprocess.run(
            [*zw, "query", "--db", str(db), "--format", "csv", sql],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout

    proc = subprocess.Popen(
        [*zw, "correlate", "--rules", str(rules), "--db", str(db)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    try:
        _produce(
            kafka_settings,
            [
                ("firewall", _deny(_ago(30))),
                (
                    "intune",
                    {
                        "@timestamp": _ago(25),
                        "intune": {"compliance": "noncompliant", "upn": USER},
                    },
                ),
                ("firewall", _deny(_ago(20))),
            ],
        )
        _await("3 archived events", lambda: "\n3" in query("SELECT count(*) FROM events"))
        # The events must have reached the old rules' windows before the
        # reload, not sit in the event-time merge buffer (partitions that have
        # not answered yet hold it back for a few seconds after assignment):
        # wait for a checkpoint that shows the buffer empty.
        _await(
            "the merge buffer to drain",
            lambda: (
                "\n1"
                in query(
                    "SELECT count(*) FROM state_chunks "
                    "WHERE key = 'correlation-input' AND value = '[]'::BLOB"
                )
            ),
            diagnose=lambda: query("SELECT key, length(value) FROM state") + log.read_text(),
        )

        (rules / "removed.yml").unlink()
        (rules / "added.yml").write_text(ADDED)
        proc.send_signal(signal.SIGHUP)
        _await("the reload", lambda: b"rules_reloaded" in log.read_bytes())

        _produce(
            kafka_settings,
            [
                ("firewall", _deny(_ago(0))),
                (
                    "vdi",
                    {
                        "@timestamp": _ago(0),
                        "event": {"action": "session-start"},
                        "user": {"name": USER},
                        "vdi": {"pool": "mynumber-pool"},
                    },
                ),
            ],
        )
        _await(
            "2 alerts",
            lambda: "\n2" in query("SELECT count(*) FROM alerts"),
            diagnose=lambda: query("SELECT rule_title, type FROM alerts") + log.read_text(),
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    with duckdb.connect(str(db), read_only=True) as con:
        alerts = con.execute(
            "SELECT a.rule_title, count(e.alert_id) FROM alerts a "
            "JOIN alert_evidence e ON e.alert_id = a.id GROUP BY 1 ORDER BY 1"
        ).fetchall()
    # Three denies, two of them before the reload: the window survived it.
    # The temporal rule would have fired on the session; it was removed.
    assert alerts == [
        ("Reload test any My Number session", 1),
        ("Reload test three denied crossings", 3),
    ]
    reload_line = next(line for line in log.read_text().splitlines() if "rules_reloaded" in line)
    assert "5b0f3c1e-1111-4a7e-8d2a-0000000000a2" in reload_line.split("correlations_dropped")[1]


WATCHED_BEFORE = """
title: Watch test denied crossing
id: 5b0f3c1e-2222-4a7e-8d2a-000000000001
logsource: {product: zonewatch, service: firewall}
detection:
  selection: {zone.crossing: core->lgwan, event.outcome: failure}
  condition: selection
level: low
"""

# The same file after an edit: a second rule, on the VDI session.
WATCHED_AFTER = (
    WATCHED_BEFORE
    + """---
title: Watch test My Number session
id: 5b0f3c1e-2222-4a7e-8d2a-000000000002
logsource: {product: zonewatch, service: vdi}
detection:
  selection: {event.action: session-start, vdi.pool: mynumber-pool}
  condition: selection
level: medium
"""
)

# A broken edit of the same file: the YAML no longer parses.
WATCHED_BROKEN = WATCHED_AFTER.replace(
    "condition: selection\nlevel: medium", "condition: [selection"
)


def _session(ts: str) -> dict[str, object]:
    return {
        "@timestamp": ts,
        "event": {"action": "session-start"},
        "user": {"name": USER},
        "vdi": {"pool": "mynumber-pool"},
    }


def test_a_rule_edit_fires_without_a_signal_and_a_broken_edit_keeps_the_running_rules(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    import httpx

    from zonewatch.app.broker import free_port
    from zonewatch.kafka import ensure_topics

    ensure_topics(kafka_settings)
    rules = tmp_path / "rules"
    rules.mkdir()
    rule_file = rules / "watched.yml"
    rule_file.write_text(WATCHED_BEFORE)
    db = tmp_path / "alerts.duckdb"
    log = tmp_path / "correlate.log"
    port = free_port()
    env = cli_env(kafka_settings, ZONEWATCH_CORRELATOR__ALLOWED_LATENESS_S="5")
    zw = [sys.executable, "-m", "zonewatch"]

    def titles() -> list[str]:
        out = subprocess.run(
            [*zw, "query", "--db", str(db), "--format", "csv",
             "SELECT rule_title FROM alerts ORDER BY rule_title"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return out.stdout.splitlines()[1:]

    def failures() -> float:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith("zonewatch_rules_reload_failures_total "):
                return float(line.split()[1])
        return -1.0

    proc = subprocess.Popen(
        [*zw, "correlate", "--rules", str(rules), "--db", str(db), "--metrics-port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    try:
        _await("the watcher", lambda: b"rules_watching" in log.read_bytes(), diagnose=log.read_text)
        _await("the consumer's assignment", lambda: b"partitions_assigned" in log.read_bytes())

        rule_file.write_text(WATCHED_AFTER)
        _await("the reload", lambda: b"rules_reloaded" in log.read_bytes(), 20, log.read_text)
        _produce(kafka_settings, [("vdi", _session(_ago(0)))])
        _await(
            "the new rule's alert",
            lambda: titles() == ["Watch test My Number session"],
            30,
            diagnose=lambda: "\n".join(titles()) + log.read_text(),
        )
        assert failures() == 0

        rule_file.write_text(WATCHED_BROKEN)
        _await("the refusal", lambda: failures() == 1, 20, log.read_text)
        # Both rules of the edit before still run: neither was dropped.
        _produce(kafka_settings, [("firewall", _deny(_ago(0))), ("vdi", _session(_ago(0)))])
        _await(
            "alerts of both running rules",
            lambda: (
                titles()
                == [
                    "Watch test My Number session",
                    "Watch test My Number session",
                    "Watch test denied crossing",
                ]
            ),
            30,
            diagnose=lambda: "\n".join(titles()) + log.read_text(),
        )
        refused = [line for line in log.read_text().splitlines() if "rules_reload_refused" in line]
        assert len(refused) == 1 and "watched.yml" in refused[0]
        assert log.read_text().count("rules_reloaded") == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
