"""Ingest orchestration: one input through a pipeline into Kafka, inline or
with a parse worker, checkpointed, stopped by SIGTERM / SIGINT.

``connectors.pipeline`` turns records into events; ``connectors.parse_worker``
runs a pipeline in a child process; this module chooses between them and
drives either to the end (``zonewatch ingest``, the demo).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from connectors import metrics
from connectors.checkpoints import choose_checkpoint, sink_position
from connectors.inputs import Input
from connectors.pipeline import (
    _STATE_KEY,
    CheckpointStore,
    IngestStats,
    Pipeline,
    Sink,
    make_pipeline,
)
from connectors.state import STATE_AT, SharedState
from zonewatch.config import Settings
from zonewatch.errors import ConfigError
from zonewatch.logs import get_logger

log = get_logger(__name__)


class Stoppable(Protocol):
    def stop(self) -> None: ...


class Runner:
    """Drives one input through a pipeline into a sink until the input ends or stop()."""

    def __init__(
        self,
        pipeline: Pipeline,
        source_input: Input,
        sink: Sink,
        *,
        store: CheckpointStore | None = None,
        commit_every: int = 20_000,
        commit_interval_s: float = 1.0,
        stop_event: threading.Event | None = None,
        shared: SharedState | None = None,
    ):
        self.pipeline = pipeline
        self.input = source_input
        self.sink = sink
        self.store = store
        self.shared = shared
        self.commit_every = commit_every
        self.commit_interval_s = commit_interval_s
        self._stop = stop_event or threading.Event()
        self._dirty = False
        self.started = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    def _checkpoint(self) -> dict[str, Any]:
        cp: dict[str, Any] = {"input": self.input.checkpoint()}
        if self.pipeline.ctx.state:
            cp[_STATE_KEY] = self.pipeline.ctx.state
            cp[STATE_AT] = time.time()
        return cp

    def restore(self) -> None:
        """Resume from the last checkpoint (Kafka's when the sink is transactional)."""
        local = self.store.load() if self.store else None
        cp = choose_checkpoint(local, self.sink, self.input.name)
        if cp and cp.get("input"):
            self.input.restore(cp["input"])
            self.pipeline.stats.resumed_at = cp["input"]
        if cp and cp.get(_STATE_KEY):
            self.pipeline.ctx.state.update(cp[_STATE_KEY])
        if self.shared is not None:
            self.shared.merge_into(self.pipeline.ctx.state, cp.get(STATE_AT) if cp else None)
        if cp:
            log.info("resumed", input=self.input.name, position=cp.get("input"))

    def commit(self) -> None:
        # Year inference and "no timestamp" lines read ctx.now: keep it current.
        self.pipeline.ctx.now = datetime.now(UTC)
        cp = self._checkpoint()
        self.sink.commit(cp)
        if self.store is not None and cp.get("input") is not None:
            self.store.save({**cp, **sink_position(self.sink)})
        if self.shared is not None:
            self.shared.save(self.pipeline.ctx.state)
        self.pipeline.persist()
        self._dirty = False
        metrics.observe(self.pipeline)

    def run(self) -> IngestStats:
        pipeline, sink = self.pipeline, self.sink
        handle, emit, dead = pipeline.handle_encoded, sink.emit, sink.dead_letter
        self.started = time.monotonic()  # throughput counts from here, after restore()
        since_commit = 0
        last_commit = time.monotonic()
        try:
            for record in self.input:
                if record is not None:
                    encoded, letter = handle(record)
                    for ev, value in encoded:
                        emit(ev, value)
                    if letter is not None:
                        dead(letter)
                    self._dirty = True
                    since_commit += 1
                if self._stop.is_set():
                    break
                if since_commit >= self.commit_every or (
                    self._dirty
                    and (record is None or since_commit % 512 == 0)
                    and time.monotonic() - last_commit >= self.commit_interval_s
                ):
                    self.commit()
                    since_commit = 0
                    last_commit = time.monotonic()
            else:  # the input ended (not stopped): what only its end decides
                for ev in pipeline.finish():
                    emit(ev)
            self.commit()
            pipeline.persist(force=True)
        finally:
            self.input.close()
        pipeline.stats.seconds = time.monotonic() - self.started
        return pipeline.stats


def install_stop_signals(runner: Stoppable | threading.Event) -> Callable[[], None]:
    """SIGTERM / SIGINT ask the runner (or whoever waits on the event) to stop;
    it then commits and returns."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        if isinstance(runner, threading.Event):
            runner.set()
        else:
            runner.stop()

    for sig in previous:
        signal.signal(sig, on_signal)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


# Below this a file is read before a worker process would have paid for itself.
WORKER_MIN_FILE_BYTES = 1 << 20


def _worth_a_worker(source_input: Input) -> bool:
    """Long or endless inputs the worker can read itself: big or followed
    files, syslog, and stdin given as a descriptor."""
    from connectors.inputs.file import FileInput
    from connectors.inputs.stream import StreamInput
    from connectors.inputs.syslog import SyslogInput

    if isinstance(source_input, SyslogInput):
        return True
    if isinstance(source_input, StreamInput):
        return source_input.fd is not None
    if not isinstance(source_input, FileInput):
        return False
    if source_input.follow:
        return True
    try:
        return source_input.path.stat().st_size >= WORKER_MIN_FILE_BYTES
    except OSError:
        return True  # the worker reports the missing file like the inline path would


def ingest(
    settings: Settings,
    source: str,
    fmt: str,
    source_input: Input,
    *,
    timezone: str | None = None,
    checkpointed: bool = True,
    sink: Sink | None = None,
    stop_on_signal: bool = True,
    parse_worker: bool | None = None,
    encoding: str = "utf-8",
    from_start: bool = False,
) -> IngestStats:
    """Run one input into Kafka; checkpointed inputs resume exactly where they
    stopped (``connectors/checkpoints.py``), or with ``from_start`` read the
    input from its start again.

    ``parse_worker`` (default: into Kafka from followed files, files of 1 MiB
    or more, syslog and stdin) parses in a child process so this one only
    produces (see ``connectors.parse_worker``).
    """
    from connectors.produce import KafkaSink

    pipeline = make_pipeline(
        settings, source, fmt, timezone, source_input.name, encoding, bounded=True
    )
    store = (
        CheckpointStore(settings.connectors.checkpoint_dir, source, fmt, source_input.name)
        if checkpointed
        else None
    )
    shared = (
        SharedState(settings.connectors.checkpoint_dir, source, pipeline.shared_keys)
        if checkpointed and pipeline.shared_keys
        else None
    )
    if parse_worker is None:
        parse_worker = sink is None and _worth_a_worker(source_input)
    worker = None
    if parse_worker:
        from connectors.parse_worker import ParseWorker, WorkerSpec

        # started before the producer exists, so it can fork a single-threaded process
        worker = ParseWorker(
            WorkerSpec(settings, source, fmt, timezone, source_input, encoding=encoding)
        )
    own_sink = sink is None
    runner: Any = None
    # Signals are caught from here on, so a SIGTERM while connecting still
    # ends with a commit and exit code 0 instead of killing the process.
    stop = threading.Event()
    restore_signals = install_stop_signals(stop) if stop_on_signal else (lambda: None)
    try:
        if sink is None:
            sink = KafkaSink(
                settings.kafka, source, transactional_id=store.transactional_id if store else None
            )
        if worker is not None:
            from connectors.parse_worker import WorkerRunner

            if not isinstance(sink, KafkaSink):
                raise ConfigError("a parse worker sends through a KafkaSink only")
            runner = WorkerRunner(
                pipeline, worker, sink, store=store, stop_event=stop, shared=shared
            )
        else:
            runner = Runner(
                pipeline, source_input, sink, store=store, stop_event=stop, shared=shared
            )
        if store is not None and not from_start:
            runner.restore()
        elif store is not None:
            log.info("reading_from_start", input=source_input.name, reason="--from-start")
        return runner.run()
    finally:
        restore_signals()
        if worker is not None:
            worker.close()
        if own_sink and sink is not None:
            sink.close()  # type: ignore[attr-defined]


def ingest_file(
    settings: Settings,
    source: str,
    fmt: str,
    path: str | Path,
    *,
    follow: bool = False,
    timezone: str | None = None,
    parse_worker: bool | None = None,
) -> IngestStats:
    """Ingest a log file into Kafka (for the demo and scripts)."""
    from connectors.inputs.file import FileInput

    source_input = FileInput(path, follow=follow, max_line_bytes=settings.connectors.max_line_bytes)
    return ingest(settings, source, fmt, source_input, timezone=timezone, parse_worker=parse_worker)
