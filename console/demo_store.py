"""The demo day's alert store without Kafka: every sample line through the
demo's connectors, the rule pack (with correlations) over the day in event
time, the alerts, the rules and the archived events written to DuckDB as the
correlator writes them. Browser tests, screenshots and the console benchmark
start from it; ``zonewatch demo`` builds the same day through Kafka.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from correlator.store.rows import ArchivedEvent
from zonewatch.samples import ROOT, SAMPLES


def demo_events(root: Path = ROOT, fmt: str | None = None) -> list[dict[str, Any]]:
    """The day's normalized events, in file order, as the demo's connectors
    emit them: each file learns identities from the ones before it through
    shared files, as the demo's connectors do; ``fmt="auto"`` lets each file be
    detected instead of naming its format. A line that does not parse is an
    error (the samples are ours)."""
    import tempfile

    from connectors.bindings import static_devices
    from connectors.identity_store import IdentityStore
    from connectors.inputs import Record
    from connectors.pipeline import Pipeline
    from zonewatch.errors import ParseError
    from zonewatch.zones import load_zone_map

    zones = load_zone_map(root / "rules" / "zones.yaml")
    events: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as shared:
        for sample in SAMPLES:
            store = IdentityStore(
                shared, sample.source, static=static_devices(zones.policy.identities)
            )
            pipeline = Pipeline(
                sample.source,
                fmt or sample.format,
                zones=zones,
                input_name=str(sample.path),
                identity=store,
            )
            for line in (root / sample.path).read_bytes().splitlines():
                found, letter = pipeline.handle(Record(line))
                if letter is not None:
                    raise ParseError(f"{sample.path}: {letter.reason}")
                events.extend(found)
            events.extend(pipeline.finish())
            store.persist(force=True)
    return events


def build_demo_store(db: Path, root: Path = ROOT) -> int:
    """Write the demo day into a new store at ``db``; returns the alerts stored."""
    from correlator.correlation.offline import offline_hooks
    from correlator.detection import load_rules, run_offline
    from correlator.detection.offline import evidence_time
    from correlator.service import stored_rules
    from correlator.store import AlertStore
    from zonewatch.config import KafkaSettings

    pack = load_rules([root / "rules"])
    # The stream loop merges the topics' partitions in event time; so does this.
    events = sorted(demo_events(root), key=lambda e: e["@timestamp"])
    hooks = offline_hooks(pack, evidence_time)
    on_hit, on_end, _engine = hooks if hooks else (None, None, None)
    alerts = list(run_offline(list(enumerate(events, 1)), pack, on_hit=on_hit, on_end=on_end))
    topics = KafkaSettings()
    archived = [
        ArchivedEvent(
            f"line:{n}",
            topics.events_topic(e["event"]["dataset"].split(".")[0]),
            0,
            n,
            evidence_time(e),
            e,
        )
        for n, e in enumerate(events, 1)
    ]
    with AlertStore(db) as store:
        store.register_rules(stored_rules(pack))
        return len(store.write(alerts, events=archived))
