"""docker-compose.yml is checked without Docker: schema, KRaft settings, wiring."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import ROOT

from zonewatch.config import SOURCES


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_validates_against_the_compose_spec(compose: dict, shared_dir: Path) -> None:
    schema = json.loads((shared_dir / "schemas" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(compose)


def test_kafka_runs_single_node_kraft(compose: dict) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert f"{controller}://" in env["KAFKA_LISTENERS"]
    assert controller not in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1"


def test_every_source_has_a_connector_and_the_correlator_keeps_its_db_on_a_volume(
    compose: dict,
) -> None:
    services = compose["services"]
    for source in SOURCES:
        command = services[f"connector-{source}"]["command"]
        assert command[:2] == ["ingest", source]
    correlator = services["correlator"]
    assert correlator["command"][0] == "correlate"
    db_path = correlator["environment"]["ZONEWATCH_CORRELATOR__DB_PATH"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in correlator["volumes"]}
    assert any(db_path.startswith(target) for target in mounts)
    assert all(m.split(":")[0] in compose["volumes"] for m in mounts.values() if "/" not in m)


def test_secrets_come_from_files_not_the_compose_file(compose: dict) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "webhook.office.com" not in text and "logic.azure.com" not in text
    assert compose["services"]["correlator"]["environment"][
        "ZONEWATCH_TEAMS__SECRETS_FILE"
    ].startswith("/run/secrets/")


def test_cloud_pulls_share_the_graph_secret_and_the_volume_with_the_other_connectors(
    compose: dict,
) -> None:
    """Device state and the learned identity map live on the shared volume, where
    the firewall, gateway and VDI connectors read them."""
    services = compose["services"]
    pulls = {name: s for name, s in services.items() if "--graph" in (s.get("command") or [])}
    assert {"connector-intune", "connector-intune-devices", "connector-identity",
            "connector-identity-m365"} <= set(pulls)  # fmt: skip
    assert pulls["connector-intune-devices"]["command"][:4] == [
        "ingest", "intune", "--format", "devices",
    ]  # fmt: skip
    for name, service in pulls.items():
        env = service["environment"]
        assert env["ZONEWATCH_GRAPH_CLIENT_SECRET_FILE"].startswith("/run/secrets/"), name
        assert "graph_client_secret" in service["secrets"], name
    checkpoint_dir = compose["x-zonewatch"]["environment"]["ZONEWATCH_CONNECTORS__CHECKPOINT_DIR"]
    for name in ("connector-identity", "connector-firewall", "connector-gateway", "connector-vdi"):
        mounts = [m.split(":")[1] for m in services[name]["volumes"]]
        assert any(checkpoint_dir.startswith(m) for m in mounts), name
