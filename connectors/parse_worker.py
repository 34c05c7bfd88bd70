"""Parse, enrich and serialize in a child process, so the parent only produces.

kafka-python's ``send`` costs about as much CPU per line as parsing and
enriching it, and in one process both share a core through the GIL. With a
worker, the child reads the file input, runs the :class:`Pipeline` and hands
the parent batches of ready records (dead letter?, key, partition, value
bytes). Some batches also carry the checkpoint that holds after them (the
input position and the parser state) and the counts so far: every batch
while the parser keeps no state, else one batch every ``CHECKPOINT_INTERVAL_S``
and the last one, because the state (AVD's recently completed connections,
Intune's device snapshots) can be far larger than a batch and the parent
only needs it when it commits. The parent sends whole batches and commits
only right after a batch with a checkpoint, so a Kafka transaction still
holds exactly the lines up to the checkpoint inside it.

Order: one worker, one pipe, batches in file order. Memory: the pipe holds
at most about one batch beyond the one being sent, so a slow broker blocks
the worker's write and with it the reading (back-pressure, no queue that
grows). Lifetime: the parent alone decides; the worker ignores SIGINT and
SIGTERM. On stop the parent asks the worker to end: it hands on the batch it
holds and the parent sends it before the last commit, so a stop loses no
line already read (syslog and stdin cannot be read twice). The worker also
exits when its pipes close, which happens when the parent is killed.

Inputs: files, syslog and stdin (see ``connectors.ingest._worth_a_worker``).
A batch leaves the worker when full, after ``FLUSH_INTERVAL_S``, or when the
input is idle, so a trickle of messages waits at most a tenth of a second.
Graph stays in the producing process: it delivers a few hundred records per
poll, far below what one process parses, and its HTTP client, token and
high-water mark would have to live in the worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import pickle
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

from orjson import dumps

from connectors import metrics
from connectors.checkpoints import choose_checkpoint, sink_position
from connectors.inputs import Input
from connectors.pipeline import (
    _STATE_KEY,
    CheckpointStore,
    IngestStats,
    Pipeline,
    make_pipeline,
)
from connectors.produce import KafkaSink, KeyPartitioner, event_key
from connectors.state import STATE_AT, SharedState
from zonewatch.config import Settings
from zonewatch.errors import ZonewatchError
from zonewatch.logs import get_logger

log = get_logger(__name__)

# A batch closes at this many input records or bytes of values, whichever
# comes first: large enough that pickling and the pipe cost little per line,
# small enough that the pipe bounds memory to a few MB.
BATCH_RECORDS = 500
BATCH_BYTES = 256 * 1024
# The first batch closes at this many records and each next one may hold
# twice as many, up to BATCH_RECORDS: the producer starts sending after a
# few dozen lines instead of waiting for the worker to parse a full batch
# (a tenth of a 6,000-line file's time), and a short file is pipelined too.
FIRST_BATCH_RECORDS = 32
# A pipe this large lets the worker run a few batches ahead of the producer,
# so a moment without CPU for the worker does not stall the producer.
PIPE_BYTES = 1 << 20
# A batch is handed on at the latest this long after the last one, so a
# trickle of syslog messages is not held back until a batch fills.
FLUSH_INTERVAL_S = 0.1
# With parser state, a batch carries the checkpoint (and with it the state) at
# most this long after the last one that did; the parent commits about once
# a second, so it waits at most this long past that for a batch to commit on.
CHECKPOINT_INTERVAL_S = 0.25
# After stop(), how long the parent keeps sending what the worker had already
# read (syslog and stdin cannot be read again) before it gives up.
DRAIN_S = 5.0

PreparedRecord = tuple[bool, bytes | None, int | None, bytes]


class ParseWorkerError(ZonewatchError):
    """The parse worker process ended without finishing its input."""


@dataclass(frozen=True)
class WorkerSpec:
    """Everything the worker needs to build its own pipeline (picklable for spawn)."""

    settings: Settings
    source: str
    format: str
    timezone: str | None
    input: Input  # not yet opened: the worker opens and reads it
    checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S
    encoding: str = "utf-8"


@dataclass
class Batch:
    records: list[PreparedRecord]
    lines: int  # input records the batch covers (some yield no event)
    # what holds after this batch, or None: the parent cannot commit right
    # after it (see the module docstring)
    checkpoint: dict[str, Any] | None
    stats: IngestStats | None  # counts so far, with every checkpoint


def _context() -> Any:
    # fork is cheap and needs nothing picklable, but forking a process that
    # runs other threads (a producer's sender, a metrics server) can copy a
    # lock held by one of them; then a fresh interpreter is the safe choice.
    method = "fork" if threading.active_count() == 1 else "spawn"
    return multiprocessing.get_context(method)


class ParseWorker:
    """The parent's handle on the worker process."""

    def __init__(self, spec: WorkerSpec):
        ctx = _context()
        self._data, child_data = ctx.Pipe(duplex=False)
        with contextlib.suppress(OSError):  # the default 64 KiB works, only slower
            fcntl.fcntl(child_data.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        child_ctl, self._ctl = ctx.Pipe(duplex=False)
        # A forked child inherits the parent's ends too; it must close them, or
        # its writes would never fail when the parent dies.
        inherited = (
            (self._data.fileno(), self._ctl.fileno()) if ctx.get_start_method() == "fork" else ()
        )
        self.process = ctx.Process(
            target=_work,
            args=(spec, child_ctl, child_data, inherited),
            name="zonewatch-parse",
            daemon=True,
        )
        self.process.start()
        child_data.close()
        child_ctl.close()
        # the worker holds its own copy of a socket or descriptor from here on
        spec.input.close()
        self.finished = False
        self._stopping = False

    def start(self, checkpoint: dict[str, Any] | None, partitions: dict[str, list[int]]) -> None:
        """Begin reading at ``checkpoint`` (None: from the start)."""
        self._ctl.send(("start", checkpoint, partitions))

    def stop(self) -> None:
        """Ask the worker to hand on what it has read and end (an "end" batch)."""
        if not self._stopping:
            self._stopping = True
            with contextlib.suppress(OSError):
                self._ctl.send(("stop",))

    def next(self, timeout_s: float) -> Batch | None:
        """The next batch; None when none arrived within ``timeout_s``.

        Raises the worker's own error, or :class:`ParseWorkerError` when it died.
        """
        if not self._data.poll(timeout_s):
            return None
        try:
            message = pickle.loads(self._data.recv_bytes())
        except (EOFError, OSError) as exc:
            self.process.join(5)
            raise ParseWorkerError(
                f"the parse worker exited with code {self.process.exitcode} before the "
                "end of its input; the checkpoint holds the last line sent, so a restart "
                "continues there"
            ) from exc
        kind = message[0]
        if kind == "error":
            raise message[1]
        batch: Batch = message[1]
        if kind == "end":
            self.finished = True
        return batch

    def close(self, timeout_s: float = 5.0) -> None:
        for conn in (self._ctl, self._data):
            conn.close()  # the worker sees EOF or EPIPE and exits
        self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout_s)


