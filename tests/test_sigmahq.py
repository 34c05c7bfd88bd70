"""SigmaHQ's own rules and regression events, run unchanged.

The whole rule tree is loaded once per session (about 10 s); the regression
events go through ``zonewatch match --flatten evtx`` with the rules they name.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import orjson
import pytest
import yaml
from click.testing import CliRunner

from correlator.detection import RuleSet, load_rules
from zonewatch.app.cli import cli

RULE_DIRS = (
    "rules",
    "rules-emerging-threats",
    "rules-threat-hunting",
    "rules-placeholder",
    "rules-compliance",
    "rules-dfir",
)


@pytest.fixture(scope="session")
def sigmahq_dir(shared_dir: Path) -> Path:
    path = shared_dir / "sigma" / "sigmahq"
    if not path.exists():
        pytest.skip("SigmaHQ rules are not present")
    return path


@pytest.fixture(scope="session")
def sigmahq(sigmahq_dir: Path) -> RuleSet:
    dirs = [sigmahq_dir / d for d in RULE_DIRS if (sigmahq_dir / d).exists()]
    return load_rules(dirs, pipeline="none")


def _json_documents(text: str) -> list[dict]:
    """Regression files hold one or more pretty-printed JSON documents back to back."""
    decoder = json.JSONDecoder()
    docs, pos = [], 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return docs
        doc, pos = decoder.raw_decode(text, pos)
        docs.append(doc)


def test_all_sigmahq_rules_load(sigmahq: RuleSet, sigmahq_dir: Path) -> None:
    files = sum(
        1 for d in RULE_DIRS for p in (sigmahq_dir / d).rglob("*.yml") if (sigmahq_dir / d).exists()
    )
    reasons = Counter(e.reason.split("%")[0] for e in sigmahq.errors)
    print(
        f"\nSigmaHQ: {files} files, {len(sigmahq.detections)} compiled, {len(sigmahq.errors)} not"
    )
    for reason, count in reasons.most_common():
        print(f"  {count:4d} {reason}")
    # The only rules that may not compile use |expand with site-specific %name%
    # lists (mostly rules-placeholder/) that were not configured.
    assert set(reasons) <= {"placeholder "}
    for err in sigmahq.errors:
        assert err.path and err.line
        assert "correlator.placeholders_file" in err.reason  # says what to set
        line = Path(err.path).read_text(encoding="utf-8").splitlines()[err.line - 1]
        name = err.reason.split("%")[1]
        assert f"%{name}%" in line, err  # the message points at the value to configure
    assert len(sigmahq.detections) + len(sigmahq.errors) == files


def test_placeholder_rules_compile_with_a_placeholder_file(
    sigmahq_dir: Path, tmp_path: Path
) -> None:
    folder = sigmahq_dir / "rules-placeholder"
    names = {
        part.split("%")[1]
        for path in folder.rglob("*.yml")
        for part in path.read_text(encoding="utf-8").split("'")
        if part.count("%") >= 2
    }
    placeholders = {name: ["placeholder-value"] for name in names}
    rs = load_rules([folder], pipeline="none", placeholders=placeholders)
    assert rs.errors == []
    assert len(rs.detections) == sum(1 for _ in folder.rglob("*.yml"))


def test_regression_data_fires_through_zonewatch_match(
    sigmahq: RuleSet, sigmahq_dir: Path, tmp_path: Path
) -> None:
    expected: dict[int, tuple[str, str]] = {}  # line -> (rule id, event file)
    lines: list[bytes] = []
    rule_paths: set[str] = set()
    for info in sorted((sigmahq_dir / "regression_data").rglob("info.yml")):
        meta = yaml.safe_load(info.read_text(encoding="utf-8"))
        rule_id = str(meta["rule_metadata"][0]["id"])
        rule = sigmahq.rule(rule_id)
        assert rule is not None and rule.path, f"{info}: rule {rule_id} did not load"
        rule_paths.add(rule.path)
        for event_file in sorted(info.parent.glob("*.json")):
            for doc in _json_documents(event_file.read_text(encoding="utf-8")):
                lines.append(orjson.dumps(doc))
                expected[len(lines)] = (rule_id, str(event_file.relative_to(sigmahq_dir)))
    events = tmp_path / "regression.ndjson"
    events.write_bytes(b"\n".join(lines) + b"\n")
    args = ["match", "--pipeline", "none", "--flatten", "evtx", str(events)]
    for path in sorted(rule_paths):
        args[1:1] = ["--rules", path]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    fired: set[tuple[str, str]] = set()
    for out in result.stdout.splitlines():
        alert = json.loads(out)
        for evidence in alert["evidence"]:
            rule_id, event_file = expected[evidence["line"]]
            if rule_id == alert["rule_id"]:
                fired.add((rule_id, event_file))
    wanted = set(expected.values())
    missing = sorted(wanted - fired)
    print(f"\nregression: {len(fired)}/{len(wanted)} event files fire their rule")
    assert missing == []
    assert len(wanted) >= 200


def test_sigmahq_proxy_rules_fire_on_ecs_events_unchanged(sigmahq_dir: Path) -> None:
    folder = sigmahq_dir / "rules" / "web" / "proxy_generic"
    rs = load_rules([folder])  # the "ecs" pipeline
    assert rs.errors == []
    f5 = {
        "@timestamp": "2025-04-01T09:30:00Z",
        "event": {"dataset": "gateway"},
        "source": {"ip": "10.10.3.4"},
        "url": {"full": "https://bigip.example.lg.jp/mgmt/tm/util/bash", "domain": "bigip"},
        "http": {"request": {"method": "POST"}, "response": {"status_code": 200}},
    }
    titles = {r.id: r.title for r in rs.match(f5)}
    assert "b59c98c6-95e8-4d65-93ee-f594dfb96b17" in titles
    assert not rs.match({**f5, "http": {"request": {"method": "GET"}}})
    # Routing: the same fields on a firewall event do not reach proxy rules.
    assert not rs.match({**f5, "event": {"dataset": "firewall"}})
    rclone = {
        "event": {"dataset": "gateway"},
        "user_agent": {"original": "rclone/v1.66.0"},
        "url": {"domain": "drive.example.com", "full": "https://drive.example.com/x"},
    }
    assert any("Rclone" in r.title for r in rs.match(rclone))


def test_sigmahq_firewall_rule_fires_on_ecs_firewall_events(sigmahq_dir: Path) -> None:
    rule = sigmahq_dir / "rules" / "network" / "firewall" / "net_firewall_cleartext_protocols.yml"
    rs = load_rules([rule])
    assert rs.errors == []
    event = {
        "event": {"dataset": "firewall", "action": "accept"},
        "source": {"ip": "10.10.3.4", "port": 50123},
        "destination": {"ip": "203.0.113.7", "port": 23},
    }
    assert [r.title for r in rs.match(event)] == [rs.detections[0].title]
    assert not rs.match({**event, "destination": {"ip": "203.0.113.7", "port": 22}})
