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


# -- the three-node cluster (docker-compose.cluster.yml) ----------------------------


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.cluster.yml").read_text())


def _kafka_nodes(cluster: dict) -> dict[str, dict]:
    return {
        name: svc
        for name, svc in cluster["services"].items()
        if svc.get("image", "").startswith("apache/kafka:")
        and "KAFKA_NODE_ID" in svc["environment"]
    }


def test_cluster_file_validates_against_the_compose_spec(cluster: dict, shared_dir: Path) -> None:
    schema = json.loads((shared_dir / "schemas" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(cluster)


def test_three_kraft_nodes_form_one_quorum_with_replication_3_and_min_isr_2(cluster: dict) -> None:
    nodes = _kafka_nodes(cluster)
    assert len(nodes) == 3
    ids = {svc["environment"]["KAFKA_NODE_ID"] for svc in nodes.values()}
    assert ids == {"1", "2", "3"}
    for name, svc in nodes.items():
        env = svc["environment"]
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        voters = dict(v.split("@") for v in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
        assert voters == {n["environment"]["KAFKA_NODE_ID"]: f"{h}:9093" for h, n in nodes.items()}
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
        # every listener is TLS with SASL; clients use SCRAM
        protocols = dict(
            p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
        )
        assert set(protocols.values()) == {"SASL_SSL"}
        assert env["KAFKA_LISTENER_NAME_CLIENT_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
        assert f"CLIENT://{name}:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert "CONTROLLER" not in env["KAFKA_ADVERTISED_LISTENERS"]
        assert f"kafka-{env['KAFKA_NODE_ID']}-data:" in svc["volumes"][0]


def test_zonewatch_services_authenticate_with_scram_over_tls_from_secret_files(
    cluster: dict,
) -> None:
    services = cluster["services"]
    zonewatch = {n: s for n, s in services.items() if s.get("image") == "zonewatch:latest"}
    assert {"topics", "correlator", *(f"connector-{s}" for s in SOURCES)} <= set(zonewatch)
    users = set()
    for name, svc in zonewatch.items():
        env = svc["environment"]
        assert env["ZONEWATCH_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL", name
        assert env["ZONEWATCH_KAFKA__SASL_MECHANISM"] == "SCRAM-SHA-512", name
        assert env["ZONEWATCH_KAFKA__REPLICATION_FACTOR"] == "3", name
        assert len(env["KAFKA_BOOTSTRAP_SERVERS"].split(",")) == 3, name
        assert "ZONEWATCH_KAFKA__SASL_PASSWORD" not in env, name
        password = env["ZONEWATCH_KAFKA__SASL_PASSWORD_FILE"]
        assert password.startswith("/run/secrets/"), name
        assert password.removeprefix("/run/secrets/") in svc["secrets"], name
        assert env["ZONEWATCH_KAFKA__SSL_CAFILE"].removeprefix("/run/secrets/") in svc["secrets"]
        users.add(env["ZONEWATCH_KAFKA__SASL_USERNAME"])
    assert users == {"zonewatch-admin", "zonewatch-connector", "zonewatch-correlator"}
    assert services["topics"]["depends_on"]["kafka-init"]["condition"] == (
        "service_completed_successfully"
    )


def test_every_secret_has_a_placeholder_example_and_real_ones_stay_out_of_git(
    compose: dict, cluster: dict
) -> None:
    declared = {**compose["secrets"], **cluster["secrets"]}
    examples = {p.name for p in (ROOT / "secrets").glob("*.example")}
    generated = {"ca.crt", "kafka-1.pem", "kafka-2.pem", "kafka-3.pem"}  # docs/deploy.md, TLS
    for name, secret in declared.items():
        path = Path(secret["file"])
        assert path.parts[:2] == (".", "secrets") or path.parts[0] == "secrets", name
        if path.name in generated:
            continue
        assert f"{path.name}.example" in examples, f"secrets/{path.name}.example is missing"
    for example in (ROOT / "secrets").glob("*.example"):
        assert "CHANGE-ME" in example.read_text(), example
    readme = (ROOT / "secrets" / "README.md").read_text()
    for name in {Path(s["file"]).name for s in declared.values()}:
        assert f"`{name}`" in readme or name.startswith("kafka-"), name
    ignore = (ROOT / ".gitignore").read_text().splitlines()
    assert "/secrets/*" in ignore and "!/secrets/*.example" in ignore


def test_the_cluster_jaas_example_covers_every_sasl_listener(cluster: dict) -> None:
    jaas = (ROOT / "secrets" / "kafka_server_jaas.conf.example").read_text()
    env = next(iter(_kafka_nodes(cluster).values()))["environment"]
    for listener in (
        p.split(":")[0] for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    ):
        assert f"{listener.lower()}.KafkaServer {{" in jaas


def test_the_acl_script_and_the_guide_grant_what_zonewatch_uses() -> None:
    """Names zonewatch derives (topics, group, transactional ids) appear in
    deploy/kafka-init.sh and in docs/deploy.md: a rename breaks this test,
    not a production deployment."""
    from connectors.pipeline import CheckpointStore
    from zonewatch.config import CorrelatorSettings, KafkaSettings
    from zonewatch.kafka import all_topics, correlation_topics

    kafka = KafkaSettings()
    script = (ROOT / "deploy" / "kafka-init.sh").read_text()
    guide = (ROOT / "docs" / "deploy.md").read_text()
    tid = CheckpointStore(Path("/x"), "gateway", "squid", "file:/var/log/a").transactional_id
    assert tid.startswith("zonewatch-")
    assert '--transactional-id "zonewatch-"' in script
    assert "transactional id `zonewatch-` (prefixed)" in guide
    assert (
        CorrelatorSettings().group_id in script
        and f"group `{CorrelatorSettings().group_id}`" in guide
    )
    internal = correlation_topics(kafka.scale_out_topics(CorrelatorSettings().group_id))
    for topic in [*all_topics(kafka), kafka.checkpoints_topic, *internal]:
        assert f"`{topic}`" in guide or any(
            f"`{p}` (prefixed)" in guide
            for p in ("zonewatch.events.", "zonewatch.correlation.")
            if topic.startswith(p)
        ), topic
    for fixed in ("deadletter", "checkpoints"):
        assert f'"$PREFIX.{fixed}"' in script


def test_systemd_units_restart_only_what_a_restart_can_fix() -> None:
    import configparser

    for unit in (ROOT / "deploy" / "systemd").glob("*.service"):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string(unit.read_text())
        service = parser["Service"]
        assert service["ExecStart"].split()[0].endswith("/zonewatch"), unit.name
        assert service["Restart"] == "on-failure", unit.name
        assert set(service["RestartPreventExitStatus"].split()) == {"2", "65", "78"}, unit.name
        assert service["KillSignal"] == "SIGTERM", unit.name
        assert "LoadCredential" in service and "_FILE=%d/" in unit.read_text(), unit.name
        assert "PASSWORD=" not in unit.read_text().replace("PASSWORD_FILE=", ""), unit.name


def test_the_guide_names_the_files_it_tells_you_to_use() -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text()
    for path in (
        "docker-compose.yml",
        "docker-compose.cluster.yml",
        "deploy/kafka-init.sh",
        "secrets/README.md",
        "deploy/systemd/",
    ):
        assert path in guide, path
        assert (ROOT / path).exists(), path
    assert "SIZING_TABLE" not in guide


def test_the_cluster_runs_every_zonewatch_service_of_the_single_node_file(
    compose: dict, cluster: dict
) -> None:
    """The two files drift apart silently otherwise: each zonewatch service of
    docker-compose.yml runs in the cluster file with the same command."""
    for name, svc in compose["services"].items():
        if svc.get("image") != "zonewatch:latest":
            continue
        assert name in cluster["services"], f"{name} is missing from docker-compose.cluster.yml"
        assert cluster["services"][name].get("command") == svc.get("command"), name
