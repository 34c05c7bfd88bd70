"""``--format auto`` decides per stream, sticks, switches only on a clear change,
says what it chose, and names the real format in ``event.module``."""

from __future__ import annotations

from pathlib import Path

import orjson
from click.testing import CliRunner

from connectors.detect import Choice
from connectors.inputs import Record
from connectors.pipeline import Pipeline
from zonewatch.app.cli import cli

ROOT = Path(__file__).resolve().parent.parent

# W3C ELFF as a ProxySG writes it: directives first, then rows of the
# #Fields: columns (values from the SGOS access-log field reference).
ELFF = [
    "#Software: SGOS 7.3.6.1",
    "#Version: 1.0",
    "#Start-Date: 2026-11-26 00:00:00",
    "#Date: 2026-11-26 00:00:00",
    "#Fields: date time time-taken c-ip cs-username s-action sc-status cs-method "
    "cs-uri-scheme cs-host cs-uri-port cs-uri-path cs-uri-query sc-bytes cs-bytes "
    "sc-filter-result cs(User-Agent) s-ip",
    '#Remark: 4608030104 "proxy01" "10.20.0.5" "main"',
    "2026-11-26 01:02:03 120 10.10.4.21 tanaka.h TCP_TUNNELED 200 CONNECT tcp "
    'www.example.jp 443 / - 5120 830 OBSERVED "Mozilla/5.0 (Windows NT 10.0)" 10.20.0.5',
    "2026-11-26 01:02:09 15 10.10.4.22 sato.k TCP_DENIED 403 GET http "
    'upload.example.net 80 /put - 310 402 DENIED "curl/8.4.0" 10.20.0.5',
]

FORTI = (
    'date=2026-11-26 time=10:00:01 devname="fw-core" devid="FG100F" logid="0000000013" '
    'type="traffic" subtype="forward" level="notice" vd="root" srcip=10.10.4.21 '
    'srcport=51000 dstip=10.30.0.10 dstport=445 proto=6 action="deny" policyid=0'
)
ASA = (
    "<164>Nov 26 2026 10:00:02: %ASA-4-106023: Deny tcp src inside:10.10.4.21/51001 "
    'dst lgwan:10.30.0.10/445 by access-group "inside_in" [0x0, 0x0]'
)


def _run(pipeline: Pipeline, lines: list[str], peer: str | None = None) -> list[dict]:
    events: list[dict] = []
    for i, line in enumerate(lines, 1):
        found, letter = pipeline.handle(Record(line.encode(), position=i, peer=peer))
        assert letter is None, letter.reason
        events += found
    return events


def test_an_elff_file_is_detected_by_its_directives_and_read_whole() -> None:
    seen: list[Choice] = []
    pipeline = Pipeline("gateway", "auto", zones=None, on_choice=seen.append)
    events = _run(pipeline, ELFF)
    assert seen == [Choice(None, "proxysg", None, 1)]
    assert [e["event"]["module"] for e in events] == ["proxysg", "proxysg"]
    assert [e["user"]["name"] for e in events] == ["tanaka.h", "sato.k"]
    assert [e["event"]["outcome"] for e in events] == ["success", "failure"]
    assert pipeline.stats.formats == {"proxysg": len(ELFF)}


def test_a_clear_change_of_format_switches_and_is_reported() -> None:
    seen: list[Choice] = []
    pipeline = Pipeline("firewall", "auto", zones=None, on_choice=seen.append)
    events = _run(pipeline, [FORTI, FORTI, ASA, ASA])
    assert [e["event"]["module"] for e in events] == ["fortigate"] * 2 + ["asa"] * 2
    assert seen == [Choice(None, "fortigate", None, 1), Choice(None, "asa", "fortigate", 3)]
    assert pipeline.stats.switches == 1
    assert pipeline.stats.summary().endswith(
        "format auto chose fortigate 2, asa 2 (records), 1 switch(es)"
    )


