"""Where a checkpointed input resumes, and the operator's view of checkpoints.

A file (or Graph) input keeps two copies of its position: the authoritative
one in Kafka (``<prefix>.checkpoints``, written in the same transaction as
the events it covers) and a local copy under ``connectors.checkpoint_dir``
written after each commit (with the Kafka offset and topic id of the record,
a hint for the next start). On start (:func:`choose_checkpoint`):

* Kafka has a checkpoint: resume there (it covers exactly what Kafka holds).
* Kafka's last word is a reset (``zonewatch checkpoints reset``): start over.
* Kafka has none but the local copy has one: the checkpoint topic lost it
  (recreated, broker restarted with memory storage, retention). Resume at
  the local copy: what was sent before is not sent again (a correlator has
  seen it). One warning names the case and the remedy (``ingest
  --from-start`` re-sends the input); ``zonewatch_connector_checkpoint_fallbacks_total``
  counts it.
* Neither: read the input from its start.

``ingest --from-start`` skips all of this and reads the input from its start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import Counter

from zonewatch.config import KafkaSettings
from zonewatch.errors import ConfigError
from zonewatch.logs import get_logger
from zonewatch.offsets import OffsetReset

log = get_logger(__name__)

FALLBACKS = Counter(
    "zonewatch_connector_checkpoint_fallbacks_total",
    "Starts that resumed from the local checkpoint because Kafka had lost its copy",
    ["reason"],
)

# Why Kafka holds no checkpoint although the local copy says there was one.
_MISSING = "checkpoint_missing"
_EXPLAIN: dict[str, str] = {
    _MISSING: "the checkpoint topic holds no checkpoint of this input although the local "
    "copy says it did: the topic was recreated or the broker lost its data",
    OffsetReset.AHEAD_OF_END: "the local copy points beyond the end of the checkpoint topic: "
    "the topic was recreated or the broker lost its data (e.g. a restarted embedded broker)",
    OffsetReset.TOPIC_RECREATED: "the checkpoint topic is not the one the local copy refers "
    "to: it was recreated or the broker lost its data (e.g. a restarted embedded broker)",
    OffsetReset.LOG_TRUNCATED: "retention deleted this input's checkpoint from the checkpoint "
    "topic",
}


def sink_position(sink: Any) -> dict[str, Any]:
    """What the local copy keeps of the Kafka checkpoint it mirrors."""
    out: dict[str, Any] = {}
    offset = getattr(sink, "checkpoint_offset", None)
    if offset is not None:
        out["kafka_offset"] = offset
    topic_id = getattr(sink, "checkpoint_topic_id", None)
    if topic_id is not None:
        out["kafka_topic_id"] = topic_id
    return out


def choose_checkpoint(
    local: dict[str, Any] | None, sink: Any, input_name: str
) -> dict[str, Any] | None:
    """The checkpoint to resume from (see the module docstring)."""
    recover = getattr(sink, "recover_checkpoint", None)
    if recover is None or not getattr(sink, "transactional_id", None):
        return local
    hint = local.get("kafka_offset") if local else None
    hint_id = local.get("kafka_topic_id") if local else None
    found = recover(hint_offset=hint, hint_topic_id=hint_id)
    recovery = sink.recovery
    if recovery.reset:
        if local:
            log.info("checkpoint_was_reset", input=input_name, detail="reading from the start")
        return None
    if found or recovery.found or not local or not local.get("input"):
        return found
    reason = str(recovery.reason.value if recovery.reason is not None else _MISSING)
    FALLBACKS.labels(reason=reason).inc()
    log.warning(
        "checkpoint_not_in_kafka",
        input=input_name,
        reason=reason,
        what_happened=_EXPLAIN[reason],
        resuming_at=local.get("input"),
        policy="resuming from the local checkpoint: lines sent before are not sent again",
        remedy="to send the input again from its start, run the same ingest with --from-start",
    )
    return local


# -- the operator's view ------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    source: str
    format: str
    input: str
    position: Any
    kafka_offset: int | None
    saved_at: datetime

    @property
    def transactional_id(self) -> str:
        return f"zonewatch-{self.path.stem}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "format": self.format,
            "input": self.input,
            "position": self.position,
            "kafka_offset": self.kafka_offset,
            "saved_at": self.saved_at.isoformat(timespec="seconds"),
            "file": str(self.path),
        }


def list_checkpoints(directory: Path) -> list[CheckpointInfo]:
    """The local checkpoint copies under ``directory``, oldest input name first."""
    out: list[CheckpointInfo] = []
    if not Path(directory).is_dir():
        return out
    for path in sorted(Path(directory).glob("*.json")):
        try:
            body = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("checkpoint_unreadable", file=str(path), error=str(exc)[:200])
            continue
        source, _, rest = path.stem.partition("-")
        fmt = rest.rsplit("-", 1)[0]
        position = body.get("input")
        if isinstance(position, dict) and "offset" in position:
            position = position["offset"]
        out.append(
            CheckpointInfo(
                path=path,
                source=source,
                format=fmt,
                input=str(body.get("input_name", "?")),
                position=position,
                kafka_offset=body.get("kafka_offset"),
                saved_at=datetime.fromtimestamp(path.stat().st_mtime, UTC),
            )
        )
    return out


def select(
    found: list[CheckpointInfo], source: str | None, input_name: str | None
) -> list[CheckpointInfo]:
    """The checkpoints of ``source`` (and input, e.g. ``file:/var/log/x``), all if None."""
    chosen = [c for c in found if source is None or c.source == source]
    if input_name is not None:
        wanted = {input_name, f"file:{input_name}"}
        chosen = [c for c in chosen if c.input in wanted]
    return chosen


def reset_checkpoints(kafka: KafkaSettings | None, chosen: list[CheckpointInfo]) -> None:
    """Forget the chosen inputs' positions: a reset record on the checkpoint
    topic (Kafka's copy is the authoritative one) and the local copy removed.
    The next ``ingest`` of each reads its input from the start."""
    if kafka is not None and kafka.bootstrap_servers:
        from zonewatch.kafka import ensure_topics, make_producer

        topic = kafka.checkpoints_topic
        ensure_topics(kafka, [topic], partitions=1)
        producer = make_producer(kafka)
        try:
            for info in chosen:
                tid = info.transactional_id
                body = {"id": tid, "reset": True}
                producer.send(topic, key=tid.encode(), value=orjson.dumps(body), partition=0)
            producer.flush(timeout=30)
        finally:
            producer.close(timeout=10)
    for info in chosen:
        try:
            info.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ConfigError(f"cannot remove checkpoint {info.path}: {exc.strerror}") from exc
