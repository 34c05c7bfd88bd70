"""Hostile input for every format: numbers, dates and nesting at the extremes,
and bytes that are not text. Whatever a line holds, handling it ends in
events that serialize or in one dead letter with its raw bytes: nothing
raises, nothing is lost (issue 20: hostile-input suite, point 4 for numbers).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import SHARED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.base import FORMATS
from connectors.inputs import Record
from connectors.pipeline import Pipeline, formats_of
from tests.corpus_check import load

STAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
for _source in ("firewall", "gateway", "vdi", "intune"):
    formats_of(_source)
KEYS = sorted(k for k in FORMATS if not k[1].startswith("test-"))

# seeds: the corpus lines of each format, and the shared vendor samples
SAMPLE_SEEDS: dict[tuple[str, str], list[str]] = {
    ("gateway", "squid"): ["golden/squid/test-access.log"],
    ("gateway", "zscaler"): ["golden/zscaler_zia/test-web.log"],
    ("gateway", "proxysg"): ["golden/proxysg/test-proxy-main.log"],
    ("gateway", "cef"): ["golden/cef/test-cef.log"],
    ("firewall", "fortigate"): ["golden/fortinet_fortigate/test-fortinet-7-6.log"],
    ("firewall", "asa"): ["raw/fw_cisco_asa/elastic_test-sample.excerpt.log"],
    ("firewall", "iptables"): ["golden/iptables/test-iptables-raw.log"],
    ("firewall", "panos"): ["raw/fw_panos/elastic_test-panw-panos-traffic-sample.excerpt.log"],
    ("intune", "diagnostic"): ["raw/intune/elastic_test-audit.log"],
    ("intune", "devices"): ["raw/intune/elastic_test-managed-device.log"],
}


def _seeds(key: tuple[str, str]) -> list[str]:
    lines = [ln for case in load() if (case.source, case.format) == key for ln in case.lines]
    if key == ("firewall", "cef"):
        lines += [ln for case in load() if case.format == "cef" for ln in case.lines]
    for rel in SAMPLE_SEEDS.get(key, []):
        path = Path(SHARED / "samples" / rel)
        if path.exists():
            lines += [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return lines or ["x"]


SEEDS = {key: _seeds(key) for key in KEYS}

EXTREME_NUMBERS = [
    str(2**64), str(2**63), str(-(2**63) - 1), "9" * 40, "0", "-1", "1e400", "0" * 30 + "1",
    "١٢٣", "²", "99999999999999999999.999", "-0", "NaN", "Infinity",
]  # fmt: skip
EXTREME_DATES = [
    "9999-12-31T23:59:59", "0001-01-01T00:00:00", "0000-00-00", "2026-02-30", "10000-01-01",
    "2026-13-01", "1969-12-31T23:59:59", "2026-11-26T24:60:61", "2026-11-26T23:59:60",
]  # fmt: skip
_NUMBER_RE = re.compile(r"-?\d+")
_DATE_RE = re.compile(r"\d{4}[-/]\d{1,2}[-/]\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2})?)?")


def _account(key: tuple[str, str], pipeline: Pipeline, data: bytes) -> None:
    """Handle one record: events that serialize, or one dead letter, or (for
    header and state lines) nothing; never an exception."""
    encoded, letter = pipeline.handle_encoded(Record(data, position=1))
    if letter is not None:
        assert encoded == []
        assert letter.reason and letter.raw is not None
        return
    for _event, value in encoded:
        doc = orjson.loads(value)
        assert STAMP_RE.fullmatch(doc["@timestamp"]), doc["@timestamp"]
        assert doc["event"]["dataset"] == key[0]
        assert doc["event"]["module"] != "auto"


def _pipeline(key: tuple[str, str], fmt: str | None = None) -> Pipeline:
    pipeline = Pipeline(key[0], fmt or key[1], zones=None, encoding="auto")
    pipeline.ctx.now = NOW
    return pipeline


@st.composite
def numbers_at_the_extremes(draw: Any, seeds: list[str]) -> str:
    line = draw(st.sampled_from(seeds))
    spots = list(_NUMBER_RE.finditer(line))
    if not spots:
        return line
    for _ in range(draw(st.integers(1, 6))):
        m = draw(st.sampled_from(spots))
        value = draw(st.sampled_from(EXTREME_NUMBERS))
        line = line[: m.start()] + value + line[m.end() :]
        spots = list(_NUMBER_RE.finditer(line))
        if not spots:
            break
    return line


@st.composite
def dates_at_the_extremes(draw: Any, seeds: list[str]) -> str:
    line = draw(st.sampled_from(seeds))
    spots = list(_DATE_RE.finditer(line))
    if not spots:
        return draw(numbers_at_the_extremes(seeds))
    m = draw(st.sampled_from(spots))
    return line[: m.start()] + draw(st.sampled_from(EXTREME_DATES)) + line[m.end() :]


def _objects(node: Any) -> Any:
    """Every non-empty JSON object in ``node``, outermost first."""
    if isinstance(node, dict):
        if node:
            yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


@st.composite
def nesting_at_the_extremes(draw: Any, seeds: list[str]) -> str:
    """JSON lines with one value (at any depth of the record) replaced by a
    structure nested past what orjson writes (254 levels) or reads (1024)."""
    line = draw(st.sampled_from(seeds))
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    objects = list(_objects(doc))
    if not objects:
        return line
    target = draw(st.sampled_from(objects))
    target[draw(st.sampled_from(sorted(target)))] = "__DEEP__"
    depth = draw(st.sampled_from([10, 256, 300, 1100]))
    leaf = draw(st.sampled_from(['"x"', str(2**64 - 1), "1.5e308", "null", "true", "{}"]))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"k":', "}")]))
    deep = opener * depth + leaf + closer * depth
    return orjson.dumps(doc).decode().replace('"__DEEP__"', deep, 1)


FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
IDS = [f"{s}-{f}" for s, f in KEYS]


@pytest.mark.parametrize("key", KEYS, ids=IDS)
@FUZZ
@given(data=st.data())
def test_numbers_at_the_extremes(key: tuple[str, str], data: Any) -> None:
    _account(key, _pipeline(key), data.draw(numbers_at_the_extremes(SEEDS[key])).encode())


@pytest.mark.parametrize("key", KEYS, ids=IDS)
@FUZZ
@given(data=st.data())
def test_dates_at_the_extremes(key: tuple[str, str], data: Any) -> None:
    _account(key, _pipeline(key), data.draw(dates_at_the_extremes(SEEDS[key])).encode())


@pytest.mark.parametrize("key", KEYS, ids=IDS)
@FUZZ
@given(data=st.data())
def test_nesting_at_the_extremes(key: tuple[str, str], data: Any) -> None:
    _account(key, _pipeline(key), data.draw(nesting_at_the_extremes(SEEDS[key])).encode())


@pytest.mark.parametrize("key", KEYS, ids=IDS)
@FUZZ
@given(data=st.binary(max_size=400))
def test_any_bytes(key: tuple[str, str], data: bytes) -> None:
    _account(key, _pipeline(key), data)


@pytest.mark.parametrize("source", ["firewall", "gateway", "vdi", "intune"])
def test_a_hostile_stream_under_auto_accounts_for_every_line(source: str) -> None:
    """Every seed of the source, mutated, through one auto pipeline: each
    record is read, and ends as events, a dead letter, or a known silent line."""
    import random

    rng = random.Random(20)
    pipeline = _pipeline((source, "auto"), "auto")
    lines: list[str] = []
    for key in KEYS:
        if key[0] == source:
            for seed in SEEDS[key]:
                line = seed
                for m in list(_NUMBER_RE.finditer(seed))[:3]:
                    line = line.replace(m.group(0), rng.choice(EXTREME_NUMBERS), 1)
                lines += [seed, line]
    letters = events = silent = 0
    for line in lines:
        encoded, letter = pipeline.handle_encoded(Record(line.encode(), position=1))
        if letter is not None:
            letters += 1
        elif encoded:
            events += 1
        else:
            silent += 1
    stats = pipeline.stats
    assert stats.read == len(lines) == letters + events + silent
    assert stats.dead_lettered == letters
    assert events > len(lines) // 3  # most mutated lines are still read
