"""Connector throughput: lines/s from a file into Kafka per format, against the
bare kafka-python producer floor measured in the same run; RSS over a long file.

The machine is shared and noisy, so each round measures the bare producer
and then every format, and the reported ratio is the median over rounds of
connector rate / bare rate of the same round. Rates count from the start of
reading (after connecting and recovering the checkpoint, reported apart as
startup).

    python bench/bench_connectors.py [--lines 6000] [--rounds 3] [--rss-lines 0]
        [--rss-format avd] [FORMAT ...]

``--rss-lines 1000000`` ingests that many lines of ``--rss-format`` (the
stateful AVD rows by default) and prints the peak RSS of the producing process
and of the parse worker after 10 % of the lines and at the end: flat means the
end is no higher than the first tenth.

Uses KAFKA_BOOTSTRAP_SERVERS when set, else starts the embedded broker.
``--parsers fortigate`` (the default) also prints those formats' parse rate
alone against the split+dumps baseline of bench_parsers.py, in the same run.

Target (issue 19): every format >= 0.8 x the floor of kafka-python's
transactional producer measured in the same round (exactly-once from files
stays, so that is the floor a connector is compared with), RSS flat. The
bare (non-transactional) producer is printed too, for reference.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connectors.ingest import ingest_file  # noqa: E402
from connectors.produce import BATCH_BYTES, LINGER_MS, KeyPartitioner  # noqa: E402
from zonewatch.config import KafkaSettings, Settings  # noqa: E402
from zonewatch.kafka import ensure_topics, make_producer  # noqa: E402
from zonewatch.logs import configure_logging  # noqa: E402


def adc(i: int) -> str:
    return (
        f"<134> 03/02/2026:00:{i // 60 % 60:02d}:{i % 60:02d} GMT adc01 0-PPE-0 : default SSLVPN "
        f"ICAEND_CONNSTAT {i} 0 : Source 10.10.1.{i % 250}:5{i % 1000:04d} - Destination "
        f"10.50.20.{i % 250}:2598 - username:domainname tanaka.h:CITY - startTime "
        f'"03/02/2026:00:00:00 GMT" - endTime "03/02/2026:00:05:00 GMT" - Duration 00:05:00 - '
        f"Total_bytes_send 1000 - Total_bytes_recv 2000 - connectionId {i}"
    )


def horizon(i: int) -> str:
    return (
        f"<14>1 2026-03-02T09:{i // 60 % 60:02d}:{i % 60:02d}.000+09:00 cs01 View - 73 "
        f'[View@6876 Severity="INFO" Module="Agent" EventType="AGENT_CONNECTED" '
        f'UserSID="S-1-5-21-1004336348-1177238915-682003330-1105" MachineName="lg-vdi-{i % 90}" '
        f'MachineIPAddress="10.50.20.{i % 250}" ClientIpAddress="10.10.4.{i % 250}" '
        f'DesktopId="lgwan-pool" BrokerSessionId="s{i}"] User CITY\\tanaka.h connected'
    )


def avd(i: int) -> str:
    return json.dumps({
        "TimeGenerated": f"2026-03-02T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "CorrelationId": f"c-{i // 3}", "State": ("Started", "Connected", "Completed")[i % 3],
        "UserName": "sato.kenji@city.example.lg.jp", "ClientSideIPAddress": f"10.10.2.{i % 250}",
        "SessionHostIPAddress": "10.50.30.4", "SessionHostName": "inet-vdi-4.city.local",
        "_ResourceId": "/subscriptions/s/providers/x/hostpools/inet-pool",
    })  # fmt: skip


def intune(i: int) -> str:
    return json.dumps({
        "time": f"2026-03-02T00:{i // 60 % 60:02d}:{i % 60:02d}.1234567Z",
        "category": "AuditLogs", "operationName": "Wipe ManagedDevice",
        "properties": {"Actor": {"UPN": "suzuki.yui@city.example.lg.jp", "ObjectId": "o"},
                       "AuditEventId": f"a-{i}", "TargetDisplayNames": [f"LT-{i % 500}"]},
        "resultType": "Success", "tenantId": "t",
    })  # fmt: skip


SAMPLES = ROOT.parent / "shared" / "samples"
SAMPLE_FILES = {
    ("gateway", "squid"): "golden/squid/test-access.log",
    ("gateway", "zscaler"): "golden/zscaler_zia/test-web.log",
    ("firewall", "panos"): "raw/fw_panos/elastic_test-panw-panos-traffic-sample.excerpt.log",
    ("firewall", "fortigate"): "raw/fw_fortigate/elastic_test-fortinet-7-4.excerpt.log",
    ("firewall", "asa"): "raw/fw_cisco_asa/elastic_test-sample.excerpt.log",
}


Run = tuple[tuple[str, str], bool]  # (source, format), parse worker?


def sample_cycle(key: tuple[str, str]) -> Callable[[int], str]:
    """Real vendor lines from ../shared/samples, repeated."""
    text = (SAMPLES / SAMPLE_FILES[key]).read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lambda i: lines[i % len(lines)]


FORMATS: dict[tuple[str, str], Callable[[int], str]] = {
    **{key: sample_cycle(key) for key in SAMPLE_FILES},
    ("vdi", "citrix-adc"): adc,
    ("vdi", "horizon"): horizon,
    ("vdi", "avd"): avd,
    ("intune", "diagnostic"): intune,
}


def rss_mb(pid: int | str = "self") -> float:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except FileNotFoundError:
        return 0.0


def worker_pids() -> list[int]:
    """Children of this process other than the broker (the parse worker)."""
    pids = []
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            comm = Path(f"/proc/{pid}/comm")
            if comm.exists() and "python" in comm.read_text():
                pids.append(int(pid))
    return pids


TARGET = 0.8  # of the transactional floor, every format (issue 19)
PARSER_TARGET = 50_000  # lines/s of one parser alone (issue 19)


def cpu_s(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def bare_producer(
    kafka: KafkaSettings, n: int, payload: bytes, best: bool = True, transactional: bool = False
) -> tuple[float, float]:
    """msgs/s and CPU microseconds per message of the bare producer.

    ``best``: the settings the connector's sink uses (512 KiB batches, 25 ms
    linger, no compression) and the partition passed in, which spares
    kafka-python its pure-Python murmur2 per record (the sink caches it per
    key); else make_producer's defaults and kafka-python's partitioner.
    ``transactional``: with best, in transactions committed about once a
    second like the sink's (what exactly-once costs kafka-python per send).
    """
    topic = kafka.topic("bench.bare")
    ensure_topics(kafka, [topic])
    key = b"tanaka.hanako@city.example.lg.jp"
    txn = {"transactional_id": f"bench-{uuid.uuid4().hex}"} if transactional else {}
    if best:
        producer = make_producer(kafka, batch_size=BATCH_BYTES, linger_ms=LINGER_MS, **txn)
        partition = KeyPartitioner({topic: sorted(producer.partitions_for(topic))})(topic, key)
    else:
        producer, partition = make_producer(kafka), None
    if transactional:
        producer.init_transactions()
    start, cpu = time.perf_counter(), cpu_s()
    if transactional:
        last = start
        producer.begin_transaction()
        for i in range(n):
            producer.send(topic, key=key, value=payload, partition=partition)
            if i % 512 == 0 and time.perf_counter() - last >= 1.0:
                producer.commit_transaction()
                producer.begin_transaction()
                last = time.perf_counter()
        producer.commit_transaction()
    else:
        for _ in range(n):
            producer.send(topic, key=key, value=payload, partition=partition)
    producer.flush()
    elapsed, cpu = time.perf_counter() - start, cpu_s() - cpu
    producer.close()
    return n / elapsed, cpu / n * 1e6


@dataclass
class Measured:
    rate: float  # lines/s
    startup: float  # s before reading starts
    parent_us: float  # CPU microseconds per line, producing process
    worker_us: float  # CPU microseconds per line, parse worker
    note: str


def _ingest(
    settings: Settings,
    source: str,
    fmt: str,
    path: Path,
    worker: bool,
    fixed_cpu: tuple[float, float] = (0.0, 0.0),
) -> Measured:
    """One run; ``fixed_cpu`` (parent, worker seconds of a near-empty run) is
    taken off the CPU figures so they show the cost per line, not of starting."""
    start, cpu, child = time.perf_counter(), cpu_s(), cpu_s(resource.RUSAGE_CHILDREN)
    if "parse_worker" in inspect.signature(ingest_file).parameters:
        stats = ingest_file(settings, source, fmt, path, parse_worker=worker)
    else:  # an older tree, for before/after figures
        stats = ingest_file(settings, source, fmt, path)
    startup = time.perf_counter() - start - stats.seconds
    cpu = max(cpu_s() - cpu - fixed_cpu[0], 0.0)
    child = max(cpu_s(resource.RUSAGE_CHILDREN) - child - fixed_cpu[1], 0.0)
    note = f"produced {stats.produced}, dead-lettered {stats.dead_lettered}"
    n = stats.read or 1
    return Measured(stats.read / stats.seconds, startup, cpu / n * 1e6, child / n * 1e6, note)


def _fixed_cpu(settings: Settings, tmp: Path, key: Run, sample: Path) -> tuple[float, float]:
    """CPU seconds (parent, worker) of ingesting a 10-line file: connecting,
    transactions, checkpoint recovery, starting the worker."""
    (source, fmt), worker = key
    small = tmp / f"{fmt}-small-{uuid.uuid4().hex[:6]}.log"
    with open(sample, "rb") as fh:
        small.write_bytes(b"".join(fh.readline() for _ in range(10)))
    m = _ingest(settings, source, fmt, small, worker)
    return m.parent_us * 10 / 1e6, m.worker_us * 10 / 1e6


def run(
    bootstrap: str,
    lines: int,
    rounds: int,
    rss_lines: int,
    rss_format: str,
    only: list[str],
    modes: list[bool],
    parsers: list[str] = [],  # noqa: B006 - read only
) -> None:
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"bench-{uuid.uuid4().hex[:6]}")
    tmp = Path(tempfile.mkdtemp(prefix="zw-bench-"))
    settings = Settings(
        kafka=kafka,
        # The sample files are real vendor lines of 2016-2019: without lifting
        # the past horizon every one of them was dead-lettered, and the bench
        # measured the dead-letter path instead of producing events.
        connectors={
            "zones_file": ROOT / "rules/zones.yaml",
            "checkpoint_dir": tmp / "cp",
            "max_past_horizon_days": None,
        },
    )
    if rounds == 0:
        if rss_lines:
            rss(settings, tmp, rss_lines, rss_format)
        return
    chosen = {k: g for k, g in FORMATS.items() if not only or k[1] in only}
    files: dict[tuple[str, str], Path] = {}
    runs = [(key, worker) for key in chosen for worker in modes]
    for (source, fmt), gen in chosen.items():
        path = files[source, fmt] = tmp / f"{fmt}.log"
        path.write_text("\n".join(gen(i) for i in range(lines)) + "\n")
    bares: list[float] = []
    bare_cpus: list[float] = []
    got: dict[Run, list[Measured]] = {k: [] for k in runs}
    ratios: dict[Run, list[float]] = {k: [] for k in runs}  # to the transactional floor
    bare_ratios: dict[Run, list[float]] = {k: [] for k in runs}
    cpu_ratios: dict[Run, list[float]] = {k: [] for k in runs}
    total_cpu_ratios: dict[Run, list[float]] = {k: [] for k in runs}  # parent + worker
    fixed = {key: _fixed_cpu(settings, tmp, key, files[key[0]]) for key in runs}
    plain: list[float] = []
    txns: list[tuple[float, float]] = []
    for _ in range(rounds):
        plain.append(bare_producer(kafka, lines, b"x" * 900, best=False)[0])
        txns.append(bare_producer(kafka, lines, b"x" * 900, transactional=True))
        bare, bare_cpu = bare_producer(kafka, lines, b"x" * 900)
        bares.append(bare)
        bare_cpus.append(bare_cpu)
        for key in runs:
            (source, fmt), worker = key
            # a new name for the file (its checkpoint is keyed by the name), so
            # every run reads the whole file
            alias = tmp / f"{fmt}-{uuid.uuid4().hex[:6]}.log"
            os.link(files[source, fmt], alias)
            m = _ingest(settings, source, fmt, alias, worker, fixed[key])
            got[key].append(m)
            ratios[key].append(m.rate / txns[-1][0])
            bare_ratios[key].append(m.rate / bare)
            cpu_ratios[key].append(txns[-1][1] / m.parent_us)
            total_cpu_ratios[key].append(txns[-1][1] / (m.parent_us + m.worker_us))
    med = statistics.median
    print(
        f"bare kafka-python producer (900 B, acks=all, idempotent): median {med(bares):,.0f} "
        f"msgs/s, {med(bare_cpus):.0f} CPU-us/msg over {rounds} rounds "
        f"({', '.join(f'{b:,.0f}' for b in bares)}); the floor uses the sink's batch_size "
        f"and linger_ms and passes the partition; with make_producer's defaults and "
        f"kafka-python's partitioner: median {med(plain):,.0f} msgs/s; in transactions "
        f"like the sink's (commit about once a second): median "
        f"{med(t[0] for t in txns):,.0f} msgs/s, {med(t[1] for t in txns):.0f} CPU-us/msg"
    )
    print(
        f"{'format':<22}{'mode':<8}{'lines/s':>9}{'ratio':>7}{'target':>8}{'vs-bare':>8}"
        f"{'cpu-ratio':>10}{'all-cpu':>8}{'parent-us':>10}{'worker-us':>10}   per-round ratios"
    )
    for key in runs:
        ms = got[key]
        name = "/".join(key[0])
        mode = "worker" if key[1] else "inline"
        rounds_txt = " ".join(f"{r:.2f}" for r in ratios[key])
        verdict = "met" if med(ratios[key]) >= TARGET else "BELOW"
        print(
            f"{name:<22}{mode:<8}{med(m.rate for m in ms):>9,.0f}{med(ratios[key]):>7.2f}"
            f"{verdict:>8}{med(bare_ratios[key]):>8.2f}{med(cpu_ratios[key]):>10.2f}"
            f"{med(total_cpu_ratios[key]):>8.2f}"
            f"{med(m.parent_us for m in ms):>10.0f}{med(m.worker_us for m in ms):>10.0f}"
            f"   {rounds_txt}   ({ms[-1].note})"
        )
    startup = med(m.startup for ms in got.values() for m in ms)
    print(
        f"startup (connect, init transactions, recover checkpoint): median {startup:.2f} s; "
        "its CPU (measured on a 10-line file) is not in the per-line CPU figures"
    )
    print(
        f"ratio: lines/s over the transactional producer's msgs/s of the same round (wall\n"
        f"clock, median of {rounds} interleaved rounds; target >= {TARGET}); vs-bare: the same\n"
        "over the bare producer's; cpu-ratio: the transactional producer's CPU per message\n"
        "over the producing process's CPU per line, the ratio reached when a core is free\n"
        "for the worker (this box is shared); all-cpu: the same over the CPU per line of the\n"
        "producing process and the parse worker together"
    )
    if parsers:
        parser_ratios(parsers, rounds)
    if rss_lines:
        rss(settings, tmp, rss_lines, rss_format)


def _bound(parse: Callable[[str, Any], object], ctx: Any) -> Callable[[str], object]:
    return lambda line: parse(line, ctx)


def parser_ratios(formats: list[str], rounds: int) -> None:
    """Parse alone per CPU-second against bench_parsers.py's split+dumps
    baseline, measured in alternating rounds (the connector's parser share)."""
    import bench_parsers as bp

    for fmt in formats:
        key = next(k for k in [*bp.FILES, *bp.GENERATED] if k[1] == fmt)
        lines = bp._lines(key)
        ctx = bp.ParseContext(*key, timezone=bp.ZoneInfo("Asia/Tokyo"), now=bp.datetime.now(bp.UTC))
        parse = bp.FORMATS[key].parse
        base, ((rate, ratio),) = bp._measure([_bound(parse, ctx)], lines, 0.2, rounds)
        verdict = "met" if rate >= PARSER_TARGET else "BELOW"
        print(
            f"parser {'/'.join(key)} alone: {rate:,.0f} lines/s per CPU-second ({verdict} "
            f">= {PARSER_TARGET:,}), {ratio:.2f}x the split+dumps baseline ({base:,.0f} "
            f"lines/s), medians of {rounds} alternating rounds"
        )


def rss(settings: Settings, tmp: Path, rss_lines: int, fmt: str) -> None:
    """Peak RSS after the first 10 % of a long file and over the whole file."""
    (source, _), gen = next((k, g) for k, g in FORMATS.items() if k[1] == fmt)
    path = tmp / f"rss-{fmt}.log"
    with open(path, "w") as fh:
        fh.writelines(gen(i) + "\n" for i in range(rss_lines))
    size = path.stat().st_size
    # (bytes read so far, parent MB, worker MB); progress from the worker's file position
    samples: list[tuple[int, float, float]] = []
    done = threading.Event()

    def position(pids: list[int]) -> int:
        for pid in pids:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    if os.readlink(fd) == str(path):
                        info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
                        return int(info.split()[1])
                except OSError:
                    continue
        return samples[-1][0] if samples else 0

    def sample() -> None:
        while not done.wait(0.25):
            pids = worker_pids()
            worker = sum(rss_mb(pid) for pid in pids)
            samples.append((position(pids), rss_mb(), worker))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stats = ingest_file(settings, source, fmt, path, parse_worker=True)
    done.set()
    sampler.join()
    early = [s for s in samples if s[0] <= size // 10] or samples[:1]
    print(
        f"RSS over {rss_lines:,} {fmt} lines ({size / 2**20:,.0f} MB, "
        f"{stats.read / stats.seconds:,.0f} lines/s, {stats.produced:,} events), peak after "
        f"the first 10 % / over the whole file: producing process "
        f"{max(s[1] for s in early):.0f} / {max(s[1] for s in samples):.0f} MB, parse worker "
        f"{max(s[2] for s in early):.0f} / {max(s[2] for s in samples):.0f} MB"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=6_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rss-lines", type=int, default=0, help="also watch RSS over this many")
    ap.add_argument(
        "--rss-format", default="avd", choices=[k[1] for k in FORMATS], help="format for RSS"
    )
    ap.add_argument(
        "--mode",
        choices=["worker", "inline", "both"],
        default="worker",
        help="parse in a worker process, in the producing process, or compare both",
    )
    ap.add_argument(
        "--parsers",
        default="fortigate",
        help="comma-separated formats whose parser alone is compared with the split+dumps "
        "baseline after the connector figures ('' for none)",
    )
    ap.add_argument("formats", nargs="*", help="format names (default: all)")
    args = ap.parse_args()
    configure_logging("warning", json=False)
    modes = {"worker": [True], "inline": [False], "both": [False, True]}[args.mode]
    parsers = [p for p in args.parsers.split(",") if p]
    params = (
        args.lines, args.rounds, args.rss_lines, args.rss_format, args.formats, modes, parsers,
    )  # fmt: skip
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        run(os.environ["KAFKA_BOOTSTRAP_SERVERS"], *params)
        return
    from zonewatch.app.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        run(broker.bootstrap, *params)


if __name__ == "__main__":
    main()
