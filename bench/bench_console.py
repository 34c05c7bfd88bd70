"""Console page load times on a large store, against baselines of the same run.

    python bench/bench_console.py [--events 1000000] [--alerts 100000] [--runs 30]

Builds a store of N archived events (four sources, 2,000 users, 800
devices, raw lines) and M alerts (20 rules, 2 evidence events each, a few
thousand triage changes), starts ``zonewatch console`` on it as a user
would, and times every page over real HTTP (Bearer token), p50 and p95:

1. with no correlator: each page opens the file read-only for its queries;
2. while a correlator holds the store (here: this process, serving its
   query endpoint as ``zonewatch correlate`` does): pages read through it.

Baselines measured in the same run: ``/healthz`` (the HTTP round trip, no
store) and the same pages on the demo day's store (16 alerts). Target
(issue 16): every page p95 under 500 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from console.demo_store import build_demo_store  # noqa: E402
from correlator.store import AlertStore, ArchivedEvent  # noqa: E402
from correlator.store.server import serve_queries  # noqa: E402
from zonewatch.app.broker import free_port  # noqa: E402
from zonewatch.logs import configure_logging  # noqa: E402
from zonewatch.models import Alert, Evidence, alert_id  # noqa: E402

T0 = datetime(2026, 10, 1, tzinfo=UTC)
SOURCES = ("firewall", "gateway", "vdi", "intune")
CROSSINGS = (
    "core->internet",
    "core->lgwan",
    "core->mynumber",
    "vdi->mynumber",
    "vdi->internet",
    "internet->lgwan",
    "core->vdi",
)
LEVELS = ("critical", "high", "high", "medium", "medium", "low", "informational")
USERS = 2000
DEVICES = 800
SPAN_S = 30 * 86400  # a month


def _event(n: int, rng: random.Random) -> dict:
    source = SOURCES[n % 4]
    when = T0 + timedelta(seconds=n * SPAN_S / 1_000_000)
    user = f"user{rng.randrange(USERS)}@city.example.lg.jp"
    device = f"LT-{rng.randrange(DEVICES):04d}"
    crossing = CROSSINGS[rng.randrange(len(CROSSINGS))]
    src, dst = crossing.split("->")
    allowed = rng.random() < 0.8
    stamp = when.isoformat().replace("+00:00", "Z")
    return {
        "@timestamp": stamp,
        "event": {
            "dataset": source,
            "action": "accept" if allowed else "deny",
            "outcome": "success" if allowed else "failure",
            "original": f'date={stamp} devname="city-fw01" srcip=10.10.{n % 250}.{n % 200} '
            f"dstip=10.200.{n % 100}.{n % 50} dstport=445 "
            f'action="{"accept" if allowed else "deny"}" user="{user}" host="{device}"',
        },
        "user": {"name": user},
        "host": {"name": device},
        "source": {"ip": f"10.10.{n % 250}.{n % 200}", "port": 40000 + n % 20000},
        "destination": {"ip": f"10.200.{n % 100}.{n % 50}", "port": 445},
        "zone": {"source": src, "destination": dst, "crossing": crossing},
    }


def build_store(db: Path, events: int, alerts: int) -> None:
    rng = random.Random(16)
    with AlertStore(db, memory_limit="2GB") as store:
        store.register_rules(
            SimpleNamespace(
                id=f"bench-rule-{r}",
                title=f"Bench rule {r}: cross-zone pattern {r}",
                level=LEVELS[r % len(LEVELS)],
                tags=[f"attack.t{1000 + r}"],
                sha256=f"{r:064x}",
                text=f"title: Bench rule {r}\ndescription: |\n  A rule.\n  ルールです。\n",
                path=f"rules/bench/{r}.yml",
            )
            for r in range(25)  # five never fire
        )
        batch: list[ArchivedEvent] = []
        for n in range(events):
            event = _event(n, rng)
            when = datetime.fromisoformat(event["@timestamp"].replace("Z", "+00:00"))
            source = SOURCES[n % 4]
            batch.append(
                ArchivedEvent(f"e{n}", f"zonewatch.events.{source}", n % 3, n, when, event)
            )
            if len(batch) == 20_000:
                store.write([], events=batch)
                batch = []
        if batch:
            store.write([], events=batch)
        out: list[Alert] = []
        ids = []
        for i in range(alerts):
            a, b = rng.randrange(events), rng.randrange(events)
            evs = []
            for k in sorted((a, b)):
                event = _event(k, random.Random(k))
                when = datetime.fromisoformat(event["@timestamp"].replace("Z", "+00:00"))
                evs.append(Evidence(event_id=f"e{k}", time=when, event=event))
            rule = i % 20
            group = {"user.name": evs[0].event["user"]["name"]}
            alert = Alert(
                id=alert_id(
                    f"bench-rule-{rule}", group, None, None, [f"{i}", *(e.event_id for e in evs)]
                ),
                rule_id=f"bench-rule-{rule}",
                rule_title=f"Bench rule {rule}: cross-zone pattern {rule}",
                level=LEVELS[rule % len(LEVELS)],
                tags=[f"attack.t{1000 + rule}", "attack.lateral-movement"],
                type="event_count" if rule % 2 else "detection",
                rule_hash=f"{rule:064x}",
                group=group,
                first_seen=evs[0].time,
                last_seen=evs[-1].time,
                zone_crossing=evs[0].event["zone"]["crossing"],
                evidence=evs,
            )
            out.append(alert)
            ids.append(alert.id)
            if len(out) == 5000:
                store.write(out)
                out = []
        if out:
            store.write(out)
        for n, alert in enumerate(rng.sample(ids, min(2000, len(ids)))):
            store.triage(
                alert,
                ("acknowledged", "closed", "false_positive")[n % 3],
                actor="bench",
                via="cli",
                note=f"checked {n}",
            )


def pages(db: Path, rng: random.Random) -> dict[str, Callable[[], str]]:
    with AlertStore(db, read_only=True, memory_limit=None) as store:
        ids = [r[0] for r in store.query("SELECT id FROM alerts USING SAMPLE 200")[1]]
        users = [
            r[0]
            for r in store.query(
                "SELECT user_name FROM events WHERE user_name IS NOT NULL USING SAMPLE 100"
            )[1]
        ]
        devices = [
            r[0]
            for r in store.query(
                "SELECT host_name FROM events WHERE host_name IS NOT NULL USING SAMPLE 100"
            )[1]
        ]
        rule = store.query("SELECT rule_id FROM alerts LIMIT 1")[1][0][0]
        crossing = store.query(
            "SELECT zone_crossing FROM alerts WHERE zone_crossing IS NOT NULL LIMIT 1"
        )[1][0][0]
    return {
        "matrix": lambda: "/matrix",
        "alerts": lambda: "/alerts",
        "alerts level+crossing": lambda: f"/alerts?level=high&crossing={crossing}",
        "alerts user filter": lambda: f"/alerts?user={rng.choice(users)}",
        "alerts page 40 by level": lambda: "/alerts?sort=level&dir=asc&page=40",
        "alert detail": lambda: f"/alerts/{rng.choice(ids)}",
        "timeline user": lambda: f"/timeline?kind=user&name={rng.choice(users)}",
        "timeline device 7d": lambda: (
            f"/timeline?kind=device&name={rng.choice(devices)}"
            "&range=custom&since=2026-10-10T00:00&until=2026-10-17T00:00"
        ),
        "health": lambda: "/health",
        "rule": lambda: f"/rules/{rule}",
    }


def start_console(db: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    token = os.urandom(24).hex()
    token_file = workdir / f"token-{db.stem}"
    token_file.write_text(token)
    token_file.chmod(0o600)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "zonewatch", "console", "--db", str(db), "--port", str(port)],
        cwd=ROOT,
        env={
            **os.environ,
            "ZONEWATCH_CONSOLE__TOKEN_FILE": str(token_file),
            "ZONEWATCH_LOG_LEVEL": "warning",
        },
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    auth = {"Authorization": f"Bearer {token}"}
    while time.monotonic() < deadline:
        # Ready once it answers and has loaded the rules in the background
        # (seconds of CPU that would otherwise land in the first timings).
        try:
            page = httpx.get(f"{url}/health", headers=auth, timeout=30)
            if page.status_code == 200 and 'data-rules-loaded="yes"' in page.text:
                return process, url, token
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the console did not start")


def time_pages(
    url: str, token: str, chosen: dict[str, Callable[[], str]], runs: int
) -> dict[str, tuple[float, float]]:
    out = {}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        for name, path in {"healthz (no store)": lambda: "/healthz", **chosen}.items():
            for _ in range(2):  # warm up
                c.get(path()).raise_for_status()
            took = []
            for _ in range(runs):
                started = time.perf_counter()
                c.get(path()).raise_for_status()
                took.append((time.perf_counter() - started) * 1000)
            took.sort()
            out[name] = (statistics.median(took), took[max(0, int(len(took) * 0.95) - 1)])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    configure_logging("warning", json=False)
    work = Path(tempfile.mkdtemp(prefix="zw-bench-console-"))
    try:
        big, demo = work / "big.duckdb", work / "demo.duckdb"
        started = time.monotonic()
        build_store(big, args.events, args.alerts)
        print(
            f"store: {args.events:,} events, {args.alerts:,} alerts, "
            f"{big.stat().st_size / 1e6:.0f} MB, built in {time.monotonic() - started:.0f} s"
        )
        build_demo_store(demo)
        rng = random.Random(7)
        chosen = pages(big, rng)
        demo_pages = pages(demo, random.Random(7))
        results: dict[str, dict[str, tuple[float, float]]] = {}
        for label, db, which in (("demo day", demo, demo_pages), ("large, file", big, chosen)):
            process, url, token = start_console(db, work)
            try:
                results[label] = time_pages(url, token, which, args.runs)
            finally:
                process.terminate()
                process.wait()
        # A correlator holds the file: the console reads through its endpoint.
        with AlertStore(big, memory_limit="512MB") as store:
            serve_queries(store)
            process, url, token = start_console(big, work)
            try:
                results["large, via correlator"] = time_pages(url, token, chosen, args.runs)
            finally:
                process.terminate()
                process.wait()
        labels = list(results)
        print(f"\n{'page':<26}" + "".join(f"{lb + ' p50/p95 ms':>34}" for lb in labels))
        for name in results[labels[-1]]:
            cells = []
            for label in labels:
                p50, p95 = results[label].get(name, (float("nan"), float("nan")))
                cells.append(f"{p50:>14.1f} / {p95:>7.1f}     ")
            print(f"{name:<26}" + "".join(f"{c:>34}" for c in cells))
        print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        base = results["demo day"]["healthz (no store)"][1]
        for label in labels[1:]:
            pages_only = {k: v for k, v in results[label].items() if not k.startswith("healthz")}
            name, (_, worst) = max(pages_only.items(), key=lambda kv: kv[1][1])
            print(
                f"{label}: worst page p95 {worst:.0f} ms ({name}; target < 500 ms), "
                f"{worst / base:.0f}x the HTTP round trip ({base:.1f} ms)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
