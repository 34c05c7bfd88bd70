"""The one rebalance listener of the correlator loop, both modes.

On revocation the loop hands the partitions over: a forced checkpoint
(``correlator/checkpointer.py``) makes the store's offsets, and the state
that goes with them, current, and its offsets are committed before the next
owner reads them. On assignment each partition is taken on where the store,
else the group's commit, says (checked against the log's bounds first,
``correlator/resume.py``); the correlation stage decides which wins.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from kafka import OffsetAndMetadata, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import KafkaError

from zonewatch.config import Settings
from zonewatch.logs import get_logger
from zonewatch.offsets import LogBounds

log = get_logger(__name__)


class Member(Protocol):
    """What the listener uses of the loop (``StreamCorrelator``)."""

    settings: Settings
    topics: list[str]
    consumer: Any

    def hand_over(
        self, revoked: list[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]: ...

    def take_over(
        self,
        assigned: list[TopicPartition],
        committed: dict[TopicPartition, tuple[int, str]],
        bounds: dict[TopicPartition, LogBounds] | None = None,
    ) -> None: ...


class Rebalance(AsyncConsumerRebalanceListener):
    """Hand partitions over (a forced checkpoint, its offsets committed) and
    take them on (each resumed where the store, else the group, got to).

    Async: kafka-python calls listeners on the consumer's IO thread, where a
    blocking ``commit()`` is refused (zonewatch.kafka.commit_in_listener).
    It replaces an exception raised here by "User rebalance callback throws
    an error": the real one is logged first."""

    def __init__(self, loop: Member):
        self.loop = loop

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        from zonewatch.kafka import commit_in_listener

        try:
            offsets = self.loop.hand_over(list(revoked))
        except Exception as exc:
            log.exception("hand_over_failed", error=f"{type(exc).__name__}: {exc}")
            raise
        try:
            await commit_in_listener(self.loop.consumer, offsets)
        except KafkaError as exc:
            # Refused (this member was fenced, the broker restarted and forgot
            # the group): logged, not fatal. The store holds the offsets that
            # matter, and the next commit or owner moves on from them.
            log.warning(
                "offset_commit_failed",
                error=f"{type(exc).__name__}: {str(exc)[:200]}",
                partitions=len(offsets),
                during="revocation",
            )

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        from correlator.resume import BOUNDS_TIMEOUT_S
        from zonewatch.kafka import committed_in_listener, log_bounds, off_the_io_thread

        try:
            assigned = list(assigned)
            loop = self.loop
            sources = [tp for tp in assigned if tp.topic in loop.topics]
            committed = await committed_in_listener(loop.consumer, sources)
            kafka = loop.settings.kafka
            bounds = await off_the_io_thread(
                loop.consumer, lambda: log_bounds(kafka, assigned), BOUNDS_TIMEOUT_S + 5
            )
            loop.take_over(assigned, committed, bounds)
        except Exception as exc:
            log.exception("take_over_failed", error=f"{type(exc).__name__}: {exc}")
            raise
