"""Correlation engine alone: events/s at 100k live groups, bytes per group.

    python bench/bench_correlation.py [--groups 100000] [--events 300000]

Targets (issue 4): >= 150k events/s at 100k live groups, <= 1 KB per group.
The engine is measured in a steady state: every group is live before the
clock starts (the warm-up covers the groups and the allowed lateness, which
the engine buffers), so the timed events update existing windows; creating
groups is measured on its own, as the first fill. The event time comes in
epoch seconds, as the stream hands it over (it orders events by it first).
The baseline, measured in the same run on the same events, is the least a
keyed window must do in Python: read the group field, find the group in a
dict, append the event time. The ratio says how much the engine costs on top.
Rates use CPU time of this process (time.process_time), so other work on
the shared cores does not count against it. Then the time to snapshot and
restore the resulting state (200k states with the defaults), as the stream's
checkpoint and a restart do. The steady state is measured over ``--rounds``
rounds (3), each in a fresh process, with and without the collector tuning
``zonewatch correlate`` applies, alternating; this shared box swings by a
third from one round to the next. Takes about two minutes.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

from correlator.correlation import CorrelationEngine, CorrelationSettings
from correlator.correlation.yaml_rules import load_rules_text
from zonewatch.ecs import get_field
from zonewatch.models import Evidence

RULES = """
title: Denied crossing
id: 4a8b1e77-2f6d-4c3a-a9e0-6c5d2b8f1e05
name: denied
logsource: {product: zonewatch, service: firewall}
detection: {sel: {event.outcome: failure}, condition: sel}
---
title: Upload
id: 0b7a3c55-5f1e-4b55-9b5e-0f7b8c9d0e01
name: upload
logsource: {product: zonewatch, service: gateway}
detection: {sel: {http.request.method: POST}, condition: sel}
---
title: Restricted VDI session
id: 8e3f5a22-1b7c-4d9e-8f61-2a4c6e8b0d07
name: vdi
logsource: {product: zonewatch, service: vdi}
detection: {sel: {vdi.pool: mynumber}, condition: sel}
---
title: Repeated denied crossings
id: 4a8b1e77-2f6d-4c3a-a9e0-6c5d2b8f1e06
correlation: {type: event_count, rules: [denied], group-by: [source.ip], timespan: 10m,
              condition: {gte: 50}}
---
title: Many ports
id: 4a8b1e77-2f6d-4c3a-a9e0-6c5d2b8f1e07
correlation: {type: value_count, rules: [denied], group-by: [source.ip], timespan: 10m,
              condition: {field: destination.port, gte: 50}}
---
title: Denied then VDI
id: 4a8b1e77-2f6d-4c3a-a9e0-6c5d2b8f1e08
correlation: {type: temporal, rules: [denied, vdi], group-by: [source.ip], timespan: 10m}
---
title: Upload volume
id: 4a8b1e77-2f6d-4c3a-a9e0-6c5d2b8f1e09
correlation: {type: value_sum, rules: [upload], group-by: [source.ip], timespan: 10m,
              condition: {field: http.request.bytes, gt: 100000000}}
