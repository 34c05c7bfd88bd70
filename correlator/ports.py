"""What the correlator's loops are handed: the consumer, the producer, the
store and the notifier, as Protocols.

kafka-python has no type hints, so to mypy a ``KafkaConsumer`` is ``Any`` and
every call on it goes unchecked. These name the part of each collaborator
the loops use; the Kafka clients, ``AlertStore``, ``OutboxSender``, the
retro-hunt's archive replay and test doubles fit without inheriting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from kafka import OffsetAndMetadata, TopicPartition

    from correlator.store.rows import ArchivedEvent
    from correlator.store.state import StateWriter
    from zonewatch.models import Alert


class ConsumerRecord(Protocol):
    """The parts of a Kafka ``ConsumerRecord`` the loops read."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...


class Consumer(Protocol):
    """What every input of the stream loop gives: a Kafka consumer, or a
    stand-in such as the retro-hunt's replay of the events archive."""

    def poll(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]: ...

    def subscribe(self, topics: Sequence[str], listener: Any = None) -> None: ...

    def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata] | None = None) -> Any: ...

    def highwater(self, tp: TopicPartition) -> int | None: ...

    def position(self, tp: TopicPartition) -> int: ...

    def close(self, autocommit: bool = True) -> None: ...


@runtime_checkable
class GroupConsumer(Consumer, Protocol):
    """A member of a Kafka consumer group: partitions are assigned to it and
    it can be moved in them. The stream loop checks for this at start-up; a
    stand-in without it feeds the loop as a finite input."""

    def assignment(self) -> set[TopicPartition]: ...

    def partitions_for_topic(self, topic: str) -> set[int] | None: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    def seek_to_beginning(self, *partitions: TopicPartition) -> None: ...


class Producer(Protocol):
    """The part of ``KafkaProducer`` the scale-out loop uses."""

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
    ) -> Any: ...

    def flush(self, timeout: float | None = None) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...


class Store(Protocol):
    """Where the loops write a batch (``AlertStore``, or the hunt's sink)."""

    def write(
        self,
        alerts: Sequence[Alert],
        *,
        events: Sequence[ArchivedEvent] = (),
        state: Mapping[str, bytes | StateWriter] | None = None,
        offsets: Mapping[tuple[str, int], int] | None = None,
    ) -> list[str]: ...

    def submit(
        self,
        alerts: Sequence[Alert],
        *,
        events: Sequence[ArchivedEvent] = (),
        state: Mapping[str, bytes | StateWriter] | None = None,
        offsets: Mapping[tuple[str, int], int] | None = None,
    ) -> Future[list[str]]: ...

    def load_state(self, key: str) -> bytes | None: ...

    def load_offsets(self) -> dict[tuple[str, int], int]: ...


class Detector(Protocol):
    def match(self, event: dict[str, Any], source: str | None = None) -> list[Any]: ...


class Notifier(Protocol):
    """Sends stored alerts on (``correlator.alerting.OutboxSender``): started
    with the service, stopped last, draining what is due."""

    def start(self) -> Any: ...

    def drain(self, timeout_s: float = 30.0) -> bool: ...

    def stop(self, drain: bool = True, timeout_s: float = 30.0) -> bool: ...
