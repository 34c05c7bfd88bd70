"""Engine state <-> snapshot payload: the rows of each partition, a reader
per format version, and the checks that refuse what this release cannot read.

``snapshot.py`` moves a payload to bytes and back (and checks the version
stamp); this module decides what the payload holds. Format 2 (written) keeps
each partition as ``(max_t, frontier, next_scan, buffer, pending, groups,
suppress)`` with rules by index into the payload's ``rules`` hashes; format
1 (the JSON of an earlier release, one dict per group, rules by hash) is
still read, so a checkpoint taken before an upgrade restores. State of rules
whose hash is not among this engine's (removed or changed) is dropped.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, BinaryIO

from correlator.correlation import snapshot
from correlator.correlation.compiled import CompiledCorrelation
from correlator.correlation.errors import CorrelationStateError
from correlator.correlation.partition import Partition
from correlator.correlation.records import C_RULE, P_DEADLINE, P_SEQ, P_WINDOW, PendingEntry
from correlator.correlation.windows import Pending, load_rec

PartitionRows = tuple[Any, ...]


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


class StateCodec:
    """Dumps and loads the partitions of an engine for ``rules``."""

    def __init__(
        self,
        rules: Sequence[CompiledCorrelation],
        kinds: Sequence[Any],
        factories: Sequence[Callable[[], Any]],
        lateness: float,
        seq: itertools.count[int],
    ) -> None:
        self.rules = rules
        self.kinds = kinds  # window class per rule index
        self.factories = factories
        self.lateness = lateness
        self.seq = seq  # the engine's, so heap entries stay unique
        self.hashes = [c.rule_hash for c in rules]
        self._index = {h: i for i, h in enumerate(self.hashes)}

    def _partition(self) -> Partition:
        return Partition(len(self.rules), self.lateness, self.seq)

    # --------------------------------------------------------------- write

    def dump(self, part: Partition) -> PartitionRows:
        max_t, frontier, next_scan, buffer = part.snapshot()
        pending = sorted(
            (e for e in part.pending if not e[P_WINDOW].cancelled),
            key=lambda e: (e[P_DEADLINE], e[P_SEQ]),
        )
        groups = {ri: self.kinds[ri].rows(table) for ri, table in enumerate(part.groups) if table}
        suppress = {ri: table for ri, table in enumerate(part.suppress) if table}
        return (max_t, frontier, next_scan, buffer, pending, groups, suppress)

    def payload(self, parts: dict[int, Partition], stats: dict[str, Any]) -> dict[str, Any]:
        """The whole state (``CorrelationEngine.snapshot``)."""
        return {
            "version": snapshot.VERSION,
            "rules": self.hashes,
            "partitions": {k: self.dump(p) for k, p in parts.items()},
            "stats": stats,
        }

    def partition_payload(self, part: Partition) -> dict[str, Any]:
        """One partition's state (``export_partition``, ``snapshot_partitions``)."""
        return {"version": snapshot.VERSION, "rules": self.hashes, "partition": self.dump(part)}

    def encode_partition(self, part: Partition) -> bytes:
        with snapshot.no_gc():
            return snapshot.encode(self.partition_payload(part))

    # ---------------------------------------------------------------- read

    def read(
        self, data: bytes | BinaryIO, what: str, advice: str = "start without it"
    ) -> dict[str, Any]:
        """The payload of a snapshot, any readable format; anything else
        raises ``CorrelationStateError`` saying to start without it."""
        try:
            with snapshot.no_gc():
                return snapshot.decode(data, what)
        except CorrelationStateError:
            raise
        except snapshot.UNREADABLE as exc:
            raise _unreadable(what, exc, advice) from exc

    def _reader(self, payload: dict[str, Any]) -> Callable[[Any], Partition]:
        """The reader of one partition's data for the payload's format
        (``snapshot.read`` has checked the version is one of these)."""
        readers: dict[int, Callable[[Any], Partition]] = {
            1: self._read_v1,
            2: partial(self._read_v2, payload.get("rules", [])),
        }
        return readers[payload["version"]]

    def partitions(self, payload: dict[str, Any], what: str) -> dict[int, Partition]:
        """The partitions of a whole-state payload."""
        try:
            with snapshot.no_gc():
                read = self._reader(payload)
                return {int(key): read(data) for key, data in payload["partitions"].items()}
        except snapshot.UNREADABLE as exc:
            raise _unreadable(what, exc) from exc

    def partition(
        self, payload: dict[str, Any], what: str, advice: str = "start without it"
    ) -> Partition:
        """The partition of a one-partition payload (format 1 keeps its data
        at the top level, format 2 under ``partition``)."""
        try:
            with snapshot.no_gc():
                read = self._reader(payload)
                return read(payload if payload["version"] == 1 else payload["partition"])
        except snapshot.UNREADABLE as exc:
            raise _unreadable(what, exc, advice) from exc

    def _read_v2(self, hashes: list[str], rows: PartitionRows) -> Partition:
        max_t, frontier, next_scan, buffer, pending, groups, suppress = rows
        remap = [self._index.get(h) for h in hashes]  # index in the snapshot -> here (None: gone)
        same = remap == list(range(len(self.rules)))
        part = self._partition()
        for old, table_rows in groups.items():
            ri = remap[old]
            if ri is not None:  # else the rule was removed or changed: its state goes
                part.groups[ri] = self.kinds[ri].from_rows(table_rows)
        for deadline, _, old, key, p in pending:
            ri = remap[old]
            if ri is not None:
                self._reopen(part, ri, key, p, deadline)
        if not same:
            kept = []
            for t, eid, seq, rec, contribs in buffer:
                contribs = [
                    (remap[c[C_RULE]], *c[1:]) for c in contribs if remap[c[C_RULE]] is not None
                ]
                if contribs:
                    kept.append((t, eid, seq, rec, contribs))
            buffer = kept
        part.restore((max_t, frontier, next_scan, buffer))
        for old, table in suppress.items():
            ri = remap[old]
            if ri is not None:
                part.suppress[ri] = table
        return part

    def _read_v1(self, data: dict[str, Any]) -> Partition:
        """A partition from format 1 (JSON): a checkpoint of an earlier release."""
        index = self._index
        part = self._partition()
        for h, entries in data["groups"].items():
            ri = index.get(h)
            if ri is not None:
                load = self.kinds[ri].load
                table = part.groups[ri]
                for key, state in entries:
                    table[_tuples(key)] = load(state)
        for h, key, pdata in data["pending"]:
            ri = index.get(h)
            if ri is not None:
                p = Pending.load(pdata)
                self._reopen(part, ri, _tuples(key), p, p.deadline)
        buffer = []
        for t, eid, rec, contribs in data["buffer"]:
            kept = [
                (index[h], s, _tuples(key), _tuples(value), carry)
                for h, s, key, value, carry in contribs
                if h in index
            ]
            if kept:
                buffer.append((t, eid, 0, load_rec(rec), kept))
        clock = [
            data[k] if data[k] is not None else -math.inf
            for k in ("max_t", "frontier", "next_scan")
        ]
        part.restore((clock[0], clock[1], clock[2], buffer))
        for h, entries in data["suppress"].items():
            ri = index.get(h)
            if ri is not None:
                part.suppress[ri] = {_tuples(k): u for k, u in entries}
        return part

    def _reopen(self, part: Partition, ri: int, key: Any, p: Pending, deadline: float) -> None:
        """An open absence window back in its group (made anew if it was
        evicted while its window stayed open) and in the partition's heap."""
        st = part.groups[ri].get(key)
        if st is None:
            st = part.groups[ri][key] = self.factories[ri]()
        if st.pend is None:
            st.pend = {}
        st.pend[p.clause] = p
        # Fresh sequence numbers: this engine's counter is not the dumper's.
        entry: PendingEntry = (deadline, next(self.seq), ri, key, p)
        heapq.heappush(part.pending, entry)


def _unreadable(
    what: str, exc: BaseException, advice: str = "start without it"
) -> CorrelationStateError:
    return CorrelationStateError(f"{what} is unreadable ({type(exc).__name__}: {exc}); {advice}")
