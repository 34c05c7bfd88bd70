"""What the correlator's loops are handed: the consumer, the producer, the
store and the notifier, as Protocols.

kafka-python has no type hints, so to mypy a ``KafkaConsumer`` is ``Any`` and
every call on it goes unchecked. These name the part of each collaborator
the loops use; the Kafka clients, ``AlertStore``, ``OutboxSender``, the
retro-hunt's archive replay and test doubles fit without inheriting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from datetime import datetime

    from kafka import OffsetAndMetadata, TopicPartition

    from correlator.correlation import CorrelationEngine
    from correlator.store.rows import ArchivedEvent
    from correlator.store.state import CheckpointNotStoredError, StateWriter
    from zonewatch.config import Settings
    from zonewatch.models import Alert, Evidence
    from zonewatch.offsets import LogBounds
    from zonewatch.timebounds import TimeBounds


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


class CheckpointedStage(Protocol):
    """What the checkpointer (``correlator/checkpointer.py``) asks of a
    correlation stage: where its state goes, and what must be durable first."""

    @property
    def stateless(self) -> bool:
        """No correlation state: every write is a full checkpoint."""
        ...

    @property
    def offsets_every_write(self) -> bool:
        """The resume offsets go with every write, not only full checkpoints
        (the stage's state is not in DuckDB, so offsets need not wait for it)."""
        ...

    @property
    def publishes(self) -> bool:
        """State kept outside DuckDB is published at full checkpoints."""
        ...

    def flush(self) -> None:
        """Make what was sent downstream durable (before offsets past it are written)."""

    def write_state(self, offsets: Mapping[tuple[str, int], int]) -> dict[str, bytes]:
        """State written with every write that stores ``offsets``."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """State written with a full checkpoint's resume offsets (bytes or writers)."""
        ...

    def publish(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """Publish the state kept outside DuckDB; the Kafka offsets it covers."""
        ...

    def commit_metadata(self, key: tuple[str, int]) -> str:
        """The metadata committed to Kafka with a source partition's offset."""
        ...

    def checkpointed(self) -> None:
        """A full checkpoint was written (report the state's figures)."""

    def not_stored(self, exc: CheckpointNotStoredError) -> None:
        """The store had no memory for the state: make the next one smaller."""


class StageHost(Protocol):
    """What a correlation stage uses of the loop it runs in (``StreamCorrelator``)."""

    settings: Settings
    store: Store
    topics: list[str]
    time_bounds: TimeBounds
    stats: Any
    checkpointer: Any  # correlator.checkpointer.Checkpointer (dirty, resume_at, ...)

    @property
    def group(self) -> GroupConsumer: ...


class CorrelationStage(CheckpointedStage, Protocol):
    """Where the loop's correlation items go: ``LocalCorrelation`` (merge and
    engine here) or ``RepartitionedCorrelation`` (hits to the shards of a
    scale-out group, shard inputs in, changelog). Chosen at wiring."""

    engine: CorrelationEngine | None
    correlated: frozenset[str]

    def bind(self, loop: StageHost) -> None: ...
    def extra_topics(self) -> list[str]: ...
    def replace_engine(self, engine: CorrelationEngine | None) -> None: ...
    def split(self, batch: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, list[Any]]: ...
    def brings_input(self, batch: dict[TopicPartition, list[Any]]) -> bool: ...
    def polled(
        self, delivered: Iterable[tuple[str, int]], behind: list[tuple[str, int]] | None
    ) -> None: ...
    def idle_work_pending(self) -> bool: ...
    def begin_exit(self) -> None: ...
    def ready_to_exit(self) -> bool: ...
    def newest(self, key: tuple[str, int]) -> float: ...
    def progressed(self, key: tuple[str, int], newest: float) -> None: ...
    def offer(
        self,
        ids: list[str],
        record: Any,
        event: dict[str, Any],
        evidence: Evidence,
        when: datetime,
        t: float,
        late: float | None,
    ) -> None: ...
    def correlate(
        self, end: bool, assigned: bool, caught_up: bool, to_wall_clock: bool = False
    ) -> list[Alert]: ...
    def hand_over(self, revoked: list[TopicPartition]) -> None: ...
    def take_over(
        self,
        assigned: list[TopicPartition],
        committed: dict[TopicPartition, tuple[int, str]],
        bounds: dict[TopicPartition, LogBounds] | None,
    ) -> dict[str, Any]: ...
    def close(self) -> None: ...
