"""``zonewatch rules generate``: the flow matrix of rules/zones.yaml as Sigma rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.inputs import Record
from connectors.pipeline import Pipeline
from correlator.detection.loader import rules_from_yaml
from correlator.policy import crossings, generate_files, rule_id, stale_files
from correlator.policy.sigma import crossing_rule
from zonewatch.app.cli import main
from zonewatch.zones import ZoneMap, ZonePolicy, load_zone_map

ZONES = ROOT / "rules" / "zones.yaml"
GENERATED = ROOT / "rules" / "generated"

FORTI = (
    'date=2026-11-26 time={hms} devname="city-fw01" devid="FG200FTK23004711" tz="+0900" '
    'logid="0000000013" type="traffic" subtype="forward" level="notice" vd="root" '
    'srcip={src} srcport=51000 srcintf="port1" srcintfrole="lan" dstip={dst} dstport={port} '
    'dstintf="port2" dstintfrole="lan" sessionid=900001 proto=6 action="{action}" '
    'policyid=12 policytype="policy" service="tcp/{port}" duration=3 sentbyte=1200 rcvdbyte=800'
)


def _policy_dict() -> dict[str, Any]:
    return yaml.safe_load(ZONES.read_text(encoding="utf-8"))


def test_committed_generated_rules_equal_a_fresh_generation() -> None:
    """Policy and detection never drift: rules/generated/ is what zones.yaml generates."""
    policy = load_zone_map(ZONES).policy
    files = generate_files(policy, "rules/zones.yaml")
    assert stale_files(GENERATED, files) == [], (
        "rules/generated/ is stale: run `zonewatch rules generate --zones rules/zones.yaml`"
    )


def test_every_forbidden_crossing_has_one_rule_and_allowed_ones_none() -> None:
    policy = load_zone_map(ZONES).policy
    found = {c.key for c in crossings(policy)}
    zones = list(policy.zones)
    assert len(found) == len(zones) * (len(zones) - 1)  # no flow allows a pair outright
    names = {f.name for f in generate_files(policy)}
    assert "policy_core_to_lgwan.yml" in names and "policy_vdi_to_mynumber.yml" in names
    # A flow without port or role limits makes its crossing allowed: no rule.
    data = _policy_dict()
    data["flows"].append({"from": "lgwan", "to": "core", "ports": ["any"]})
    opened = {c.key for c in crossings(ZonePolicy.model_validate(data))}
    assert found - opened == {"lgwan->core"}


def _parsed(line: str, zones: ZoneMap) -> dict[str, Any]:
    events, letter = Pipeline("firewall", "fortigate", zones=zones).handle(Record(line.encode()))
    assert letter is None, letter
    return events[0]


@pytest.mark.parametrize(
    ("src", "dst", "port", "action", "fires"),
    [
        ("10.10.23.90", "10.200.8.15", 445, "accept", "zw_policy_core_to_lgwan"),
        ("10.10.23.90", "10.200.8.15", 445, "deny", None),  # denies are counted elsewhere
        ("10.50.10.23", "172.16.2.10", 445, "close", None),  # My Number pool: allowed
        ("10.50.20.17", "172.16.2.10", 445, "close", "zw_policy_vdi_to_mynumber"),  # LGWAN pool
        ("203.0.113.50", "10.200.5.10", 443, "accept", None),  # to the sanitizer on 443
        ("203.0.113.50", "10.200.5.10", 22, "accept", "zw_policy_internet_to_lgwan"),
        ("203.0.113.50", "10.200.8.15", 443, "accept", "zw_policy_internet_to_lgwan"),
        ("172.16.1.20", "10.200.9.30", 443, "close", None),  # 中間サーバー relay
        ("172.16.2.10", "10.200.9.30", 443, "close", "zw_policy_mynumber_to_lgwan"),
        ("10.10.0.10", "203.0.113.26", 443, "close", None),  # the proxy
        ("10.10.22.51", "203.0.113.26", 443, "close", "zw_policy_core_to_internet"),
        ("10.10.22.51", "10.50.0.5", 443, "close", None),  # VDI broker
        ("10.10.22.51", "10.50.0.5", 3389, "close", "zw_policy_core_to_vdi"),
    ],
)
def test_generated_rules_judge_parsed_fortigate_lines_as_the_matrix_does(
    src: str, dst: str, port: int, action: str, fires: str | None
) -> None:
    zones = load_zone_map(ZONES)
    ruleset = _generated_ruleset()
    event = _parsed(FORTI.format(hms="11:02:14", src=src, dst=dst, port=port, action=action), zones)
    names = [r.name for r in ruleset.match(event, "firewall")]
    assert names == ([fires] if fires else [])


_CACHE: dict[str, Any] = {}


def _generated_ruleset() -> Any:
    if "rs" not in _CACHE:
        from correlator.detection import load_rules

        _CACHE["rs"] = load_rules([GENERATED])
        assert _CACHE["rs"].errors == []
    return _CACHE["rs"]


def test_ids_depend_only_on_the_crossing() -> None:
    policy = load_zone_map(ZONES).policy
    before = {c.key: rule_id(c) for c in crossings(policy)}
    assert len(set(before.values())) == len(before)
    data = _policy_dict()
    data["flows"].append({"from": "core", "to": "lgwan", "ports": ["tcp/445"], "via": "sanitizer"})
    changed = ZonePolicy.model_validate(data)
    after = {c.key: rule_id(c) for c in crossings(changed)}
    assert after == before
    old = next(c for c in crossings(policy) if c.key == "core->lgwan")
    new = next(c for c in crossings(changed) if c.key == "core->lgwan")
    assert (
        crossing_rule(policy, old, "z")["detection"]
        != crossing_rule(changed, new, "z")["detection"]
    )


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_writes_regenerates_and_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zones = tmp_path / "zones.yaml"
    zones.write_text(ZONES.read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "generated"
    code, stdout, _ = _run(["rules", "generate", "--zones", str(zones), "--out", str(out)], capsys)
    assert code == 0
    assert "21 written, 0 removed" in stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in GENERATED.iterdir())
    code, stdout, _ = _run(
        ["rules", "generate", "--zones", str(zones), "--out", str(out), "--check"], capsys
    )
    assert code == 0 and "match" in stdout

    # The city drops the Internet VDI pool: its crossing rules change, nothing else.
    data = yaml.safe_load(zones.read_text(encoding="utf-8"))
    data["flows"] = [f for f in data["flows"] if f.get("via") != "vdi_pool_internet"]
    zones.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    code, _, err = _run(
        ["rules", "generate", "--zones", str(zones), "--out", str(out), "--check"], capsys
    )
    assert code == 65  # stale generated rules are bad rules (README, exit codes)
    assert f"stale: {out / 'policy_vdi_to_internet.yml'}" in err
    assert "differ from" in err
    code, stdout, _ = _run(["rules", "generate", "--zones", str(zones), "--out", str(out)], capsys)
    assert code == 0 and "1 written, 0 removed" in stdout
    rule = yaml.safe_load((out / "policy_vdi_to_internet.yml").read_text(encoding="utf-8"))
    assert rule["title"] == "Zone Policy: Direct Traffic From VDI Into Internet"
    assert rule["detection"]["condition"] == "selection"

    # A zone removed: the files of its crossings go, others stay.
    data["zones"].pop("internet")
    data["default_public_zone"] = "core"
    data["roles"].pop("security_cloud")
    data["roles"].pop("vdi_pool_internet")
    data["flows"] = [f for f in data["flows"] if "internet" not in (f["from"], f["to"])]
    zones.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    code, stdout, _ = _run(["rules", "generate", "--zones", str(zones), "--out", str(out)], capsys)
    assert code == 0 and "8 removed" in stdout
    assert not list(out.glob("*internet*"))
    keep = out / "my_own_rule.yml"  # hand-written files in the folder are never touched
    keep.write_text("title: mine\n", encoding="utf-8")
    _run(["rules", "generate", "--zones", str(zones), "--out", str(out)], capsys)
    assert keep.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["zones"]["lgwan"]["cidrs"].append("10.201.128.0/17"),
            "zone lgwan lists overlapping CIDRs 10.200.0.0/15 and 10.201.128.0/17",
        ),
        (
            lambda d: d["roles"]["web_proxy"]["cidrs"].append("10.10.0.0/24"),
            "roles web_proxy and web_proxy claim|role web_proxy claim",
        ),
        (
            lambda d: d["flows"].append({"from": "core", "to": "lgwan", "via": "file_gateway"}),
            "via unknown role 'file_gateway'",
        ),
    ],
)
def test_cli_refuses_a_bad_policy_with_an_actionable_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: Any, message: str
) -> None:
    data = _policy_dict()
    change(data)
    zones = tmp_path / "zones.yaml"
    zones.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    code, _, err = _run(
        ["rules", "generate", "--zones", str(zones), "--out", str(tmp_path / "g")], capsys
    )
    assert code == 78
    assert str(zones) in err
    assert any(m in err for m in message.split("|")), err
    assert not (tmp_path / "g").exists()


# --- property: the generated Sigma says what the matrix says ----------------------

ZONE_NAMES = ("core", "vdi", "lgwan")
ROLES = {
    "proxy": {"zone": "core", "kind": "proxy", "cidrs": ["10.1.0.10/32"]},
    "pool": {"zone": "vdi", "kind": "vdi_pool", "target_zone": "lgwan", "cidrs": ["10.2.1.0/24"]},
    "gate": {"zone": "lgwan", "kind": "sanitizer", "cidrs": ["10.3.5.10/32"]},
}
PORTS = ("tcp/443", "tcp/445", "udp/4172", "tcp/any", "udp/53", "any")


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    flows = []
    for _ in range(draw(st.integers(0, 5))):
        src, dst = draw(st.permutations(ZONE_NAMES))[:2]
        roles = [r for r, spec in ROLES.items() if spec["zone"] in (src, dst)]
        flow: dict[str, Any] = {
            "from": src,
            "to": dst,
            "ports": draw(st.lists(st.sampled_from(PORTS), min_size=1, max_size=3, unique=True)),
        }
        via = draw(st.sampled_from([None, *roles]))
        if via:
            flow["via"] = via
        flows.append(flow)
    return {
        "default_public_zone": "core",
        "zones": {
            "core": {"cidrs": ["10.1.0.0/16"]},
            "vdi": {"cidrs": ["10.2.0.0/16"]},
            "lgwan": {"cidrs": ["10.3.0.0/16"], "restricted": True},
        },
        "roles": ROLES,
        "flows": flows,
    }


def _reference_allows(policy: ZonePolicy, event: dict[str, Any]) -> bool:
    zone = event["zone"]
    for flow in policy.flows:
        if flow.src != zone["source"] or flow.dst != zone["destination"]:
            continue
        if flow.via:
            side = "source_role" if policy.roles[flow.via].zone == flow.src else "destination_role"
            if zone.get(side) != flow.via:
                continue
        for transport, port in flow.port_specs():
            if transport is None or (
                transport == event["network"]["transport"]
                and (port is None or port == event["destination"]["port"])
            ):
                return True
    return False


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=policies(),
    events=st.lists(
        st.tuples(
            st.permutations(ZONE_NAMES),
            st.sampled_from(["tcp", "udp"]),
            st.sampled_from([53, 443, 445, 4172, 3389]),
            st.sampled_from([None, "proxy", "pool", "gate"]),
            st.sampled_from([None, "proxy", "pool", "gate"]),
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_generated_sigma_agrees_with_the_flow_matrix(data: dict[str, Any], events: list) -> None:
    policy = ZoneMap(ZonePolicy.model_validate(data)).policy
    files = generate_files(policy)
    ruleset = rules_from_yaml("\n---\n".join(f.text for f in files))
    assert ruleset.errors == []
    for zones, transport, port, src_role, dst_role in events:
        src, dst = zones[0], zones[1]
        zone: dict[str, Any] = {"source": src, "destination": dst, "crossing": f"{src}->{dst}"}
        if src_role and ROLES[src_role]["zone"] == src:
            zone["source_role"] = src_role
        if dst_role and ROLES[dst_role]["zone"] == dst:
            zone["destination_role"] = dst_role
        event = {
            "event": {"dataset": "firewall", "outcome": "success"},
            "network": {"transport": transport},
            "destination": {"port": port},
            "zone": zone,
        }
        fired = [r.name for r in ruleset.match(event, "firewall")]
        expected = [] if _reference_allows(policy, event) else [f"zw_policy_{src}_to_{dst}"]
        assert fired == expected, (event, [f.model_dump() for f in policy.flows])
