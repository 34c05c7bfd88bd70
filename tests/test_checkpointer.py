"""The checkpoint order both correlator modes share (correlator/checkpointer.py).

A scale-out member's stage sends hits downstream and keeps its correlation
state in a changelog; the single member's stage keeps it in DuckDB. Both go
through one Checkpointer: these play its steps with a store that stores only
when told (as a slow DuckDB would) and a stage that records what it is asked.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

from kafka import OffsetAndMetadata, TopicPartition

from correlator.checkpointer import Checkpointer

TOPIC = "t.events.firewall"
TP = TopicPartition(TOPIC, 0)


class Store:
    """``submit`` returns a future the test completes (``store_all``), or,
    with ``gate``, one a writer thread completes once the gate opens."""

    def __init__(self, log: list[str], gate: threading.Event | None = None) -> None:
        self.log = log
        self.gate = gate
        self.held: list[Future[list[str]]] = []
        self.offsets: list[dict[tuple[str, int], int] | None] = []

    def submit(
        self, alerts: Any, *, events: Any = (), state: Any = None, offsets: Any = None
    ) -> Future[list[str]]:
        self.log.append("submit")
        self.offsets.append(dict(offsets) if offsets else None)
        done: Future[list[str]] = Future()
        if self.gate is not None:

            def write() -> None:
                assert self.gate is not None
                self.gate.wait(10)
                self.log.append("stored")
                done.set_result([])

            threading.Thread(target=write, daemon=True).start()
        else:
            self.held.append(done)
        return done

    def store_all(self) -> None:
        for done in self.held:
            if not done.done():
                self.log.append("stored")
                done.set_result([])

    def write(self, *args: Any, **kwargs: Any) -> list[str]:
        raise AssertionError("the checkpointer writes through submit (write overlap)")

    def load_state(self, key: str) -> bytes | None:
        return None

    def load_offsets(self) -> dict[tuple[str, int], int]:
        return {}


class Stage:
    """A stage that records its calls: scale-out-like by default."""

    stateless = False

    def __init__(self, log: list[str], *, scale_out: bool = True) -> None:
        self.log = log
        self.offsets_every_write = scale_out
        self.publishes = scale_out

    def flush(self) -> None:
        self.log.append("flush")

    def write_state(self, offsets: Any) -> dict[str, bytes]:
        return {"progress": b"[]"} if offsets else {}

    def snapshot(self) -> dict[str, Any]:
        return {} if self.publishes else {"correlation": b"state"}

    def publish(self) -> dict[TopicPartition, OffsetAndMetadata]:
        self.log.append("publish")
        return {TopicPartition("t.correlation.hits", 0): OffsetAndMetadata(7, "", -1)}

    def commit_metadata(self, key: tuple[str, int]) -> str:
        return '{"newest": 1.0}' if self.publishes else ""

    def checkpointed(self) -> None:
        pass

    def not_stored(self, exc: Exception) -> None:
        self.log.append("not_stored")


def checkpointer(store: Store, stage: Stage, log: list[str], interval_s: float) -> Checkpointer:
    def commit(offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        log.append("commit " + ",".join(f"{tp.topic}:{o.offset}" for tp, o in offsets.items()))

    return Checkpointer(
        store,  # type: ignore[arg-type]
        stage,
        commit=commit,
        on_stored=lambda alerts, ids: None,
        interval_s=interval_s,
        write_batch_events=100,
        write_delay_s=3600,
    )


def test_a_scaled_out_batch_is_stored_while_the_loop_goes_on_hits_flushed_first() -> None:
    log: list[str] = []
    store, stage = Store(log), Stage(log)
    cp = checkpointer(store, stage, log, interval_s=3600)
    assert cp.checkpoint([], {(TOPIC, 0): 3}) == {}
    # Hits out before the offsets past their records are written; the write
    # is on its way (not waited for) and Kafka hears nothing yet.
    assert log == ["flush", "submit"] and store.offsets == [{(TOPIC, 0): 3}]
    cp.checkpoint([], {(TOPIC, 0): 5})
    assert store.offsets[-1] == {(TOPIC, 0): 5}  # the source offsets go with every write
    assert not any(entry.startswith("commit") for entry in log)


def test_the_changelog_is_published_only_once_what_it_fired_is_stored() -> None:
    log: list[str] = []
    gate = threading.Event()
    store, stage = Store(log, gate), Stage(log)
    cp = checkpointer(store, stage, log, interval_s=0)  # every write is a full checkpoint
    threading.Timer(0.2, gate.set).start()  # a slow store
    cp.checkpoint([], {(TOPIC, 0): 3})
    assert log == [
        "flush",
        "submit",
        "stored",
        "publish",
        f"commit {TOPIC}:3,t.correlation.hits:7",
    ]


def test_the_single_member_commits_offsets_once_their_batch_and_state_are_stored() -> None:
    log: list[str] = []
    store, stage = Store(log), Stage(log, scale_out=False)
    cp = checkpointer(store, stage, log, interval_s=0)
    cp.checkpoint([], {(TOPIC, 0): 3})
    assert log == ["flush", "submit"] and store.offsets == [{(TOPIC, 0): 3}]
    store.store_all()
    cp.settle(wait=False)
    assert log[-1] == f"commit {TOPIC}:3"
    assert "publish" not in log


def test_a_forced_checkpoint_returns_everything_stored_for_the_next_owner() -> None:
    log: list[str] = []
    store, stage = Store(log, threading.Event()), Stage(log, scale_out=False)
    assert store.gate is not None
    store.gate.set()
    cp = checkpointer(store, stage, log, interval_s=0)
    cp.checkpoint([], {(TOPIC, 0): 3})
    offsets = cp.checkpoint([], {}, force=True, commit=False)  # a revocation
    assert offsets == {TP: OffsetAndMetadata(3, "", -1)}
