"""``zonewatch match`` and ``zonewatch rules check|test`` as a user runs them."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import orjson
import pytest
import yaml
from click.testing import CliRunner
from conftest import ROOT

from zonewatch.app.cli import cli, main

GOOD_RULE = """\
title: Curl to paste site
id: 9d000000-0000-4000-8000-000000000001
logsource:
    category: proxy
detection:
    selection:
        c-useragent|startswith: 'curl/'
        cs-host|endswith: 'pastebin.com'
    condition: selection
level: high
tags:
    - attack.exfiltration
tests:
    source: gateway
    match:
        - {"user_agent": {"original": "curl/8.4"}, "url": {"domain": "pastebin.com"}}
    nomatch:
        - {"user_agent": {"original": "Mozilla/5.0"}, "url": {"domain": "pastebin.com"}}
"""

BAD_RULE = """\
title: Broken regex
id: 9d000000-0000-4000-8000-000000000002
logsource:
    category: proxy
detection:
    selection:
        c-uri|re: '(?<=admin)/x'
    condition: selection
level: low
"""

EVENTS = [
    {
        "@timestamp": "2025-04-01T09:30:00Z",
        "event": {"dataset": "gateway"},
        "user_agent": {"original": "curl/8.4"},
        "url": {"domain": "pastebin.com"},
        "zone": {"crossing": "core->internet"},
    },
    {
        "@timestamp": "2025-04-01T09:31:00Z",
        "event": {"dataset": "gateway"},
        "user_agent": {"original": "Mozilla/5.0"},
        "url": {"domain": "pastebin.com"},
    },
    {
        "@timestamp": "2025-04-01T09:32:00Z",
        "event": {"dataset": "firewall"},
        "user_agent": {"original": "curl/8.4"},
        "url": {"domain": "pastebin.com"},
    },
]


@pytest.fixture()
def rules_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "proxy_curl_paste.yml").write_text(GOOD_RULE)
    return folder


def _ndjson(path: Path, events: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return path


def test_match_prints_one_alert_per_hit_with_line(rules_dir: Path, tmp_path: Path) -> None:
    events = _ndjson(tmp_path / "ev.ndjson", EVENTS)
    result = CliRunner().invoke(cli, ["match", "--rules", str(rules_dir), str(events)])
    assert result.exit_code == 0, result.output
    (alert,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert alert["rule_id"] == "9d000000-0000-4000-8000-000000000001"
    assert alert["rule_title"] == "Curl to paste site"
    assert alert["level"] == "high" and alert["type"] == "detection"
    assert [e["line"] for e in alert["evidence"]] == [1]
    assert alert["zone_crossing"] == "core->internet"
    assert alert["first_seen"].startswith("2025-04-01T09:30:00")


def test_match_source_option_overrides_dataset(rules_dir: Path, tmp_path: Path) -> None:
    events = _ndjson(tmp_path / "ev.ndjson", EVENTS)
    result = CliRunner().invoke(
        cli, ["match", "--rules", str(rules_dir), "--source", "gateway", str(events)]
    )
    lines = [json.loads(x)["evidence"][0]["line"] for x in result.stdout.splitlines()]
    assert lines == [1, 3]


def test_match_reads_stdin_and_reports_bad_lines(rules_dir: Path) -> None:
    stdin = orjson.dumps(EVENTS[0]).decode() + "\nnot json\n[1]\n"
    result = CliRunner().invoke(cli, ["match", "--rules", str(rules_dir), "-"], input=stdin)
    assert len(result.stdout.splitlines()) == 1
    assert "line 2" in result.stderr and "line 3" in result.stderr


def test_match_exit_code_for_bad_input_is_65(rules_dir: Path, tmp_path: Path) -> None:
    events = tmp_path / "bad.ndjson"
    events.write_text("{}\nnot json\n")
    with pytest.raises(SystemExit) as exc:
        main(["match", "--rules", str(rules_dir), str(events)])
    assert exc.value.code == 65


def test_match_keeps_running_good_rules_when_one_is_broken(rules_dir: Path, tmp_path: Path) -> None:
    (rules_dir / "broken.yml").write_text(BAD_RULE)
    events = _ndjson(tmp_path / "ev.ndjson", EVENTS)
    result = CliRunner().invoke(cli, ["match", "--rules", str(rules_dir), str(events)])
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 1
    assert f"{rules_dir / 'broken.yml'}:7:" in result.stderr


def test_rules_check_ok_and_failing(rules_dir: Path) -> None:
    ok = CliRunner().invoke(cli, ["rules", "check", "--no-validate", str(rules_dir)])
    assert ok.exit_code == 0, ok.output
    assert "1 detection rule(s)" in ok.stdout
    (rules_dir / "broken.yml").write_text(BAD_RULE)
    with pytest.raises(SystemExit) as exc:
        main(["rules", "check", "--no-validate", str(rules_dir)])
    assert exc.value.code == 65


def test_rules_check_located_messages(rules_dir: Path) -> None:
    (rules_dir / "broken.yml").write_text(BAD_RULE)
    (rules_dir / "yaml.yml").write_text("title: x\ndetection: [\n")
    result = CliRunner().invoke(cli, ["rules", "check", "--no-validate", str(rules_dir)])
    assert result.exit_code != 0
    assert f"{rules_dir / 'broken.yml'}:7: regular expression" in result.stderr
    assert f"{rules_dir / 'yaml.yml'}:" in result.stderr


def test_a_rule_id_written_as_a_number_is_named_with_its_line(rules_dir: Path) -> None:
    # YAML reads `id: 1` as a number; pySigma alone fails without naming the field.
    (rules_dir / "numeric_id.yml").write_text(
        "title: Numeric id\nstatus: test\nid: 1\n"
        "logsource: {product: zonewatch, service: firewall}\n"
        "detection: {sel: {event.outcome: failure}, condition: sel}\n"
    )
    result = CliRunner().invoke(cli, ["rules", "check", "--no-validate", str(rules_dir)])
    assert result.exit_code != 0
    expected = f"{rules_dir / 'numeric_id.yml'}:3: rule id must be text, not int 1: quote it"
    assert expected in result.stderr


def test_rules_check_runs_sigma_validators(rules_dir: Path) -> None:
    clean = CliRunner().invoke(cli, ["rules", "check", str(rules_dir)])
    assert clean.exit_code == 0 and "rule warning" not in clean.stderr
    # (Its one warning used to be the ATT&CK validator skipped offline.)
    twice = GOOD_RULE.replace("    - attack.exfiltration\n", "    - attack.exfiltration\n" * 2)
    (rules_dir / "proxy_curl_paste.yml").write_text(twice)
    result = CliRunner().invoke(cli, ["rules", "check", str(rules_dir)])
    assert result.exit_code == 0
    assert "rule warning" in result.stderr and "(duplicate_tag)" in result.stderr


def test_rules_test_passes_and_fails(rules_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = CliRunner().invoke(cli, ["rules", "test", str(rules_dir)])
    assert ok.exit_code == 0, ok.output
    assert "2 passed, 0 failed" in ok.stdout
    wrong = GOOD_RULE.replace(
        'nomatch:\n        - {"user_agent": {"original": "Mozilla/5.0"}',
        'nomatch:\n        - {"user_agent": {"original": "curl/9"}',
    )
    (rules_dir / "proxy_curl_paste.yml").write_text(wrong)
    bad = CliRunner().invoke(cli, ["rules", "test", str(rules_dir)])
    assert getattr(bad.exception, "exit_code", None) == 65  # a bad rule (README, exit codes)
    assert "nomatch event #1 fired" in bad.stderr


def test_rules_test_sidecar_file(rules_dir: Path) -> None:
    plain = GOOD_RULE.split("tests:")[0]
    (rules_dir / "proxy_curl_paste.yml").write_text(plain)
    (rules_dir / "proxy_curl_paste.tests.yml").write_text(
        "9d000000-0000-4000-8000-000000000001:\n"
        "  match:\n"
        "    - {user_agent: {original: curl/1}, url: {domain: www.pastebin.com}}\n"
    )
    result = CliRunner().invoke(cli, ["rules", "test", str(rules_dir / "proxy_curl_paste.yml")])
    assert result.exit_code == 0, result.output
    assert "1 passed" in result.stdout


def test_rules_test_runs_the_correlation_timelines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A copy of the rule pack with flipped expectations fails `rules test`
    (it used to print "passed" and exit 0: timelines were pytest's only)."""
    pack = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", pack)
    main(["rules", "test", str(pack)])
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    found = re.fullmatch(
        r"(\d+) passed, 0 failed, 0 rule\(s\) without tests \((\d+) correlation timeline\(s\)\)",
        summary,
    )
    assert found and int(found[2]) >= 40, summary

    sidecar = pack / "cross_zone" / "fw_denies_then_allow.tests.yml"
    spec = yaml.safe_load(sidecar.read_text(encoding="utf-8"))
    fire, quiet = spec["zw_denies_then_allow"]["timelines"][:2]
    assert (fire["expect"], quiet["expect"]) == ("fire", "quiet")
    fire["expect"], quiet["expect"] = "quiet", "fire"
    sidecar.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    counted = pack / "cross_zone" / "fw_repeated_denied_crossings.tests.yml"
    spec = yaml.safe_load(counted.read_text(encoding="utf-8"))
    exact = next(t for rule in spec.values() for t in rule.get("timelines", []) if "alerts" in t)
    exact["alerts"] += 1
    counted.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")

    with pytest.raises(SystemExit) as exc:
        main(["rules", "test", str(pack)])
    assert exc.value.code == 65
    out, err = capsys.readouterr()
    assert ", 3 failed," in out.strip().splitlines()[-1]
    failures = [line for line in err.splitlines() if line.startswith("FAIL ")]
    assert len(failures) == 3, err
    assert (
        f"FAIL {sidecar}: zw_denies_then_allow: '{fire['name']}': expected to stay quiet, "
        "raised 1 alert(s)" in err
    )
    assert (
        f"FAIL {sidecar}: zw_denies_then_allow: '{quiet['name']}': expected to fire, "
        "raised no alert" in err
    )
    assert f"'{exact['name']}': expected {exact['alerts']} alert(s), raised " in err
    assert "3 rule test(s) failed" in err


def test_rules_test_names_a_timeline_of_an_unknown_correlation(
    rules_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (rules_dir / "proxy_curl_paste.tests.yml").write_text(
        "zw_no_such_correlation:\n"
        "  timelines:\n"
        "    - name: typo in the rule name\n"
        "      expect: quiet\n"
        "      events: []\n"
        "    - name: no events\n"
        "      expect: fire\n"
    )
    with pytest.raises(SystemExit) as exc:
        main(["rules", "test", str(rules_dir)])
    assert exc.value.code == 65
    err = capsys.readouterr().err
    assert "'typo in the rule name': no loaded correlation is named zw_no_such_correlation" in err
    assert "zw_no_such_correlation: timeline #2: 'events' must be a list of mappings" in err
