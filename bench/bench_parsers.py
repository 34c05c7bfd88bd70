"""Parser throughput per format: lines/s through ``parse`` alone (no Kafka).

Each format parses a cycle of real-looking lines from ../shared/samples for
about a second. The baseline, measured in the same run, is ``str.split`` plus
``orjson.dumps`` of a 20-field dict per line: the floor any parser pays to
touch the line and emit an event. Target: >= 100k lines/s per parser so the
whole connector keeps >= 40k lines/s into Kafka.

    python bench/bench_parsers.py [--seconds 1.0] [FORMAT ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import connectors.firewall  # noqa: E402
import connectors.gateway  # noqa: E402,F401
from connectors.base import FORMATS, ParseContext  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "samples"
FILES: dict[tuple[str, str], list[str]] = {
    ("gateway", "squid"): ["golden/squid/test-access.log"],
    ("gateway", "zscaler"): ["golden/zscaler_zia/test-web.log"],
    ("gateway", "proxysg"): ["golden/proxysg/test-proxy-main.log"],
    ("gateway", "cef"): ["golden/cef/test-cef.log"],
    ("firewall", "panos"): ["raw/fw_panos/elastic_test-panw-panos-traffic-sample.excerpt.log"],
    ("firewall", "fortigate"): ["raw/fw_fortigate/elastic_test-fortinet-7-4.excerpt.log"],
    ("firewall", "asa"): ["raw/fw_cisco_asa/elastic_test-sample.excerpt.log"],
    ("firewall", "iptables"): ["golden/iptables/test-iptables-raw.log"],
}


def _lines(key: tuple[str, str]) -> list[str]:
    out: list[str] = []
    for rel in FILES[key]:
        out += [ln for ln in (SAMPLES / rel).read_text(encoding="utf-8").splitlines() if ln]
    return out


def _rate(fn, lines: list[str], seconds: float) -> float:  # type: ignore[no-untyped-def]
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for line in lines:
            fn(line)
        n += len(lines)
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("formats", nargs="*")
    args = ap.parse_args()

    def baseline(line: str) -> bytes:
        f = line.split()
        return orjson.dumps({f"k{i}": f[i % len(f)] for i in range(20)})

    keys = [k for k in FILES if not args.formats or k[1] in args.formats]
    base = _rate(baseline, _lines(keys[0]), args.seconds)
    print(f"{'format':<20}{'lines/s':>12}{'vs baseline':>13}{'parse+dumps/s':>15}")
    print(f"{'baseline split+dumps':<20}{base:>12,.0f}{1.0:>13.2f}")
    for key in keys:
        lines = _lines(key)
        ctx = ParseContext(
            key[0], key[1], timezone=ZoneInfo("Asia/Tokyo"), now=datetime(2026, 11, 27, tzinfo=UTC)
        )
        parse = FORMATS[key].parse

        def one(line: str, parse=parse, ctx=ctx) -> object:  # type: ignore[no-untyped-def]
            return parse(line, ctx)

        def with_dumps(line: str, parse=parse, ctx=ctx) -> None:  # type: ignore[no-untyped-def]
            for ev in parse(line, ctx):
                orjson.dumps(ev)

        rate = _rate(one, lines, args.seconds)
        rate2 = _rate(with_dumps, lines, args.seconds)
        print(f"{key[0] + '/' + key[1]:<20}{rate:>12,.0f}{rate / base:>13.2f}{rate2:>15,.0f}")


if __name__ == "__main__":
    main()