"""

BASE = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


Item = tuple[list[str], dict, Evidence, float]


def make_events(n: int, groups: int, offset: int = 0) -> list[Item]:
    """n events over ``groups`` source addresses, 1 ms apart in event time;
    even ones are denied crossings (three correlations read them), odd ones
    uploads (one correlation). Each with its time in epoch seconds."""
    ids = ["4a8b1e77-2f6d-4c3a-a9e0-6c5d2b8f1e05", "0b7a3c55-5f1e-4b55-9b5e-0f7b8c9d0e01"]
    out = []
    for i in range(offset, offset + n):
        g = i % groups
        event = {
            "source": {"ip": f"10.10.{g // 250}.{g % 250}"},
            "destination": {"ip": "10.200.0.5", "port": 1000 + (i // groups) % 40},
            "event": {"outcome": "failure"},
            "http": {"request": {"bytes": 1200}},
        }
        when = BASE + timedelta(milliseconds=i)
        evidence = Evidence(event_id=f"zonewatch.events.firewall:0:{i}", time=when, offset=i)
        out.append(([ids[i % 2]], event, evidence, when.timestamp()))
    return out


CHUNK = 20_000  # like a consumed batch: events are transient, only state stays


def timed(engine: CorrelationEngine, n: int, groups: int, offset: int) -> tuple[float, int]:
    """Process n events in chunks built outside the clock; seconds, alerts."""
    spent = 0.0
    alerts = 0
    for start in range(offset, offset + n, CHUNK):
        chunk = make_events(min(CHUNK, offset + n - start), groups, start)
        began = time.process_time()
        alerts += len(engine.process_many(chunk))  # as the stream hands over a poll
        spent += time.process_time() - began
    return spent, alerts


def baseline(n: int, groups: int, offset: int) -> float:
    """The floor: read the key, find the group, append the time."""
    table: dict[str, list[float]] = {}
    spent = 0.0
    for start in range(offset, offset + n, CHUNK):
        chunk = make_events(min(CHUNK, offset + n - start), groups, start)
        began = time.process_time()
        for _hits, event, _evidence, t in chunk:
            key = get_field(event, "source.ip")
            times = table.get(key)
            if times is None:
                times = table[key] = []
            times.append(t)
        spent += time.process_time() - began
    return n / spent


MODES = {
    # What ``zonewatch correlate`` does after start-up (correlator/cli.py): the
    # state is long-lived, and default thresholds rescan it over and over.
    "tuned": "gc.freeze() + gc.set_threshold(50_000, 20, 100)",
    "default": "default gc",
}


def steady(
    args: argparse.Namespace, loaded: Any, mode: str
) -> tuple[CorrelationEngine, dict[str, Any], int]:
    """Warm an engine until every group is live, then time ``args.events``
    more; returns the engine, its metrics and the alerts of the timed part."""
    warm = args.groups + int(args.lateness * 1000)  # the engine holds back the lateness
    engine = CorrelationEngine(
        loaded.correlations,
        loaded.resolve,
        CorrelationSettings(allowed_lateness_s=args.lateness, keep_event_in_evidence=False),
    )
    timed(engine, warm, args.groups, 0)
    gc.collect()
    if mode == "tuned":
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
    spent, alerts = timed(engine, args.events, args.groups, warm)
    metrics = engine.metrics()
    metrics["rate"] = args.events / spent
    return engine, metrics, alerts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--lateness", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round", choices=list(MODES), help=argparse.SUPPRESS)  # one, in a child
    args = parser.parse_args()
    loaded = load_rules_text(RULES)
    if args.round:
        warm = args.groups + int(args.lateness * 1000)
        floor = baseline(args.events, args.groups, warm)
        _, metrics, alerts = steady(args, loaded, args.round)
        print(json.dumps({**metrics, "floor": floor, "alerts": alerts}, default=str))
        return

    # Memory: fill every group once with lateness 0 (nothing buffered), then
    # count what the state holds with tracemalloc.
    engine = CorrelationEngine(
        loaded.correlations,
        loaded.resolve,
        CorrelationSettings(allowed_lateness_s=0, keep_event_in_evidence=False),
    )
    fill = make_events(args.groups, args.groups)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine.process_many(fill)
    del fill
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    states = engine.metrics()["groups"]
    print(
        f"memory: {args.groups:,} source addresses -> {states:,} (rule, group) states; "
        f"{held / args.groups:,.0f} B per address, {held / states:,.0f} B per state "
        "(one event each, evidence without bodies; target <= 1,000)"
    )
    del engine
    gc.collect()

    # Creating groups: the same fill, timed, every event opening new windows.
    engine = CorrelationEngine(
        loaded.correlations,
        loaded.resolve,
        CorrelationSettings(allowed_lateness_s=0, keep_event_in_evidence=False),
    )
    spent, _ = timed(engine, args.groups, args.groups, 0)
    print(
        f"first fill: {args.groups / spent:,.0f} events/s while creating "
        f"{engine.metrics()['groups']:,} states ({engine.metrics()['groups'] / args.groups:.1f} "
        "per event)"
    )
    del engine
    gc.collect()

    # Steady state, each round in a fresh process (one engine per process, as
    # ``zonewatch correlate`` runs; a second engine in the same heap measured
    # slower), modes alternating; the median round and the range are printed.
    warm = args.groups + int(args.lateness * 1000)
    rounds: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            cmd = [sys.executable, __file__, "--round", mode, "--groups", str(args.groups)]
            cmd += ["--events", str(args.events), "--lateness", str(args.lateness)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rounds[mode].append(json.loads(done.stdout.splitlines()[-1]))
    for mode, got in rounds.items():
        rates = sorted(r["rate"] for r in got)
        ratios = sorted(r["rate"] / r["floor"] for r in got)
        rate, ratio = statistics.median(rates), statistics.median(ratios)
        print(
            f"engine ({MODES[mode]}): {rate:,.0f} events/s at {got[0]['groups']:,} live states "
            f"(median of {len(got)} rounds: {', '.join(f'{r:,.0f}' for r in rates)}; "
            f"{got[0]['alerts']} alerts, lateness {args.lateness:g} s); "
            f"engine/baseline = {ratio:.2f} (baseline median "
            f"{statistics.median(r['floor'] for r in got):,.0f} events/s); "
            f"target 150,000 -> {rate / 150_000:.2f}"
        )
    engine, metrics, _ = steady(args, loaded, "tuned")
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    # What the stream's checkpoint does (snapshot(), every few seconds) and a
    # restart (restore()), then the per-partition variant; best of three.
    states = metrics["groups"]
    for label, dump, load in (
        (
            "snapshot()",
            lambda: [engine.snapshot()],
            lambda blobs: CorrelationEngine.restore(
                blobs[0], loaded.correlations, loaded.resolve, engine.settings
            ),
        ),
        (
            "snapshot_partitions()",
            lambda: list(engine.snapshot_partitions(only_changed=False).values()),
            lambda blobs: CorrelationEngine.restore_partitions(
                dict(enumerate(blobs)), loaded.correlations, loaded.resolve, engine.settings
            ),
        ),
    ):
        dumps, loads = [], []
        for _ in range(3):
            began = time.process_time()
            blobs = dump()
            dumps.append(time.process_time() - began)
            began = time.process_time()
            restored = load(blobs)
            loads.append(time.process_time() - began)
            del restored
            gc.collect()
        size = sum(len(b) for b in blobs)
        print(
            f"{label}: {size / 1e6:.1f} MB in {min(dumps):.2f} s, restore {min(loads):.2f} s "
            f"({states:,} states, one partition; best of 3)"
        )


if __name__ == "__main__":
    main()
