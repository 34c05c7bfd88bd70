"""Correlation semantics on hand-made timelines: every type, boundaries, chains."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from correlator.correlation import (
    CorrelationEngine,
    CorrelationRuleError,
    CorrelationSettings,
    compile_rules,
)
from correlator.correlation.timeline import BASE, Hit, run
from correlator.correlation.yaml_rules import load_rules_text

ROOT = Path(__file__).resolve().parent.parent
NOW = CorrelationSettings(allowed_lateness_s=0)

BASE_RULES = """
title: Failed login
id: 53ba33fd-3a50-4468-a5ef-c583635cfa92
name: failed_login
logsource: {product: zonewatch, service: vdi}
detection: {sel: {event.outcome: failure}, condition: sel}
---
title: Successful login
id: 4d0a2c83-c62c-4ed4-b475-c7e23a9269b8
name: successful_login
logsource: {product: zonewatch, service: vdi}
detection: {sel: {event.outcome: success}, condition: sel}
---
title: Web upload
id: 0b7a3c55-5f1e-4b55-9b5e-0f7b8c9d0e01
name: web_upload
logsource: {product: zonewatch, service: gateway}
detection: {sel: {http.request.method: POST}, condition: sel}
"""


def rules(correlation: str) -> str:
    return BASE_RULES + "---\n" + correlation


def ids(alerts):  # evidence lines of each alert, in order
    return [[e.event_id for e in a.evidence] for a in alerts]


FAILED_3_IN_1M = rules(
    """
title: Many failed logins
id: a8418a5a-5fc4-46b5-b23b-6c73beb19d41
correlation:
  type: event_count
  rules: [failed_login]
  group-by: [user.name]
  timespan: 1m
  condition: {gte: 3}
level: high
"""
)


def failed(seconds: float, user: str = "tanaka@city.example.lg.jp", **fields) -> Hit:
    return Hit(seconds, ["failed_login"], {"user.name": user, "event.outcome": "failure", **fields})


class TestEventCount:
    def test_the_alert_names_the_zone_crossings_of_its_evidence(self):
        def hit(t: float, crossing: str) -> Hit:
            return Hit(
                t,
                ["failed_login"],
                {"user.name": "sato@city.example.lg.jp", "zone": {"crossing": crossing}},
            )

        alerts = run(
            FAILED_3_IN_1M, [hit(0, "core->lgwan"), hit(5, "core->mynumber"),
                             hit(9, "core->lgwan")], NOW
        )  # fmt: skip
        assert [a.zone_crossing for a in alerts] == ["core->lgwan, core->mynumber"]

    def test_three_failures_within_a_minute_fire_once_with_the_window(self):
        alerts = run(FAILED_3_IN_1M, [failed(0), failed(20), failed(45)], NOW)
        assert len(alerts) == 1
        alert = alerts[0]
        assert alert.type == "event_count"
        assert alert.rule_title == "Many failed logins"
        assert alert.level == "high"
        assert alert.group == {"user.name": "tanaka@city.example.lg.jp"}
        assert alert.window_start == BASE
        assert alert.window_end == BASE + timedelta(seconds=45)
        assert ids(alerts) == [["line:1", "line:2", "line:3"]]

    def test_event_exactly_timespan_after_the_first_is_inside(self):
        assert len(run(FAILED_3_IN_1M, [failed(0), failed(30), failed(60)], NOW)) == 1

    def test_event_just_past_the_timespan_is_outside(self):
        assert run(FAILED_3_IN_1M, [failed(0), failed(30), failed(60.001)], NOW) == []

    def test_window_slides_instead_of_tumbling(self):
        # 50 s..70 s straddles the minute boundary at 60 s; a tumbling window
        # would split it, a sliding one sees three failures in 20 s.
        alerts = run(FAILED_3_IN_1M, [failed(0), failed(50), failed(65), failed(70)], NOW)
        assert ids(alerts) == [["line:2", "line:3", "line:4"]]
        assert alerts[0].window_start == BASE + timedelta(seconds=50)

    def test_a_burst_fires_once_per_window_then_restarts(self):
        alerts = run(FAILED_3_IN_1M, [failed(s) for s in range(7)], NOW)
        assert ids(alerts) == [["line:1", "line:2", "line:3"], ["line:4", "line:5", "line:6"]]
        assert len({a.id for a in alerts}) == 2

    def test_equal_timestamps_count_separately(self):
        assert len(run(FAILED_3_IN_1M, [failed(5), failed(5), failed(5)], NOW)) == 1

    def test_groups_are_separate_and_case_insensitive(self):
        hits = [
            failed(0, "Tanaka@City.Example.LG.JP"),
            failed(1, "suzuki@city.example.lg.jp"),
            failed(2, "TANAKA@city.example.lg.jp"),
            failed(3, "suzuki@city.example.lg.jp"),
            failed(4, "tanaka@city.example.lg.jp"),
        ]
        alerts = run(FAILED_3_IN_1M, hits, NOW)
        assert [a.group for a in alerts] == [{"user.name": "tanaka@city.example.lg.jp"}]
        assert ids(alerts) == [["line:1", "line:3", "line:5"]]

    def test_events_without_the_group_field_join_no_group_and_are_counted(self):
        loaded = load_rules_text(FAILED_3_IN_1M)
        engine = CorrelationEngine(loaded.correlations, loaded.resolve, NOW)
        from correlator.correlation.timeline import feed

        hits = [failed(0), Hit(1, ["failed_login"], {"event.outcome": "failure"}), failed(2)]
        assert feed(engine, loaded, hits) == []
        assert engine.metrics()["missing_group_field"] == 1

    def test_two_group_fields_must_both_match(self):
        text = """
