"""record -> parse -> enrich -> sink (events or dead letters), with checkpoints.

The pipeline owns the per-stream :class:`ParseContext`, turns every record
into events or exactly one dead letter (oversized, not UTF-8, unparsable, no
format recognised), and every ``commit_every`` records or ``commit_interval_s``
seconds makes the sink durable together with the input position and the
parser state. Nothing is dropped silently: ``IngestStats`` counts where
every record went.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from orjson import dumps

from connectors.base import FORMATS, Format, ParseContext
from connectors.bindings import Limits, static_devices
from connectors.decoding import DecodeFailed, Decoder
from connectors.detect import AutoFormat, Choice, ChoiceHook
from connectors.enrich import Enricher
from connectors.identity_store import IdentityStore
from connectors.inputs import Record
from connectors.jsonrecords import skipped_members
from connectors.timegate import EventTimeGate
from zonewatch.config import Settings
from zonewatch.errors import ConfigError, ParseError, UsageError
from zonewatch.logs import get_logger
from zonewatch.models import DeadLetter
from zonewatch.sources import SOURCES
from zonewatch.zones import ZoneMap, load_zone_map

log = get_logger(__name__)

AUTO = "auto"
# Formats whose parser state must survive restarts (device snapshots, AVD groups).
_STATE_KEY = "state"


class Sink(Protocol):
    def emit(self, event: dict[str, Any], value: bytes | None = None) -> None: ...

    def dead_letter(self, letter: DeadLetter) -> None: ...

    def commit(self, checkpoint: dict[str, Any] | None = None) -> None: ...


@dataclass
class IngestStats:
    read: int = 0
    produced: int = 0
    dead_lettered: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    # --format auto: records parsed per format, and how often a stream switched
    formats: Counter[str] = field(default_factory=Counter)
    switches: int = 0
    # records per encoding, when not plain UTF-8 (--encoding other than utf-8)
    encodings: Counter[str] = field(default_factory=Counter)
    # The input position a checkpointed input resumed from (None: its start).
    resumed_at: Any = None

    def summary(self) -> str:
        rate = self.read / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"read {self.read} records, produced {self.produced} events, "
            f"dead-lettered {self.dead_lettered} ({rate:,.0f} records/s)"
        )
        if self.formats:
            chosen = ", ".join(f"{name} {n}" for name, n in self.formats.most_common())
            text += f"; format auto chose {chosen} (records)"
            if self.switches:
                text += f", {self.switches} switch(es)"
        if self.encodings:
            used = ", ".join(f"{name} {n}" for name, n in self.encodings.most_common())
            text += f"; decoded as {used}"
        return text

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "read": self.read,
            "produced": self.produced,
            "dead_lettered": self.dead_lettered,
            "reasons": dict(self.reasons),
            "seconds": round(self.seconds, 3),
        }
        if self.formats:
            out["formats"] = dict(self.formats)
            out["switches"] = self.switches
        if self.encodings:
            out["encodings"] = dict(self.encodings)
        return out


def load_source(source: str) -> None:
    """Import the module that registers ``source``'s formats."""
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r}: choose one of {', '.join(SOURCES)}")
    importlib.import_module(f"connectors.{source}")


def formats_of(source: str) -> dict[str, Format]:
    load_source(source)
    return {name: f for (src, name), f in FORMATS.items() if src == source}


def resolve_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"unknown timezone {name!r}: use an IANA name like Asia/Tokyo") from exc


def _reason_kind(reason: str) -> str:
    """A short label for counters: the reason up to its first colon."""
    return reason.split(":", 1)[0][:40]


# Anything else a parser or the enrichment raises is a bug met on input it
# was not written for: caught per record (a bug on one odd line must not stop
# the stream, and the line keeps its evidence value as a dead letter), and
# logged with its traceback the first time each kind is seen.
_PARSER_BUGS = (Exception,)
_bugs_logged: set[str] = set()


