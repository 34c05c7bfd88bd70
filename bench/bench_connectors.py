"""Connector throughput: lines/s from a file into Kafka per format, against the
bare kafka-python producer floor measured in the same run; RSS over a long file.

    python bench/bench_connectors.py [--lines 30000] [--rss-lines 150000]

Uses KAFKA_BOOTSTRAP_SERVERS when set, else starts the embedded broker.
Target (issue 5): >= 0.9 x the bare producer floor, RSS flat.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connectors.pipeline import ingest_file  # noqa: E402
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


FORMATS = {
    ("vdi", "citrix-adc"): adc,
    ("vdi", "horizon"): horizon,
    ("vdi", "avd"): avd,
    ("intune", "diagnostic"): intune,
}


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bare_producer(kafka: KafkaSettings, n: int, payload: bytes) -> float:
    topic = kafka.topic("bench.bare")
    ensure_topics(kafka, [topic])
    producer = make_producer(kafka)
    start = time.perf_counter()
    for _ in range(n):
        producer.send(topic, key=b"tanaka.hanako@city.example.lg.jp", value=payload)
    producer.flush()
    elapsed = time.perf_counter() - start
    producer.close()
    return n / elapsed


def run(bootstrap: str, lines: int, rss_lines: int) -> None:
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"bench-{uuid.uuid4().hex[:6]}")
    tmp = Path(tempfile.mkdtemp(prefix="zw-bench-"))
    settings = Settings(
        kafka=kafka,
        connectors={"zones_file": ROOT / "rules/zones.yaml", "checkpoint_dir": tmp / "cp"},
    )
    floor = bare_producer(kafka, lines, b"x" * 900)
    print(f"bare kafka-python producer (900 B, acks=all, idempotent): {floor:,.0f} msgs/s")
    for (source, fmt), gen in FORMATS.items():
        path = tmp / f"{fmt}.log"
        path.write_text("\n".join(gen(i) for i in range(lines)) + "\n")
        stats = ingest_file(settings, source, fmt, path)
        rate = stats.read / stats.seconds
        print(
            f"{source}/{fmt:11} {rate:9,.0f} lines/s  ratio {rate / floor:4.2f}  "
            f"(produced {stats.produced}, dead-lettered {stats.dead_lettered})"
        )
    path = tmp / "rss.log"
    with open(path, "w") as fh:
        for i in range(rss_lines):
            fh.write(adc(i) + "\n")
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            samples.append(rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stats = ingest_file(settings, "vdi", "citrix-adc", path)
    done.set()
    sampler.join()
    q = len(samples) // 4 or 1
    print(
        f"RSS over {rss_lines:,} lines ({stats.read / stats.seconds:,.0f} lines/s): "
        f"first quarter max {max(samples[:q]):.0f} MB, last quarter max {max(samples[-q:]):.0f} MB"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=30_000)
    ap.add_argument("--rss-lines", type=int, default=150_000)
    args = ap.parse_args()
    configure_logging("warning", json=False)
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        run(os.environ["KAFKA_BOOTSTRAP_SERVERS"], args.lines, args.rss_lines)
        return
    from zonewatch.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        run(broker.bootstrap, args.lines, args.rss_lines)


if __name__ == "__main__":
    main()
