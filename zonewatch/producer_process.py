"""A transactional Kafka producer in a process of its own.

kafka-python's producer is pure Python: ``send()``, its record builder and
its sender thread cost 35-50 us of CPU per record, all of it on the GIL of
whoever owns the producer. A producer that lives beside a busy loop (the
correlator's alerts publisher) slows that loop about one for one. Here the
producer lives in a child process and its caller hands over whole
transactions through a socket pair; the caller's side costs a pickle of the
records and a wait that releases the GIL.

The child is started with ``subprocess`` (fork + exec at once: never a bare
fork, the parent runs DuckDB's threads) as ``python -m
zonewatch.producer_process <transactional id> <parent pid>``; settings,
password included, travel over the socket pair, never on the command line.

The protocol, one pickled tuple per message:

- parent -> child: ``("open", KafkaSettings, transactional_id, topic,
  headers, seq_header, debug)``, then ``("send", [(seq, key, partition,
  value), ...])`` per transaction; end of file (the parent closed its end or
  died) makes the child close its producer and exit.
- child -> parent: ``("ready", partitions)`` once ``init_transactions`` has
  fenced any previous producer with the same transactional id; then
  ``("committed", last_seq)`` per transaction, or ``("error", type, message)``
  after which the child exits (the caller starts a new one: its
  ``init_transactions`` aborts whatever the old one left open).

On Linux the child also asks the kernel for SIGKILL when its parent goes
(``PR_SET_PDEATHSIG``), so it does not outlive a ``kill -9`` of the parent
even while it waits on the broker.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import site
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from kafka.partitioner.default import murmur2

from zonewatch.config import KafkaSettings
from zonewatch.errors import ZonewatchError

# (seq, key, partition, value); partition None: ``partition_of(key)``
Record = tuple[int, bytes, int | None, bytes]
Headers = list[tuple[str, bytes]]

PR_SET_PDEATHSIG = 1
READY_TIMEOUT_S = 120.0  # bootstrap + init_transactions, each bounded by the client's own timeouts
COMMIT_TIMEOUT_S = 180.0  # send + flush + commit of one transaction (max_block_ms is 60 s)


class ProducerProcessError(ZonewatchError):
    """The producer process reported a failure, died, or did not answer in time."""

    exit_code = 69


class TransactionalProducer(Protocol):
    """What a publisher needs of a producer: fence and start, commit whole
    transactions, close. ``ProducerProcess`` runs it in a child process,
    ``InProcessProducer`` in the caller's."""

    def open(self) -> int:
        """Fence any previous producer of this transactional id; the topic's partition count."""
        ...

    def transact(self, records: list[Record]) -> int:
        """Produce ``records`` in one transaction; the last seq once committed."""
        ...

    def close(self) -> int | None: ...

    @property
    def pid(self) -> int | None: ...


def partition_of(key: bytes, partitions: int) -> int:
    """The partition of a key, as Kafka's default partitioner picks it."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def _transact(
    producer: Any,
    topic: str,
    partitions: int,
    headers: Headers,
    seq_header: str,
    records: list[Record],
) -> int:
    """One transaction with ``producer`` (a kafka-python KafkaProducer)."""
    producer.begin_transaction()
    sent = [
        producer.send(
            topic,
            key=key,
            value=value,
            partition=partition_of(key, partitions) if partition is None else partition,
            headers=[*headers, (seq_header, str(seq).encode())],
        )
        for seq, key, partition, value in records
    ]
    producer.flush()
    for future in sent:
        if future.failed():
            raise future.exception
    producer.commit_transaction()
    return records[-1][0]


def _producer_options() -> dict[str, Any]:
    return {"linger_ms": 5, "acks": "all", "enable_idempotence": True}


def _partitions(producer: Any, topic: str) -> int:
    from kafka.errors import KafkaError

    partitions = producer.partitions_for(topic)
    if not partitions:
        raise KafkaError(f"topic {topic} not found: run `zonewatch topics`")
    return len(partitions)


@dataclass(eq=False)
class _Destination:
    """Where a transactional producer sends: its cluster, transactional id and
    topic, the headers every record carries, and the header naming its seq."""

    kafka: KafkaSettings
    transactional_id: str
    topic: str
    headers: Headers
    seq_header: str


@dataclass(eq=False)
class InProcessProducer(_Destination):
    """The transactional producer in the caller's own process (and on its GIL)."""

    make_producer: Any = None  # zonewatch.kafka.make_producer unless given (tests)
    _producer: Any = field(default=None, init=False)
    _partitions: int = field(default=0, init=False)

    @property
    def pid(self) -> int | None:
        return None

    def open(self) -> int:
        from zonewatch.kafka import make_producer

        make = self.make_producer or make_producer
        self._producer = make(
            self.kafka, transactional_id=self.transactional_id, **_producer_options()
        )
        self._producer.init_transactions()
        self._partitions = _partitions(self._producer, self.topic)
        return self._partitions

    def transact(self, records: list[Record]) -> int:
        assert self._producer is not None, "open() first"
        return _transact(
            self._producer, self.topic, self._partitions, self.headers, self.seq_header, records
        )

    def close(self) -> int | None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=5)
        return None


