"""The whole path through a real broker: connectors -> Kafka -> correlator -> DuckDB -> Teams."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import pytest
from conftest import ROOT

from zonewatch.app.broker import free_port
from zonewatch.config import KafkaSettings, Settings, load_settings

pytestmark = pytest.mark.integration

FORTI = (
    'date=2026-11-26 time={hms} devname="city-fw01" devid="FG200FTK23004711" tz="+0900" '
    'logid="0000000013" type="traffic" subtype="forward" level="notice" vd="root" '
    'srcip={src} srcport={sport} srcintf="core" srcintfrole="lan" dstip={dst} dstport=445 '
    'dstintf="lgwan" dstintfrole="lan" sessionid={sid} proto=6 action="{action}" policyid=77 '
    'policytype="policy" service="SMB" duration=3 sentbyte=100 rcvdbyte=200'
)


# Fixed rules for the plumbing tests; the shipped pack (rules/) may evolve.
TEST_RULES = ROOT / "tests" / "rules"


def _settings(kafka: KafkaSettings, tmp_path: Path, **correlator: object) -> Settings:
    return load_settings().updated(
        kafka=kafka,
        correlator={
            "rules": [ROOT / "rules"],
            "db_path": tmp_path / "alerts.duckdb",
            "group_id": f"{kafka.topic_prefix}-correlator",
            **correlator,
        },
        connectors={
            "zones_file": ROOT / "rules" / "zones.yaml",
            "checkpoint_dir": tmp_path / "checkpoints",
            "max_past_horizon_days": None,  # recorded days, however old they get
        },
    )


def test_the_demo_finds_violations_in_all_five_sources(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    from zonewatch.app.demo import run_demo

    settings = _settings(KafkaSettings(bootstrap_servers=kafka_bootstrap), tmp_path)
    lines: list[str] = []
    result = run_demo(settings, tmp_path / "demo", echo=lines.append)
    assert result["sources_with_alerts"] == ["firewall", "gateway", "identity", "intune", "vdi"]
    assert len(result["alerts"]) == 22  # tests/test_demo_story.py pins which
    types = {a["type"] for a in result["alerts"]}
    assert {"detection", "event_count", "temporal"} <= types
    assert result["teams_cards"] == len(result["alerts"])
    with duckdb.connect(result["db"], read_only=True) as db:
        stored = db.execute("SELECT count(*) FROM alerts").fetchone()
    assert stored is not None and stored[0] == len(result["alerts"])
    assert any("Direct Traffic From Core Into LGWAN" in line for line in lines)
    # the report for the CISO, and how to open the console on the same store
    report = Path(result["report"]).read_text(encoding="utf-8")
    assert report.count('<tr><td class="nowrap">') == len(result["alerts"])
    assert f"console: zonewatch console --db {result['db']}" in "\n".join(lines)


def test_events_become_alerts_in_duckdb_once_even_when_the_correlator_restarts(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    from connectors.ingest import ingest_file
    from correlator.service import CorrelatorService

    settings = _settings(kafka_settings, tmp_path, rules=[TEST_RULES])
    log = tmp_path / "fw.log"
    rows = [
        FORTI.format(
            hms="11:02:14",
            src="10.10.23.90",
            sport=52311,
            dst="10.200.8.15",
            sid=1,
            action="accept",
        ),
        FORTI.format(
            hms="11:03:00",
            src="10.10.21.34",
            sport=52312,
            dst="10.50.20.17",
            sid=2,
            action="accept",
        ),  # core -> VDI pool: allowed path, no alert
    ]
    log.write_text("\n".join(rows) + "\n")
    assert ingest_file(settings, "firewall", "fortigate", log).produced == 2

    def run_once() -> int:
        with CorrelatorService(settings) as service:
            service.start()
            stats = service.run(until=lambda s: s.consumed >= 2, idle_timeout_s=5)
            return stats.consumed

    assert run_once() == 2
    # A second process with the same store and group resumes after what it
    # stored: nothing is re-read, nothing is duplicated.
    log.write_text(
        FORTI.format(
            hms="11:09:00",
            src="10.10.22.78",
            sport=52999,
            dst="10.200.8.16",
            sid=3,
            action="accept",
        )
        + "\n"
    )
    assert ingest_file(settings, "firewall", "fortigate", log).produced == 1
    assert run_once() == 1
    with duckdb.connect(str(settings.correlator.db_path), read_only=True) as db:
        rows_ = db.execute(
            "SELECT rule_title, zone_crossing, json_extract_string(e.event, '$.source.ip') "
            "FROM alerts a JOIN alert_evidence e ON e.alert_id = a.id ORDER BY a.first_seen"
        ).fetchall()
    assert rows_ == [
        ("Direct Traffic From Core Into LGWAN or My Number Zone", "core->lgwan", "10.10.23.90"),
        ("Direct Traffic From Core Into LGWAN or My Number Zone", "core->lgwan", "10.10.22.78"),
    ]


def test_correlate_serves_metrics_and_queries_and_drains_on_sigterm(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    db = tmp_path / "live.duckdb"
    port = free_port()
    env = dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=kafka_settings.bootstrap_servers or "",
        ZONEWATCH_KAFKA__TOPIC_PREFIX=kafka_settings.topic_prefix,
        ZONEWATCH_CONNECTORS__ZONES_FILE=str(ROOT / "rules" / "zones.yaml"),
        ZONEWATCH_CONNECTORS__CHECKPOINT_DIR=str(tmp_path / "ckpt"),
        ZONEWATCH_CONNECTORS__MAX_PAST_HORIZON_DAYS="off",  # recorded days
    )
    zw = [sys.executable, "-m", "zonewatch"]
    proc = subprocess.Popen(
        [
            *zw,
            "correlate",
            "--rules",
            str(ROOT / "rules"),
            "--db",
            str(db),
            "--metrics-port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        log = tmp_path / "fw.log"
        log.write_text(
            FORTI.format(
                hms="11:02:14",
                src="10.10.23.90",
                sport=1,
                dst="10.200.8.15",
                sid=9,
                action="accept",
            )
            + "\n"
        )
        subprocess.run(
            [*zw, "ingest", "firewall", "--format", "fortigate", "--file", str(log)],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        deadline = time.monotonic() + 60
        found = ""
        while time.monotonic() < deadline and "core->lgwan" not in found:
            q = subprocess.run(
                [
                    *zw,
                    "query",
                    "--db",
                    str(db),
                    "--format",
                    "csv",
                    "SELECT zone_crossing FROM alerts",
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            found = q.stdout
            if "core->lgwan" not in found:
                time.sleep(0.2)
        assert "core->lgwan" in found, q.stderr
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'zonewatch_correlator_events_total{source="firewall"} 1.0' in metrics
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
