"""Kafka plumbing shared by connectors and correlator (kafka-python).

Only construction and topic administration live here; the consume and
produce loops belong to the stages that own them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from zonewatch.config import KafkaSettings
from zonewatch.errors import BrokerUnavailableError
from zonewatch.logs import get_logger
from zonewatch.offsets import LogBounds
from zonewatch.sources import SOURCES, ScaleOutTopics, legacy_scale_out_topics

log = get_logger(__name__)

T = TypeVar("T")

try:  # kafka-python is 3-5x slower at CRC checks without it
    import crc32c  # noqa: F401

    HAVE_CRC32C = True
except ImportError:  # pragma: no cover - crc32c is a hard dependency
    HAVE_CRC32C = False


def all_topics(settings: KafkaSettings) -> list[str]:
    """The topics with the configured partition count (events, dead letters,
    and the alerts the correlator publishes)."""
    return [settings.events_topic(s) for s in SOURCES] + [
        settings.deadletter_topic,
        settings.alerts_topic,
    ]


def correlation_topics(names: ScaleOutTopics) -> dict[str, dict[str, str]]:
    """The internal topics of one ``correlate --scale-out`` group
    (``Settings.scale_out_topics``), with their settings: the changelog keeps
    only the newest record per key (compaction)."""
    return {names.hits: {}, names.state: {"cleanup.policy": "compact"}}


def legacy_topics_note(settings: KafkaSettings, names: ScaleOutTopics) -> str | None:
    """What to do about the scale-out topics every group on the prefix shared
    before they were per group, when they exist and ``names`` are not them;
    None otherwise (docs/deploy.md, "Scale-out topics per group")."""
    legacy = legacy_scale_out_topics(settings.topic_prefix)
    if names == legacy:
        return None
    admin = admin_client(settings)
    try:
        left = [name for name in legacy if name in set(admin.list_topics())]
    finally:
        admin.close()
    if not left:
        return None
    return (
        f"{' and '.join(left)} are from a version that shared them between groups; "
        f"this group uses {names.hits} and {names.state}. If this group wrote them, the "
        "windows open there were not carried over; to keep a group on them, set "
        "correlator.scale_out_legacy_topics=true (ZONEWATCH_CORRELATOR__SCALE_OUT_LEGACY_TOPICS)"
        " for all its members, best before they first start on this version (docs/deploy.md, "
        '"Scale-out topics per group"). Delete them once no group uses them.'
    )


# kafka-python waits 30 s for a first answer by default; ours come after
# check_reachable() has seen the broker answer, so this is a backstop.
BOOTSTRAP_TIMEOUT_MS = 10_000


def check_reachable(settings: KafkaSettings, timeout_s: float = 3.0) -> None:
    """Fail fast with a clear message unless a bootstrap server answers the
    Kafka protocol with the configured transport (``zonewatch.preflight``).

    kafka-python itself retries for 30 s before giving up with a generic
    error, or hangs in a TLS handshake with a plaintext listener.
    """
    from zonewatch.preflight import check_broker

    check_broker(settings, timeout_s)


def admin_client(settings: KafkaSettings, timeout_s: float = 10.0) -> KafkaAdminClient:
    check_reachable(settings)
    try:
        return KafkaAdminClient(
            **settings.client_kwargs(),
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
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
        "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
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
        "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
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


def log_bounds(
    settings: KafkaSettings, partitions: Iterable[TopicPartition], timeout_s: float = 10.0
) -> dict[TopicPartition, LogBounds]:
    """The start, end and topic id of each partition's log, asked of the broker.

    The end is the high watermark of a fetch answer, never ListOffsets: the
    embedded broker answers ``end_offsets()``/``seek_to_end()`` in record
    batches. The start is ListOffsets(earliest) (``seek_to_beginning``),
    right on both brokers. Partitions the broker did not answer for within
    ``timeout_s`` are missing from the result. Safe to call from a rebalance
    listener: it runs its own consumer, outside the group.
    """
    tps = list(partitions)
    if not tps:
        return {}
    deadline = time.monotonic() + timeout_s
    consumer = KafkaConsumer(
        **settings.client_kwargs(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # An empty partition answers (almost) at once instead of after
        # fetch.max.wait (0 gets no answer at all from the embedded broker);
        # a fetch brings back about one batch per partition.
        fetch_max_wait_ms=10,
        max_partition_fetch_bytes=4096,
        request_timeout_ms=max(1000, int(timeout_s * 1000)),
        bootstrap_timeout_ms=max(1000, int(timeout_s * 1000)),
    )
    found: dict[TopicPartition, LogBounds] = {}
    try:
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        starts: dict[TopicPartition, int] = {}
        for tp in tps:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            starts[tp] = consumer.position(tp, timeout_ms=int(remaining * 1000))
        cluster = consumer._client.cluster  # topic ids: kafka-python keeps no public accessor
        waiting = set(starts)
        while waiting and time.monotonic() < deadline:
            consumer.poll(timeout_ms=100, max_records=100_000)
            for tp in list(waiting):
                end = consumer.highwater(tp)
                if end is None:
                    continue
                waiting.discard(tp)
                consumer.pause(tp)
                topic_id = cluster.topic_id(tp.topic)
                found[tp] = LogBounds(
                    start=starts[tp],
                    end=end,
                    topic_id=str(topic_id) if topic_id is not None else None,
                )
    except KafkaError as exc:
        log.warning("log_bounds_unknown", error=f"{type(exc).__name__}: {str(exc)[:200]}")
    finally:
        consumer.close(autocommit=False)
    return found


def wait_for_broker(settings: KafkaSettings, timeout_s: float = 15.0) -> None:
    """Block until the cluster answers a metadata request, or raise after
    ``timeout_s`` (in total: every attempt is bounded by what is left)."""
    from zonewatch.preflight import PROBE_TIMEOUT_S, check_broker

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            check_broker(settings, min(PROBE_TIMEOUT_S, left))
            left_ms = max(500, int((deadline - time.monotonic()) * 1000))
            admin = KafkaAdminClient(
                **settings.client_kwargs(),
                request_timeout_ms=min(left_ms, 5000),
                bootstrap_timeout_ms=left_ms,
            )
            try:
                admin.list_topics()
            finally:
                admin.close()
            return
        except (BrokerUnavailableError, KafkaError, OSError) as exc:
            if last is None:
                log.info(
                    "waiting_for_broker",
                    bootstrap=settings.bootstrap_servers,
                    reason=str(exc)[:300],
                    at_most_s=timeout_s,
                )
            last = exc
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    if isinstance(last, BrokerUnavailableError):
        raise BrokerUnavailableError(f"{last} (waited {timeout_s:.0f}s)") from None
    raise BrokerUnavailableError(
        f"the Kafka broker at {settings.bootstrap_servers} did not answer a metadata request "
        f"within {timeout_s:.0f}s ({type(last).__name__ if last else 'timeout'}): is it "
        "healthy, and do the SASL settings (mechanism, user, password) match its listener?"
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


async def off_the_io_thread(consumer: KafkaConsumer, work: Callable[[], T], timeout_s: float) -> T:
    """Run blocking ``work`` (another client, a file) on a thread of its own and
    await its result from an async rebalance listener. Blocking the listener
    itself would stop the consumer's IO thread, heartbeats included: a slow
    call on a loaded host then costs the member its group membership."""
    from kafka.future import Future

    manager = consumer._coordinator._manager
    done: Future = Future()

    def run() -> None:
        try:
            value = work()
        except BaseException as exc:  # handed to the awaiting listener
            error = exc
            manager.call_soon(lambda: done.failure(error))
        else:
            manager.call_soon(lambda: done.success(value))

    threading.Thread(target=run, name="zonewatch-listener-work", daemon=True).start()
    result: T = await manager.wait_for(done, int(timeout_s * 1000))
    return result