class WorkerRunner:
    """The parent's loop: batches from the worker into the sink, commits, stop().

    Same contract as :class:`connectors.ingest.Runner`; the input and the
    parser live in the worker, so the checkpoint committed is always the one
    that came with the last batch sent.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        worker: ParseWorker,
        sink: KafkaSink,
        *,
        store: CheckpointStore | None = None,
        commit_every: int = 20_000,
        commit_interval_s: float = 1.0,
        stop_event: threading.Event | None = None,
        shared: SharedState | None = None,
    ):
        self.pipeline = pipeline
        self.worker = worker
        self.sink = sink
        self.store = store
        self.shared = shared
        self.commit_every = commit_every
        self.commit_interval_s = commit_interval_s
        self._stop = stop_event or threading.Event()
        self._checkpoint: dict[str, Any] | None = None
        self.started = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    def restore(self) -> None:
        """The checkpoint to start from: Kafka's (transactional sink) or the local file."""
        local = self.store.load() if self.store else None
        cp = choose_checkpoint(local, self.sink, self.pipeline.input_name)
        if cp:
            self._checkpoint = {k: v for k, v in cp.items() if k in ("input", _STATE_KEY, STATE_AT)}
            self.pipeline.stats.resumed_at = cp.get("input")
            log.info("resumed", input=self.pipeline.input_name, position=cp.get("input"))
        if self.shared is not None:
            state = dict((cp or {}).get(_STATE_KEY) or {})
            if self.shared.merge_into(state, cp.get(STATE_AT) if cp else None):
                self._checkpoint = {**(self._checkpoint or {}), _STATE_KEY: state}

    def commit(self) -> None:
        cp = self._checkpoint or {}
        self.sink.commit(cp)
        if self.store is not None and cp.get("input") is not None:
            self.store.save({**cp, **sink_position(self.sink)})
        if self.shared is not None and cp.get(_STATE_KEY):
            self.shared.save(cp[_STATE_KEY])
        metrics.observe(self.pipeline)

    def run(self) -> IngestStats:
        worker, sink, stats = self.worker, self.sink, self.pipeline.stats
        worker.start(self._checkpoint, sink.partitioner.partitions)
        self.started = time.monotonic()
        since_commit = 0
        last_commit = time.monotonic()
        drain_until: float | None = None
        committable = True
        try:
            while not worker.finished:
                if self._stop.is_set():
                    # what the worker has read is sent before the end: syslog
                    # and stdin cannot give it again
                    if drain_until is None:
                        worker.stop()
                        drain_until = time.monotonic() + DRAIN_S
                    elif time.monotonic() > drain_until:
                        log.warning("parse_worker_drain_timeout", input=self.pipeline.input_name)
                        break
                batch = worker.next(0.2)
                if batch is not None:
                    sink.send_prepared(batch.records)
                    since_commit += batch.lines
                    # records sent beyond the last checkpoint: no commit until the next
                    committable = batch.checkpoint is not None
                    if batch.checkpoint is not None:
                        self._checkpoint = batch.checkpoint
                    if batch.stats is not None:
                        stats.read, stats.produced = batch.stats.read, batch.stats.produced
                        stats.dead_lettered = batch.stats.dead_lettered
                        stats.reasons = batch.stats.reasons
                        stats.formats, stats.switches = batch.stats.formats, batch.stats.switches
                        stats.encodings = batch.stats.encodings
                if committable and (
                    since_commit >= self.commit_every
                    or (since_commit and time.monotonic() - last_commit >= self.commit_interval_s)
                ):
                    self.commit()
                    since_commit = 0
                    last_commit = time.monotonic()
            if not committable and self.sink.transactional_id:
                # the drain timed out after a batch without its checkpoint:
                # closing the sink aborts the transaction, and a restart reads
                # those lines again from the last committed checkpoint
                log.warning("uncommitted_after_drain", input=self.pipeline.input_name)
            else:
                self.commit()
        finally:
            worker.close()
        stats.seconds = time.monotonic() - self.started
        return stats


