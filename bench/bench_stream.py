"""The whole stream vs the bare consume floor, through a real broker.

Measured in one run, on the same topic of generated ECS firewall events:

- floor: kafka-python consume + orjson.loads, nothing else;
- stream: ``zonewatch correlate``'s loop (consume -> detection with 50 rules
  -> correlation (event_count + value_count) -> DuckDB transaction with
  alerts, evidence, state and offsets -> offset commit);
- alerts topic: the default stream (events archive on) with the alerts
  topic on (default) and off (``correlator.publish_alerts``), and with
  ``--in-process`` also on with its producer in the correlator's process
  (``correlator.publish_process=false``), in rotating order; the CPU of each
  (this process, and the producer process once it has exited);
- latency: events produced at about half the stream's rate; p50/p99 from
  produce to the committed alert row (an alert per ~20 events), with the
  alerts topic on and off, and with it on from produce to the alert's
  record on the alerts topic;
- RSS before and after the stream run.

Prints figures and ratios; never fails on speed.

    python bench/bench_stream.py [--events 100000] [--rounds 3] [--rss-events 0]
        [--alerts-topic-only] [--no-latency] [--in-process]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import multiprocessing
import os
import random
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from correlator.runtime import tune_process  # noqa: E402
from zonewatch.app.broker import EmbeddedBroker  # noqa: E402
from zonewatch.config import KafkaSettings, load_settings  # noqa: E402
from zonewatch.kafka import ensure_topics, make_consumer, make_producer  # noqa: E402
from zonewatch.logs import configure_logging  # noqa: E402

CROSSINGS = ["core->internet", "core->vdi", "vdi->lgwan", "core->lgwan", "vdi->mynumber"]
PORTS = [443, 80, 445, 3389, 22, 53, 8443, 4172]


def make_event(i: int, rnd: random.Random, t0: float) -> dict[str, Any]:
    src = f"10.10.{rnd.randint(1, 40)}.{rnd.randint(2, 250)}"
    crossing = rnd.choice(CROSSINGS)
    deny = rnd.random() < 0.3
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 + i * 0.01)) + ".000Z"
    return {
        "@timestamp": ts,
        "event": {
            "dataset": "firewall",
            "module": "fortigate",
            "action": "deny" if deny else "close",
            "outcome": "failure" if deny else "success",
            "sent_at": time.time(),
        },
        "source": {"ip": src, "port": rnd.randint(1024, 65535)},
        "destination": {
            "ip": f"10.200.{rnd.randint(1, 9)}.{rnd.randint(2, 250)}",
            "port": rnd.choice(PORTS),
        },
        "network": {"transport": "tcp"},
        "observer": {"vendor": "Fortinet", "product": "Fortigate"},
        "zone": {
            "source": crossing.split("->")[0],
            "destination": crossing.split("->")[1],
            "crossing": crossing,
        },
        "rule": {"name": f"policy-{rnd.randint(1, 90)}"},
    }


def make_rules(folder: Path, n: int) -> None:
    """n detection rules on firewall fields, plus two correlations."""
    rnd = random.Random(7)
    docs = []
    for i in range(n):
        port = rnd.choice(PORTS)
        crossing = rnd.choice(CROSSINGS)
        docs.append(
            f"""title: bench rule {i}
id: 00000000-0000-4000-8000-{i:012d}
name: bench_{i}
logsource: {{product: zonewatch, service: firewall}}
detection:
  selection:
    destination.port: {port}
    zone.crossing: '{crossing}'
    rule.name|endswith: '{rnd.randint(0, 9)}'
  condition: selection
level: low
"""
        )
    docs.append(
        """title: bench denied crossings
id: 00000000-0000-4000-8000-100000000001
correlation:
  type: event_count
  rules: [bench_0, bench_1, bench_2]
  group-by: [source.ip]
  timespan: 5m
  condition: {gte: 3}
level: high
"""
    )
    docs.append(
        """title: bench port scan
