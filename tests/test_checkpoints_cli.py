"""``zonewatch checkpoints list|reset`` and ``ingest --from-start``: an operator
can see where each input got to and send a file again."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT
from zonewatch_cli import run_zonewatch

from zonewatch.config import KafkaSettings

pytestmark = pytest.mark.integration

SQUID = (
    "{t}.{ms:03d}    {elapsed} 10.10.{host} TCP_TUNNEL/200 {size} CONNECT "
    "files.example.net:443 tanaka.h HIER_DIRECT/198.51.100.{last} -\n"
)


def _squid(first: int, count: int) -> str:
    return "".join(
        SQUID.format(
            t=1795000000 + i,
            ms=i % 1000,
            elapsed=100 + i,
            host=f"21.{i % 250 + 1}",
            size=4000 + i,
            last=i % 250 + 1,
        )
        for i in range(first, first + count)
    )


def _run(kafka: KafkaSettings, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": str(kafka.bootstrap_servers),
        "ZONEWATCH_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
        "ZONEWATCH_CONNECTORS__CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "ZONEWATCH_CONNECTORS__ZONES_FILE": str(ROOT / "rules" / "zones.yaml"),
    }
    return run_zonewatch(*args, env=env)


def _ingest(kafka: KafkaSettings, tmp_path: Path, log: Path, *extra: str) -> str:
    done = _run(
        kafka, tmp_path, "ingest", "gateway", "--format", "squid", "--file", str(log), *extra
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout + done.stderr


def test_a_rerun_says_why_it_sent_nothing_and_from_start_sends_the_file_again(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    log.write_text(_squid(0, 25))
    assert "read 25 records, produced 25 events" in _ingest(kafka_settings, tmp_path, log)

    again = _ingest(kafka_settings, tmp_path, log)
    assert "read 0 records" in again
    assert f"nothing new in {log} since its checkpoint (byte {log.stat().st_size})" in again
    assert "--from-start" in again

    resent = _ingest(kafka_settings, tmp_path, log, "--from-start")
    assert "read 25 records, produced 25 events" in resent
    # and the checkpoint it leaves is the end of the file again
    assert "read 0 records" in _ingest(kafka_settings, tmp_path, log)


def test_checkpoints_list_shows_each_input_and_reset_starts_it_over(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    first.write_text(_squid(0, 10))
    second.write_text(_squid(100, 7))
    _ingest(kafka_settings, tmp_path, first)
    _ingest(kafka_settings, tmp_path, second)

    listed = _run(kafka_settings, tmp_path, "checkpoints", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["input"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert rows.keys() == {f"file:{first}", f"file:{second}"}
    assert rows[f"file:{first}"]["position"] == first.stat().st_size
    assert rows[f"file:{second}"]["source"] == "gateway"
    table = _run(kafka_settings, tmp_path, "checkpoints", "list").stdout
    assert table.splitlines()[0].split("\t")[:3] == ["source", "format", "position"]

    nothing = _run(kafka_settings, tmp_path, "checkpoints", "reset")
    assert nothing.returncode == 2 and "--source S, --input PATH, or --all" in nothing.stderr
    reset = _run(kafka_settings, tmp_path, "checkpoints", "reset", "--input", str(first))
    assert reset.returncode == 0, reset.stderr
    assert reset.stdout.strip() == f"reset\tgateway\tsquid\tfile:{first}"

    assert "read 10 records" in _ingest(kafka_settings, tmp_path, first)
    assert "read 0 records" in _ingest(kafka_settings, tmp_path, second)


def test_a_reset_in_kafka_wins_over_a_local_copy_left_behind(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """Kafka's copy is the authoritative one: a reset made on another host
    (whose local copy survived) still starts the input over."""
    log = tmp_path / "access.log"
    log.write_text(_squid(0, 12))
    _ingest(kafka_settings, tmp_path, log)
    [local] = (tmp_path / "checkpoints").glob("*.json")
    kept = local.read_bytes()
    assert _run(kafka_settings, tmp_path, "checkpoints", "reset", "--all").returncode == 0
    assert not local.exists()
    local.write_bytes(kept)
    assert "read 12 records" in _ingest(kafka_settings, tmp_path, log)