def _log_bug(source: str, fmt: str, exc: Exception) -> None:
    kind = f"{source}/{fmt}/{type(exc).__name__}"
    if kind not in _bugs_logged and len(_bugs_logged) < 256:
        _bugs_logged.add(kind)
        log.warning("parser_error", source=source, format=fmt, exc_info=exc)


Encoded = tuple[dict[str, Any], bytes]


class Pipeline:
    """Parses and enriches records of one stream (one source, one format or auto)."""

    def __init__(
        self,
        source: str,
        fmt: str,
        *,
        zones: ZoneMap | None,
        timezone: ZoneInfo | str = "Asia/Tokyo",
        max_line_bytes: int = 65536,
        input_name: str = "stdin",
        identity: IdentityStore | None = None,
        encoding: str = "utf-8",
        on_choice: ChoiceHook | None = None,
    ):
        available = formats_of(source)
        if fmt != AUTO and fmt not in available:
            raise UsageError(
                f"unknown format {fmt!r} for {source}: choose one of "
                f"{', '.join(sorted(available))} or auto"
            )
        self.source = source
        self.format = fmt
        self._fixed = available.get(fmt)
        self._auto = [f for f in available.values() if f.sniff is not None]
        formats = [self._fixed] if self._fixed is not None else self._auto
        # ctx.state keys kept per source (connectors/state.py)
        self.shared_keys: tuple[str, ...] = tuple(
            dict.fromkeys(k for f in formats for k in f.shared_state)
        )
        tz = resolve_timezone(timezone) if isinstance(timezone, str) else timezone
        self.ctx = ParseContext(source=source, format=fmt, timezone=tz, auto=fmt == AUTO)
        self.identity = identity
        self.enrich = Enricher(zones, identity=identity) if zones is not None else None
        self.max_line_bytes = max_line_bytes
        self.input_name = input_name
        self.stats = IngestStats()
        self.detector: AutoFormat | None = None
        if self._fixed is None:
            self.detector = AutoFormat(source, list(available.values()), self._chosen)
        self._on_choice = on_choice
        # plain UTF-8 is decoded inline (the common, fast case)
        decoder = Decoder(encoding)
        self.decoder = None if decoder.encoding == "utf-8" else decoder
        if self.decoder is not None:
            self.stats.encodings = self.decoder.used
        # Set by ``ingest``: events stamped too far from the clock become dead letters.
        self.time_gate: EventTimeGate | None = None

    def _chosen(self, choice: Choice) -> None:
        """Report a choice of --format auto: to the caller's hook (``parse``
        prints it), else in the log (``ingest``)."""
        self.stats.switches = self.detector.switches if self.detector else 0
        if self._on_choice is not None:
            self._on_choice(choice)
            return
        log.info(
            "format_detected",
            source=self.source,
            input=choice.stream or self.input_name,
            format=choice.format,
            previous=choice.previous,
            position=choice.position,
        )

    def dead_letter(self, record: Record, reason: str, fmt: str | None = None) -> DeadLetter:
        data = record.data
        try:
            raw, encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            raw, encoding = base64.b64encode(data).decode("ascii"), "base64"
        self.stats.dead_lettered += 1
        self.stats.reasons[_reason_kind(reason)] += 1
        return DeadLetter(
            source=self.source,
            format=fmt or self.format,
            reason=reason,
            raw=raw,
            raw_encoding="base64" if encoding == "base64" else "utf-8",
            input=record.peer or self.input_name,
            position=record.position,
            received_at=datetime.now(UTC),
        )

    def handle(self, record: Record) -> tuple[list[dict[str, Any]], DeadLetter | None]:
        """Events for one record, or the dead letter that explains why there are none."""
        self.stats.read += 1
        if record.size is not None and record.size > self.max_line_bytes:
            reason = (
                f"oversized: {record.size} bytes exceeds max_line_bytes "
                f"{self.max_line_bytes} (first {len(record.data)} bytes kept)"
            )
            return [], self.dead_letter(record, reason)
        if self.decoder is None:
            try:
                text = record.data.decode("utf-8")
            except UnicodeDecodeError as exc:
                reason = (
                    f"not UTF-8: {exc.reason} at byte {exc.start} (try --encoding auto or cp932)"
                )
                return [], self.dead_letter(record, reason)
        else:
            try:
                text = self.decoder(record.data)
            except DecodeFailed as exc:
                return [], self.dead_letter(record, str(exc))
        if text[:1] == "\ufeff":  # a byte order mark opens the first line of some exports
            text = text[1:]
        if not text or text.isspace():  # what strip() removes, without copying the line
            return [], None  # blank lines carry nothing; counted as read
        fmt_name = self.format
        identity = self.identity
        if identity is not None:
            identity.refresh()
        try:
            with skipped_members() as skipped:
                if self._fixed is not None:
                    fmt_name = self._fixed.name
                    events = self._fixed.parse(text, self.ctx)
                else:
                    assert self.detector is not None
                    try:
                        events = self.detector.parse(text, self.ctx, record.peer, record.position)
                    finally:
                        fmt_name = self.detector.tried or self.format
                        self.stats.formats = self.detector.records
            reasons: list[str] = []
            if self.time_gate is not None:  # before enrichment: nothing learns from them
                events, why = self.time_gate.split(events)
                if why is not None:
                    reasons.append(why)
            enrich = self.enrich
            for ev in events:
                meta = ev.get("event")
                if not isinstance(meta, dict):
                    meta = ev["event"] = {}
                meta.setdefault("original", text)
                meta.setdefault("dataset", self.source)
                meta.setdefault("module", fmt_name)
                if enrich is not None:
                    enrich(ev)
                if identity is not None:
                    identity.observe(ev)
        except ParseError as exc:
            return [], self.dead_letter(record, str(exc), fmt_name)
        except _PARSER_BUGS as exc:
            _log_bug(self.source, fmt_name, exc)
            return [], self.dead_letter(
                record, f"parser error: {type(exc).__name__}: {exc}", fmt_name
            )
        self.stats.produced += len(events)
        if skipped:
            # The batch's objects became events; the line keeps what was not.
            shown = ", ".join(skipped[:5]) + (
                f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
            )
            reasons.append(
                f"JSON batch members that are not objects were skipped: {shown}; "
                f"{len(events)} event(s) came from the others"
            )
        if reasons:
            return events, self.dead_letter(record, "; ".join(reasons), fmt_name)
        return events, None

    def finish(self) -> list[dict[str, Any]]:
        """Events the formats emit when a finite input ends, enriched like the rest."""
        formats = [self._fixed] if self._fixed is not None else self._auto
        events: list[dict[str, Any]] = []
        for fmt in formats:
            if fmt.finish is not None:
                events.extend(fmt.finish(self.ctx))
        for ev in events:
            if self.enrich is not None:
                self.enrich(ev)
            if self.identity is not None:
                self.identity.observe(ev)
        self.stats.produced += len(events)
        return events

    def persist(self, force: bool = False) -> None:
        """Write what this stream taught the identity map (connectors/identity_store.py)."""
        if self.identity is not None:
            self.identity.persist(force)

    def handle_encoded(self, record: Record) -> tuple[list[Encoded], DeadLetter | None]:
        """:meth:`handle` plus each event as JSON: what every sink sends.

        Serialising is part of handling a record: an event orjson cannot
        encode (an integer beyond 64 bits, nesting deeper than it allows)
        makes the whole record a dead letter instead of stopping the stream.
        """
        events, letter = self.handle(record)
        if not events:
            return [], letter
        try:
            return [(ev, dumps(ev)) for ev in events], letter
        except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
            self.stats.produced -= len(events)
            module = events[0].get("event", {}).get("module") if events else None
            return [], self.dead_letter(
                record,
                f"event not serializable: {exc}",
                module if isinstance(module, str) else None,
            )


