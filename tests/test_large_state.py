"""A flood of denies from distinct addresses must not stop detection (issue 20, point 3).

Tens of thousands of denied connections from distinct public addresses into
LGWAN within minutes open a correlation group per address in four shipped
rules. The state snapshot that goes with the resume offsets grows with them;
it once went to DuckDB as one blob, which needs several times its size in
DuckDB's buffer pool: above ``correlator.store_memory_limit`` every
checkpoint failed, the correlator exited 3, and every restart replayed the
flood into the same failure, with no alert of any kind. The flood here is
scaled to a store limit of 32MB instead of the default 512MB.

Through the real path: FortiGate lines parsed and produced by the connector,
the embedded broker, the shipped rules, a DuckDB file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import httpx
import pytest
from conftest import ROOT
from structlog.testing import capture_logs
from test_pipeline_integration import _settings
from test_reload_rules import _await

from zonewatch.config import KafkaSettings, Settings

pytestmark = pytest.mark.integration

JST = ZoneInfo("Asia/Tokyo")
FORTI = (
    'date={date} time={hms} devname="city-fw01" devid="FG200FTK23004711" tz="+0900" '
    'logid="0000000013" type="traffic" subtype="forward" level="notice" vd="root" '
    'srcip={src} srcport={sport} srcintf="wan1" srcintfrole="wan" dstip={dst} '
    'dstport={dport} dstintf="lgwan" dstintfrole="lan" sessionid={sid} proto=6 '
    'action="{action}" policyid={policy} policytype="policy" service="{service}" '
    "duration=0 sentbyte=0 rcvdbyte=0"
)
# Public sources outside the zone map's own ranges (default zone: internet),
# one address each, as a botnet sweep of the city's LGWAN gateway looks.
SWEEP = ipaddress.ip_network("100.64.0.0/10")
LGWAN_HOST = "10.200.5.10"
ATTACKER = "198.51.100.77"
CORE_HOST = "10.10.23.90"
LIMIT = "32MB"
REPEATED = "Repeated Denied Cross-Zone Connections From One Host"
DIRECT = "Direct Traffic From Core Into LGWAN"


def line(when: datetime, **fields: object) -> str:
    local = when.astimezone(JST)
    return FORTI.format(date=local.date().isoformat(), hms=local.strftime("%H:%M:%S"), **fields)


def flood_lines(n: int, end: datetime, first: int = 0) -> list[str]:
    """``n`` denies from ``n`` distinct addresses over the minute before
    ``end``. Stamped a few minutes before the wall clock: their windows stay
    open (for 5 to 15 minutes) while the correlator runs, and the wall clock
    is past the allowed lateness (60 s), so nothing waits for more input."""
    return [
        line(
            end - timedelta(seconds=60 * (n - i) / n),
            src=SWEEP[first + i + 1],
            sport=40000 + i % 20000,
            dst=LGWAN_HOST,
            dport=22,
            sid=100000 + first + i,
            action="deny",
            policy=0,
            service="SSH",
        )
        for i in range(n)
    ]


def attack_lines(at: datetime, step_s: float = 5) -> list[str]:
    """What an analyst must still hear of: one address denied six times on
    different ports, ``step_s`` apart (repeated denies, a correlation), then
    a core laptop let straight into LGWAN (a single-event alert)."""
    denies = [
        line(
            at + timedelta(seconds=step_s * k),
            src=ATTACKER,
            sport=51000 + k,
            dst=LGWAN_HOST,
            dport=(22, 23, 135, 139, 445, 3389)[k],
            sid=900000 + k,
            action="deny",
            policy=0,
            service="TCP",
        )
        for k in range(6)
    ]
    allowed = line(
        at + timedelta(seconds=6 * step_s),
        src=CORE_HOST,
        sport=52311,
        dst="10.200.8.15",
        dport=445,
        sid=900100,
        action="accept",
        policy=77,
        service="SMB",
    )
    return [*denies, allowed]


def ingest(settings: Settings, path: Path, lines: list[str]) -> None:
    from connectors.ingest import ingest_file

    path.write_text("\n".join(lines) + "\n")
    assert ingest_file(settings, "firewall", "fortigate", path).produced == len(lines)


def make_settings(kafka: KafkaSettings, tmp_path: Path, **correlator: object) -> Settings:
    """The shipped rules, a store at ``LIMIT`` unless said otherwise."""
    return _settings(kafka, tmp_path, **{"store_memory_limit": LIMIT, **correlator})


def correlate(kafka: KafkaSettings, db: Path, log: Path) -> int:
    """``zonewatch correlate`` with the shipped rules until idle; its exit code."""
    env = dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers or "",
        ZONEWATCH_KAFKA__TOPIC_PREFIX=kafka.topic_prefix,
        ZONEWATCH_KAFKA__PARTITIONS=str(kafka.partitions),
        ZONEWATCH_KAFKA__SESSION_TIMEOUT_MS="2000",
        ZONEWATCH_KAFKA__HEARTBEAT_INTERVAL_MS="500",
        ZONEWATCH_CORRELATOR__STORE_MEMORY_LIMIT=LIMIT,
    )
    with log.open("ab") as err:
        proc = subprocess.run(
            [
                *(sys.executable, "-m", "zonewatch", "correlate"),
                *("--rules", str(ROOT / "rules"), "--db", str(db)),
                *("--group-id", f"{kafka.topic_prefix}-correlator", "--idle-exit", "3"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            timeout=240,
        )
    return proc.returncode


def stored_alerts(db: Path) -> list[tuple[str, str | None]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT rule_title, json_extract_string(group_values, '$.\"source.ip\"') FROM alerts"
        ).fetchall()


def state_bytes(db: Path) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute(
            "SELECT coalesce(sum(octet_length(value)), 0) FROM state_chunks "
            "WHERE key = 'correlation'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_flood_of_distinct_sources_is_checkpointed_and_restored(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    n = 30_000  # a snapshot of ~10 MB: as one blob, more than a 32MB store could write
    now = datetime.now(JST)
    lines = flood_lines(n, now - timedelta(seconds=150))
    lines += attack_lines(now - timedelta(seconds=145))
    ingest(make_settings(kafka_settings, tmp_path), tmp_path / "fw.log", lines)

    db = tmp_path / "alerts.duckdb"
    log = tmp_path / "correlate.log"
    assert correlate(kafka_settings, db, log) == 0, log.read_text()[-3000:]
    alerts = stored_alerts(db)
    assert (REPEATED, ATTACKER) in alerts
    assert any(DIRECT in title for title, _ in alerts)
    with duckdb.connect(str(db), read_only=True) as con:
        (archived,) = con.execute("SELECT count(*) FROM events").fetchone()  # type: ignore[misc]
    assert archived == len(lines)
    first = state_bytes(db)
    assert first > 4 << 20  # the flood's groups, stored

    # A restart restores that state (read back a few megabytes at a time)
    # and stores it again at its own checkpoint.
    assert correlate(kafka_settings, db, log) == 0, log.read_text()[-3000:]
    assert "correlation_state_discarded" not in log.read_text()
    assert state_bytes(db) > first // 2
    assert sorted(stored_alerts(db)) == sorted(alerts)


def _evicted(metrics: str) -> float:
    found = re.findall(r"^zonewatch_correlation_state_evicted_total\{[^}]*\} (\S+)$", metrics, re.M)
    return sum(float(v) for v in found)


@pytest.mark.usefixtures("unlocked_store_configuration")
def test_a_checkpoint_the_store_has_no_memory_for_evicts_state_and_detection_goes_on(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    from correlator.service import CorrelatorService

    # The default limit (512MB): state rows of ~30 KiB, which DuckDB pins
    # 2048 at a time when it commits them. A short lateness, so the attack
    # below is applied within seconds of arriving.
    settings = make_settings(
        kafka_settings,
        tmp_path,
        store_memory_limit="512MB",
        allowed_lateness_s=2,
        metrics_port=0,
    )
    now = datetime.now(JST)
    flood = flood_lines(16_000, now - timedelta(seconds=5))
    ingest(settings, tmp_path / "flood.log", flood)
    with capture_logs() as logs, CorrelatorService(settings) as service:
        service.start()
        store = service.store
        runner = threading.Thread(target=service.run)
        runner.start()

        def warnings() -> str:
            return str((titles_of(store), [e for e in logs if e["log_level"] != "info"][-6:]))

        try:
            # Four rules group the denies by address (the engine's gauges are
            # set at each checkpoint stored).
            _await(
                "the flood checkpointed",
                lambda: (
                    archived_of(store) == len(flood)
                    and engine_gauge(service, "groups") >= 4 * 15_000
                ),
            )
            groups = engine_gauge(service, "groups")
            # DuckDB's buffer pool runs short (other work holds most of it; the
            # limit is global to the database instance): a few alerts and
            # archived events still fit, the state's rows do not.
            squeeze(store, "8MB")
            attack = attack_lines(datetime.now(JST), step_s=0.5)
            ingest(settings, tmp_path / "attack.log", attack)
            _await(
                "the state evicted",
                lambda: any(e["event"] == "correlation_state_evicted" for e in logs),
                diagnose=warnings,
            )
            # Detection goes on: the alerts arrive while no checkpoint can.
            _await(
                "the alerts",
                lambda: (
                    REPEATED in (titles := titles_of(store)) and any(DIRECT in t for t in titles)
                ),
                diagnose=warnings,
            )
            scraped = httpx.get(f"{service.metrics.url}/metrics").text
            assert _evicted(scraped) >= groups // 2
            assert re.search(
                r"^zonewatch_correlator_checkpoints_not_stored_total [1-9]", scraped, re.M
            )
            evicted = next(e for e in logs if e["event"] == "correlation_state_evicted")
            assert evicted["log_level"] == "warning"
            assert evicted["evicted"] >= groups // 2 and evicted["groups_left"] > 0
            assert set(evicted["evicted_by_rule"]) <= {
                str(c.id) for c in service.ruleset.correlations
            }
            # Memory back: the next checkpoint stores the smaller state with
            # offsets covering everything read.
            store.cursor().execute("SET memory_limit = '512MB'")
            _await(
                "a checkpoint",
                lambda: (
                    archived_of(store) == len(flood) + len(attack)
                    and offsets_of(store) >= len(flood) + len(attack)
                ),
                diagnose=warnings,
            )
            assert state_bytes_of(store) > 0
            assert runner.is_alive()
        finally:
            assert service.loop is not None
            service.loop.stop()
            runner.join(60)
        assert not runner.is_alive()
        assert service.loop.stats.new_alerts >= 2
        stored = titles_of(store), archived_of(store)
    # A restart resumes from the last checkpoint stored: nothing is stored twice.
    with capture_logs() as logs, CorrelatorService(settings) as service:
        service.start()
        service.run(idle_timeout_s=3)
        assert (titles_of(service.store), archived_of(service.store)) == stored
        _, rows = service.store.query("SELECT count(*), count(DISTINCT id) FROM alerts")
        assert rows[0][0] == rows[0][1]
    assert not [e for e in logs if e["event"] == "correlation_state_discarded"]


def squeeze(store: object, limit: str) -> None:
    """Set DuckDB's memory limit once what it holds is in the file (a
    checkpoint; retried while the correlator's writer is in a transaction)."""
    cursor = store.cursor()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while True:
        try:
            cursor.execute("CHECKPOINT")
            break
        except duckdb.TransactionException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    cursor.execute(f"SET memory_limit = '{limit}'")


def state_bytes_of(store: object) -> int:
    _, rows = store.query(  # type: ignore[attr-defined]
        "SELECT coalesce(sum(octet_length(value)), 0) FROM state_chunks WHERE key = 'correlation'"
    )
    return int(rows[0][0])


def titles_of(store: object) -> set[str]:
    _, rows = store.query("SELECT DISTINCT rule_title FROM alerts")  # type: ignore[attr-defined]
    return {r[0] for r in rows}


def archived_of(store: object) -> int:
    _, rows = store.query("SELECT count(*) FROM events")  # type: ignore[attr-defined]
    return int(rows[0][0])


def engine_gauge(service: object, name: str) -> float:
    url = service.metrics.url  # type: ignore[attr-defined]
    found = re.search(
        rf'^zonewatch_correlation_engine{{name="{name}"}} (\S+)$',
        httpx.get(f"{url}/metrics").text,
        re.M,
    )
    return float(found.group(1)) if found else 0.0


def offsets_of(store: object) -> int:
    _, rows = store.query(  # type: ignore[attr-defined]
        "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets"
    )
    return int(rows[0][0])
