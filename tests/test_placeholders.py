"""Rules using ``|expand`` load with the same placeholder settings in every
command: ``match``, ``rules check|test``, ``hunt``, ``correlate`` (through the
real broker) and the console's rule health.

The setting is ``correlator.placeholders_file`` (``ZONEWATCH_CORRELATOR__
PLACEHOLDERS_FILE``); ``--placeholders FILE`` overrides it per command.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from correlator.store import AlertStore, ArchivedEvent
from tests.conftest import cli_env, wait_until
from zonewatch.app.cli import main
from zonewatch.config import KafkaSettings, Settings, load_settings

RULE = """\
title: Administration Workstation Reaches LGWAN Directly
id: 3f1c2a7e-5d1b-4c0e-9a44-7e2d60b1c0a1
name: zw_test_admin_workstation_into_lgwan
status: experimental
description: |
  One of the administration workstations listed in the placeholder
  admin_workstations opened a connection into LGWAN outside VDI.
  管理端末からLGWAN接続系へ直接通信しました。
logsource:
  product: zonewatch
  service: firewall
detection:
  selection:
    source.ip|expand: '%admin_workstations%'
    zone.crossing: core->lgwan
    event.outcome: success
  condition: selection
falsepositives:
  - Maintenance announced to the network team
level: high
tests:
  source: firewall
  match:
    - {event: {dataset: firewall, outcome: success}, source: {ip: 10.10.5.22}, zone: {crossing: core->lgwan}}
  nomatch:
    - {event: {dataset: firewall, outcome: success}, source: {ip: 10.10.23.90}, zone: {crossing: core->lgwan}}
"""  # noqa: E501

PLACEHOLDERS = """\
# the two workstations of the information policy section (情報政策課)
admin_workstations:
  - 10.10.5.21
  - 10.10.5.22