class CheckpointStore:
    """The input position and parser state as a JSON file under checkpoint_dir.

    Written atomically (temp file + rename + fsync); with a transactional
    sink it is only a hint, the authoritative copy is in Kafka.
    """

    def __init__(self, directory: Path, source: str, fmt: str, input_name: str):
        digest = hashlib.sha256(input_name.encode()).hexdigest()[:12]
        self.path = Path(directory) / f"{source}-{fmt}-{digest}.json"
        self.input_name = input_name

    @property
    def transactional_id(self) -> str:
        return f"zonewatch-{self.path.stem}"

    def load(self) -> dict[str, Any] | None:
        try:
            return orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigError(
                f"checkpoint {self.path} is unreadable ({exc}); move it away to start over"
            ) from exc

    def save(self, checkpoint: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps({"input_name": self.input_name, **checkpoint}))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


def make_pipeline(
    settings: Settings,
    source: str,
    fmt: str,
    timezone: str | None = None,
    input_name: str = "",
    encoding: str = "utf-8",
    on_choice: ChoiceHook | None = None,
    *,
    shared_identity: bool = True,
    bounded: bool = False,
) -> Pipeline:
    """The pipeline of one input. ``shared_identity``: learn and fill identities
    through the files under ``checkpoint_dir`` (``zonewatch ingest``); without it
    only the static lists of the zone map and what this input itself teaches.
    ``bounded``: dead-letter events stamped outside the time bounds of the
    settings (``ingest``; ``parse`` converts logs of any date)."""
    c = settings.connectors
    zones = load_zone_map(c.zones_file) if Path(c.zones_file).exists() else None
    if zones is None:
        log.warning("no_zone_map", path=str(c.zones_file), detail="events get no zone tags")
    identity = None
    if zones is not None:
        identity = IdentityStore(
            Path(c.checkpoint_dir) / "identity" if shared_identity else None,
            source,
            limits=Limits(ttl_s=c.identity_binding_ttl_s, max_addresses=c.identity_max_addresses),
            static=static_devices(zones.policy.identities),
        )
    pipeline = Pipeline(
        source,
        fmt,
        zones=zones,
        timezone=timezone or c.timezone,
        max_line_bytes=c.max_line_bytes,
        input_name=input_name,
        identity=identity,
        encoding=encoding,
        on_choice=on_choice,
    )
    if bounded:
        pipeline.time_gate = EventTimeGate.from_settings(settings.connectors)
    return pipeline