# -- the worker process --------------------------------------------------------------


class _Batcher:
    def __init__(
        self,
        pipeline: Pipeline,
        partitions: dict[str, list[int]],
        out: Connection,
        checkpoint_interval_s: float,
    ):
        self.pipeline = pipeline
        self.out = out
        self.checkpoint_interval_s = checkpoint_interval_s
        self.partition = KeyPartitioner(partitions)
        self.records: list[PreparedRecord] = []
        self.lines = 0
        self.size = 0
        self.last_checkpoint = time.monotonic()

    def flush(self, source_input: Input, kind: str = "batch") -> None:
        pipeline = self.pipeline
        state = pipeline.ctx.state
        cp: dict[str, Any] | None = None
        stats: IngestStats | None = None
        now = time.monotonic()
        if not state or kind == "end" or now - self.last_checkpoint >= self.checkpoint_interval_s:
            cp = {"input": source_input.checkpoint()}
            if state:
                cp[_STATE_KEY] = state
                cp[STATE_AT] = time.time()
            stats = pipeline.stats
            self.last_checkpoint = now
        if cp is not None:
            pipeline.persist(force=kind == "end")
        batch = Batch(self.records, self.lines, cp, stats)
        self.out.send_bytes(pickle.dumps((kind, batch), protocol=pickle.HIGHEST_PROTOCOL))
        self.records, self.lines, self.size = [], 0, 0
        # year inference and lines without a timestamp read ctx.now
        pipeline.ctx.now = datetime.now(UTC)


