"""SigmaHQ's proxy and firewall rules, unchanged, beside the zonewatch pack.

Vendor lines go through our connectors and zone enrichment (what Kafka
carries); the rule set is what ``zonewatch correlate --rules rules/ --rules
<sigmahq folders>`` loads, with the ``ecs`` pipeline mapping Sigma's proxy and
firewall taxonomy onto our ECS fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

from connectors.inputs import Record
from connectors.pipeline import Pipeline
from correlator.service import load_ruleset
from zonewatch.zones import load_zone_map

SIGMAHQ_FOLDERS = ("rules/web/proxy_generic", "rules/network/firewall")

RAW_PASTE = "5468045b-4fcc-4d1a-973c-c9c9578edacb"
TELEGRAM = "b494b165-6634-483d-8c47-2026a6c52372"
SUSP_TLD = "00d0b5ab-1f55-4120-8e83-487c0a7baf19"
CLEARTEXT = "d7fb8f0e-bd5f-45c2-b467-19571c490d7e"

# Real-looking lines of the day, one per case: (source, format, line).
LINES = {
    "paste": (
        "gateway",
        "squid",
        "1795660531.000    402 10.10.23.90 TCP_MISS/200 8812 GET http://paste.ee/r/Xk3p9 "
        "watanabe.t HIER_DIRECT/203.0.113.71 text/plain",
    ),
    "telegram": (
        "gateway",
        "squid",
        "1795660622.000  30811 10.10.22.51 TCP_TUNNEL/200 5120 CONNECT api.telegram.org:443 "
        "sato.k HIER_DIRECT/203.0.113.72 -",
    ),
    "susp_tld": (
        "gateway",
        "squid",
        "1795660740.000   1288 10.10.21.34 TCP_MISS/200 402113 GET "
        "http://invoice-check.download/files/seikyusho.zip tanaka.h HIER_DIRECT/203.0.113.73 "
        "application/zip",
    ),
    "telnet": (
        "firewall",
        "fortigate",
        'date=2026-11-26 time=11:40:02 devname="city-fw01" devid="FG200FTK23004711" '
        'tz="+0900" logid="0000000013" type="traffic" subtype="forward" level="notice" '
        'vd="root" srcip=10.10.24.15 srcport=51877 srcintf="core" srcintfrole="lan" '
        'dstip=203.0.113.90 dstport=23 dstintf="wan1" dstintfrole="wan" sessionid=903311 '
        'proto=6 action="accept" policyid=99 policytype="policy" service="TELNET" '
        "trandisp=snat duration=44 sentbyte=3120 rcvdbyte=9954",
    ),
    "ordinary": (
        "gateway",
        "squid",
        "1795650703.000   1370 10.10.21.34 TCP_MISS/200 42702 GET "
        "http://www.city.example.lg.jp/kurashi/index.html tanaka.h HIER_DIRECT/203.0.113.40 "
        "text/html",
    ),
}


def pack_with_sigmahq(shared_dir: Path, names: tuple[str, ...]) -> Any:
    """What `zonewatch correlate --rules rules/ --rules <folder>...` loads."""
    folders = [shared_dir / "sigma" / "sigmahq" / f for f in names]
    for folder in folders:
        if not folder.is_dir():
            pytest.skip(f"{folder} is not present")
    ruleset = load_ruleset([ROOT / "rules", *folders], "ecs")
    assert ruleset.errors == []
    return ruleset


@pytest.fixture(scope="module")
def both(shared_dir: Path) -> Any:
    return pack_with_sigmahq(shared_dir, SIGMAHQ_FOLDERS)


def _event(case: str) -> dict[str, Any]:
    source, fmt, line = LINES[case]
    zones = load_zone_map(ROOT / "rules" / "zones.yaml")
    events, letter = Pipeline(source, fmt, zones=zones).handle(Record(line.encode()))
    assert letter is None, letter
    return events[0]


def _fired(ruleset: Any, case: str) -> dict[str, str]:
    event = _event(case)
    return {
        r.id: r.name or r.title
        for r in ruleset.match(event, event["event"]["dataset"])
        if r.generate
    }


@pytest.mark.parametrize(
    ("case", "sigmahq_rule", "ours"),
    [
        ("paste", RAW_PASTE, set()),
        ("telegram", TELEGRAM, set()),
        ("susp_tld", SUSP_TLD, set()),
        # A laptop's direct telnet to the Internet: SigmaHQ sees cleartext, we see
        # a crossing outside the flow matrix (not through the proxy).
        ("telnet", CLEARTEXT, {"zw_policy_core_to_internet"}),
    ],
)
def test_sigmahq_rules_fire_unchanged_on_our_events_beside_ours(
    both: Any, case: str, sigmahq_rule: str, ours: set[str]
) -> None:
    fired = _fired(both, case)
    assert sigmahq_rule in fired, fired
    assert {name for name in fired.values() if name.startswith("zw_")} == ours


def test_at_least_three_sigmahq_rules_fire_and_ordinary_traffic_stays_quiet(both: Any) -> None:
    sigmahq_ids = {r.id for r in both.detections if r.path and "sigmahq" in str(r.path)}
    assert len(sigmahq_ids) >= 30  # the proxy and firewall folders load whole
    fired = set()
    for case in ("paste", "telegram", "susp_tld", "telnet"):
        fired |= set(_fired(both, case)) & sigmahq_ids
    assert len(fired) >= 3
    assert _fired(both, "ordinary") == {}