def test_each_syslog_sender_is_its_own_stream() -> None:
    seen: list[Choice] = []
    pipeline = Pipeline("firewall", "auto", zones=None, on_choice=seen.append)
    for _ in range(3):
        _run(pipeline, [FORTI], peer="udp:10.0.0.1")
        _run(pipeline, [ASA], peer="udp:10.0.0.2")
    assert [(c.stream, c.format) for c in seen] == [
        ("udp:10.0.0.1", "fortigate"),
        ("udp:10.0.0.2", "asa"),
    ]
    assert pipeline.stats.switches == 0


def test_a_line_the_stuck_format_refuses_is_a_dead_letter_with_its_reason() -> None:
    pipeline = Pipeline("firewall", "auto", zones=None)
    _run(pipeline, [FORTI])
    _, letter = pipeline.handle(Record(b"garbage that no firewall writes", position=2))
    assert letter is not None and letter.format == "fortigate"
    assert "no FortiOS key=value fields" in letter.reason
    fresh = Pipeline("firewall", "auto", zones=None)
    _, letter = fresh.handle(Record(b"garbage that no firewall writes", position=1))
    assert letter is not None and "no firewall format recognises" in letter.reason


def test_the_bundled_device_snapshots_are_read_as_snapshots() -> None:
    """samples/intune-devices.jsonl was detected as diagnostic records, which
    emit no compliance changes: the demo then missed three alerts."""
    lines = (ROOT / "samples/intune-devices.jsonl").read_text(encoding="utf-8").splitlines()
    auto = _run(Pipeline("intune", "auto", zones=None), lines)
    fixed = _run(Pipeline("intune", "devices", zones=None), lines)
    assert {e["event"]["module"] for e in auto} == {"devices"}
    assert [e["event"]["action"] for e in auto] == [e["event"]["action"] for e in fixed]
    assert "device-compliance-changed" in {e["event"]["action"] for e in auto}


def test_a_mixed_event_hub_batch_reads_device_rows_as_snapshots() -> None:
    audit = {
        "time": "2026-11-26T00:30:04Z",
        "category": "AuditLogs",
        "operationName": "Patch DeviceCompliancePolicy",
        "resultType": "Success",
        "properties": {"Actor": {"UPN": "kondo.makoto@city.example.lg.jp"}, "AuditEventId": "a"},
    }
    device = {
        "time": "2026-11-26T00:31:00Z",
        "category": "Devices",
        "operationName": "Devices",
        "properties": {"DeviceId": "d-1", "DeviceName": "LT-1", "CompliantState": "Compliant"},
    }
    line = orjson.dumps({"records": [audit, device]}).decode()
    events = _run(Pipeline("intune", "auto", zones=None), [line])
    assert [(e["event"]["module"], e["event"]["action"]) for e in events] == [
        ("diagnostic", "patch-devicecompliancepolicy"),
        ("devices", "device-observed"),
    ]


def test_parse_reports_the_choice_per_file(tmp_path: Path) -> None:
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    first.write_text("\n".join(ELFF) + "\n")
    squid = (ROOT / "samples/squid-access.log").read_text(encoding="utf-8")
    second.write_text(squid)
    env = {"ZONEWATCH_CONNECTORS__ZONES_FILE": str(ROOT / "rules/zones.yaml")}
    result = CliRunner().invoke(
        cli, ["parse", "--source", "gateway", str(first), str(second)], env=env
    )
    assert result.exit_code == 0, result.output
    reports = [orjson.loads(x) for x in result.stderr.splitlines()]
    assert reports == [
        {"input": str(first), "format_detected": "gateway/proxysg", "line": 1},
        {"input": str(second), "format_detected": "gateway/squid", "line": 1},
    ]
    modules = {orjson.loads(x)["event"]["module"] for x in result.stdout.splitlines()}
    assert modules == {"proxysg", "squid"}
