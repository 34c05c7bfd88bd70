"""The rule-health page's sources beyond the store: dead letters per source
from the topic (real broker), the correlator's late and undecodable event
counters (its /metrics), and the load errors of the configured rules."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from console.cli import RuleErrors
from console.sources import HealthSources
from tests.conftest import ROOT
from zonewatch.config import KafkaSettings, Settings, load_settings


def wait_for(condition: Callable[[], object], timeout_s: float = 30) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


@pytest.mark.integration
def test_dead_letters_are_counted_per_source_with_their_last_raw_lines(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    from connectors.ingest import ingest_file

    settings = load_settings().updated(
        kafka=kafka_settings,
        connectors={
            "zones_file": ROOT / "rules" / "zones.yaml",
            "checkpoint_dir": tmp_path / "checkpoints",
        },
    )
    squid = tmp_path / "access.log"
    good = (
        "1795658703.000    120 10.10.21.34 TCP_MISS/200 5120 GET "
        "http://www.city.example.lg.jp/ tanaka.h HIER_DIRECT/203.0.113.20 text/html"
    )
    bad = [f"garbage line {i} that no squid format reads" for i in range(7)]
    squid.write_text("\n".join([good, *bad]) + "\n")
    stats = ingest_file(settings, "gateway", "squid", squid)
    assert stats.dead_lettered == 7
    fw = tmp_path / "fw.log"
    fw.write_text("not a fortigate line\n")
    assert ingest_file(settings, "firewall", "fortigate", fw).dead_lettered == 1

    sources = HealthSources(settings)
    shown = wait_for(
        lambda: (d := sources()["dead_letters"]).get("gateway", {}).get("count") == 7 and d
    )
    assert isinstance(shown, dict)
    assert shown["firewall"]["count"] == 1
    last = [line["raw"] for line in shown["gateway"]["last"]]
    assert last == list(reversed(bad))[:5]  # newest first, five kept
    assert shown["firewall"]["last"][0]["raw"] == "not a fortigate line"


def test_late_and_undecodable_counts_come_from_the_correlators_metrics() -> None:
    from correlator.stream import DEAD_LETTERS, LATE_EVENTS
    from zonewatch.metrics import serve_metrics

    server = serve_metrics("127.0.0.1", 0)
    try:
        settings = Settings().updated(correlator={"metrics_port": server.port})
        before, _ = HealthSources(settings).metrics()
        LATE_EVENTS.inc(3)
        DEAD_LETTERS.labels(reason="JSONDecodeError").inc(2)
        after, note = HealthSources(settings).metrics()
    finally:
        server.close()
    assert note == ""
    late = "late events (behind the watermark)"
    bad = "undecodable records (correlator): JSONDecodeError"
    assert after[late] - before.get(late, 0) == 3
    assert after[bad] - before.get(bad, 0) == 2
    assert HealthSources(Settings()).metrics() == ({}, "(correlator.metrics_port is not set)")


def test_rules_that_do_not_load_are_listed(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "good.yml").write_text(
        "title: Good\nid: 0b7c0d6e-1111-4a4a-8b8b-000000000001\n"
        "logsource: {product: zonewatch, service: firewall}\n"
        "detection: {sel: {event.outcome: failure}, condition: sel}\nlevel: low\n"
    )
    (rules / "broken.yml").write_text(
        "title: Broken\nid: 0b7c0d6e-1111-4a4a-8b8b-000000000002\n"
        "logsource: {product: zonewatch}\ndetection: {sel: {a: 1}, condition: nosuch}\n"
    )
    errors = RuleErrors(Settings().updated(correlator={"rules": [rules]}))
    found = wait_for(errors, timeout_s=60)
    assert isinstance(found, list) and len(found) == 1
    assert "broken.yml" in found[0]