title: Denied crossing
id: 4a8b1e77-2f6d-4c3a-a9e0-6c5d2b8f1e05
name: zw_fw_denied_crossing
logsource: {product: zonewatch, service: firewall}
detection: {selection: {event.outcome: failure}, condition: selection}
---
title: Repeated denied cross-zone connections from one host
id: 4a8b1e77-2f6d-4c3a-a9e0-6c5d2b8f1e06
correlation:
  type: event_count
  rules: [zw_fw_denied_crossing]
  group-by: [source.ip, zone.crossing]
  timespan: 5m
  condition: {gte: 5}
"""
        deny = "4a8b1e77-2f6d-4c3a-a9e0-6c5d2b8f1e05"

        def d(s, ip, crossing):
            return Hit(s, [deny], {"source.ip": ip, "zone.crossing": crossing})

        scan = [d(10 * i, "10.10.4.17", "core->lgwan") for i in range(5)]
        mixed = [
            d(10 * i, "10.10.4.18", ["core->lgwan", "core->mynumber"][i % 2]) for i in range(5)
        ]
        alerts = run(text, scan + mixed, NOW)
        assert [a.group for a in alerts] == [
            {"source.ip": "10.10.4.17", "zone.crossing": "core->lgwan"}
        ]
        assert alerts[0].rule_id == "4a8b1e77-2f6d-4c3a-a9e0-6c5d2b8f1e06"


class TestWithoutGroupBy:
    """A correlation without group-by has one group for the whole input."""

    def test_event_count_counts_every_event_whatever_its_fields(self):
        text = rules(
            """
title: Failed logins anywhere
id: 1d7c0f0e-0000-4000-8000-0000000000a1
correlation: {type: event_count, rules: [failed_login], timespan: 1m, condition: {gte: 3}}
"""
        )
        hits = [
            failed(0, "tanaka@city.example.lg.jp"),
            failed(10, "sato@city.example.lg.jp"),
            Hit(20, ["failed_login"], {"event.outcome": "failure"}),  # no user at all
            failed(200, "kato@city.example.lg.jp"),
        ]
        alerts = run(text, hits, NOW)
        assert [(a.group, len(a.evidence)) for a in alerts] == [({}, 3)]
        assert alerts[0].window_end == BASE + timedelta(seconds=20)

    def test_temporal_across_users(self):
        text = TEMPORAL.replace(
            """  group-by: [person]
  aliases:
    person:
      noncompliant: intune.upn
      vdi_restricted: user.name
