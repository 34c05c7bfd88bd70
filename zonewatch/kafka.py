"""Kafka plumbing shared by connectors and correlator (kafka-python).

Only construction and topic administration live here; the consume and
produce loops belong to the stages that own them.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from zonewatch.config import SOURCES, KafkaSettings
from zonewatch.errors import BrokerUnavailableError
from zonewatch.logs import get_logger

log = get_logger(__name__)

try:  # kafka-python is 3-5x slower at CRC checks without it
    import crc32c  # noqa: F401

    HAVE_CRC32C = True
except ImportError:  # pragma: no cover - crc32c is a hard dependency
    HAVE_CRC32C = False


def all_topics(settings: KafkaSettings) -> list[str]:
    """The topics with the configured partition count (events and dead letters)."""
    return [settings.events_topic(s) for s in SOURCES] + [settings.deadletter_topic]


def correlation_topics(settings: KafkaSettings) -> dict[str, dict[str, str]]:
    """The internal topics of ``correlate --scale-out``, with their settings:
    the changelog keeps only the newest record per key (compaction)."""
    return {
        settings.correlation_hits_topic: {},
        settings.correlation_state_topic: {"cleanup.policy": "compact"},
    }


def checkpoint_topic(settings: KafkaSettings) -> str:
    """Connector checkpoints, written in the same transaction as the events
    they cover; one partition so a connector reads back one ordered history."""
    return settings.topic("checkpoints")


def check_reachable(settings: KafkaSettings, timeout_s: float = 3.0) -> None:
    """Fail fast with a clear message when no bootstrap server accepts TCP.

    kafka-python itself retries for 30 s before giving up with a generic error.
    """
    servers = settings.client_kwargs()["bootstrap_servers"]
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout_s):
                return
        except (OSError, ValueError):
            continue
    raise BrokerUnavailableError(
        f"no Kafka broker accepts connections at {settings.bootstrap_servers}: start one "
        "(`zonewatch broker`) or fix KAFKA_BOOTSTRAP_SERVERS"
    )


def admin_client(settings: KafkaSettings, timeout_s: float = 10.0) -> KafkaAdminClient:
    check_reachable(settings)
    try:
        return KafkaAdminClient(
            **settings.client_kwargs(), request_timeout_ms=int(timeout_s * 1000)
        )
    except KafkaError as exc:
        raise BrokerUnavailableError(
            f"no Kafka broker answered at {settings.bootstrap_servers}: is it running, "
            "and do security_protocol/SASL settings match the listener?"
        ) from exc


def ensure_topics(
    settings: KafkaSettings,
    topics: Iterable[str] | None = None,
    partitions: int | None = None,
    configs: dict[str, dict[str, str]] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; return the ones created. Idempotent.
    ``configs`` gives topic settings by name (e.g. ``cleanup.policy``)."""
    wanted = list(topics) if topics is not None else all_topics(settings)
    admin = admin_client(settings)
    created: list[str] = []
    try:
        existing = set(admin.list_topics())
        for name in wanted:
            if name in existing:
                continue
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            name,
                            partitions or settings.partitions,
                            settings.replication_factor,
                            topic_configs=(configs or {}).get(name, {}),
                        )
                    ]
                )
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another process won the race; that is fine
    finally:
        admin.close()
    if created:
        log.info("topics_created", topics=created)
    return created


def make_producer(settings: KafkaSettings, **overrides: Any) -> KafkaProducer:
    opts: dict[str, Any] = {
        "acks": "all",
        "linger_ms": 10,
        "retries": 5,
        "max_in_flight_requests_per_connection": 5,
        "enable_idempotence": True,
        "batch_size": 64 * 1024,
        # kafka-python 3 has no buffer_memory bound: callers that produce from
        # an input bound their own in-flight records (connectors/produce.py).
        "max_block_ms": 60_000,
    }
    opts.update(overrides)
    check_reachable(settings)
    try:
        return KafkaProducer(**settings.client_kwargs(), **opts)
    except KafkaError as exc:
        raise BrokerUnavailableError(
            f"no Kafka broker answered at {settings.bootstrap_servers}"
        ) from exc


def make_consumer(
    settings: KafkaSettings, group_id: str | None, topics: Iterable[str] = (), **overrides: Any
) -> KafkaConsumer:
    opts: dict[str, Any] = {
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "max_poll_records": 2000,
        # Connectors produce in transactions (events + their checkpoint); a
        # batch aborted by a crash must never be seen, or it would count twice.
        "isolation_level": "read_committed",
    }
    opts.update(overrides)
    check_reachable(settings)
    try:
        consumer = KafkaConsumer(**settings.client_kwargs(), **opts)
    except KafkaError as exc:
        raise BrokerUnavailableError(
            f"no Kafka broker answered at {settings.bootstrap_servers}"
        ) from exc
    topics = list(topics)
    if topics:
        consumer.subscribe(topics)
    return consumer


def wait_for_broker(settings: KafkaSettings, timeout_s: float = 15.0) -> None:
    """Block until the cluster answers a metadata request, or raise."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(**settings.client_kwargs(), request_timeout_ms=2000)
            admin.list_topics()
            admin.close()
            return
        except (KafkaError, OSError) as exc:
            last = exc
            time.sleep(0.1)
    raise BrokerUnavailableError(
        f"no Kafka broker answered at {settings.bootstrap_servers} within {timeout_s:.0f}s"
        f" ({type(last).__name__ if last else 'timeout'})"
    )


# -- inside a rebalance listener ------------------------------------------------
# kafka-python 3 runs rebalance listeners on the consumer's IO thread, where
# its blocking calls (commit(), committed()) raise "Cannot block on
# net.run() from the IO thread itself". An AsyncConsumerRebalanceListener may
# await the coordinator's coroutines instead; these two wrap them, so the
# private names stay in this one place.


async def commit_in_listener(consumer: KafkaConsumer, offsets: dict[Any, Any]) -> None:
    """``consumer.commit(offsets)`` from an async rebalance listener."""
    if offsets:
        await consumer._coordinator._commit_offsets_sync_async(offsets)


async def committed_in_listener(
    consumer: KafkaConsumer, partitions: list[Any]
) -> dict[Any, tuple[int, str]]:
    """The group's committed offset of each partition that has one, with the
    metadata committed along, from an async rebalance listener."""
    if not partitions:
        return {}
    found = await consumer._coordinator.fetch_committed_offsets_async(partitions)
    return {
        tp: (meta.offset, meta.metadata or "")
        for tp, meta in (found or {}).items()
        if meta is not None
    }
