"""A large correlation state into the alert store and back: time and memory.

    python bench/bench_state.py [--events 250000] [--memory-limit 512MB]

The flood of issue 20 (point 3): N denies from N distinct public addresses
into LGWAN within five minutes, parsed FortiGate events (one line parsed by
the connector, then varied), through the shipped rules with the correlator's
settings (``keep_event_in_evidence``, the default caps). Each way of writing
the checkpoint runs in a fresh process, which builds the same state first:

- ``blob`` (the baseline, what the correlator did before): ``snapshot()`` as
  one bytes object, stored with the statement it used (one row of ``state``).
- ``stream`` (now): ``write_snapshot`` handed to ``AlertStore.submit`` as a
  state writer; it is spooled to a temporary file and inserted in rows of
  limit/16384 bytes.

For each: the state (groups, engine estimate, RSS), the checkpoint's wall
and CPU time and its peak RSS above the RSS before it (``VmHWM``, reset
through ``/proc/self/clear_refs``), then a restore from the store (time,
peak). Takes a few minutes at 250k events and up to ~3 GB per process.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connectors.inputs import Record  # noqa: E402
from connectors.pipeline import Pipeline  # noqa: E402
from correlator.runtime import tune_process  # noqa: E402
from correlator.service import load_ruleset, make_correlation_engine  # noqa: E402
from correlator.store import AlertStore  # noqa: E402
from correlator.stream import evidence_of  # noqa: E402
from zonewatch.config import Settings  # noqa: E402
from zonewatch.logs import configure_logging  # noqa: E402
from zonewatch.zones import load_zone_map  # noqa: E402

LINE = (
    'date=2026-11-26 time=11:00:00 devname="city-fw01" devid="FG200FTK23004711" tz="+0900" '
    'logid="0000000013" type="traffic" subtype="forward" level="notice" vd="root" '
    'srcip=100.64.0.1 srcport=40000 srcintf="wan1" srcintfrole="wan" dstip=10.200.5.10 '
    'dstport=22 dstintf="lgwan" dstintfrole="lan" sessionid=100000 proto=6 action="deny" '
    'policyid=0 policytype="policy" service="SSH" duration=0 sentbyte=0 rcvdbyte=0'
)
BASE = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
TOPIC = "zonewatch.events.firewall"


def memory() -> tuple[int, int]:
    """RSS and peak RSS (VmHWM) of this process, MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) >> 10, int(fields["VmHWM"].split()[0]) >> 10


def reset_peak() -> int:
    Path("/proc/self/clear_refs").write_text("5")
    return memory()[0]


def build(n: int, ruleset: Any, settings: Settings) -> Any:
    """The correlator's engine after ``n`` distinct-source denies."""
    zones = load_zone_map(ROOT / "rules" / "zones.yaml")
    events, _ = Pipeline("firewall", "fortigate", zones=zones).handle(Record(LINE.encode()))
    template = orjson.dumps(events[0])
    engine = make_correlation_engine(ruleset, settings, None)
    match = ruleset.matcher("firewall")
    chunk = 2000
    for start in range(0, n, chunk):
        items = []
        for i in range(start, min(n, start + chunk)):
            event = orjson.loads(template)
            when = BASE + timedelta(seconds=300 * i / n)
            ip = f"100.{64 + i // 65536}.{i // 256 % 256}.{i % 256}"
            event["@timestamp"] = when.isoformat().replace("+00:00", "Z")
            event["source"]["ip"] = ip
            event["source"]["port"] = 40000 + i % 20000
            event["event"]["original"] = event["event"]["original"].replace("100.64.0.1", ip)
            hits = [r.id for r in match(event)]
            items.append((hits, event, evidence_of(TOPIC, 0, i, when, event), when.timestamp()))
        engine.process_many(items)
    return engine


def child(args: argparse.Namespace) -> dict[str, Any]:
    configure_logging("warning")
    settings = Settings().updated(correlator={"store_memory_limit": args.memory_limit})
    ruleset = load_ruleset([ROOT / "rules"], "ecs")
    engine = build(args.events, ruleset, settings)
    tune_process()
    gc.collect()
    out: dict[str, Any] = {
        "groups": engine.metrics()["groups"],
        "estimate_mb": engine.state_bytes_estimate() / 1e6,
        "evicted_cap": engine.stats.evicted_cap,
        "rss_mb": memory()[0],
    }
    with tempfile.TemporaryDirectory() as tmp:
        store = AlertStore(Path(tmp) / "zw.duckdb", memory_limit=args.memory_limit)
        before = reset_peak()
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            if args.mode == "blob":
                blob = engine.snapshot()
                out["loop_s"] = time.perf_counter() - wall  # the loop's share
                out["snapshot_mb"] = len(blob) / 1e6
                with store._lock:  # the statement the store used for a state value
                    store._con.execute(
                        "INSERT OR REPLACE INTO state VALUES (?, ?, now())", ["correlation", blob]
                    )
                del blob
            else:
                stored = store.submit([], state={"correlation": engine.write_snapshot})
                out["loop_s"] = time.perf_counter() - wall  # submit returns: the loop goes on
                stored.result()
            out["write"] = "ok"
        except Exception as exc:
            out["write"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
        out["write_s"] = time.perf_counter() - wall
        out.setdefault("loop_s", out["write_s"])
        out["write_cpu_s"] = time.process_time() - cpu
        out["write_peak_mb"] = memory()[1] - before
        if out["write"] == "ok":
            del engine
            gc.collect()
            before = reset_peak()
            wall = time.perf_counter()
            source = store.open_state("correlation")
            assert source is not None
            with source:
                restored = make_correlation_engine(ruleset, settings, source)
            out["restore_s"] = time.perf_counter() - wall
            out["restore_peak_mb"] = memory()[1] - before
            out["restored_groups"] = restored.metrics()["groups"]
        store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=250_000)
    parser.add_argument("--memory-limit", default="512MB")
    parser.add_argument("--mode", choices=["blob", "stream"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(child(args)))
        return
    print(
        f"{args.events:,} denies from distinct sources, shipped rules, default caps, "
        f"store_memory_limit {args.memory_limit}"
    )
    for mode in ("blob", "stream"):
        cmd = [sys.executable, __file__, "--mode", mode, "--events", str(args.events)]
        cmd += ["--memory-limit", args.memory_limit]
        done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        if done.returncode:
            print(f"{mode}: crashed ({done.stderr.strip().splitlines()[-1:]})")
            continue
        r = json.loads(done.stdout.splitlines()[-1])
        size = f", {r['snapshot_mb']:.0f} MB snapshot" if "snapshot_mb" in r else ""
        print(
            f"{mode}: state {r['groups']:,} groups (estimate {r['estimate_mb']:.0f} MB, "
            f"{r['evicted_cap']:,} evicted by the cap), RSS {r['rss_mb']:,} MB{size}; "
            f"checkpoint {r['write']} in {r['write_s']:.1f} s ({r['write_cpu_s']:.1f} s CPU, "
            f"the loop held {r['loop_s']:.1f} s), "
            f"peak +{r['write_peak_mb']:,} MB"
            + (
                f"; restore {r['restore_s']:.1f} s, peak +{r['restore_peak_mb']:,} MB, "
                f"{r['restored_groups']:,} groups"
                if "restore_s" in r
                else ""
            )
        )


if __name__ == "__main__":
    main()
