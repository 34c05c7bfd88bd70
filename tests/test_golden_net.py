"""Golden tests: our gateway/firewall parsers against the ECS documents that
Elastic's integration pipelines produce from the same vendor lines
(../shared/samples/golden, Elastic License 2.0 test fixtures).

Every field Elastic sets among ``COMPARED`` must agree with ours, except the
deliberate differences listed in ``DIFFERENCES`` (each one is explained in
connectors/FIELDS.md). A difference not listed fails the test, and so does a
listed one that no longer occurs (the list must stay honest).
"""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import connectors.firewall
import connectors.gateway
from connectors.base import FORMATS, ParseContext
from zonewatch.ecs import flatten

COMPARED = (
    "@timestamp",
    "source.ip",
    "source.port",
    "destination.ip",
    "destination.port",
    "user.name",
    "source.user.name",
    "event.action",
    "event.outcome",
    "url.full",
    "url.original",
    "url.domain",
    "url.path",
    "url.query",
    "url.scheme",
    "url.port",
    "http.request.method",
    "http.response.status_code",
    "network.transport",
    "rule.name",
    "observer.ingress.zone",
    "observer.egress.zone",
    "observer.ingress.interface.name",
    "source.bytes",
    "destination.bytes",
    "network.bytes",
)

# Elastic's name for a field -> ours, where the integration uses another ECS field.
ALIASES: dict[str, dict[str, str]] = {
    "proxysg": {"client.ip": "source.ip", "client.user.id": "user.name"},
}

# (format, field, 1-based line) -> reason; line None = every line of the file.
DIFFERENCES: dict[tuple[str, str, int | None], str] = {
    ("zscaler", "user.name", None): "we keep the login as the device gives it (UPN)",
    ("zscaler", "rule.name", 6): "'None' is Zscaler's empty marker; we omit the field",
    ("asa", "event.action", 3): "deny, not firewall-rule, so one Sigma term covers all firewalls",
    ("asa", "@timestamp", 3): "WEST is UTC+1; Elastic's tz_map left it as UTC",
    ("fortigate", "event.action", None): "the device's action word, not Elastic's logid name",
}

# (directory, log, format, source, timezone, year given in the line?)
CASES = [
    ("zscaler_zia", "test-web.log", "zscaler", "gateway", "UTC", True),
    ("proxysg", "test-proxy-main.log", "proxysg", "gateway", "UTC", True),
    ("fortinet_fortigate", "test-fortinet-7-6.log", "fortigate", "firewall", "UTC", True),
    ("cisco_asa", "test-asa-tz-mapping.log", "asa", "firewall", "UTC", False),
    ("iptables", "test-iptables-raw.log", "iptables", "firewall", "UTC", False),
]


def _norm_ts(value: str, with_year: bool) -> str:
    instant = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    text = instant.strftime("%Y-%m-%dT%H:%M:%S")
    # Elastic's year for year-less syslog lines is the year the fixture was
    # regenerated (its config marks @timestamp dynamic): compare without it.
    return text if with_year else text[5:]


def _norm(field: str, value: Any, with_year: bool) -> Any:
    if value in ("", None):
        return None
    if field == "@timestamp":
        return _norm_ts(value, with_year)
    if field.endswith(".ip"):
        return ipaddress.ip_address(value)  # IPv6 spelling differs, the address must not
    if field == "url.query":
        # Elastic's ProxySG keeps ELFF's leading "?" and "-"; ECS has neither.
        value = value.removeprefix("?")
        return None if value in ("", "-") else value
    return value


def _compare(
    fmt: str, expected: dict[str, Any], ours: dict[str, Any], with_year: bool
) -> tuple[list[str], list[tuple[str, Any, Any]]]:
    exp = flatten(expected)
    for theirs, mine in ALIASES.get(fmt, {}).items():
        if theirs in exp and mine not in exp:
            exp[mine] = exp[theirs]
    got = flatten(ours)
    agreed: list[str] = []
    differ: list[tuple[str, Any, Any]] = []
    for field in COMPARED:
        if field not in exp or _norm(field, exp[field], with_year) is None:
            continue
        a, b = _norm(field, exp[field], with_year), _norm(field, got.get(field), with_year)
        if a == b:
            agreed.append(field)
        else:
            differ.append((field, exp[field], got.get(field)))
    return agreed, differ


@pytest.mark.parametrize("case", CASES, ids=[c[2] for c in CASES])
def test_agrees_with_elastic(case: tuple[str, str, str, str, str, bool], shared_dir: Path) -> None:
    directory, log, fmt, source, tz, with_year = case
    folder = shared_dir / "samples" / "golden" / directory
    lines = (folder / log).read_text(encoding="utf-8").splitlines()
    expected = json.loads((folder / f"{log}-expected.json").read_text(encoding="utf-8"))["expected"]
    assert len(lines) == len(expected)
    ctx = ParseContext(source, fmt, timezone=ZoneInfo(tz), now=datetime(2026, 11, 27, tzinfo=UTC))
    parse = FORMATS[(source, fmt)].parse
    unexplained: list[str] = []
    used: set[tuple[str, str, int | None]] = set()
    agreed_total = 0
    for lineno, (line, exp) in enumerate(zip(lines, expected, strict=True), 1):
        events = parse(line, ctx)
        if exp is None:  # Elastic drops header lines; so do we
            assert events == []
            continue
        assert len(events) == 1
        ours = events[0]
        assert ours["event"]["original"] == exp["event"]["original"] == line
        agreed, differ = _compare(fmt, exp, ours, with_year)
        agreed_total += len(agreed)
        for field, theirs, mine in differ:
            for key in ((fmt, field, lineno), (fmt, field, None)):
                if key in DIFFERENCES:
                    used.add(key)
                    break
            else:
                unexplained.append(f"line {lineno} {field}: elastic={theirs!r} ours={mine!r}")
    assert not unexplained, "\n".join(unexplained)
    listed = {k for k in DIFFERENCES if k[0] == fmt}
    assert listed <= used, f"listed differences that no longer occur: {listed - used}"
    assert agreed_total >= len([e for e in expected if e]) * 3


def test_differences_are_documented() -> None:
    doc = (Path(connectors.firewall.__file__).parent / "FIELDS.md").read_text(encoding="utf-8")
    for fmt, field, _ in DIFFERENCES:
        assert f"| {fmt} | `{field}`" in doc, f"FIELDS.md lacks a row for {fmt} {field}"
