"""Golden tests: Elastic's expected ECS documents for real Intune and Citrix ADC lines.

Deliberate differences (also in connectors/FIELDS.md):
* ``user.name`` is the UPN for Intune device rows (Elastic: the display name),
  because every source must name the same person the same way;
* ``event.action`` is ours for Citrix ADC ICA events (``vdi-connect`` /
  ``vdi-disconnect``); Elastic sets none;
* Elastic's GeoIP/ASN enrichment (``source.geo``, ``source.as``) is not done.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from connectors.base import ParseContext
from connectors.intune import parse_diagnostic
from connectors.vdi import parse_citrix_adc
from zonewatch.ecs import get_field

COMPARED = [
    "@timestamp",
    "source.ip",
    "source.port",
    "destination.ip",
    "destination.port",
    "user.name",
    "user.domain",
    "user.email",
    "user.id",
    "event.action",
    "event.outcome",
    "event.id",
    "event.start",
    "event.end",
    "event.duration",
    "source.bytes",
    "destination.bytes",
    "device.id",
    "host.name",
    "host.mac",
    "host.os.name",
    "host.os.version",
    "cloud.account.id",
    "service.name",
    "network.transport",
]


def _pairs(golden: Path, name: str) -> list[tuple[str, dict[str, Any]]]:
    expected = json.loads((golden / f"{name}-expected.json").read_text())["expected"]
    return [(doc["event"]["original"], doc) for doc in expected]


def _compare(ours: dict[str, Any], theirs: dict[str, Any], skip: set[str]) -> list[str]:
    diffs = []
    for name in COMPARED:
        if name in skip:
            continue
        want = get_field(theirs, name)
        if want is None:
            continue
        got = get_field(ours, name)
        if got != want:
            diffs.append(f"{name}: ours={got!r} elastic={want!r}")
    return diffs


@pytest.mark.parametrize("name", ["test-audit.log", "test-managed-device.log"])
def test_intune_diagnostic_matches_elastic(shared_dir: Path, name: str) -> None:
    golden = shared_dir / "samples/golden/microsoft_intune"
    pairs = _pairs(golden, name)
    assert len(pairs) == 3
    skip = {"user.name"} if "managed-device" in name else set()
    for original, expected in pairs:
        ctx = ParseContext("intune", "diagnostic")
        [event] = parse_diagnostic(original, ctx)
        assert event["event"]["original"] == original
        assert _compare(event, expected, skip) == []
        if "managed-device" in name:
            # ours: the UPN, so Intune, VDI and proxy events name the same person
            assert event["user"]["name"] == expected["user"]["email"]
            assert event["intune"]["compliance"] == "compliant"
            assert event["intune"]["ownership"] == "corporate"
            assert "grace_period_until" not in event["intune"]  # 9999-12-31 = none


def test_citrix_adc_matches_elastic(shared_dir: Path) -> None:
    golden = shared_dir / "samples/golden/citrix_adc"
    inputs = json.loads((golden / "test-citrix-log-ica-prefixes-sample.json").read_text())
    expected = json.loads(
        (golden / "test-citrix-log-ica-prefixes-sample.json-expected.json").read_text()
    )["expected"]
    assert len(inputs["events"]) == len(expected) == 11
    for item, want in zip(inputs["events"], expected, strict=True):
        ctx = ParseContext("vdi", "citrix-adc")
        [event] = parse_citrix_adc(item["message"].rstrip("\n"), ctx)
        assert event["event"]["original"] == want["event"]["original"]
        assert _compare(event, want, set()) == []
        name = want["citrix"]["name"]
        assert event["event"]["action"] == (
            "vdi-connect" if name == "ICASTART" else "vdi-disconnect"
        )
        assert event["client"]["ip"] == want["client"]["ip"] if "client" in want else True
        assert event["vdi"]["session_id"]
