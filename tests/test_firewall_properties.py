"""Property tests: random and mutated lines never crash a network parser.

Every input ends as parsed events or a ParseError (which the caller
dead-letters); no other exception may escape, and every event keeps the raw
line and a well-formed UTC timestamp.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from conftest import SHARED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import connectors.firewall
import connectors.gateway
from connectors.base import FORMATS, ParseContext
from zonewatch.errors import ParseError

STAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
RAW = SHARED / "samples"

# format -> sample files (golden and raw) that seed the mutations
SEEDS: dict[tuple[str, str], list[str]] = {
    ("gateway", "squid"): [
        "golden/squid/test-access.log",
        "raw/proxy_squid/elastic_test-access-extensive.log",
    ],
    ("gateway", "zscaler"): ["golden/zscaler_zia/test-web.log"],
    ("gateway", "proxysg"): ["golden/proxysg/test-proxy-main.log"],
    ("gateway", "cef"): ["golden/cef/test-cef.log"],
    ("firewall", "cef"): ["golden/cef/test-cef.log"],
    ("firewall", "panos"): ["raw/fw_panos/elastic_test-panw-panos-traffic-sample.excerpt.log"],
    ("firewall", "fortigate"): [
        "golden/fortinet_fortigate/test-fortinet-7-6.log",
        "raw/fw_fortigate/elastic_test-fortinet-7-4.excerpt.log",
    ],
    ("firewall", "asa"): [
        "golden/cisco_asa/test-asa-tz-mapping.log",
        "raw/fw_cisco_asa/elastic_test-sample.excerpt.log",
    ],
    ("firewall", "iptables"): ["golden/iptables/test-iptables-raw.log"],
}


def _lines(paths: list[str]) -> list[str]:
    out: list[str] = []
    for rel in paths:
        path = Path(RAW / rel)
        if path.exists():
            out += [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return out or ["x"]


def _check(key: tuple[str, str], raw: str) -> None:
    ctx = ParseContext(
        key[0], key[1], timezone=ZoneInfo("Asia/Tokyo"), now=datetime(2026, 11, 27, tzinfo=UTC)
    )
    try:
        events = FORMATS[key].parse(raw, ctx)
    except ParseError as exc:
        assert str(exc)  # a reason a person can read
        return
    assert isinstance(events, list)
    for event in events:
        assert event["event"]["original"] == raw
        assert STAMP_RE.fullmatch(event["@timestamp"]), event["@timestamp"]
        assert event["event"]["dataset"] == key[0]
        assert event["event"]["module"] == key[1]
        _assert_shippable(event)


def _assert_shippable(node: dict[str, Any], path: str = "") -> None:
    """What the Kafka sink needs: orjson can encode the event (64-bit
    integers only), and no field is None and no object empty, so a Sigma
    ``null`` test means the same on every format."""
    if not path:
        orjson.dumps(node)
    for key, value in node.items():
        assert value is not None, f"{path}{key} is None"
        if isinstance(value, dict):
            assert value, f"{path}{key} is an empty object"
            _assert_shippable(value, f"{path}{key}.")


@st.composite
def mutated(draw: Any, seeds: list[str]) -> str:
    line = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(1, 4))):
        if not line:
            break
        pos = draw(st.integers(0, len(line) - 1))
        op = draw(st.sampled_from(["delete", "insert", "replace", "truncate", "duplicate"]))
        chunk = draw(
            st.text(
                alphabet=st.sampled_from(list(' ,="{}[]()/:.-|\\<>%0123456789aZ\u00e9\u3042\t')),
                min_size=1,
                max_size=4,
            )
        )
        if op == "delete":
            line = line[:pos] + line[pos + draw(st.integers(1, 8)) :]
        elif op == "insert":
            line = line[:pos] + chunk + line[pos:]
        elif op == "replace":
            line = line[:pos] + chunk + line[pos + len(chunk) :]
        elif op == "truncate":
            line = line[:pos]
        else:
            line = line[:pos] + line[pos : pos + 20] + line[pos:]
    return line


KEYS = sorted(SEEDS)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("key", KEYS, ids=[f"{s}-{f}" for s, f in KEYS])
@FAST
@given(data=st.data())
def test_mutated_lines_parse_or_raise_parse_error(key: tuple[str, str], data: Any) -> None:
    _check(key, data.draw(mutated(_lines(SEEDS[key]))))


@pytest.mark.parametrize("key", KEYS, ids=[f"{s}-{f}" for s, f in KEYS])
@settings(max_examples=100, deadline=None)
@given(raw=st.text(max_size=300))
def test_random_text_parses_or_raises_parse_error(key: tuple[str, str], raw: str) -> None:
    _check(key, raw)


@pytest.mark.parametrize("key", KEYS, ids=[f"{s}-{f}" for s, f in KEYS])
def test_every_seed_line_parses(key: tuple[str, str]) -> None:
    """Real lines are never rejected (one context per file: ProxySG's
    #Fields: header applies to the rows after it)."""
    lines = _lines(SEEDS[key])
    if lines == ["x"]:
        pytest.skip("../shared samples are not present")
    ctx = ParseContext(key[0], key[1], now=datetime(2026, 11, 27, tzinfo=UTC))
    emitted = 0
    for raw in lines:
        events = FORMATS[key].parse(raw, ctx)
        emitted += len(events)
        for event in events:
            assert event["event"]["original"] == raw
            assert STAMP_RE.fullmatch(event["@timestamp"])
            _assert_shippable(event)
    assert emitted >= len([ln for ln in lines if not ln.startswith("#")])


# -- FortiOS key=value fields read from an offset, and epoch numbers ---------------

_FORTI_KV_OLD = re.compile(r'([A-Za-z_][\w-]*+)=(?:"([^"\\]*+(?:\\.[^"\\]*+)*+)"|([^\s"]*+))')


def _fortigate_fields_before(text: str) -> dict[str, str]:
    """``fortigate_fields`` as it was, on the line sliced at the first field."""
    found = _FORTI_KV_OLD.findall(text)
    out: dict[str, str] = {}
    for key, quoted, plain in found:
        if key not in out:
            out[key] = quoted.replace('\\"', '"').replace("\\\\", "\\") if quoted else plain
    return out


_KEYS = st.one_of(
    st.sampled_from(["date", "time", "logid", "type", "msg", "srcip", "user", "x-y", "_k"]),
    st.from_regex(r"[A-Za-z_][\w-]{0,6}", fullmatch=True),
    st.text(max_size=4),  # not a key at all
)
# quoted values with blanks, '=', quotes, escapes (backslash-quote, backslash-backslash)
_QUOTED_ATOMS = [*'ab =\t\\"é,;', "\\\\", '\\"']
_QUOTED_CHARS = st.lists(st.sampled_from(_QUOTED_ATOMS), max_size=8).map("".join)
_PLAIN = st.text(alphabet=st.sampled_from(list("ab1.:=-/é")), max_size=8)


@st.composite
def _kv_lines(draw: st.DrawFn) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        key = draw(_KEYS)
        kind = draw(st.sampled_from(["plain", "quoted", "empty", "empty-quoted", "bare"]))
        if kind == "plain":
            parts.append(f"{key}={draw(_PLAIN)}")
        elif kind == "quoted":
            parts.append(f'{key}="{draw(_QUOTED_CHARS)}"')
        elif kind == "empty":
            parts.append(f"{key}=")
        elif kind == "empty-quoted":
            parts.append(f'{key}=""')
        else:
            parts.append(key)
    seps = st.sampled_from([" ", " ", "  ", "\t", "", '"'])
    return "".join(p + draw(seps) for p in parts)


@settings(max_examples=500, deadline=None)
@given(line=_kv_lines(), header=st.sampled_from(["", "<189>", "Nov 27 10:00:00 fw01 "]))
def test_fortigate_fields_from_an_offset_equal_the_sliced_reading(line: str, header: str) -> None:
    # the parser reads the fields from where they start, without a copy of the line
    text = header + line
    assert connectors.firewall.fortigate_fields(text, len(header)) == _fortigate_fields_before(line)


@settings(max_examples=300, deadline=None)
@given(digits=st.from_regex(r"[0-9]{1,20}", fullmatch=True))
def test_epoch_digits_read_alike_with_and_without_the_fast_path(digits: str) -> None:
    from connectors.timeparse import parse_epoch

    try:
        expected: str | type[ParseError] = parse_epoch(f" {digits} ")  # the regex path
    except ParseError:
        expected = ParseError
    try:
        got: str | type[ParseError] = parse_epoch(digits)
    except ParseError:
        got = ParseError
    assert got == expected