id: 00000000-0000-4000-8000-100000000002
correlation:
  type: value_count
  rules: [bench_3, bench_4, bench_5, bench_6]
  group-by: [source.ip]
  timespan: 10m
  condition: {field: destination.port, gte: 3}
level: high
"""
    )
    (folder / "bench.yml").write_text("---\n".join(docs))


def produce(kafka: KafkaSettings, topic: str, n: int, rate: float | None = None) -> float:
    rnd = random.Random(1)
    t0 = time.time() - 86400
    producer = make_producer(kafka)
    started = time.perf_counter()
    for i in range(n):
        ev = make_event(i, rnd, t0)
        if rate:
            target = started + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            ev["event"]["sent_at"] = time.time()
        producer.send(topic, key=ev["source"]["ip"].encode(), value=orjson.dumps(ev))
    producer.flush()
    producer.close()
    return time.perf_counter() - started


def floor(kafka: KafkaSettings, topic: str, n: int) -> float:
    consumer = make_consumer(kafka, f"floor-{uuid.uuid4().hex[:6]}", [topic])
    seen = 0
    started = None
    while seen < n:
        for records in consumer.poll(timeout_ms=500, max_records=2000).values():
            if started is None:
                started = time.perf_counter()
            for r in records:
                orjson.loads(r.value)
            seen += len(records)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return n / elapsed


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stream(
    kafka: KafkaSettings,
    rules: Path,
    db: Path,
    n: int,
    archive: bool = True,
    rss: dict[int, tuple[float, float]] | None = None,
    publish: bool = True,
    in_child: bool = True,
    cpu: list[tuple[float, float]] | None = None,
) -> tuple[float, Any]:
    """Events/s of the correlator's loop over ``n`` events; ``rss`` collects
    the process RSS and DuckDB's own memory (MB) after each tenth of them;
    ``cpu`` gets the CPU seconds of this process and of its children
    reaped meanwhile (the alerts topic's producer process) over the run."""
    from correlator.service import CorrelatorService

    before = _cpu()

    settings = load_settings().updated(
        kafka=kafka,
        correlator={
            "rules": [rules],
            "db_path": db,
            "group_id": f"s-{uuid.uuid4().hex[:6]}",
            "archive_events": archive,
            "publish_alerts": publish,
            # Only when asked: the same bench runs on a tree from before the setting.
            **({} if in_child else {"publish_process": False}),
        },
    )
    with CorrelatorService(settings) as service, contextlib.ExitStack() as tuned:
        service.start()
        tuned.enter_context(as_correlate_runs())
        first: list[float] = []
        orig = service.loop.process_batch  # type: ignore[union-attr]

        def timed(batch: Any) -> Any:
            if not first:
                first.append(time.perf_counter())
            return orig(batch)

        service.loop.process_batch = timed  # type: ignore[union-attr,method-assign]
        marks = [n * k // 10 for k in range(1, 11)]

        def until(s: Any) -> bool:
            while rss is not None and marks and s.consumed >= marks[0]:
                rss[marks.pop(0)] = (rss_mb(), duckdb_mb(service.store))
            return bool(s.consumed >= n)

        stats = service.run(until=until, idle_timeout_s=30)
        if service.publisher is not None:
            # Counted in: the run is done when its alerts are on the topic.
            service.publisher.drain(60)
        elapsed = time.perf_counter() - first[0]
    if cpu is not None:
        after = _cpu()
        cpu.append((after[0] - before[0], after[1] - before[1]))
    return n / elapsed, stats


def _cpu() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its reaped children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def latency(
    kafka: KafkaSettings,
    rules: Path,
    db: Path,
    topic: str,
    n: int,
    rate: float,
    publish: bool = True,
    published: list[float] | None = None,
) -> list[float]:
    """Produce at ``rate`` while the correlator runs; delay to committed alert
    rows (and, into ``published``, to their records on the alerts topic)."""
    from correlator.service import CorrelatorService

    settings = load_settings().updated(
        kafka=kafka,
        correlator={
            "rules": [rules],
            "db_path": db,
            "group_id": f"l-{uuid.uuid4().hex[:6]}",
            "poll_timeout_ms": 20,
            "max_batch": 500,
            "publish_alerts": publish,
        },
    )
    delays: list[float] = []
    with CorrelatorService(settings) as service, contextlib.ExitStack() as tuned:
        service.start()
        tuned.enter_context(as_correlate_runs())
        store = service.store
        orig_submit = store.submit

        def submit(alerts: Any, **kw: Any) -> Any:
            stored = orig_submit(alerts, **kw)

            def done(_: Any) -> None:  # on the store's writer thread, once committed
                now = time.time()
                for a in alerts:
                    if a.type == "detection":
                        delays.append(now - a.evidence[0].event["event"]["sent_at"])

            stored.add_done_callback(done)
            return stored

        store.submit = submit  # type: ignore[method-assign]
        # Join the group before producing, so the join is not counted.
        while not service.loop.consumer.assignment():  # type: ignore[union-attr]
            service.loop.consumer.poll(timeout_ms=100)  # type: ignore[union-attr]
        # A separate process, as connectors are: a producer thread would share
        # the correlator's GIL and turn the measurement into a backlog.
        producer = multiprocessing.get_context("spawn").Process(
            target=produce, args=(kafka, topic, n, rate)
        )
        producer.start()
        reader = None
        timings: Any = None
        if publish and published is not None:
            timings = multiprocessing.get_context("spawn").Manager().list()
            reader = multiprocessing.get_context("spawn").Process(
                target=read_alerts_topic, args=(kafka, n // 40, timings)
            )
            reader.start()
        service.run(until=lambda s: s.consumed >= n, idle_timeout_s=30)
        producer.join()
        if service.publisher is not None:
            service.publisher.drain(60)
        if reader is not None and published is not None:
            reader.join(timeout=60)
            published.extend(sorted(timings))
    return sorted(delays)


def read_alerts_topic(kafka: KafkaSettings, at_least: int, out: Any) -> None:
    """In its own process: each detection alert's delay from its event's
    produce to its arrival on the alerts topic, until the topic goes quiet."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        kafka.alerts_topic,
        **kafka.client_kwargs(),
        group_id=None,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    found: list[float] = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < (30 if len(found) < at_least else 5):
        batch = consumer.poll(timeout_ms=100)
        now = time.time()
        for records in batch.values():
            quiet_since = time.monotonic()
            for record in records:
                body = orjson.loads(record.value)
                if body.get("type") == "detection" and body.get("evidence"):
                    found.append(now - body["evidence"][0]["event"]["event"]["sent_at"])
    consumer.close()
    out.extend(found)


@contextlib.contextmanager
def as_correlate_runs() -> Iterator[None]:
    """The interpreter settings ``zonewatch correlate`` applies after start-up
    (``correlator.runtime.tune_process``), undone afterwards: the floor
    rounds run in the same process."""
    interval, threshold = sys.getswitchinterval(), gc.get_threshold()
    tune_process()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        sys.setswitchinterval(interval)


def duckdb_mb(store: Any) -> float:
    """Memory DuckDB holds for this store (buffer pool, by tag)."""
    _, rows = store.query("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()")
    return float(rows[0][0]) / 2**20


def rss_run(kafka: KafkaSettings, rules: Path, db: Path, n: int) -> None:
    """RSS of the correlator over a long run with default settings (events
    archive on): flat means the state, the buffers and DuckDB's cache are
    bounded, not the input."""
    long = kafka.model_copy(update={"topic_prefix": f"rss-{uuid.uuid4().hex[:6]}"})
    ensure_topics(long)
    took = produce(long, long.events_topic("firewall"), n)
    print(f"rss run: produced {n:,} events in {took:.0f} s")
    samples: dict[int, tuple[float, float]] = {}
    rate, stats = stream(long, rules, db, n, rss=samples)
    first, last = samples[min(samples)], samples[max(samples)]
    print(
        f"rss     over {n:,} events ({rate:,.0f} events/s, {stats.new_alerts} alerts), "
        "RSS (of it DuckDB's buffer pool, capped by correlator.store_memory_limit): "
        + ", ".join(f"{k // 1000:,}k {v:.0f} ({d:.0f}) MB" for k, (v, d) in sorted(samples.items()))
    )
    print(
        f"rss     growth after the first tenth {last[0] - first[0]:+.0f} MB, of it DuckDB "
        f"{last[1] - first[1]:+.0f} MB; the rest {last[0] - last[1] - first[0] + first[1]:+.0f} MB"
    )


def _p50_p99(delays: list[float]) -> tuple[float, float]:
    delays = sorted(delays)
    return delays[len(delays) // 2], delays[min(len(delays) - 1, int(len(delays) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="floor/stream rounds")
    parser.add_argument(
        "--rss-events",
        type=int,
        default=1_000_000,
        help="events of the RSS run (archive on, default settings); 0 skips it",
    )
    parser.add_argument(
        "--alerts-topic-only",
        action="store_true",
        help="only the alerts topic on/off rounds: no floor, no stream without the archive",
    )
    parser.add_argument("--no-latency", action="store_true", help="skip the latency rounds")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="also the alerts topic on with its producer in the correlator's own process "
        "(correlator.publish_process=false), in the same rounds",
    )
    args = parser.parse_args()
    configure_logging("warning", json=True)
    n = args.events
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None if external else EmbeddedBroker().start()
    bootstrap = external or broker.bootstrap  # type: ignore[union-attr]
    try:
        kafka = KafkaSettings(
            bootstrap_servers=bootstrap, topic_prefix=f"bench-{uuid.uuid4().hex[:6]}"
        )
        ensure_topics(kafka)
        topic = kafka.events_topic("firewall")
        with tempfile.TemporaryDirectory() as tmp:
            rules = Path(tmp) / "rules"
            rules.mkdir()
            make_rules(rules, args.rules)
            took = produce(kafka, topic, n)
            print(f"produced {n} events in {took:.1f} s ({n / took:,.0f}/s, acks=all)")
            # Floor and stream alternate for a few rounds on the same topic:
            # on a shared machine one round of each swings by 2x, the median
            # of the per-round ratios much less.
            rss0 = rss_mb()
            floors: list[float] = []
            bares: list[float] = []
            archived: list[float] = []
            unpublished: list[float] = []
            # The alerts topic's variants rotate their order from round to round.
            variants = ["on", "off"] + (["in-process"] if args.in_process else [])
            rates: dict[str, list[float]] = {v: [] for v in variants}
            cpus: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
            stats_a: Any = None
            for r in range(args.rounds):
                if not args.alerts_topic_only:
                    floors.append(floor(kafka, topic, n))
                    bare, stats = stream(
                        kafka, rules, Path(tmp) / f"s0-{r}.duckdb", n, archive=False
                    )
                    bares.append(bare)
                for variant in variants[r % len(variants) :] + variants[: r % len(variants)]:
                    got, st = stream(
                        kafka,
                        rules,
                        Path(tmp) / f"s-{variant}-{r}.duckdb",
                        n,
                        publish=variant != "off",
                        in_child=variant != "in-process",
                        cpu=cpus[variant],
                    )
                    rates[variant].append(got)
                    if variant == "on":
                        stats_a = st
            archived, unpublished = rates["on"], rates["off"]
            rss1 = rss_mb()
            rate = sorted(archived)[len(archived) // 2]
            if not args.alerts_topic_only:
                ratios = sorted(b / f for b, f in zip(bares, floors, strict=True))
                ratios_a = sorted(a / f for a, f in zip(archived, floors, strict=True))
                floor_rate = sorted(floors)[len(floors) // 2]
                print(
                    f"floor   consume + orjson            {floor_rate:>10,.0f} events/s "
                    f"(median of {args.rounds}: {', '.join(f'{f:,.0f}' for f in floors)})"
                )
                print(
                    f"stream  detect+correlate+store+commit "
                    f"{sorted(bares)[len(bares) // 2]:>8,.0f} events/s ({stats.new_alerts} "
                    f"alerts)   ratio to floor {ratios[len(ratios) // 2]:.2f} (median; rounds "
                    f"{' '.join(f'{x:.2f}' for x in ratios)}; target >= 0.6)"
                )
                print(
                    f"stream  + events archive (default)    {rate:>8,.0f} events/s "
                    f"({stats_a.new_alerts} alerts)   ratio to floor "
                    f"{ratios_a[len(ratios_a) // 2]:.2f} (median; rounds "
                    f"{' '.join(f'{x:.2f}' for x in ratios_a)})"
                )
            for variant in variants[::2]:  # "on" (its producer in a child process), "in-process"
                on_off = sorted(a / q for a, q in zip(rates[variant], unpublished, strict=True))
                label = "on/off" if variant == "on" else "on, producer in-process/off"
                print(
                    f"stream  default, alerts topic off     "
                    f"{sorted(unpublished)[len(unpublished) // 2]:>8,.0f} events/s; alerts topic "
                    f"{label} {on_off[len(on_off) // 2]:.2f} (median; rounds "
                    f"{' '.join(f'{x:.2f}' for x in on_off)}; target >= 0.9)"
                )
            for variant in variants:
                own = sorted(c[0] for c in cpus[variant])[len(cpus[variant]) // 2]
                kids = sorted(c[1] for c in cpus[variant])[len(cpus[variant]) // 2]
                print(
                    f"cpu     alerts topic {variant:<10} {own:6.1f} s this process + "
                    f"{kids:5.1f} s producer process, per {n:,} events (medians; rounds "
                    + ", ".join(f"{a:.1f}+{b:.1f}" for a, b in cpus[variant])
                    + ")"
                )
            print(f"rss     {rss0:.0f} MB before, {rss1:.0f} MB after the stream run")
            m = min(n, 20_000)
            half = rate / 2
            if not args.no_latency:
                # Alternating off/on rounds (medians); the reader of the alerts
                # topic runs in a round of its own, as it takes CPU of its own.
                lat: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
                on_topic: list[float] = []
                for r in range(args.rounds + 1):
                    for publish in (False, True) if r < args.rounds else (True,):
                        lat_kafka = kafka.model_copy(
                            update={"topic_prefix": f"lat-{uuid.uuid4().hex[:6]}"}
                        )
                        ensure_topics(lat_kafka)
                        delays = latency(
                            lat_kafka,
                            rules,
                            Path(tmp) / f"l-{publish}-{r}.duckdb",
                            lat_kafka.events_topic("firewall"),
                            m,
                            half,
                            publish=publish,
                            published=on_topic if r == args.rounds else None,
                        )
                        if delays and r < args.rounds:
                            lat[publish].append(_p50_p99(delays))
                for publish in (False, True):
                    rounds = lat[publish]
                    if rounds:
                        p50 = sorted(x for x, _ in rounds)[len(rounds) // 2]
                        p99 = sorted(y for _, y in rounds)[len(rounds) // 2]
                        print(
                            f"latency produce -> committed alert at {half:,.0f} events/s, alerts "
                            f"topic {'on ' if publish else 'off'}: p50 {p50 * 1000:.0f} ms, p99 "
                            f"{p99 * 1000:.0f} ms (medians of {len(rounds)}; p99 rounds "
                            f"{', '.join(f'{y * 1000:.0f}' for _, y in rounds)} ms; target p99 <= "
                            "1000 ms)"
                        )
                if on_topic:
                    p50, p99 = _p50_p99(on_topic)
                    print(
                        f"latency produce -> alert on the alerts topic at {half:,.0f} events/s: "
                        f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
                        f"({len(on_topic)} alerts, one round, its reader in a process of its own)"
                    )
            if args.rss_events:
                rss_run(kafka, rules, Path(tmp) / "rss.duckdb", args.rss_events)
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