""",
            "",
        )
        assert "group-by" not in text
        alerts = run(text % "temporal", [nc(0, "kato@city.example.lg.jp"), vdi(60, "sato")], NOW)
        assert [a.group for a in alerts] == [{}]

    def test_a_chain_of_ungrouped_correlations(self):
        text = rules(
            """
title: Failed logins anywhere
id: 1d7c0f0e-0000-4000-8000-0000000000a2
name: many_failed
correlation: {type: event_count, rules: [failed_login], timespan: 1m, condition: {gte: 2}}
---
title: Repeated bursts of failures
id: 1d7c0f0e-0000-4000-8000-0000000000a3
correlation: {type: event_count, rules: [many_failed], timespan: 10m, condition: {gte: 2}}
"""
        )
        hits = [failed(0), failed(5, "sato"), failed(300, "kato"), failed(301, "ito")]
        alerts = run(text, hits, NOW)
        assert [a.rule_id for a in alerts] == ["1d7c0f0e-0000-4000-8000-0000000000a3"]
        assert len(alerts[0].evidence) == 4


def count_rule(condition: str) -> str:
    return rules(
        f"""
title: Failed login count
id: 1d7c0f0e-0000-4000-8000-000000000001
correlation:
  type: event_count
  rules: [failed_login]
  group-by: [user.name]
  timespan: 10m
  condition: {condition}
"""
    )


class TestConditions:
    def test_range_fires_when_the_count_enters_it(self):
        alerts = run(count_rule("{gt: 1, lte: 2}"), [failed(s) for s in range(5)], NOW)
        assert ids(alerts) == [["line:1", "line:2"], ["line:3", "line:4"]]

    def test_eq(self):
        alerts = run(count_rule("{eq: 3}"), [failed(s) for s in range(4)], NOW)
        assert ids(alerts) == [["line:1", "line:2", "line:3"]]

    def test_neq_skips_the_excluded_count(self):
        alerts = run(count_rule("{neq: 1}"), [failed(s) for s in range(3)], NOW)
        assert ids(alerts) == [["line:1", "line:2"]]

    def test_lt_holds_from_the_first_event(self):
        # Literal Sigma semantics: a span holding one event has a count below 2.
        alerts = run(count_rule("{lt: 2}"), [failed(0), failed(1)], NOW)
        assert ids(alerts) == [["line:1"], ["line:2"]]

    def test_range_with_a_bad_operator_is_reported(self):
        with pytest.raises(CorrelationRuleError, match="not a number"):
            loaded = load_rules_text(count_rule("{gt: 1, lte: many}"))
            compile_rules(loaded.correlations, loaded.resolve)


class TestValueCount:
    RULE = rules(
        """
title: Uploads to many sites
id: 1d7c0f0e-0000-4000-8000-000000000002
correlation:
  type: value_count
  rules: [web_upload]
  group-by: [source.ip]
  timespan: 10m
  condition: {field: url.domain, gte: 3}
"""
    )

    @staticmethod
    def up(s, domain, ip="10.10.3.21"):
        return Hit(s, ["web_upload"], {"source.ip": ip, "url.domain": domain})

    def test_distinct_values_case_insensitive(self):
        hits = [
            self.up(0, "files.example.com"),
            self.up(10, "FILES.example.com"),
            self.up(20, "paste.example.net"),
            self.up(30, "drop.example.org"),
        ]
        alerts = run(self.RULE, hits, NOW)
        assert len(alerts) == 1
        assert alerts[0].window_end == BASE + timedelta(seconds=30)
        assert len(alerts[0].evidence) == 4

    def test_values_leave_the_window(self):
        hits = [self.up(0, "a.example"), self.up(300, "b.example"), self.up(601, "c.example")]
        assert run(self.RULE, hits, NOW) == []

    def test_events_without_the_field_are_counted_not_joined(self):
        loaded = load_rules_text(self.RULE)
        engine = CorrelationEngine(loaded.correlations, loaded.resolve, NOW)
        from correlator.correlation.timeline import feed

        feed(engine, loaded, [Hit(0, ["web_upload"], {"source.ip": "10.10.3.21"})])
        assert engine.metrics()["missing_value"] == 1


def metric_rule(ctype: str, condition: str) -> str:
    return rules(
        f"""
