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
import json
import re
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
import connectors.identity  # noqa: E402
import connectors.intune  # noqa: E402
import connectors.vdi  # noqa: E402,F401
from connectors.base import FORMATS, ParseContext  # noqa: E402
from connectors.bindings import Limits, epoch  # noqa: E402
from connectors.enrich import Enricher  # noqa: E402
from connectors.identity_store import IdentityStore  # noqa: E402
from zonewatch.zones import load_zone_map  # noqa: E402

_CITIES = (("Chiyoda", "JP", 35.694, 139.754), ("Osaka", "JP", 34.694, 135.502),
           ("Singapore", "SG", 1.290, 103.850))  # fmt: skip


def signin(i: int) -> str:
    """An Entra sign-in as diagnostic settings deliver it: 500 users, three places,
    a failure now and then (the travel state is exercised on every success)."""
    city, country, lat, lon = _CITIES[i % 7 % 3]
    code = 50126 if i % 11 == 0 else 0
    props = {
        "id": f"s-{i}", "createdDateTime": f"2026-11-26T0{i // 3600 % 10}:{i // 60 % 60:02d}:"
        f"{i % 60:02d}.1234567+00:00", "userPrincipalName": f"user{i % 500}@city.example.lg.jp",
        "userId": f"u-{i % 500}", "userDisplayName": "職員", "appId": "1fec8e78",
        "appDisplayName": "Microsoft Teams", "ipAddress": f"198.51.100.{i % 250}",
        "status": {"errorCode": code}, "clientAppUsed": "Browser", "userAgent": "Mozilla/5.0",
        "deviceDetail": {"deviceId": f"d-{i % 700}", "displayName": f"LT-{i % 700:04d}",
                         "operatingSystem": "Windows10", "isCompliant": i % 13 != 0,
                         "isManaged": True, "trustType": "Azure AD joined"},
        "location": {"city": city, "countryOrRegion": country,
                     "geoCoordinates": {"latitude": lat, "longitude": lon}},
        "conditionalAccessStatus": "success", "isInteractive": True,
        "authenticationRequirement": "multiFactorAuthentication", "riskState": "none",
        "appliedConditionalAccessPolicies": [{"id": "p1", "displayName": "Require compliant",
                                              "result": "success"}],
    }  # fmt: skip
    return json.dumps({"time": props["createdDateTime"], "category": "SignInLogs",
                       "operationName": "Sign-in activity", "resultType": str(code),
                       "tenantId": "t", "properties": props}, ensure_ascii=False)  # fmt: skip


def m365(i: int) -> str:
    """Management Activity records: SharePoint downloads, STS logons, Exchange."""
    base = {"CreationTime": f"2026-11-26T0{i // 3600 % 10}:{i // 60 % 60:02d}:{i % 60:02d}",
            "Id": f"r-{i}", "OrganizationId": "t", "UserType": 0, "UserKey": f"k{i % 500}",
            "UserId": f"user{i % 500}@city.example.lg.jp", "ClientIP": f"198.51.100.{i % 250}",
            "ResultStatus": "Succeeded"}  # fmt: skip
    kind = i % 3
    if kind == 0:
        base.update(Operation="FileDownloaded", RecordType=6, Workload="SharePoint",
                    ObjectId=f"https://city.sharepoint.com/sites/z/Shared Documents/f{i}.xlsx",
                    SourceFileName=f"f{i}.xlsx", SourceFileExtension="xlsx",
                    SourceRelativeUrl="Shared Documents", UserAgent="Mozilla/5.0")  # fmt: skip
    elif kind == 1:
        device = [{"Name": "Id", "Value": f"d-{i % 700}"}, {"Name": "OS", "Value": "Win"},
                  {"Name": "IsCompliant", "Value": "True"}]  # fmt: skip
        extended = [{"Name": "UserAgent", "Value": "Mozilla/5.0"},
                    {"Name": "RequestType", "Value": "OAuth2:Authorize"}]  # fmt: skip
        base.update(Operation="UserLoggedIn", RecordType=15, Workload="AzureActiveDirectory",
                    ApplicationId="4765445b", DeviceProperties=device,
                    ExtendedProperties=extended)  # fmt: skip
    else:
        base.update(Operation="MailItemsAccessed", RecordType=50, Workload="Exchange",
                    MailboxOwnerUPN=base["UserId"], ClientInfoString="Client=OWA",
                    ClientIPAddress=f"198.51.100.{i % 250}:443")  # fmt: skip
    return json.dumps(base)


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
    ("identity", "signins"): (signin, 3000),
    ("identity", "m365-audit"): (m365, 3000),
}


def identity_view(zones_path: str, n: int = 20_000) -> IdentityStore:
    """A learned map as a busy city has it: n laptops on their DHCP addresses."""
    zones = load_zone_map(zones_path)
    store = IdentityStore(None, "firewall", limits=Limits(ttl_s=24 * 3600.0))
    t0 = epoch("2026-11-26T00:00:00Z")
    for i in range(n):
        ip = f"10.{20 + i // 65536 % 200}.{i // 256 % 256}.{i % 256}"
        store.view.observe_address(ip, t0, f"user{i}@city.example.lg.jp", origin="vdi")
    store.view.add_static_devices({d: i.upn for i in zones.policy.identities for d in i.devices})
    return store


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
    if not args.formats or "fortigate" in args.formats:
        _identity_fill(args)


def _identity_fill(args: argparse.Namespace) -> None:
    """What filling users from learned addresses costs the firewall connector:
    the FortiGate lines rewritten onto addresses the map knows, through the
    whole path with and without the map, measured in alternating rounds."""
    key = ("firewall", "fortigate")
    lines = [
        re.sub(r"srcip=\S+", f"srcip=10.20.{n % 78}.{n % 256}", line)
        for n, line in enumerate(_lines(key))
    ]
    zones = load_zone_map(args.zones)
    plain, learned = Enricher(zones), Enricher(zones, identity=identity_view(args.zones))
    parse, dumps = FORMATS[key].parse, orjson.dumps
    ctx = ParseContext(
        *key, timezone=ZoneInfo("Asia/Tokyo"), now=datetime(2026, 11, 27, tzinfo=UTC)
    )

    def without(line: str) -> None:
        for ev in parse(line, ctx):
            dumps(plain(ev))

    def with_map(line: str) -> None:
        for ev in parse(line, ctx):
            dumps(learned(ev))

    _, ((rate_a, _), (rate_b, _)) = _measure([without, with_map], lines, args.seconds, args.rounds)
    print(
        f"{'fortigate +identity':<20}{rate_b:>10,.0f} lines/s with 20,000 learned addresses "
        f"(parse+enrich+dumps), {rate_a:,.0f} without: {rate_b / rate_a:.2f}x"
    )


if __name__ == "__main__":
    main()