class NdjsonSink:
    """``zonewatch parse``: events to one stream as NDJSON, bad lines to another."""

    def __init__(self, out: Any = None, err: Any = None):
        self.out = out or sys.stdout.buffer
        self.err = err or sys.stderr.buffer

    def emit(self, event: dict[str, Any], value: bytes | None = None) -> None:
        self.out.write((orjson.dumps(event) if value is None else value) + b"\n")

    def dead_letter(self, letter: DeadLetter) -> None:
        body = {
            "line": letter.position,
            "reason": letter.reason,
            "raw": letter.raw,
            "raw_encoding": letter.raw_encoding,
            "format": letter.format,
        }
        self.err.write(orjson.dumps(body) + b"\n")

    def commit(self, checkpoint: dict[str, Any] | None = None) -> None:
        self.out.flush()
        self.err.flush()


def parse_stream(pipeline: Pipeline, records: Iterable[Record | None], sink: Sink) -> IngestStats:
    start = time.monotonic()
    for record in records:
        if record is None:
            continue
        encoded, letter = pipeline.handle_encoded(record)
        for ev, value in encoded:
            sink.emit(ev, value)
        if letter is not None:
            sink.dead_letter(letter)
    for ev in pipeline.finish():
        sink.emit(ev)
    sink.commit()
    pipeline.stats.seconds = time.monotonic() - start
    return pipeline.stats
