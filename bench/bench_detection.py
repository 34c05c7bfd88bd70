"""Detection throughput: `zonewatch match`'s path vs pySigma -> SQLite, same events, same rules.

Prints events/s for 50 generated rules (ours and the SQLite baseline measured
in this run, and their ratio), events/s with every loadable SigmaHQ rule added,
the compile time of all SigmaHQ rules and peak RSS. Never fails on speed.

Times are this process's CPU time, not wall time: the machine is shared, and
other work running at the same time stretches wall time unevenly between the
two sides of a ratio. Each figure is the median of ``--repeat`` rounds, and
each ratio the median of per-round ratios (both sides measured back to back).

    python bench/bench_detection.py [--events 20000]
"""

from __future__ import annotations

import argparse
import random
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from correlator.detection import load_rules, read_ndjson, rules_from_yaml, run_offline  # noqa: E402
from correlator.detection.runtime import flatten_event  # noqa: E402

_clock = time.process_time
SIGMAHQ = ROOT.parent / "shared" / "sigma" / "sigmahq"
DOMAINS = [
    "www.city.example.lg.jp",
    "pastebin.com",
    "login.microsoftonline.com",
    "cdn.example.net",
    "update.vendor.example",
    "drive.example.com",
    "x.ngrok.io",
]
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
    "curl/8.4.0",
    "python-requests/2.31",
    "Microsoft-Delivery-Optimization/10.0",
    "Mozilla/5.0 (Macintosh)",
]
PATHS = [
    "/",
    "/index.html",
    "/raw/AbC123",
    "/api/v1/upload",
    "/download/setup.exe",
    "/mgmt/tm/util/bash",
    "/images/logo.png",
]


def make_events(n: int, rnd: random.Random) -> list[bytes]:
    out = []
    for i in range(n):
        if rnd.random() < 0.6:
            domain = rnd.choice(DOMAINS)
            event: dict[str, Any] = {
                "@timestamp": f"2025-04-01T09:{i // 60 % 60:02d}:{i % 60:02d}Z",
                "event": {"dataset": "gateway", "action": rnd.choice(["allowed", "blocked"])},
                "source": {"ip": f"10.10.{rnd.randint(0, 9)}.{rnd.randint(1, 250)}"},
                "url": {"domain": domain, "full": f"https://{domain}{rnd.choice(PATHS)}"},
                "user_agent": {"original": rnd.choice(AGENTS)},
                "http": {
                    "request": {"method": rnd.choice(["GET", "POST"])},
                    "response": {"status_code": rnd.choice([200, 302, 403, 404])},
                },
                "user": {"name": f"user{rnd.randint(1, 300)}@city.example.lg.jp"},
            }
        else:
            event = {
                "@timestamp": f"2025-04-01T09:{i // 60 % 60:02d}:{i % 60:02d}Z",
                "event": {"dataset": "firewall", "action": rnd.choice(["accept", "deny"])},
                "source": {
                    "ip": f"10.10.{rnd.randint(0, 9)}.{rnd.randint(1, 250)}",
                    "port": rnd.randint(1024, 65535),
                },
                "destination": {
                    "ip": f"10.{rnd.choice([20, 30, 40])}.{rnd.randint(0, 9)}.5",
                    "port": rnd.choice([22, 80, 443, 445, 3389, 8080]),
                },
                "network": {"transport": "tcp"},
                "zone": {"crossing": rnd.choice(["core->lgwan", "core->internet", "vdi->lgwan"])},
            }
        out.append(orjson.dumps(event))
    return out


def bench_rule(i: int, service: str, sel: dict[str, Any]) -> str:
    """One generated rule as YAML: selection ``sel`` on the ``service`` logsource."""
    return yaml.safe_dump(
        {
            "title": f"bench rule {i}",
            "id": f"00000000-0000-4000-8000-{i:012d}",
            "logsource": {"product": "zonewatch", "service": service},
            "detection": {"sel": sel, "condition": "sel"},
            "level": "medium",
        },
        sort_keys=False,
    )


def make_rules(n: int, rnd: random.Random) -> str:
    """Rules shaped like real ones: most look for values that are rare in traffic,
    so alerts stay around a few percent of events as in production."""
    docs = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            sel = {
                "url.full|contains": [f"/{rnd.choice('abcdefgh')}{j}x/" for j in range(3)]
                + ([rnd.choice(PATHS[2:])] if i % 10 == 0 else [])
            }
            service = "gateway"
        elif kind == 1:
            sel = {
                "url.domain|endswith": [f".bad{i}.example", "pastebin.com"],
                "http.request.method": "POST",
                "url.full|contains": "/raw/",
            }
            service = "gateway"
        elif kind == 2:
            sel = {
                "user_agent.original|startswith": [f"tool{i}", "curl/"],
                "url.domain": f"host{i}.example",
                "http.response.status_code": 200,
            }
            service = "gateway"
        elif kind == 3:
            sel = {
                "destination.ip|cidr": f"10.{rnd.choice([20, 30, 40])}.{i % 10}.0/24",
                "destination.port": [rnd.choice([22, 445, 3389]), 8080 + i],
                "event.action": "accept",
                "zone.crossing": "vdi->lgwan",
            }
            service = "firewall"
        else:
            sel = {
                "zone.crossing": "core->lgwan",
                "event.action": "accept",
                "destination.port|gte": 3000 + i,
                "source.ip|startswith": f"10.10.{i % 10}.1",
            }
            service = "firewall"
        docs.append(bench_rule(i, service, sel))
    return "---\n".join(docs)