title: Upload volume
id: 1d7c0f0e-0000-4000-8000-000000000003
correlation:
  type: {ctype}
  rules: [web_upload]
  group-by: [user.name]
  timespan: 1h
  condition: {condition}
"""
    )


def upload(s, size, user="sato@city.example.lg.jp"):
    return Hit(s, ["web_upload"], {"user.name": user, "http.request.bytes": size})


class TestValueMetrics:
    def test_sum_fires_when_it_crosses(self):
        rule = metric_rule("value_sum", "{field: http.request.bytes, gt: 1000}")
        alerts = run(
            rule, [upload(0, 400), upload(60, "400"), upload(120, "abc"), upload(180, 300)], NOW
        )
        assert ids(alerts) == [["line:1", "line:2", "line:4"]]

    def test_sum_forgets_values_leaving_the_window(self):
        rule = metric_rule("value_sum", "{field: http.request.bytes, gt: 1000}")
        assert run(rule, [upload(0, 900), upload(3601, 200)], NOW) == []

    def test_avg_with_a_fractional_threshold(self):
        rule = metric_rule("value_avg", "{field: http.request.bytes, gt: 2.5}")
        alerts = run(rule, [upload(0, 2), upload(1, 3), upload(2, 4)], NOW)
        assert ids(alerts) == [["line:1", "line:2", "line:3"]]

    def test_percentile_interpolates(self):
        rule = metric_rule(
            "value_percentile", "{field: http.request.bytes, percentile: 90, gte: 100}"
        )
        sizes = [10, 20, 30, 40, 50, 60, 70, 80, 90, 1000]
        alerts = run(rule, [upload(i, v) for i, v in enumerate(sizes)], NOW)
        assert len(alerts) == 1 and len(alerts[0].evidence) == 10

    def test_median(self):
        rule = metric_rule("value_median", "{field: http.request.bytes, gt: 100}")
        alerts = run(rule, [upload(0, 50), upload(1, 200)], NOW)
        assert ids(alerts) == [["line:1", "line:2"]]

    def test_percentile_needs_its_percentile(self):
        loaded = load_rules_text(
            metric_rule("value_percentile", "{field: http.request.bytes, gte: 1}")
        )
        with pytest.raises(CorrelationRuleError, match="percentile"):
            compile_rules(loaded.correlations, loaded.resolve)


TEMPORAL = (
    BASE_RULES
    + """---
title: Device non-compliant
id: 3c9a7d10-5e2b-4b8f-9f04-1d6e8a2c7b03
name: noncompliant
logsource: {product: zonewatch, service: intune}
detection: {sel: {intune.compliance: noncompliant}, condition: sel}
---
title: Restricted VDI session
id: 8e3f5a22-1b7c-4d9e-8f61-2a4c6e8b0d07
name: vdi_restricted
logsource: {product: zonewatch, service: vdi}
detection: {sel: {vdi.pool: mynumber}, condition: sel}
---
title: Non-compliant device and restricted session
id: 8e3f5a22-1b7c-4d9e-8f61-2a4c6e8b0d08
correlation:
  type: %s
  rules: [noncompliant, vdi_restricted]
  group-by: [person]
  aliases:
    person:
      noncompliant: intune.upn
      vdi_restricted: user.name
  timespan: 15m