def _run(spec: WorkerSpec, ctl: Connection, out: Connection) -> None:
    source_input = spec.input
    # built while the parent connects to Kafka and recovers the checkpoint
    pipeline = make_pipeline(
        spec.settings,
        spec.source,
        spec.format,
        spec.timezone,
        source_input.name,
        spec.encoding,
        bounded=True,
    )
    message = ctl.recv()
    if message[0] != "start":
        return
    _, checkpoint, partitions = message
    if checkpoint:
        if checkpoint.get("input"):
            source_input.restore(checkpoint["input"])
        if checkpoint.get(_STATE_KEY):
            pipeline.ctx.state.update(checkpoint[_STATE_KEY])
    batcher = _Batcher(pipeline, partitions, out, spec.checkpoint_interval_s)
    topic = spec.settings.kafka.events_topic(spec.source)
    dead_topic = spec.settings.kafka.deadletter_topic
    dead_key = spec.source.encode()
    dead_partition = batcher.partition(dead_topic, dead_key)
    partition = batcher.partition
    handle = pipeline.handle_encoded
    records = batcher.records
    last_flush = time.monotonic()
    limit = FIRST_BATCH_RECORDS
    try:
        for record in source_input:
            if record is not None:
                encoded, letter = handle(record)
                for ev, value in encoded:
                    key = event_key(ev)
                    records.append((False, key, partition(topic, key), value))
                    batcher.size += len(value)
                if letter is not None:
                    value = letter.model_dump_json().encode()
                    records.append((True, dead_key, dead_partition, value))
                    batcher.size += len(value)
                batcher.lines += 1
                if (
                    batcher.lines < limit
                    and batcher.size < BATCH_BYTES
                    and time.monotonic() - last_flush < FLUSH_INTERVAL_S
                ):
                    continue
            elif not batcher.lines and time.monotonic() - last_flush < 0.05:
                continue  # idle and nothing new: no need to wake the parent yet
            if ctl.poll():
                ctl.recv()  # "stop" (EOFError when the parent went away)
                break
            if batcher.lines >= limit:
                limit = min(limit * 2, BATCH_RECORDS)
            batcher.flush(source_input)
            records = batcher.records
            last_flush = time.monotonic()
        else:  # the input ended (not stopped): what only its end decides
            for ev in pipeline.finish():
                key = event_key(ev)
                records.append((False, key, partition(topic, key), dumps(ev)))
        batcher.flush(source_input, "end")
    finally:
        source_input.close()


def _work(spec: WorkerSpec, ctl: Connection, out: Connection, inherited: tuple[int, ...]) -> None:
    # The parent handles signals and stops the worker by closing the pipes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for fd in inherited:
        os.close(fd)
    try:
        _run(spec, ctl, out)
    except (BrokenPipeError, EOFError, ConnectionResetError):
        return  # the parent is gone or stopped us
    except Exception as exc:  # reported to the parent, which raises it
        try:
            payload = pickle.dumps(("error", exc))
        except Exception:
            payload = pickle.dumps(("error", ParseWorkerError(f"{type(exc).__name__}: {exc}")))
        with contextlib.suppress(OSError):
            out.send_bytes(payload)
