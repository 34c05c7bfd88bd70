"""What waits, when it is written, and when Kafka hears of it: both loops' checkpoints.

Crash safety lives in the order of :meth:`Checkpointer.checkpoint`; both
correlator modes run this one copy of it. What differs between them is the
correlation stage (``correlator/ports.py``, ``CheckpointedStage``): the
single member keeps its correlation state in DuckDB with the resume offsets;
a scale-out member sends hits to the shards and keeps each shard's state in
a changelog topic.

The order of a checkpoint, and why:

1. Note the batch: its offsets become resume points, its alerts and archived
   events wait for the next write.
2. Flush what the stage sent downstream (scale-out: the hits and the
   watermarks after them), every batch, written now or not: the offsets
   written next lie past the records those hits came from, and a crash must
   not lose one (a replay sends them again; the shards drop repeats). Every
   batch, as the scale-out loop always did: flushed only with the writes,
   two members sometimes missed correlations (``tests/test_scale_out.py``).
3. While a backlog runs (the poll was full) wait for more, up to
   ``write_batch_events`` rows or ``write_delay_s``: a DuckDB write has a
   fixed cost, and a commit per poll halved the throughput. Caught up, write
   at once, so Teams hears at once.
4. Build the write: the rows, the events archive watermark (with the rows it
   covers, so a replay never archives twice) and, every
   ``checkpoint_interval_s`` (a *full* checkpoint), the resume offsets with
   the state that goes with them (the correlation state is written into the
   store as it is serialised, never held as one object). A scale-out member
   writes its source offsets with every write: its correlation state is not
   in DuckDB.
5. Submit: DuckDB stores it in ONE transaction on the store's writer thread
   (``AlertStore.submit``) while the loop polls the next batch. DuckDB is
   the source of truth for how far we got; on (re)assignment a partition is
   sought to the offset it holds.
6. At a full checkpoint, publish the state the stage keeps outside DuckDB
   (scale-out: each changed shard to the changelog) only once every batch
   submitted is stored: that state has already fired the alerts of those
   batches, and a crash in between must find them in the store.
7. Settle: account for the stored batches in order and only then commit
   their offsets to Kafka (for operators' lag dashboards and a fresh store;
   it may trail). A failed write raises here and stops the loop: its offsets
   and those of every later batch never reach Kafka. A crash before 5
   replays the batch, and deterministic alert ids make the replayed inserts
   no-ops; a crash after it replays nothing. So no alert is lost, none is
   stored twice.
8. If DuckDB had no memory left for a full checkpoint's state, it kept the
   batch's alerts and archived events and left out the state AND the offsets
   (``CheckpointNotStoredError``): the previous checkpoint stays the pair a
   restart resumes from, Kafka does not hear of those offsets, and the stage
   sheds state so that the next checkpoint is smaller.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import orjson
from kafka import OffsetAndMetadata, TopicPartition

from correlator.ports import CheckpointedStage, Store
from correlator.resume import TOPIC_IDS_KEY, dump_topic_ids, load_topic_ids, resume_offsets
from correlator.store.rows import ArchivedEvent
from correlator.store.state import CheckpointNotStoredError
from zonewatch.config import KafkaSettings
from zonewatch.models import Alert
from zonewatch.offsets import LogBounds

ARCHIVE_KEY = "archive-offsets"

Key = tuple[str, int]
KafkaOffsets = dict[TopicPartition, OffsetAndMetadata]


class Checkpointer:
    """Owns what waits for the store, the resume offsets and when each is written.

    ``commit`` sends offsets to Kafka (a refusal is the caller's to log);
    ``on_stored(alerts, new_ids)`` hears of every batch the store accounted
    for; ``clock`` is monotonic seconds."""

    def __init__(
        self,
        store: Store,
        stage: CheckpointedStage,
        *,
        commit: Callable[[KafkaOffsets], None],
        on_stored: Callable[[list[Alert], list[str]], None],
        interval_s: float,
        write_batch_events: int,
        write_delay_s: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.store = store
        self.stage = stage
        self._commit = commit
        self._on_stored = on_stored
        self.interval_s = interval_s
        self.write_batch_events = write_batch_events
        self.write_delay_s = write_delay_s
        self.clock = clock
        # How far we got: the next offset of each partition consumed since
        # start-up (resume points once checkpointed), those not yet in a write
        # (scale-out writes them every time), and how far the events archive
        # got, so a replay never archives twice.
        self.resume: dict[Key, int] = {}
        self._unwritten: dict[Key, int] = {}
        stored_archive = store.load_state(ARCHIVE_KEY)
        self.archived: dict[Key, int] = (
            {(t, int(p)): o for t, p, o in orjson.loads(stored_archive)} if stored_archive else {}
        )
        # The input topics' ids as of the stored offsets, and the labels of
        # topics recreated since this store began (correlator/resume.py).
        self.topic_ids, self.labels = load_topic_ids(store.load_state(TOPIC_IDS_KEY))
        self._last_full = clock()
        self.dirty = False
        self._alerts: list[Alert] = []
        self._archive: list[ArchivedEvent] = []
        self._waiting_since = clock()
        # Batches handed to the store and not yet accounted for (``settle``):
        # each with its alerts and the Kafka offsets it covers.
        self._in_store: deque[tuple[Future[list[str]], list[Alert], KafkaOffsets]] = deque()
        # Everything stored that Kafka may hear of (a revocation commits it all
        # again: a commit refused during the rebalance must not be lost).
        self._stored: KafkaOffsets = {}

    @property
    def waiting(self) -> bool:
        """Rows wait for the next write (a backlog that ended writes them)."""
        return bool(self._alerts or self._archive)

    def due(self) -> bool:
        """A full checkpoint is due: something changed and the interval passed."""
        return self.dirty and self.clock() - self._last_full >= self.interval_s

    def resume_at(
        self,
        kafka: KafkaSettings,
        assigned: list[TopicPartition],
        stored: dict[TopicPartition, int],
        bounds: dict[TopicPartition, LogBounds] | None = None,
    ) -> dict[TopicPartition, int]:
        """The offsets to seek ``assigned`` partitions to: ``stored`` checked
        against each log's ``bounds`` (truncated, recreated, ahead of its
        end). A partition that moves starts afresh in the archive watermark
        and the resume offsets."""
        resume = resume_offsets(kafka, assigned, stored, self.topic_ids, bounds)
        self.topic_ids.update(resume.topic_ids)
        self.labels.update(resume.labels)
        for tp, (_old, new, _reason) in resume.moved.items():
            key = (tp.topic, tp.partition)
            self.archived.pop(key, None)
            self.resume[key] = new
            self._unwritten[key] = new
            self.dirty = True
        return resume.seek

    def checkpoint(
        self,
        alerts: list[Alert],
        offsets: dict[Key, int],
        archive: list[ArchivedEvent] | None = None,
        *,
        force: bool = False,
        commit: bool = True,
        more_coming: bool = False,
    ) -> KafkaOffsets:
        """Write a batch, every so often with the resume offsets and state.

        ``force`` writes and waits for everything (stop, revocation). Returns
        the Kafka offsets of the batches stored by now; commits them unless
        ``commit`` is false (a rebalance listener commits them its own way)."""
        # 1. The batch: resume points, and rows that wait.
        self.resume.update(offsets)
        self._unwritten.update(offsets)
        self.dirty = self.dirty or bool(offsets)
        if not self.waiting:
            self._waiting_since = self.clock()
        self._alerts.extend(alerts)
        if archive:
            self._archive.extend(archive)
        alerts, archive = self._alerts, self._archive
        # 2. What went downstream is on its way before anything past it is written.
        stage = self.stage
        stage.flush()
        # 3. A backlog: wait for a bigger write.
        if (
            more_coming
            and not force
            and not self.due()
            and len(alerts) + len(archive) < self.write_batch_events
            and self.clock() - self._waiting_since < self.write_delay_s
        ):
            return {}
        self._alerts, self._archive = [], []
        # 4. The write.
        # Forced (stop, revocation), a publishing stage hands its state over
        # whether or not anything changed since: the next owner goes by it.
        full = (force or stage.stateless or self.due()) and (
            self.dirty or (force and stage.publishes)
        )
        state: dict[str, Any] = self._archive_state(archive)
        stored_offsets: dict[Key, int] | None = None
        if stage.offsets_every_write and self._unwritten:
            stored_offsets = dict(self._unwritten)
        if full:
            if not stage.offsets_every_write:
                stored_offsets = dict(self.resume)
            state.update(stage.snapshot())
        if stored_offsets:
            state.update(self._resume_state())
        if stored_offsets is not None:
            self._unwritten = {}
        state.update(stage.write_state(stored_offsets or {}))
        covered: KafkaOffsets = {}
        if full:
            covered = {
                TopicPartition(t, p): OffsetAndMetadata(o, stage.commit_metadata((t, p)), -1)
                for (t, p), o in self.resume.items()
            }
            self._last_full = self.clock()
            self.dirty = False
            stage.checkpointed()
        # 5. Submit: stored on the writer thread while the loop goes on.
        if alerts or archive or state or stored_offsets:
            stored = self.store.submit(
                alerts, events=archive or (), state=state or None, offsets=stored_offsets
            )
            self._in_store.append((stored, alerts, {} if stage.publishes else covered))
        # 6. State kept outside DuckDB, once everything it fired is stored.
        if full and stage.publishes:
            self.settle(wait=True, commit=False)
            published = stage.publish()
            self._stored.update(covered)
            self._stored.update(published)
            if commit:
                self._commit({**covered, **published})
        # 7. Kafka hears of what is stored.
        wait = force or not commit
        settled = self.settle(wait=wait, commit=commit)
        if force:
            # Everything stored, again: a commit refused during a rebalance
            # must not be the one the next owner goes by.
            return dict(self._stored)
        return settled

    def settle(self, wait: bool, commit: bool = True) -> KafkaOffsets:
        """Account for the batches the store has stored, in order, and commit
        their offsets to Kafka (unless ``commit`` is false). ``wait`` waits
        for all of them. A failed write raises here, and the loop stops: its
        offsets, and those of every later batch, are never committed.

        Returns the offsets the settled batches cover."""
        offsets: KafkaOffsets = {}
        while self._in_store:
            stored, alerts, covered = self._in_store[0]
            if not wait and not stored.done():
                break
            self._in_store.popleft()
            try:
                new_ids = stored.result()
            except CheckpointNotStoredError as exc:
                # 8. Stored without its state and offsets: count its alerts,
                # keep its offsets from Kafka, make the next state smaller.
                self._on_stored(alerts, exc.new_ids)
                self.dirty = True
                self.stage.not_stored(exc)
                continue
            self._on_stored(alerts, new_ids)
            offsets.update(covered)  # each batch's resume offsets include the earlier ones
        self._stored.update(offsets)
        if offsets and commit:
            self._commit(offsets)
        return offsets

    def _resume_state(self) -> dict[str, bytes]:
        """Stored with the resume offsets: the topic ids they refer to, and the
        archive watermark (an offset reset moves it back)."""
        return {
            TOPIC_IDS_KEY: dump_topic_ids(self.topic_ids, self.labels),
            ARCHIVE_KEY: self._dump_archived(),
        }

    def _archive_state(self, archive: list[ArchivedEvent]) -> dict[str, bytes]:
        """How far the events archive got, stored with the archived rows."""
        if not archive:
            return {}
        for event in archive:
            key = (event.topic or "", event.partition or 0)
            self.archived[key] = max(self.archived.get(key, 0), (event.offset or 0) + 1)
        return {ARCHIVE_KEY: self._dump_archived()}

    def _dump_archived(self) -> bytes:
        return orjson.dumps([[t, p, o] for (t, p), o in self.archived.items()])