"""
)


def nc(s, upn="kato@city.example.lg.jp"):
    return Hit(s, ["noncompliant"], {"intune.upn": upn, "intune.compliance": "noncompliant"})


def vdi(s, user="KATO@city.example.lg.jp"):
    return Hit(s, ["vdi_restricted"], {"user.name": user, "vdi.pool": "mynumber"})


class TestTemporal:
    def test_aliases_join_differently_named_fields_in_any_order(self):
        alerts = run(TEMPORAL % "temporal", [vdi(0), nc(600)], NOW)
        assert len(alerts) == 1
        assert alerts[0].group == {"person": "kato@city.example.lg.jp"}
        assert alerts[0].window_start == BASE and alerts[0].window_end == BASE + timedelta(
            seconds=600
        )

    def test_too_far_apart(self):
        assert run(TEMPORAL % "temporal", [nc(0), vdi(901)], NOW) == []

    def test_exactly_timespan_apart(self):
        assert len(run(TEMPORAL % "temporal", [nc(0), vdi(900)], NOW)) == 1

    def test_other_users_do_not_join(self):
        assert run(TEMPORAL % "temporal", [nc(0), vdi(10, "ito@city.example.lg.jp")], NOW) == []

    def test_repeats_of_one_rule_alone_never_fire(self):
        assert run(TEMPORAL % "temporal", [nc(s) for s in range(5)], NOW) == []

    def test_ordered_needs_the_rules_order(self):
        ordered = TEMPORAL % "temporal_ordered"
        assert len(run(ordered, [nc(0), vdi(60)], NOW)) == 1
        assert run(ordered, [vdi(0), nc(60)], NOW) == []

    def test_ordered_equal_timestamps_are_not_an_order(self):
        assert run(TEMPORAL % "temporal_ordered", [nc(5), vdi(5)], NOW) == []

    def test_ordered_uses_the_latest_start(self):
        # nc at 0 is too old for vdi at 950, the nc at 100 is not.
        alerts = run(TEMPORAL % "temporal_ordered", [nc(0), nc(100), vdi(950)], NOW)
        assert ids(alerts) == [["line:2", "line:3"]]


EXTENDED = TEMPORAL.replace(
    "  rules: [noncompliant, vdi_restricted]\n",
    "  rules: [noncompliant, vdi_restricted]\n  condition: %s\n",
)


def remediated(s, upn="kato@city.example.lg.jp"):
    return Hit(s, ["successful_login"], {"intune.upn": upn, "event.outcome": "success"})


ABSENCE = rules(
    """
title: Non-compliant and not fixed
id: 1d7c0f0e-0000-4000-8000-000000000004
correlation:
  type: temporal
  rules: [failed_login, successful_login]
  group-by: [user.name]
  timespan: 10m
  condition: failed_login and not successful_login
"""
)


def ok(s, user="tanaka@city.example.lg.jp"):
    return Hit(s, ["successful_login"], {"user.name": user, "event.outcome": "success"})


class TestExtendedConditions:
    def _engine(self, text=ABSENCE):
        loaded = load_rules_text(text)
        return loaded, CorrelationEngine(loaded.correlations, loaded.resolve, NOW)

    def test_absence_resolves_when_the_watermark_passes_the_window(self):
        from correlator.correlation.timeline import feed

        loaded, engine = self._engine()
        assert feed(engine, loaded, [failed(0)]) == []
        assert engine.advance_watermark(0, BASE + timedelta(seconds=600)) == []
        alerts = engine.advance_watermark(0, BASE + timedelta(seconds=601))
        assert len(alerts) == 1
        assert alerts[0].window_start == BASE
        assert alerts[0].window_end == BASE + timedelta(seconds=600)
        assert ids(alerts) == [["line:1"]]

    def test_present_rule_at_the_window_end_cancels(self):
        assert run(ABSENCE, [failed(0), ok(600), failed(2000, "other@x")], NOW) == []

    def test_present_rule_before_the_anchor_does_not_cancel(self):
        alerts = run(ABSENCE, [ok(0), failed(10), failed(700, "other@x")], NOW)
        assert ids(alerts) == [["line:2"]]

    def test_repeats_inside_an_open_window_join_it(self):
        alerts = run(ABSENCE, [failed(0), failed(100), failed(700, "other@x")], NOW)
        assert ids(alerts) == [["line:1", "line:2"]]

    def test_flush_leaves_windows_the_input_does_not_cover(self):
        loaded, engine = self._engine()
        from correlator.correlation.timeline import feed

        feed(engine, loaded, [failed(0), failed(100, "other@x")])
        assert engine.flush() == []
        assert engine.metrics()["incomplete_windows"] == 2

    def test_or(self):
        text = ABSENCE.replace(
            "failed_login and not successful_login", "failed_login or successful_login"
        )
        assert len(run(text, [failed(0), ok(1000)], NOW)) == 2

    def test_ordered_extended(self):
        alerts = run(
            EXTENDED % ("temporal_ordered", "noncompliant and vdi_restricted"),
            [vdi(0), nc(1), vdi(2)],
            NOW,
        )
        assert ids(alerts) == [["line:2", "line:3"]]

    def test_only_absence_is_rejected(self):
        loaded = load_rules_text(EXTENDED % ("temporal", "not noncompliant and not vdi_restricted"))
        with pytest.raises(CorrelationRuleError, match="no rule present"):
            compile_rules(loaded.correlations, loaded.resolve)


CHAIN = rules(
    """
