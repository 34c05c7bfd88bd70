"""Address-range rules: the whole `zonewatch match` process vs pySigma -> SQLite.

50 generated rules, 15 of which test ``source.ip|cidr`` and
``destination.ip|cidr`` with IPv4 and IPv6 networks (zone policy is about
address ranges), over generated firewall and proxy events with IPv4 and IPv6
addresses. Each side is one process timed from start to exit, start-up
included: ``zonewatch match --rules R EVENTS`` and a Python process doing
Zircolite's method (pySigma's SQLite backend converts the rules, events are
flattened into one table, one query per rule). Both must find the same
(rule, event) pairs; the bench stops with an error when they do not.

Times are the child's CPU time (user + system): the machine is shared, and
other work stretches wall time unevenly between the sides of a ratio. Wall
times are printed beside them. Figures are medians of ``--repeat`` rounds,
the ratio the median of per-round ratios (both sides back to back).

    python bench/bench_cidr.py [--events 200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from bench_detection import bench_rule

ROOT = Path(__file__).resolve().parent.parent

DOMAINS = ["www.city.example.lg.jp", "pastebin.com", "cdn.example.net", "x.ngrok.io"]
PATHS = ["/", "/index.html", "/raw/AbC123", "/api/v1/upload", "/download/setup.exe"]
AGENTS = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "curl/8.4.0", "python-requests/2.31"]

# The SQLite baseline, run as its own process (its imports and rule conversion
# are part of its time, as zonewatch's are of ours). Prints the matching
# (rule number, row number) pairs as JSON.
BASELINE = r"""
import sqlite3, sys
import orjson
from sigma.backends.sqlite import sqliteBackend
from sigma.collection import SigmaCollection

rules_path, events_path = sys.argv[1], sys.argv[2]
queries = sqliteBackend().convert(SigmaCollection.from_yaml(open(rules_path).read()))

def flatten(node, prefix, out):
    for key, value in node.items():
        if isinstance(value, dict) and value:
            flatten(value, prefix + key + ".", out)
        else:
            out[prefix + key] = value
    return out

flat = []
with open(events_path, "rb") as f:
    for line in f:
        flat.append(flatten(orjson.loads(line), "", {}))
columns = sorted({k for row in flat for k in row})
db = sqlite3.connect(":memory:")
db.execute(
    "CREATE TABLE logs (row_id INTEGER PRIMARY KEY, "
    + ", ".join(f"`{c}` TEXT COLLATE NOCASE" for c in columns) + ")"
)
marks = ", ".join("?" for _ in range(len(columns) + 1))
db.executemany(
    f"INSERT INTO logs VALUES ({marks})",
    [(i + 1, *(row.get(c) for c in columns)) for i, row in enumerate(flat)],
)
hits = [[n, row[0]] for n, query in enumerate(queries) for row in db.execute(query)]
sys.stdout.buffer.write(orjson.dumps(hits))
"""

# zonewatch's own entry point, imported from this tree.
OURS = "import sys; from zonewatch.app.cli import main; sys.argv[0] = 'zonewatch'; main()"


def v4_src(rnd: random.Random) -> str:
    return f"10.10.{rnd.randint(0, 31)}.{rnd.randint(1, 250)}"


def v4_dst(rnd: random.Random) -> str:
    return f"10.{rnd.choice([20, 30, 40, 200])}.{rnd.randint(0, 31)}.{rnd.randint(1, 9)}"


def v6_src(rnd: random.Random) -> str:
    return f"fd00:10:0:{rnd.randint(0, 31):x}::{rnd.randint(1, 4000):x}"


def v6_dst(rnd: random.Random) -> str:
    return f"fd00:{rnd.choice([20, 30, 40])}:{rnd.randint(0, 31):x}::{rnd.randint(1, 9):x}"


def make_events(n: int, rnd: random.Random) -> list[bytes]:
    out = []
    for i in range(n):
        stamp = f"2025-04-01T09:{i // 60 % 60:02d}:{i % 60:02d}Z"
        if rnd.random() < 0.3:
            domain = rnd.choice(DOMAINS)
            event: dict[str, Any] = {
                "@timestamp": stamp,
                "event": {"dataset": "gateway", "action": rnd.choice(["allowed", "blocked"])},
                "source": {"ip": v4_src(rnd) if rnd.random() < 0.7 else v6_src(rnd)},
                "url": {"domain": domain, "full": f"https://{domain}{rnd.choice(PATHS)}"},
                "user_agent": {"original": rnd.choice(AGENTS)},
                "http": {"request": {"method": rnd.choice(["GET", "POST"])}},
            }
        else:
            six = rnd.random() < 0.35
            event = {
                "@timestamp": stamp,
                "event": {"dataset": "firewall", "action": rnd.choice(["accept", "deny"])},
                "source": {
                    "ip": v6_src(rnd) if six else v4_src(rnd),
                    "port": rnd.randint(1024, 65535),
                },
                "destination": {
                    "ip": v6_dst(rnd) if six else v4_dst(rnd),
                    "port": rnd.choice([22, 80, 443, 445, 3389, 8080]),
                },
                "network": {"transport": "tcp"},
            }
        out.append(orjson.dumps(event))
    return out


def make_rules(rnd: random.Random) -> str:
    """50 rules; every third of the first 45 (15 in all) is a zone rule on
    address ranges at both ends, IPv4 and IPv6 side by side."""
    docs = []
    for i in range(50):
        if i % 3 == 0 and i < 45:
            third = rnd.randint(0, 31)
            sel: dict[str, Any] = {
                "source.ip|cidr": [
                    f"10.10.{third}.0/24",
                    f"10.10.{(third + 8) % 32}.0/24",
                    f"fd00:10:0:{third:x}::/64",
                ],
                "destination.ip|cidr": [
                    f"10.{rnd.choice([20, 30, 40])}.{rnd.choice([0, 4, 8, 12])}.0/22",
                    f"fd00:{rnd.choice([20, 30, 40])}:{rnd.randint(0, 31):x}::/48",
                ],
            }
            if i % 2:
                sel["destination.port"] = [22, 445, 3389]
            else:
                sel["event.action"] = "accept"
            service = "firewall"
        elif i % 3 == 1:
            sel = {
                "url.domain|endswith": [f".bad{i}.example", "pastebin.com"],
                "http.request.method": "POST",
                "url.full|contains": "/raw/",
                "source.ip|startswith": f"10.10.{i % 32}.",
            }
            service = "gateway"
        else:
            sel = {
                "user_agent.original|startswith": [f"tool{i}", "curl/"],
                "url.full|contains": [f"/{rnd.choice('abcdefgh')}{j}x/" for j in range(3)],
            }
            service = "gateway"
        docs.append(bench_rule(i, service, sel))
    return "---\n".join(docs)


def timed(argv: list[str], stdout: Any) -> tuple[float, float]:
    """(CPU s, wall s) of one child process run to its end; raises when it fails."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed ({proc.returncode}): {err[-2000:]}")
    return usage.ru_utime + usage.ru_stime, wall


