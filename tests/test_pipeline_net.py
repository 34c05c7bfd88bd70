"""Every record ends as events or exactly one dead letter, whatever it holds.

Serialising an event is part of handling its record: a value orjson cannot
encode (an integer beyond 64 bits, nesting deeper than it allows) must make
the record a dead letter with its raw bytes, never stop ``parse``, ``ingest``
or a syslog listener (issue 20, point 4: one Citrix ADC line with a byte
count of 2**64 used to end every one of them).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from test_parse_worker import _env as worker_env
from test_parse_worker import committed_values

from connectors.base import FORMATS, ParseContext, register
from connectors.inputs import Record
from connectors.pipeline import Pipeline
from zonewatch.app.cli import cli
from zonewatch.config import KafkaSettings
from zonewatch.kafka import ensure_topics
from zonewatch.models import DeadLetter

ROOT = Path(__file__).resolve().parent.parent


def adc(i: int, sent: str = "1000") -> str:
    """A Citrix ADC ICA session end as the ADC writes it (its syslog reference)."""
    return (
        f"<134> 03/02/2026:00:00:{i % 60:02d} GMT adc01 0-PPE-0 : default SSLVPN "
        f"ICAEND_CONNSTAT {100000 + i} 0 : Source 10.10.1.{i % 250}:5{i % 1000:04d} - "
        f"Destination 10.50.20.{i % 250}:2598 - username:domainname tanaka.h:CITY - "
        f"Total_bytes_send {sent} - Total_bytes_recv 2000 - connectionId {100000 + i}"
    )


POISON = adc(99, sent=str(2**64))


@pytest.fixture()
def poison_format() -> Iterator[str]:
    """A format whose events orjson cannot encode (a 2**64 counter, and
    nesting deeper than orjson writes): the net must catch what no parser
    test foresaw."""

    def parse(raw: str, ctx: ParseContext) -> list[dict[str, Any]]:
        nested: dict[str, Any] = {}
        node = nested
        for _ in range(300):
            node = node.setdefault("x", {})
        value = {"big": {"bytes": 2**64}, "deep": nested}[raw]
        return [{"@timestamp": "2026-03-02T00:00:00.000Z", "event": {}, "vendor": value}]

    register("vdi", "test-poison")(parse)
    try:
        yield "test-poison"
    finally:
        del FORMATS[("vdi", "test-poison")]


@pytest.mark.parametrize("raw", ["big", "deep"])
def test_an_event_orjson_refuses_makes_its_record_a_dead_letter(
    poison_format: str, raw: str
) -> None:
    pipeline = Pipeline("vdi", poison_format, zones=None)
    encoded, letter = pipeline.handle_encoded(Record(raw.encode(), position=9))
    assert encoded == []
    assert letter is not None and letter.raw == raw and letter.position == 9
    assert letter.reason.startswith("event not serializable")
    stats = pipeline.stats
    assert (stats.read, stats.produced, stats.dead_lettered) == (1, 0, 1)


def test_parse_reads_on_after_a_poison_line(tmp_path: Path) -> None:
    path = tmp_path / "adc.log"
    path.write_text("\n".join([adc(1), POISON, adc(2)]) + "\n")
    env = {"ZONEWATCH_CONNECTORS__ZONES_FILE": str(ROOT / "rules/zones.yaml")}
    result = CliRunner().invoke(
        cli, ["parse", "--source", "vdi", "--format", "citrix-adc", str(path)], env=env
    )
    events = [orjson.loads(x) for x in result.stdout.splitlines()]
    letters = [orjson.loads(x) for x in result.stderr.splitlines() if '"reason"' in x]
    assert result.exit_code in (0, 65), result.output
    # every line is accounted for, and the poison line is either a dead
    # letter with its raw text or an event without the impossible number
    assert len(events) + len(letters) == 3
    assert [e["event"]["id"] for e in events if e["event"]["id"] != "100099"] == [
        "100001",
        "100002",
    ]
    for letter in letters:
        assert letter["raw"] == POISON
    for event in events:
        assert event["source"].get("bytes") != 2**64


def _event_ids(settings: KafkaSettings) -> list[str]:
    values = committed_values(settings, settings.events_topic("vdi"), quiet_polls=3)
    return [orjson.loads(v)["event"]["id"] for v in values]


@pytest.mark.integration
def test_udp_syslog_keeps_receiving_after_a_poison_datagram(
    tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    ensure_topics(
        kafka_settings, [kafka_settings.events_topic("vdi"), kafka_settings.deadletter_topic]
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = worker_env(tmp_path, kafka_settings)
    cmd = [sys.executable, "-m", "zonewatch", "--log-level", "warning", "ingest", "vdi",
           "--format", "auto", "--syslog", f"udp://127.0.0.1:{port}"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sent = [adc(i) for i in range(40)]
    sent[20] = POISON
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            deadline = time.monotonic() + 60
            # UDP gives no sign of a listener: resend the first datagram until it lands
            while not _event_ids(kafka_settings):
                assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
                assert time.monotonic() < deadline, "the listener never received anything"
                out.sendto(sent[0].encode(), ("127.0.0.1", port))
            for line in sent[1:]:
                out.sendto(line.encode(), ("127.0.0.1", port))
            expected = {str(100000 + i) for i in range(40) if i != 20}
            while not expected <= set(_event_ids(kafka_settings)):
                assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
                assert time.monotonic() < deadline, "datagrams after the poison one were lost"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    ids = _event_ids(kafka_settings)
    dead_topic = kafka_settings.deadletter_topic
    letters = [
        d
        for d in map(DeadLetter.model_validate_json, committed_values(kafka_settings, dead_topic))
        if d.raw == POISON
    ]
    # the poison datagram is accounted for: an event without the number, or a dead letter
    assert ids.count("100099") + len(letters) == 1


@pytest.mark.integration
@pytest.mark.parametrize("worker", [False, True], ids=["inline", "parse-worker"])
def test_file_ingest_dead_letters_unserializable_events_and_does_not_loop(
    poison_format: str,
    tmp_path: Path,
    kafka_settings: KafkaSettings,
    worker: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file whose events orjson refuses used to stop ingest on the same line
    at every restart; now each such line is a dead letter and the checkpoint
    moves past it."""
    import multiprocessing

    from connectors import parse_worker
    from connectors.ingest import ingest_file
    from zonewatch.config import Settings

    # The poison format is registered in this process only: a spawned worker
    # (chosen when other threads run, as in a full test session) would not
    # know it, so the worker must be a fork of this process.
    monkeypatch.setattr(parse_worker, "_context", lambda: multiprocessing.get_context("fork"))

    log = tmp_path / "poison.log"
    log.write_text("big\ndeep\nbig\n")
    settings = Settings(
        kafka=kafka_settings,
        connectors={"zones_file": ROOT / "rules/zones.yaml", "checkpoint_dir": tmp_path / "cp"},
    )
    stats = ingest_file(settings, "vdi", poison_format, log, parse_worker=worker)
    assert (stats.read, stats.produced, stats.dead_lettered) == (3, 0, 3)
    assert stats.reasons == {"event not serializable": 3}
    again = ingest_file(settings, "vdi", poison_format, log, parse_worker=worker)
    assert again.read == 0
