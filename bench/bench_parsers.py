"""Parser throughput per format: lines/s through ``parse`` alone, and through
the connector's whole CPU path per line (parse + zone enrichment +
``orjson.dumps``), without Kafka.

Each format parses a cycle of real-looking lines from ../shared/samples. The
baseline is ``str.split`` plus ``orjson.dumps`` of a 20-field dict per line:
the floor any parser pays to touch the line and emit an event. The machine
is shared and noisy, so rates are per CPU-second of this process, baseline
and parser are measured in alternating short rounds, and the reported ratio
is the median of the per-round ratios.

Target: parse >= 1.0 x baseline (~100k lines/s on one core) so the whole
connector keeps >= 40k lines/s into Kafka.

    python bench/bench_parsers.py [--seconds 0.2] [--rounds 3] [FORMAT ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_connectors import adc, avd, horizon, intune  # noqa: E402

import connectors.firewall  # noqa: E402
import connectors.gateway  # noqa: E402
import connectors.intune  # noqa: E402
import connectors.vdi  # noqa: E402,F401
from connectors.base import FORMATS, ParseContext  # noqa: E402
from connectors.enrich import Enricher  # noqa: E402
from zonewatch.zones import load_zone_map  # noqa: E402

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


# Formats without a sample file: the connector bench's generated lines (AVD
# with many connections, so a cycle does not turn into repeats of one).
GENERATED: dict[tuple[str, str], tuple[Callable[[int], str], int]] = {
    ("vdi", "citrix-adc"): (adc, 3000),
    ("vdi", "horizon"): (horizon, 3000),
    ("vdi", "avd"): (avd, 60000),
    ("intune", "diagnostic"): (intune, 3000),
}


def _lines(key: tuple[str, str]) -> list[str]:
    if key in GENERATED:
        gen, n = GENERATED[key]
        return [gen(i) for i in range(n)]
    out: list[str] = []
    for rel in FILES[key]:
        out += [ln for ln in (SAMPLES / rel).read_text(encoding="utf-8").splitlines() if ln]
    return out


def _rate(fn: Callable[[str], object], lines: list[str], seconds: float) -> float:
    """Lines per CPU-second of this process: time spent descheduled while
    other processes hold the shared cores does not count against the parser."""
    n = 0
    start = time.process_time()
    deadline = start + seconds
    while True:
        for line in lines:
            fn(line)
        n += len(lines)
        now = time.process_time()
        if now >= deadline:
            return n / (now - start)


def _baseline(line: str) -> bytes:
    f = line.split()
    return orjson.dumps({f"k{i}": f[i % len(f)] for i in range(20)})


def _measure(
    fns: list[Callable[[str], object]], lines: list[str], seconds: float, rounds: int
) -> tuple[float, list[tuple[float, float]]]:
    """Median baseline rate, and (median rate, median ratio) per function,
    with the baseline re-measured right before each function in each round."""
    base_rates: list[float] = []
    rates: list[list[float]] = [[] for _ in fns]
    ratios: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            base = _rate(_baseline, lines, seconds)
            rate = _rate(fn, lines, seconds)
            base_rates.append(base)
            rates[i].append(rate)
            ratios[i].append(rate / base)
    return statistics.median(base_rates), [
        (statistics.median(r), statistics.median(q)) for r, q in zip(rates, ratios, strict=True)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.2, help="CPU seconds of one timed run")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per format")
    ap.add_argument("--zones", default=str(ROOT / "rules" / "zones.yaml"))
    ap.add_argument("formats", nargs="*")
    args = ap.parse_args()
    enrich = Enricher(load_zone_map(args.zones))
    dumps = orjson.dumps

    keys = [k for k in [*FILES, *GENERATED] if not args.formats or k[1] in args.formats]
    print(f"{'format':<20}{'parse/s':>10}{'ratio':>7}{'+enrich+dumps/s':>17}{'ratio':>7}")
    bases: list[float] = []
    for key in keys:
        lines = _lines(key)
        ctx = ParseContext(
            key[0], key[1], timezone=ZoneInfo("Asia/Tokyo"), now=datetime(2026, 11, 27, tzinfo=UTC)
        )
        parse = FORMATS[key].parse

        def one(line: str, parse=parse, ctx=ctx) -> object:  # type: ignore[no-untyped-def]
            return parse(line, ctx)

        def full(line: str, parse=parse, ctx=ctx) -> None:  # type: ignore[no-untyped-def]
            for ev in parse(line, ctx):
                dumps(enrich(ev))

        base, ((rate, ratio), (rate2, ratio2)) = _measure(
            [one, full], lines, args.seconds, args.rounds
        )
        bases.append(base)
        name = f"{key[0]}/{key[1]}"
        print(f"{name:<20}{rate:>10,.0f}{ratio:>7.2f}{rate2:>17,.0f}{ratio2:>7.2f}")
    print(f"{'baseline split+dumps':<20}{statistics.median(bases):>10,.0f}{1.0:>7.2f}")


if __name__ == "__main__":
    main()