@dataclass(eq=False)
class ProducerProcess(_Destination):
    """The transactional producer in a child process (see the module docstring)."""

    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _conn: Connection | None = field(default=None, init=False)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def open(self) -> int:
        import logging

        ours, theirs = socket.socketpair()  # neither end inherited by other children
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        if root not in {*site.getsitepackages(), site.getusersitepackages()}:
            # A source tree (tests, benchmarks): the child imports from it
            # too. Never site-packages itself: it would shadow the stdlib.
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "zonewatch.producer_process",
                    self.transactional_id,
                    str(os.getpid()),
                    str(theirs.fileno()),
                ],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
                close_fds=True,
            )
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        debug = logging.getLogger("kafka").getEffectiveLevel() <= logging.DEBUG
        opening = ("open", self.kafka, self.transactional_id, self.topic, self.headers)
        try:
            self._conn.send((*opening, self.seq_header, debug))
        except OSError as exc:
            raise self._gone(f"it did not start ({exc})") from None
        return int(self._answer("ready", READY_TIMEOUT_S))

    def transact(self, records: list[Record]) -> int:
        if self._conn is None:
            raise ProducerProcessError("the producer process is not open: open() first")
        try:
            self._conn.send(("send", records))
        except OSError as exc:
            raise self._gone(f"could not hand it a transaction ({exc})") from None
        return int(self._answer("committed", COMMIT_TIMEOUT_S))

    def _answer(self, expected: str, timeout_s: float) -> Any:
        conn = self._conn
        assert conn is not None
        try:
            if not conn.poll(timeout_s):
                raise ProducerProcessError(
                    f"the producer process (pid {self.pid}) did not answer within "
                    f"{timeout_s:.0f}s; it is stopped and a new one started"
                )
            reply = conn.recv()
        except (EOFError, OSError):
            raise self._gone("it closed its end") from None
        if reply[0] == expected:
            return reply[1]
        if reply[0] == "error":
            raise ProducerProcessError(f"{reply[1]}: {reply[2]}")
        raise ProducerProcessError(f"unexpected answer from the producer process: {reply[0]!r}")

    def _gone(self, how: str) -> ProducerProcessError:
        code = None
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self._proc.wait(timeout=1)
        return ProducerProcessError(
            f"the producer process (pid {self.pid}) went away: {how}, exit code {code}"
        )

    def close(self) -> int | None:
        """Close our end (the child closes its producer and exits; killed if
        it has not within 10 s); its exit code."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=10)


# -- the child ------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL when the parent goes, even while blocked on the broker
    (Linux). The parent could already be gone: then exit now.

    The kernel sends it when the parent *thread* that started the child
    ends, not only the process: the alerts publisher starts its child on
    its own thread, which lives as long as the publisher."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(0)


def serve(conn: Connection, make_producer: Any = None) -> int:
    """The child's loop: open, then one transaction per message until end
    of file. Returns the exit code."""
    local: InProcessProducer | None = None
    try:
        try:
            message = conn.recv()
        except EOFError:
            return 0
        _, kafka, transactional_id, topic, headers, seq_header, debug = message
        from zonewatch.logs import configure_logging

        # Its own log lines (kafka-python's, with --log-level debug) go to the
        # parent's stderr, scrubbed of the SASL password like the parent's.
        configure_logging("debug" if debug else "warning")
        local = InProcessProducer(
            kafka, transactional_id, topic, headers, seq_header, make_producer
        )
        conn.send(("ready", local.open()))
        while True:
            try:
                kind, records = conn.recv()
            except EOFError:
                return 0
            if kind != "send":
                raise ProducerProcessError(f"unknown request {kind!r}")
            conn.send(("committed", local.transact(records)))
    except Exception as exc:
        from zonewatch.logs import redact_text

        with contextlib.suppress(OSError):
            conn.send(("error", type(exc).__name__, redact_text(str(exc))[:500]))
        return 1
    finally:
        if local is not None:
            with contextlib.suppress(Exception):
                local.close()


def main(argv: list[str]) -> int:
    _transactional_id, parent_pid, fd = argv
    _die_with_parent(int(parent_pid))
    # It goes when its parent closes the socket or dies. A Ctrl-C on the
    # terminal, or a service manager's SIGTERM to the whole group, is the
    # parent's to act on: it drains the alerts topic through this process
    # before it stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return serve(Connection(int(fd)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
