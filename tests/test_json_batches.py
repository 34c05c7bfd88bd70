"""Members of a JSON batch that are not objects (issue 20, point 8): they
used to vanish; now the objects of the batch become events and the line is
dead-lettered with the skipped members named, through the real broker."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from connectors.ingest import ingest_file
from connectors.inputs import Record
from connectors.pipeline import Pipeline
from tests.conftest import ROOT
from tests.test_produce import consume_topic
from zonewatch.config import KafkaSettings, Settings
from zonewatch.models import DeadLetter


def audit_event(n: int, activity: str) -> dict:
    """A Graph ``auditEvent`` as deviceManagement/auditEvents returns it."""
    return {
        "id": f"7e3c1a52-0d4b-4c8e-9a1f-0000000000{n:02d}",
        "displayName": activity,
        "componentName": "DeviceCompliance",
        "activity": activity,
        "activityDateTime": f"2026-11-26T00:{30 + n:02d}:00Z",
        "activityType": "Patch DeviceCompliancePolicy",
        "activityOperationType": "Patch",
        "activityResult": "Success",
        "correlationId": f"c0a8e1d2-5b6f-4a7e-8c9d-0000000000{n:02d}",
        "category": "Compliance",
        "actor": {
            "type": "ItPro",
            "userPrincipalName": "admin.kato@city.example.lg.jp",
            "ipAddress": "10.20.1.40",
            "applicationDisplayName": "Microsoft Intune portal extension",
        },
        "resources": [
            {"displayName": "Windows 11 minimum build", "type": "DeviceCompliancePolicy"}
        ],
    }


PAGE = {
    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#deviceManagement/auditEvents",
    "value": [
        audit_event(1, "Patch DeviceCompliancePolicy"),
        "Patch DeviceCompliancePolicy",  # a member that is no record
        audit_event(2, "Assign DeviceCompliancePolicy"),
        None,
        42,
    ],
}


def test_the_objects_become_events_and_the_rest_a_dead_letter() -> None:
    pipeline = Pipeline("intune", "graph", zones=None)
    line = orjson.dumps(PAGE)
    events, letter = pipeline.handle(Record(line))
    assert [e["event"]["id"] for e in events] == [
        PAGE["value"][0]["id"],  # type: ignore[index]
        PAGE["value"][2]["id"],  # type: ignore[index]
    ]
    assert letter is not None and letter.raw == line.decode()
    assert "value[1] is a string, value[3] is null, value[4] is a number" in letter.reason
    assert "2 event(s) came from the others" in letter.reason
    only_junk, letter = pipeline.handle(Record(b'["a", 1, []]'))
    assert only_junk == [] and letter is not None
    assert "[0] is a string, [1] is a number, [2] is an array" in letter.reason
    assert (pipeline.stats.read, pipeline.stats.produced, pipeline.stats.dead_lettered) == (2, 2, 2)


@pytest.mark.integration
@pytest.mark.parametrize("worker", [False, True], ids=["inline", "parse-worker"])
def test_a_batch_with_non_objects_reaches_kafka_as_events_and_a_dead_letter(
    tmp_path: Path, kafka_settings: KafkaSettings, worker: bool
) -> None:
    log = tmp_path / "audit.json"
    log.write_bytes(orjson.dumps(PAGE) + b"\n" + orjson.dumps(audit_event(3, "Create")) + b"\n")
    settings = Settings(
        kafka=kafka_settings,
        connectors={"zones_file": ROOT / "rules/zones.yaml", "checkpoint_dir": tmp_path / "cp"},
    )
    stats = ingest_file(settings, "intune", "graph", log, parse_worker=worker)
    assert (stats.read, stats.produced, stats.dead_lettered) == (2, 3, 1)
    events = consume_topic(kafka_settings, kafka_settings.events_topic("intune"), 3)
    assert sorted(orjson.loads(r.value)["event"]["id"][-2:] for r in events) == ["01", "02", "03"]
    [record] = consume_topic(kafka_settings, kafka_settings.deadletter_topic, 1)
    letter = DeadLetter.model_validate_json(record.value)
    assert letter.source == "intune" and letter.format == "graph"
    assert "value[1] is a string" in letter.reason
    assert orjson.loads(letter.raw) == PAGE