def our_hits(path: Path) -> set[tuple[int, int]]:
    hits = set()
    with path.open("rb") as f:
        for line in f:
            alert = orjson.loads(line)
            rule = int(alert["rule_id"].rsplit("-", 1)[1])
            for ev in alert["evidence"]:
                hits.add((rule, ev["line"]))
    return hits


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    args, _ = parser.parse_known_args()
    rnd = random.Random(11)
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        events, rules = tmpdir / "events.ndjson", tmpdir / "rules.yml"
        events.write_bytes(b"\n".join(make_events(args.events, rnd)) + b"\n")
        rules.write_text(make_rules(rnd), encoding="utf-8")
        baseline = tmpdir / "baseline.py"
        baseline.write_text(BASELINE, encoding="utf-8")
        ours_out, base_out = tmpdir / "alerts.ndjson", tmpdir / "sqlite.json"
        ours_argv = [sys.executable, "-c", OURS, "match", "--rules", str(rules), str(events)]
        base_argv = [sys.executable, str(baseline), str(rules), str(events)]
        print(
            f"{args.events} events (IPv4 and IPv6), 50 rules (15 with |cidr on source and "
            f"destination); {args.repeat} rounds, whole processes"
        )
        rounds = []
        for _ in range(args.repeat):
            with ours_out.open("wb") as out:
                ours_cpu, ours_wall = timed(ours_argv, out)
            with base_out.open("wb") as out:
                base_cpu, base_wall = timed(base_argv, out)
            rounds.append((ours_cpu, base_cpu, ours_wall, base_wall))
        ours = our_hits(ours_out)
        theirs = {(n, row) for n, row in orjson.loads(base_out.read_bytes())}
        if ours != theirs:
            raise SystemExit(
                f"hits differ: {len(ours - theirs)} only ours, {len(theirs - ours)} only SQLite, "
                f"e.g. {sorted(ours ^ theirs)[:5]}"
            )
    med = [statistics.median(r[k] for r in rounds) for k in range(4)]
    ratio = statistics.median(r[1] / r[0] for r in rounds)
    n = args.events
    print(
        f"zonewatch match      : {n / med[0]:10,.0f} events/CPU s "
        f"({med[0]:.2f} CPU s, {med[2]:.2f} s wall; {len(ours)} hits)"
    )
    print(
        f"pySigma->SQLite      : {n / med[1]:10,.0f} events/CPU s "
        f"({med[1]:.2f} CPU s, {med[3]:.2f} s wall; same hits)"
    )
    print(
        f"ratio                : {ratio:.2f}x (target >= 1.75x; rounds "
        + " ".join(f"{r[1] / r[0]:.2f}" for r in rounds)
        + ")"
    )


if __name__ == "__main__":
    main()
