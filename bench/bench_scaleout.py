"""Scale-out: one correlator against several `--scale-out` members of one group.

The same generated firewall events (bench_stream's shape, from 500 hosts, so
that correlations fire) are produced once onto N partitions; the rules are
bench_stream's 50 plus two correlations per host that fire a few hundred
times (event_count over denied crossings, value_count over their ports).
Then, each in its own consumer group and each member its own process and
DuckDB file, these read all of them:

- one plain `zonewatch correlate` (the reference);
- `--scale-out` with 1 member, 2 members, and ``--members M`` for more.

Each run reads its own copy of the events under its own topic prefix (each
group's internal topics, ``<prefix>.correlation.<group>.hits`` / ``.state``,
are created by its members). Evidence event ids carry the topic name, so
they are compared with the prefix taken out.

Throughput is measured between 10 % and 90 % of the input (each member's
``zonewatch_correlator_events_total`` read from its /metrics every 50 ms), so
start-up and the idle exit are left out; a join or rebalance inside the run
is part of it. The union of the members' alerts must equal the reference's,
compared by rule, group, window and evidence (the bench stops with an error
when they differ). Figures are medians of ``--rounds`` rounds.

    python bench/bench_scaleout.py [--events 100000] [--partitions 4] [--members 2]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import random  # noqa: E402

import orjson  # noqa: E402
from bench_stream import make_event, make_rules  # noqa: E402

from zonewatch.app.broker import EmbeddedBroker  # noqa: E402
from zonewatch.config import KafkaSettings  # noqa: E402
from zonewatch.kafka import ensure_topics, make_producer  # noqa: E402
from zonewatch.logs import configure_logging  # noqa: E402

METRIC = "zonewatch_correlator_events_total{"

CORRELATIONS = """
title: scale-out denied crossing
id: 00000000-0000-4000-8000-200000000000
name: scale_denied
logsource: {product: zonewatch, service: firewall}
detection:
  sel: {event.action: deny, zone.crossing: [core->lgwan, vdi->mynumber]}
  condition: sel
level: low
---
title: scale-out repeated denied crossings
id: 00000000-0000-4000-8000-200000000001
correlation:
  type: event_count
  rules: [scale_denied]
  group-by: [source.ip]
  timespan: 5m
  condition: {gte: 4}
level: high
---
title: scale-out denied ports
id: 00000000-0000-4000-8000-200000000002
correlation:
  type: value_count
  rules: [scale_denied]
  group-by: [source.ip]
  timespan: 10m
  condition: {field: destination.port, gte: 4}
level: high
"""


def produce(kafka: KafkaSettings, n: int, t0: float) -> float:
    """bench_stream's events from ``t0`` on, from 500 hosts, keyed by host; seconds taken."""
    rnd = random.Random(3)
    producer = make_producer(kafka)
    topic = kafka.events_topic("firewall")
    started = time.perf_counter()
    for i in range(n):
        event = make_event(i, rnd, t0)
        event["source"]["ip"] = f"10.10.{rnd.randint(1, 4)}.{rnd.randint(2, 126)}"
        producer.send(topic, key=event["source"]["ip"].encode(), value=orjson.dumps(event))
    producer.flush()
    producer.close()
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def consumed(port: int) -> int:
    """Events a member has read so far (0 until its /metrics answers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            text = r.read().decode()
    except OSError:
        return 0
    return int(sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(METRIC)))


def cpu_s(pid: int) -> float:
    """CPU seconds a process and its living descendants have used (Linux)."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += cpu_s(int(child))
    except OSError:  # it ended meanwhile
        pass
    return total