def ours(lines: list[bytes], ruleset: Any) -> tuple[float, int]:
    started = _clock()
    alerts = sum(1 for _ in run_offline(read_ndjson(lines), ruleset))
    return _clock() - started, alerts


def match_only(lines: list[bytes], ruleset: Any) -> float:
    """orjson parse + match, without building Alert objects (the streaming hot path)."""
    started = _clock()
    for line in lines:
        ruleset.match(orjson.loads(line))
    return len(lines) / (_clock() - started)


def sqlite_baseline(lines: list[bytes], rules_text: str) -> tuple[float, float, int]:
    """Zircolite's method: flatten events into one SQLite table, one query per rule."""
    from sigma.backends.sqlite import sqliteBackend
    from sigma.collection import SigmaCollection

    started = _clock()
    queries = sqliteBackend().convert(SigmaCollection.from_yaml(rules_text))
    convert = _clock() - started
    started = _clock()
    flat = [flatten_event(orjson.loads(line)) for line in lines]
    columns = sorted({k for row in flat for k in row})
    db = sqlite3.connect(":memory:")
    db.execute(
        "CREATE TABLE logs (row_id INTEGER PRIMARY KEY, "
        + ", ".join(f"`{c}` TEXT COLLATE NOCASE" for c in columns)
        + ")"
    )
    placeholders = ", ".join("?" for _ in range(len(columns) + 1))
    db.executemany(
        f"INSERT INTO logs VALUES ({placeholders})",
        [(i, *(row.get(c) for c in columns)) for i, row in enumerate(flat)],
    )
    hits = 0
    for query in queries:
        hits += len(db.execute(query).fetchall())
    return _clock() - started, convert, hits


def _median_rates(runs: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Median of each side and median of the per-round ratios (rounds are interleaved,
    so both sides of a ratio saw the same machine load)."""
    a = statistics.median(r[0] for r in runs)
    b = statistics.median(r[1] for r in runs)
    return a, b, statistics.median(r[0] / r[1] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5, help="rounds; medians are reported")
    parser.add_argument("--skip-sigmahq", action="store_true", help="only the 50-rule figures")
    args = parser.parse_args()
    rnd = random.Random(7)
    lines = make_events(args.events, rnd)
    rules_text = make_rules(50, rnd)
    size = sum(map(len, lines)) / len(lines)
    print(f"{len(lines)} events, mean {size:.0f} B; 50 generated rules; {args.repeat} rounds")

    started = _clock()
    ruleset = rules_from_yaml(rules_text)
    print(f"compile 50 rules: {_clock() - started:.3f} s")
    ours(lines[:2000], ruleset)  # warm caches (IP parsing memo)
    rounds = []
    for _ in range(args.repeat):
        t_ours, n_ours = ours(lines, ruleset)
        t_sql, t_convert, n_sql = sqlite_baseline(lines, rules_text)
        rounds.append((len(lines) / t_ours, len(lines) / t_sql))
    ours_rate, sql_rate, ratio = _median_rates(rounds)
    print(f"zonewatch match path : {ours_rate:10,.0f} events/s ({n_ours} alerts)")
    print(
        f"pySigma->SQLite      : {sql_rate:10,.0f} events/s ({n_sql} rows; "
        f"conversion {t_convert:.2f} s not counted)"
    )
    print(
        f"ratio                : {ratio:.2f}x (target >= 1.75x; rounds "
        + " ".join(f"{a / b:.2f}" for a, b in rounds)
        + ")"
    )
    small_match = statistics.median(match_only(lines, ruleset) for _ in range(args.repeat))
    print(f"parse+match only     : {small_match:10,.0f} events/s (no Alert objects)")

    dirs = [
        SIGMAHQ / d
        for d in (
            "rules",
            "rules-emerging-threats",
            "rules-threat-hunting",
            "rules-compliance",
            "rules-dfir",
        )
        if (SIGMAHQ / d).exists()
    ]
    if dirs and not args.skip_sigmahq:
        # As `zonewatch match --rules ours.yml --rules <SigmaHQ dirs>` loads them.
        with tempfile.TemporaryDirectory() as tmp:
            ours_file = Path(tmp) / "bench_rules.yml"
            ours_file.write_text(rules_text, encoding="utf-8")
            started = _clock()
            both = load_rules([ours_file, *dirs])
            compile_all = _clock() - started
        print(
            f"all SigmaHQ rules + 50: {len(both.detections)} compiled, {len(both.errors)} not, "
            f"load+compile {compile_all:.1f} CPU s (target < 10 s)"
        )
        ours(lines[:2000], both)
        rounds = []
        match_rounds = []
        for _ in range(args.repeat):
            t_big, n_big = ours(lines, both)
            t_small, _ = ours(lines, ruleset)
            rounds.append((len(lines) / t_big, len(lines) / t_small))
            match_rounds.append((match_only(lines, both), match_only(lines, ruleset)))
        big_rate, small_rate, big_ratio = _median_rates(rounds)
        print(
            f"with all SigmaHQ rules + 50: {big_rate:10,.0f} events/s ({n_big} alerts); "
            f"{big_ratio:.2f}x the 50-rule figure of {small_rate:,.0f} (target >= 0.5x)"
        )
        big_match, small_match, match_ratio = _median_rates(match_rounds)
        print(
            f"parse+match only, all rules: {big_match:10,.0f} events/s; "
            f"{match_ratio:.2f}x the 50-rule parse+match figure"
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {rss:.0f} MB")


if __name__ == "__main__":
    main()
