"""Sigma semantics of the detection engine, one behaviour per test, rules inline as YAML."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from correlator.detection import (
    EventTimeError,
    RuleSet,
    detection_alert,
    event_time,
    rules_from_yaml,
)
from zonewatch.models import Evidence, alert_id


def ruleset(
    detection: str, logsource: str = "product: zonewatch", pipeline: str = "none", **kw: Any
) -> RuleSet:
    text = textwrap.dedent(
        """\
        title: Test rule
        id: 5f1c7c2e-0000-4000-8000-000000000001
        logsource:
        {logsource}
        detection:
        {detection}
        level: high
        """
    ).format(
        logsource=textwrap.indent(textwrap.dedent(logsource).strip(), "    "),
        detection=textwrap.indent(textwrap.dedent(detection).strip(), "    "),
    )
    rs = rules_from_yaml(text, pipeline=pipeline, **kw)
    assert not rs.errors, rs.errors
    return rs


def fires(rs: RuleSet, event: dict[str, Any], source: str | None = None) -> bool:
    return bool(rs.match(event, source))


PROXY_EVENT = {
    "@timestamp": "2025-04-01T09:30:00Z",
    "event": {"dataset": "gateway", "action": "allowed"},
    "source": {"ip": "10.10.3.4", "port": 51234},
    "url": {"full": "https://pastebin.com/raw/AbC123", "domain": "pastebin.com"},
    "user_agent": {"original": "curl/8.4.0"},
    "http": {"request": {"method": "GET"}, "response": {"status_code": 200}},
    "user": {"name": "tanaka@city.example.lg.jp"},
    "zone": {"crossing": "core->internet"},
}


class TestStrings:
    def test_plain_value_is_case_insensitive_and_whole(self) -> None:
        rs = ruleset("sel:\n  url.domain: PASTEBIN.COM\ncondition: sel")
        assert fires(rs, PROXY_EVENT)
        assert not fires(rs, {"url": {"domain": "pastebin.com.evil.org"}})

    def test_cased_is_case_sensitive(self) -> None:
        rs = ruleset("sel:\n  user_agent.original|cased: curl/8.4.0\ncondition: sel")
        assert fires(rs, PROXY_EVENT)
        assert not fires(rs, {"user_agent": {"original": "CURL/8.4.0"}})

    @pytest.mark.parametrize(
        ("pattern", "value", "expected"),
        [
            ("*/raw/*", "https://pastebin.com/raw/x", True),
            ("https://*", "HTTPS://x", True),
            ("*.exe", "a.EXE", True),
            ("*.exe", "a.exe.txt", False),
            ("a?c", "abc", True),
            ("a?c", "abbc", False),
            ("a*b*c", "axxbyyc", True),
            ("a*b*c", "axxcyyb", False),
            ("*ab*ab*", "xabx", False),
            (r"100\*", "100*", True),
            (r"100\*", "1000", False),
            (r"what\?", "what?", True),
            (r"what\?", "whatx", False),
            (r"C:\\Windows\\*", "c:\\windows\\system32", True),
            ("*", "anything", True),
            ("", "", True),
            ("", "x", False),
        ],
    )
    def test_wildcards_and_escapes(self, pattern: str, value: str, expected: bool) -> None:
        rs = ruleset(f"sel:\n  f: '{pattern}'\ncondition: sel")
        assert fires(rs, {"f": value}) is expected

    def test_non_ascii_letters_are_case_insensitive(self) -> None:
        rs = ruleset("sel:\n  user.full_name|contains: 'ÄRGER'\ncondition: sel")
        assert fires(rs, {"user": {"full_name": "großer ärger"}})

    def test_modifiers_contains_startswith_endswith(self) -> None:
        rs = ruleset(
            """
            sel:
              url.full|contains: /raw/
              url.full|startswith: https://paste
              url.domain|endswith: .com
            condition: sel
            """
        )
        assert fires(rs, PROXY_EVENT)
        assert not fires(rs, {**PROXY_EVENT, "url": {"full": "http://pastebin.com/raw/"}})

    def test_list_is_or_and_all_makes_it_and(self) -> None:
        any_rs = ruleset("sel:\n  url.full|contains: [nomatch, /raw/]\ncondition: sel")
        all_rs = ruleset("sel:\n  url.full|contains|all: [nomatch, /raw/]\ncondition: sel")
        both_rs = ruleset("sel:\n  url.full|contains|all: [pastebin, /raw/]\ncondition: sel")
        assert fires(any_rs, PROXY_EVENT)
        assert not fires(all_rs, PROXY_EVENT)
        assert fires(both_rs, PROXY_EVENT)

    def test_event_list_value_matches_any_element(self) -> None:
        rs = ruleset("sel:\n  related.ip: 10.0.0.9\ncondition: sel")
        assert fires(rs, {"related": {"ip": ["10.0.0.1", "10.0.0.9"]}})
        assert not fires(rs, {"related": {"ip": ["10.0.0.1"]}})

    def test_long_value_lists_use_set_lookup_semantics(self) -> None:
        values = ", ".join(f"host{i}.example" for i in range(40))
        rs = ruleset(f"sel:\n  url.domain: [{values}]\ncondition: sel")
        assert fires(rs, {"url": {"domain": "HOST17.example"}})
        assert fires(rs, {"url": {"domain": ["a", "host3.example"]}})
        assert not fires(rs, {"url": {"domain": "host40.example"}})


class TestConditions:
    RULE = """
        sel_ua:
          user_agent.original|startswith: curl
        sel_host:
          url.domain: pastebin.com
        filter_user:
          user.name: admin@city.example.lg.jp
        condition: {cond}
    """

    @pytest.mark.parametrize(
        ("cond", "expected"),
        [
            ("sel_ua and sel_host", True),
            ("sel_ua and not sel_host", False),
            ("sel_ua or filter_user", True),
            ("not filter_user", True),
            ("(sel_ua or filter_user) and not (sel_host and filter_user)", True),
            ("1 of sel_*", True),
            ("all of sel_*", True),
            ("all of sel_* and not 1 of filter_*", True),
            ("1 of them", True),
            ("all of them", False),
            ("filter_user or sel_ua and not sel_host", False),
        ],
    )
    def test_condition_language(self, cond: str, expected: bool) -> None:
        rs = ruleset(self.RULE.format(cond=cond))
        assert fires(rs, PROXY_EVENT) is expected

    def test_list_of_maps_is_or_and_map_is_and(self) -> None:
        rs = ruleset(
            """
            sel:
              - url.domain: nomatch.example
                user_agent.original|startswith: curl
              - url.domain: pastebin.com
                http.request.method: GET
            condition: sel
            """
        )
        assert fires(rs, PROXY_EVENT)
        assert not fires(rs, {**PROXY_EVENT, "http": {"request": {"method": "POST"}}})

    def test_them_excludes_underscore_identifiers(self) -> None:
        rs = ruleset(
            "sel:\n  url.domain: pastebin.com\n_aux:\n  url.domain: x\ncondition: all of them"
        )
        assert fires(rs, PROXY_EVENT)

    def test_condition_list_is_or(self) -> None:
        rs = ruleset("a:\n  f: 1\nb:\n  g: 2\ncondition:\n  - a\n  - b")
        assert fires(rs, {"g": 2})
        assert not fires(rs, {"f": 2})


class TestKeywords:
    def test_keywords_search_every_string_field(self) -> None:
        rs = ruleset("keywords:\n  - 'raw/AbC'\n  - 'mimikatz'\ncondition: keywords")
        assert fires(rs, PROXY_EVENT)
        assert not fires(rs, {"message": "nothing here"})

    def test_keywords_all(self) -> None:
        rs = ruleset("keywords:\n  '|all':\n    - curl\n    - pastebin\ncondition: keywords")
        assert fires(rs, PROXY_EVENT)
        assert not fires(rs, {"message": "curl only"})

    def test_a_keyword_lies_within_one_value(self) -> None:
        rs = ruleset("keywords:\n  - 'evil.exe'\ncondition: keywords")
        assert fires(rs, {"process": {"args": ["-x", "C:\\Temp\\EVIL.EXE"]}})
        assert not fires(rs, {"a": "evil", "b": ".exe"})
        assert not fires(rs, {"a": ["evil", ".exe"]})


class TestNullExistsNumbers:
    def test_null_matches_missing_or_null(self) -> None:
        rs = ruleset("sel:\n  url.domain: pastebin.com\n  user.name: null\ncondition: sel")
        assert fires(rs, {"url": {"domain": "pastebin.com"}})
        assert fires(rs, {"url": {"domain": "pastebin.com"}, "user": {"name": None}})
        assert not fires(rs, {"url": {"domain": "pastebin.com"}, "user": {"name": ""}})

    def test_exists_is_presence_even_of_null(self) -> None:
        yes = ruleset("sel:\n  user.name|exists: true\ncondition: sel")
        no = ruleset("sel:\n  user.name|exists: false\ncondition: sel")
        assert fires(yes, {"user": {"name": None}})
        assert not fires(yes, {"user": {"id": 1}})
        assert fires(no, {"user": {"id": 1}})
        assert fires(ruleset("sel:\n  user|exists: true\ncondition: sel"), PROXY_EVENT)

    @pytest.mark.parametrize("value", [200, "200", "0200", 200.0, [404, 200]])
    def test_numbers_compare_numerically(self, value: Any) -> None:
        rs = ruleset("sel:\n  http.response.status_code: 200\ncondition: sel")
        assert fires(rs, {"http": {"response": {"status_code": value}}})

    @pytest.mark.parametrize("value", [201, "2000", "two hundred", None, True])
    def test_numbers_do_not_match_other_values(self, value: Any) -> None:
        rs = ruleset("sel:\n  http.response.status_code: 200\ncondition: sel")
        assert not fires(rs, {"http": {"response": {"status_code": value}}})

    @pytest.mark.parametrize("value", [200, "200", "0200", 200.0, " 200", [404, 200]])
    def test_lists_of_numbers_compare_numerically_too(self, value: Any) -> None:
        rs = ruleset("sel:\n  http.response.status_code: [200, 204, 206, 304]\ncondition: sel")
        assert fires(rs, {"http": {"response": {"status_code": value}}})
        assert not fires(rs, {"http": {"response": {"status_code": 201}}})

    @pytest.mark.parametrize(
        ("mod", "value", "expected"),
        [
            ("gt", 443, False),
            ("gte", 443, True),
            ("lt", "80", True),
            ("lte", 444, False),
            ("gt", "abc", False),
            ("gt", [10, 1000], True),
        ],
    )
    def test_comparisons(self, mod: str, value: Any, expected: bool) -> None:
        rs = ruleset(f"sel:\n  destination.port|{mod}: 443\ncondition: sel")
        assert fires(rs, {"destination": {"port": value}}) is expected


class TestNetworksAndRegex:
    @pytest.mark.parametrize(
        ("cidr", "ip", "expected"),
        [
            ("10.20.0.0/16", "10.20.3.4", True),
            ("10.20.0.0/16", "10.21.3.4", False),
            ("10.20.0.0/16", "not an ip", False),
            ("2001:db8::/32", "2001:DB8:0:0::1", True),
            ("2001:db8::/32", "2001:0db8:0000::1", True),
            ("2001:db8::/32", "2001:db9::1", False),
            ("10.0.0.0/8", "::ffff:10.1.2.3", True),
        ],
    )
    def test_cidr(self, cidr: str, ip: str, expected: bool) -> None:
        rs = ruleset(f"sel:\n  source.ip|cidr: '{cidr}'\ncondition: sel")
        assert fires(rs, {"source": {"ip": ip}}) is expected

    def test_regex_is_case_sensitive_unless_i(self) -> None:
        rs = ruleset("sel:\n  url.full|re: 'raw/[A-Z][a-z]C\\d+$'\ncondition: sel")
        rs_i = ruleset("sel:\n  url.full|re|i: 'RAW/abc\\d+$'\ncondition: sel")
        assert fires(rs, PROXY_EVENT)
        assert not fires(rs, {"url": {"full": "https://x/raw/abc123"}})
        assert fires(rs_i, PROXY_EVENT)

    def test_regex_multiline_and_dotall(self) -> None:
        event = {"message": "first\nsecond line"}
        assert fires(ruleset("sel:\n  message|re|m: '^second'\ncondition: sel"), event)
        assert not fires(ruleset("sel:\n  message|re: '^second'\ncondition: sel"), event)
        assert fires(ruleset("sel:\n  message|re|s: 'first.second'\ncondition: sel"), event)
        assert not fires(ruleset("sel:\n  message|re: 'first.second'\ncondition: sel"), event)

    def test_regex_re2_rejects_backtracking_constructs_with_location(self) -> None:
        text = textwrap.dedent(
            """\
            title: Lookahead
            logsource:
                product: zonewatch
            detection:
                sel:
                    url.full|re: 'a(?=b)'
                condition: sel
            ---
            title: Fine
            logsource:
                product: zonewatch
            detection:
                sel:
                    url.full|contains: pastebin
                condition: sel
            """
        )
        rs = rules_from_yaml(text, pipeline="none", path="rules/bad.yml")
        assert [r.title for r in rs.detections] == ["Fine"]
        (err,) = rs.errors
        assert err.path == "rules/bad.yml" and err.line == 6
        assert "RE2" in err.reason
        assert fires(rs, PROXY_EVENT)


class TestFieldAccess:
    def test_nested_and_flat_dotted_keys(self) -> None:
        rs = ruleset("sel:\n  source.ip: 10.10.3.4\ncondition: sel")
        assert fires(rs, {"source": {"ip": "10.10.3.4"}})
        assert fires(rs, {"source.ip": "10.10.3.4"})
        assert fires(rs, {"source": {"ip.x": 1, "ip": "10.10.3.4"}})

    @pytest.mark.parametrize("name", ["c-uri", "Event_Data", "Some Field", "a.b-c d"])
    def test_field_names_are_not_mangled(self, name: str) -> None:
        rs = ruleset(f"sel:\n  '{name}': v\ncondition: sel")
        assert fires(rs, {name: "v"})
        mangled = name.translate(str.maketrans({"-": "_", " ": "_", "_": "-"}))
        assert not fires(rs, {mangled: "v"})


class TestRouting:
    def test_logsource_restricts_only_known_sources(self) -> None:
        rs = ruleset(
            "sel:\n  url.domain: pastebin.com\ncondition: sel",
            logsource="product: zonewatch\nservice: gateway",
        )
        event = {k: v for k, v in PROXY_EVENT.items() if k != "event"}
        assert fires(rs, event)  # unknown source: every rule applies
        assert fires(rs, event, "gateway")
        assert not fires(rs, event, "firewall")
        assert not fires(rs, {**event, "event": {"dataset": "vdi"}})
        assert fires(rs, {**event, "event": {"dataset": "gateway"}})

    def test_windows_rule_does_not_see_known_sources(self) -> None:
        rs = ruleset(
            "sel:\n  url.domain: pastebin.com\ncondition: sel",
            logsource="product: windows\ncategory: process_creation",
        )
        assert not fires(rs, PROXY_EVENT)
        assert fires(rs, {"url": {"domain": "pastebin.com"}})


class TestAlerts:
    def test_detection_alert_from_evidence(self) -> None:
        rs = ruleset("sel:\n  url.domain: pastebin.com\ncondition: sel")
        (rule,) = rs.match(PROXY_EVENT)
        moment = event_time(PROXY_EVENT)
        ev = Evidence(event_id="line:7", time=moment, line=7, event=PROXY_EVENT)
        alert = detection_alert(rule, ev)
        assert alert.id == alert_id(rule.id, {}, None, None, ["line:7"])
        assert alert.first_seen == alert.last_seen == datetime(2025, 4, 1, 9, 30, tzinfo=UTC)
        assert alert.zone_crossing == "core->internet"
        assert alert.level == "high" and alert.rule_title == "Test rule"
        assert alert.rule_hash == rule.sha256 and len(rule.sha256) == 64
        assert rs.rule(rule.id) is rule

    @given(st.text(max_size=40), st.text(max_size=20))
    def test_detection_alert_id_is_the_model_alert_id(self, rule_id: str, event_id: str) -> None:
        from correlator.detection.alerts import detection_alert_id

        assert detection_alert_id(rule_id, event_id) == alert_id(
            rule_id, {}, None, None, [event_id]
        )

    def test_alerts_round_trip_through_their_json_edge(self) -> None:
        """Alerts and evidence are plain slotted dataclasses on the hot path;
        pydantic validates them only at the JSON edge, which must give back
        equal objects (a field the edge loses or mangles breaks this test)."""
        from dataclasses import FrozenInstanceError

        from correlator.detection.alerts import trusted_evidence
        from zonewatch.models import (
            alert_from_json,
            alert_to_json,
            evidence_from_json,
            evidence_to_json,
        )

        rs = ruleset("sel:\n  url.domain: pastebin.com\ncondition: sel")
        (rule,) = rs.match(PROXY_EVENT)
        ev = trusted_evidence("line:3", event_time(PROXY_EVENT), 3, PROXY_EVENT)
        assert evidence_from_json(evidence_to_json(ev)) == ev
        alert = detection_alert(rule, ev, "match")
        again = alert_from_json(alert_to_json(alert))
        assert again == alert
        assert alert_to_json(again) == alert_to_json(alert)
        assert not hasattr(alert, "__dict__")  # slotted
        with pytest.raises(FrozenInstanceError):
            alert.level = "low"  # type: ignore[misc]  # still frozen

    @pytest.mark.parametrize(
        "bad",
        [{}, {"@timestamp": "yesterday"}, {"@timestamp": "2025-04-01T09:30:00"}, {"@timestamp": 5}],
    )
    def test_event_time_errors(self, bad: dict[str, Any]) -> None:
        with pytest.raises(EventTimeError):
            event_time(bad)

    def test_event_time_offsets_become_utc(self) -> None:
        moment = event_time({"@timestamp": "2025-04-01T18:30:00+09:00"})
        assert moment == datetime(2025, 4, 1, 9, 30, tzinfo=UTC)