title: Multiple failed logons
id: a8418a5a-5fc4-46b5-b23b-6c73beb19d41
name: multiple_failed_login
correlation:
  type: event_count
  rules: [failed_login]
  group-by: [user.name]
  timespan: 10m
  condition: {gte: 3}
---
title: Failed logins followed by a successful login
id: b180ead8-d58f-40b2-ae54-c8940995b9b6
correlation:
  type: temporal_ordered
  rules: [multiple_failed_login, successful_login]
  group-by: [user.name]
  timespan: 10m
level: high
"""
)


class TestChains:
    def test_brute_force_then_success(self):
        hits = [failed(0), failed(10), failed(20), ok(30), ok(40, "other@x")]
        alerts = run(CHAIN, hits, NOW)
        assert [a.rule_id for a in alerts] == ["b180ead8-d58f-40b2-ae54-c8940995b9b6"]
        assert ids(alerts) == [["line:1", "line:2", "line:3", "line:4"]]

    def test_success_before_the_brute_force_is_not_a_chain(self):
        assert run(CHAIN, [ok(0), failed(10), failed(20), failed(30)], NOW) == []

    def test_the_inner_rule_alerts_only_with_generate(self):
        text = CHAIN.replace("level: high", "level: high\n  ").replace(
            "  timespan: 10m\nlevel: high", "  timespan: 10m\n  generate: true\nlevel: high"
        )
        alerts = run(text, [failed(0), failed(10), failed(20), ok(30)], NOW)
        assert [a.type for a in alerts] == ["event_count", "temporal_ordered"]

    def test_generated_and_correlation_only_rules_are_exposed(self):
        loaded = load_rules_text(TEMPORAL % "temporal")
        engine = CorrelationEngine(loaded.correlations, loaded.resolve)
        assert engine.correlation_only_rule_ids == {
            "3c9a7d10-5e2b-4b8f-9f04-1d6e8a2c7b03",
            "8e3f5a22-1b7c-4d9e-8f61-2a4c6e8b0d07",
        }
        generated = load_rules_text((TEMPORAL % "temporal") + "  generate: true\n")
        engine = CorrelationEngine(generated.correlations, generated.resolve)
        assert engine.correlation_only_rule_ids == set()
        assert "3c9a7d10-5e2b-4b8f-9f04-1d6e8a2c7b03" in engine.generated_rule_ids


@pytest.mark.parametrize(
    ("spec", "seconds"),
    [
        ("30s", 30),
        ("90m", 5400),
        ("2h", 7200),
        ("1d", 86400),
        ("1w", 604800),
        ("1M", 2629746),
        ("1y", 31556952),
    ],
)
def test_timespan_units(spec, seconds):
    loaded = load_rules_text(FAILED_3_IN_1M.replace("timespan: 1m", f"timespan: {spec}"))
    assert compile_rules(loaded.correlations, loaded.resolve)[0].span == seconds


def test_unknown_reference_is_reported_with_the_rule():
    loaded = load_rules_text(FAILED_3_IN_1M)
    with pytest.raises(CorrelationRuleError, match=r"failed_login.*not loaded"):
        compile_rules(loaded.correlations, lambda ref: None)