"""

RULE_ID = "3f1c2a7e-5d1b-4c0e-9a44-7e2d60b1c0a1"
SETTING = "ZONEWATCH_CORRELATOR__PLACEHOLDERS_FILE"


def fortigate_event(at: datetime, src: str, outcome: str = "success") -> dict[str, Any]:
    """A FortiGate traffic log as the firewall connector normalizes it."""
    return {
        "@timestamp": at.isoformat().replace("+00:00", "Z"),
        "event": {
            "dataset": "firewall",
            "kind": "event",
            "category": ["network"],
            "action": "accept" if outcome == "success" else "deny",
            "outcome": outcome,
        },
        "source": {"ip": src, "port": 51234},
        "destination": {"ip": "10.200.8.15", "port": 445},
        "network": {"transport": "tcp"},
        "observer": {"vendor": "Fortinet", "product": "FortiGate"},
        "zone": {"source": "core", "destination": "lgwan", "crossing": "core->lgwan"},
    }


AT = datetime(2026, 11, 26, 2, 15, tzinfo=UTC)  # 11:15 JST
EVENTS = [
    fortigate_event(AT, "10.10.5.21"),  # an admin workstation: fires
    fortigate_event(AT + timedelta(seconds=5), "10.10.23.90"),  # a laptop: the rule is not about it
    fortigate_event(AT + timedelta(seconds=9), "10.10.5.22", outcome="failure"),  # denied
]


@pytest.fixture()
def pack(tmp_path: Path) -> tuple[Path, Path]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "admin_workstations.yml").write_text(RULE, encoding="utf-8")
    values = tmp_path / "placeholders.yml"
    values.write_text(PLACEHOLDERS, encoding="utf-8")
    return rules, values


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_match_takes_the_setting_or_the_option(
    pack: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rules, values = pack
    events = tmp_path / "events.ndjson"
    events.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in EVENTS))

    code, out, err = run(["match", "--rules", str(rules), str(events)], capsys)
    assert out == ""
    assert "placeholder %admin_workstations% has no values" in err

    code, out, _ = run(
        ["match", "--rules", str(rules), "--placeholders", str(values), str(events)], capsys
    )
    (alert,) = [orjson.loads(line) for line in out.splitlines()]
    assert code == 0 and alert["rule_id"] == RULE_ID
    assert alert["evidence"][0]["event"]["source"]["ip"] == "10.10.5.21"

    monkeypatch.setenv(SETTING, str(values))
    code, out, _ = run(["match", "--rules", str(rules), str(events)], capsys)
    assert code == 0 and len(out.splitlines()) == 1


def test_rules_check_and_test_take_the_setting(
    pack: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rules, values = pack
    code, _, err = run(["rules", "check", "--no-validate", str(rules)], capsys)
    assert code == 65 and "admin_workstations" in err

    config = tmp_path / "zonewatch.yaml"
    config.write_text(f"correlator:\n  placeholders_file: {values}\n", encoding="utf-8")
    code, out, _ = run(
        ["--config", str(config), "rules", "check", "--no-validate", str(rules)], capsys
    )
    assert code == 0 and "1 detection rule(s)" in out and "0 error(s)" in out
    code, out, _ = run(["--config", str(config), "rules", "test", str(rules)], capsys)
    assert code == 0 and out.startswith("2 passed, 0 failed"), out


def test_a_missing_placeholder_file_is_a_configuration_error(
    pack: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rules, _ = pack
    monkeypatch.setenv(SETTING, str(tmp_path / "gone.yml"))
    code, _, err = run(["rules", "check", "--no-validate", str(rules)], capsys)
    assert code == 78
    assert f"placeholder file {tmp_path / 'gone.yml'}" in err


def test_hunt_takes_the_setting(
    pack: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rules, values = pack
    db = tmp_path / "zonewatch.duckdb"
    topic = "zonewatch.events.firewall"
    with AlertStore(db) as store:
        store.write(
            [],
            events=[
                ArchivedEvent(
                    f"{topic}:0:{n}", topic, 0, n, datetime.fromisoformat(e["@timestamp"]), e
                )
                for n, e in enumerate(EVENTS)
            ],
        )

    code, _, err = run(["hunt", "--rules", str(rules), "--db", str(db)], capsys)
    assert code == 65 and "no usable detection rule" in err and "admin_workstations" in err

    monkeypatch.setenv(SETTING, str(values))
    code, out, _ = run(["hunt", "--rules", str(rules), "--db", str(db)], capsys)
    assert code == 0 and "1 new alerts stored" in out, out
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT rule_id, origin FROM alerts").fetchall() == [(RULE_ID, "hunt")]


def test_the_console_rule_health_takes_the_setting(
    pack: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from console.cli import RuleErrors

    rules, values = pack
    without = RuleErrors(Settings().updated(correlator={"rules": [rules]}))
    monkeypatch.setenv(SETTING, str(values))
    with_values = RuleErrors(load_settings().updated(correlator={"rules": [rules]}))
    wait_until(lambda: without() is not None and with_values() is not None, 60, "rule health")
    assert any("admin_workstations" in e for e in without() or [])
    assert with_values() == []


@pytest.mark.integration
def test_correlate_takes_the_setting_through_the_broker(
    pack: tuple[Path, Path], tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    from zonewatch.kafka import ensure_topics, make_producer

    rules, values = pack
    ensure_topics(kafka_settings)
    now = datetime.now(UTC) - timedelta(seconds=30)
    events = [
        fortigate_event(now, "10.10.5.21"),
        fortigate_event(now + timedelta(seconds=1), "10.10.23.90"),
    ]
    producer = make_producer(kafka_settings)
    for event in events:
        producer.send(
            kafka_settings.events_topic("firewall"),
            key=event["source"]["ip"].encode(),
            value=orjson.dumps(event),
        )
    producer.flush(timeout=30)
    producer.close()

    db = tmp_path / "zonewatch.duckdb"
    log = tmp_path / "correlate.log"
    env = cli_env(
        kafka_settings,
        ZONEWATCH_KAFKA__SESSION_TIMEOUT_MS="6000",
        ZONEWATCH_KAFKA__HEARTBEAT_INTERVAL_MS="1000",
        **{SETTING: str(values)},
    )

    def consumed() -> int:
        with duckdb.connect(str(db), read_only=True) as con:
            row = con.execute(
                "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets"
            ).fetchone()
        return int(row[0]) if row else 0

    # --idle-exit ends a run once it has been idle; a run that stopped before
    # it read both events (an idle moment under load) is followed by another.
    for _ in range(3):
        proc = subprocess.run(
            [sys.executable, "-m", "zonewatch", "correlate", "--rules", str(rules),
             "--db", str(db), "--idle-exit", "3"],
            env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"), timeout=240,
        )  # fmt: skip
        assert proc.returncode == 0, log.read_text()[-3000:]
        if consumed() >= len(events):
            break
    assert consumed() == len(events)
    assert b"rule_not_loaded" not in log.read_bytes()
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT a.rule_id, e.event->>'$.source.ip' FROM alerts a "
            "JOIN alert_evidence e ON e.alert_id = a.id"
        ).fetchall()
    assert rows == [(RULE_ID, "10.10.5.21")]