def run(
    kafka: KafkaSettings,
    rules: Path,
    tmp: Path,
    n: int,
    members: int,
    scale_out: bool,
    broker_pid: int | None = None,
) -> tuple[float, list[Path], int, tuple[float, float]]:
    """(events/s between 10 % and 90 % of ``n``, the members' stores, events
    read, CPU µs per event meanwhile: the members with their children, and
    the broker's when ``broker_pid`` is given)."""
    group = f"g-{uuid.uuid4().hex[:8]}"
    env = dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers or "",
        ZONEWATCH_KAFKA__TOPIC_PREFIX=kafka.topic_prefix,
        ZONEWATCH_KAFKA__PARTITIONS=str(kafka.partitions),
        ZONEWATCH_LOG_LEVEL="warning",
    )
    dbs = [tmp / f"{group}-{k}.duckdb" for k in range(members)]
    ports = [free_port() for _ in range(members)]
    procs = []
    for db, port in zip(dbs, ports, strict=True):
        argv = [sys.executable, "-m", "zonewatch", "correlate", "--rules", str(rules)]
        argv += ["--db", str(db), "--group-id", group, "--idle-exit", "6"]
        argv += ["--metrics-port", str(port), *(["--scale-out"] if scale_out else [])]
        log = (tmp / f"{group}.log").open("ab")
        procs.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log))
    marks: dict[float, float] = {}
    cpu: dict[float, tuple[float, float]] = {}
    total = 0
    while any(p.poll() is None for p in procs):
        total = sum(consumed(port) for port in ports)
        now = time.perf_counter()
        for share in (0.1, 0.9):
            if total >= share * n and share not in marks:
                marks[share] = now
                cpu[share] = (
                    sum(cpu_s(p.pid) for p in procs),
                    cpu_s(broker_pid) if broker_pid else 0.0,
                )
        time.sleep(0.05)
    for p in procs:
        if p.wait() != 0:
            tail = (tmp / f"{group}.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"a member failed ({p.returncode}):\n{tail}")
    if len(marks) < 2:
        raise SystemExit(f"the members read {total} of {n} events")
    per_event = tuple((b - a) / (0.8 * n) * 1e6 for a, b in zip(cpu[0.1], cpu[0.9], strict=True))
    return 0.8 * n / (marks[0.9] - marks[0.1]), dbs, total, per_event  # type: ignore[return-value]


def alerts(dbs: list[Path], prefix: str) -> dict[tuple[Any, ...], frozenset[str]]:
    """Every alert, (rule, group, window) -> its evidence event ids, over all stores:
    an alert raised by two members (a detection alert gathers its rule's hits of
    a while) is one alert with the evidence of both."""
    out: dict[tuple[Any, ...], frozenset[str]] = {}
    for db in dbs:
        with duckdb.connect(str(db), read_only=True) as con:
            rows = con.execute(
                """SELECT a.rule_id, a.group_values::VARCHAR, a.window_start, a.window_end,
                          list(e.event_id)
                   FROM alerts a LEFT JOIN alert_evidence e ON e.alert_id = a.id
                   GROUP BY ALL"""
            ).fetchall()
        for rule, group, start, end, evidence in rows:
            key = (rule, group, start, end)
            ids = frozenset(e.replace(prefix, "<prefix>", 1) for e in evidence or ())
            out[key] = out.get(key, frozenset()) | ids
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--members", type=int, default=2, help="the largest member count")
    parser.add_argument("--rounds", type=int, default=3)
    args, _ = parser.parse_known_args()
    configure_logging("warning", json=True)
    n = args.events
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None if external else EmbeddedBroker().start()
    bootstrap = external or broker.bootstrap  # type: ignore[union-attr]
    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            rules = tmp / "rules"
            rules.mkdir()
            make_rules(rules, 50)
            (rules / "scale.yml").write_text(CORRELATIONS)
            configs = [("one correlator", 1, False)] + [
                (f"--scale-out x{m}", m, True) for m in sorted({1, 2, args.members})
            ]
            print(
                f"{n:,} events on {args.partitions} partitions; {os.cpu_count()} CPUs; "
                f"{args.rounds} rounds; each member a process"
            )
            rates: dict[str, list[float]] = {name: [] for name, _, _ in configs}
            # CPU µs per event between 10 % and 90 %: the members, the broker.
            cpus: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in configs}
            broker_pid = broker.pid if broker is not None else None
            t0 = time.time() - 86400  # the same event times in every copy
            reference: dict[tuple[Any, ...], frozenset[str]] | None = None
            mismatches: list[str] = []
            for _ in range(args.rounds):
                for name, members, scale_out in configs:
                    kafka = KafkaSettings(
                        bootstrap_servers=bootstrap,
                        topic_prefix=f"scale-{uuid.uuid4().hex[:6]}",
                        partitions=args.partitions,
                    )
                    ensure_topics(kafka)
                    produce(kafka, n, t0)
                    rate, dbs, _, cpu = run(kafka, rules, tmp, n, members, scale_out, broker_pid)
                    rates[name].append(rate)
                    cpus[name].append(cpu)
                    found = alerts(dbs, kafka.topic_prefix)
                    if reference is None:
                        reference = found
                    elif found != reference:
                        differ = [
                            k
                            for k in found.keys() | reference.keys()
                            if found.get(k) != reference.get(k)
                        ]
                        only = sum(1 for k in differ if k not in reference)
                        missing = sum(1 for k in differ if k not in found)
                        mismatches.append(
                            f"{name}: {len(differ)} alerts differ from one correlator's "
                            f"({only} more, {missing} missing, the rest in their evidence)"
                        )
                    for db in dbs:
                        db.unlink()
            assert reference is not None
            base = rates["one correlator"]
            correlations = sum(1 for k in reference if k[2] is not None)
            print(
                f"alerts of one correlator: {len(reference)} ({correlations} of correlations, "
                f"{sum(map(len, reference.values())):,} evidence rows)"
            )
            for name, values in rates.items():
                ratios = [v / b for v, b in zip(values, base, strict=True)]
                print(
                    f"{name:16}: {statistics.median(values):>9,.0f} events/s "
                    f"(rounds {' '.join(f'{v:,.0f}' for v in values)}); "
                    f"{statistics.median(ratios):.2f}x one correlator"
                )
            for name, values in cpus.items():
                members_us = statistics.median(v[0] for v in values)
                line = f"{name:16}: cpu {members_us:5.1f} µs/event in the members"
                if broker_pid:
                    line += f", {statistics.median(v[1] for v in values):5.1f} in the broker"
                print(line + " (between 10 % and 90 %, medians)")
            if mismatches:
                raise SystemExit("ALERTS DIFFER:\n" + "\n".join(mismatches))
            print("the union of the members' alerts equals one correlator's in every run")
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
