"""The parse worker: a child process parses a file and hands ready records to
the producing process in file order, each batch with the checkpoint after it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner.default import DefaultPartitioner

from connectors.inputs.file import FileInput
from connectors.parse_worker import (
    BATCH_RECORDS,
    FIRST_BATCH_RECORDS,
    Batch,
    ParseWorker,
    WorkerSpec,
)
from connectors.produce import KeyPartitioner
from zonewatch.config import KafkaSettings, Settings
from zonewatch.errors import UsageError
from zonewatch.kafka import ensure_topics
from zonewatch.models import DeadLetter

ROOT = Path(__file__).resolve().parent.parent
PARTS = [0, 1, 2]


def _adc(i: int, user: str = "tanaka.h") -> bytes:
    return (
        f"<134> 03/02/2026:00:{i // 60 % 60:02d}:{i % 60:02d} GMT adc01 0-PPE-0 : default "
        f"SSLVPN ICASTART {100000 + i} 0 : Source 10.10.1.{i % 250}:5{i % 1000:04d} - "
        f"Destination 10.50.20.{i % 250}:2598 - username:domainname {user}:CITY - "
        f"connectionId {100000 + i}\n"
    ).encode()


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:9", topic_prefix="zwtest"),
        connectors={
            "zones_file": ROOT / "rules/zones.yaml",
            "checkpoint_dir": tmp_path / "cp",
            "max_past_horizon_days": None,  # recorded days, however old they get
        },
    )


def _drain(worker: ParseWorker) -> list[Batch]:
    batches = []
    while not worker.finished:
        batch = worker.next(10.0)
        assert batch is not None, "the worker sent nothing for 10 s"
        batches.append(batch)
    return batches


def _run_worker(tmp_path: Path, log: Path, checkpoint: dict | None = None) -> list[Batch]:
    settings = _settings(tmp_path)
    spec = WorkerSpec(settings, "vdi", "citrix-adc", None, FileInput(log, max_line_bytes=2048))
    worker = ParseWorker(spec)
    try:
        worker.start(checkpoint, {settings.kafka.events_topic("vdi"): PARTS})
        batches = _drain(worker)
    finally:
        worker.close()
    assert not worker.process.is_alive()
    return batches


def test_records_arrive_in_file_order_with_dead_letters_and_checkpoints(tmp_path: Path) -> None:
    log = tmp_path / "adc.log"
    lines = [_adc(i, user=f"user{i % 7}") for i in range(1800)]
    lines[700] = b"\xff\xfe not utf-8 at all\n"
    lines[1500] = b"<134> not a citrix adc line\n"
    log.write_bytes(b"".join(lines))
    batches = _run_worker(tmp_path, log)

    assert len(batches) > 1  # the file spans several batches
    ids = []
    letters = []
    covered = 0
    for batch in batches:
        for is_dead, key, partition, value in batch.records:
            if is_dead:
                letters.append(DeadLetter.model_validate_json(value))
                assert key == b"vdi"
                continue
            event = orjson.loads(value)
            ids.append(int(event["event"]["id"]) - 100000)
            assert key == event["user"]["name"].encode()
            assert partition == DefaultPartitioner().partition(
                "t", key, key, None, None, _Cluster(PARTS)
            )
        covered += batch.lines
        # the checkpoint after a batch is the byte offset after its last line
        assert batch.checkpoint["input"]["offset"] == sum(map(len, lines[:covered]))
    assert ids == [i for i in range(1800) if i not in (700, 1500)]
    assert [d.position for d in letters] == [
        sum(map(len, lines[:700])),
        sum(map(len, lines[:1500])),
    ]
    assert letters[0].raw_encoding == "base64"
    stats = batches[-1].stats
    assert (stats.read, stats.produced, stats.dead_lettered) == (1800, 1798, 2)


def test_the_first_batch_is_small_so_sending_starts_early_and_batches_then_grow(
    tmp_path: Path,
) -> None:
    log = tmp_path / "adc.log"
    lines = [_adc(i) for i in range(1200)]
    log.write_bytes(b"".join(lines))
    batches = _run_worker(tmp_path, log)

    sizes = [b.lines for b in batches]
    # the producer gets lines after a few dozen were parsed, not a full batch
    assert sizes[0] == FIRST_BATCH_RECORDS
    assert max(sizes) > 2 * FIRST_BATCH_RECORDS
    assert all(n <= BATCH_RECORDS for n in sizes)
    assert sum(sizes) == 1200
    # each batch, small or large, ends at a checkpoint right after its last line
    covered = 0
    for batch in batches:
        covered += batch.lines
        assert batch.checkpoint["input"]["offset"] == sum(map(len, lines[:covered]))


def test_a_restart_at_a_batch_checkpoint_continues_with_the_next_line(tmp_path: Path) -> None:
    log = tmp_path / "adc.log"
    log.write_bytes(b"".join(_adc(i) for i in range(1200)))
    first = _run_worker(tmp_path, log)
    cut = first[0]
    rest = _run_worker(tmp_path, log, checkpoint=cut.checkpoint)
    again = [int(orjson.loads(v)["event"]["id"]) - 100000 for b in rest for _, _, _, v in b.records]
    assert again == list(range(cut.lines, 1200))


def _avd(i: int) -> bytes:
    row = {
        "TimeGenerated": f"2026-03-02T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "CorrelationId": f"c-{i // 3}",
        "State": ("Started", "Connected", "Completed")[i % 3],
        "UserName": "sato.kenji@city.example.lg.jp",
        "ClientSideIPAddress": f"10.10.2.{i % 250}",
    }
    return orjson.dumps(row) + b"\n"


_AVD_ACTIONS = ("vdi-login", "vdi-connect", "vdi-disconnect")


def _avd_file(tmp_path: Path) -> Path:
    """Connections of three rows; a completed one's rows come again later (repeats)."""
    lines = [_avd(i) for i in range(2400)]
    lines[1500:1500] = [_avd(i) for i in range(900, 960)]
    log = tmp_path / "avd.log"
    log.write_bytes(b"".join(lines))
    return log


def _run_avd(
    tmp_path: Path, log: Path, interval_s: float, checkpoint: dict | None = None
) -> list[Batch]:
    settings = _settings(tmp_path)
    spec = WorkerSpec(
        settings, "vdi", "avd", None, FileInput(log), checkpoint_interval_s=interval_s
    )
    worker = ParseWorker(spec)
    try:
        worker.start(checkpoint, {settings.kafka.events_topic("vdi"): PARTS})
        return _drain(worker)
    finally:
        worker.close()


def test_parser_state_travels_only_with_checkpoint_batches_and_the_last(tmp_path: Path) -> None:
    log = _avd_file(tmp_path)
    batches = _run_avd(tmp_path, log, interval_s=3600)
    assert len(batches) > 2
    *middle, last = batches
    assert all(b.checkpoint is None and b.stats is None for b in middle)
    assert last.checkpoint is not None and last.stats is not None
    assert last.checkpoint["input"]["offset"] == log.stat().st_size
    assert last.checkpoint["state"]["avd.completed"]  # the parser state came along
    assert last.stats.read == 2460
    # the 60 repeated rows of completed connections gave no events
    assert sum(len(b.records) for b in batches) == last.stats.produced == 2400


def test_a_restart_at_a_stateful_checkpoint_gives_the_same_events(tmp_path: Path) -> None:
    log = _avd_file(tmp_path)
    whole = [v for b in _run_avd(tmp_path, log, interval_s=3600) for *_, v in b.records]
    batches = _run_avd(tmp_path, log, interval_s=0)
    assert all(b.checkpoint is not None for b in batches)  # each one, with no wait
    # Batch ends depend on timing (a batch is flushed after 0.1 s too): cut
    # where the state matters, at the first checkpoint with a connection
    # open and at the last one with a connection open before the repeats.
    repeats_at = sum(len(_avd(i)) for i in range(1500))
    open_at = [
        i
        for i, b in enumerate(batches[:-1])
        if b.checkpoint is not None and b.checkpoint["state"].get("avd.connections")
    ]
    before = [i for i in open_at if batches[i].checkpoint["input"]["offset"] < repeats_at]
    assert before, "no checkpoint with an open connection before the repeats"
    for cut in sorted({before[0], before[-1]}):
        head = [v for b in batches[: cut + 1] for *_, v in b.records]
        cp = batches[cut].checkpoint
        assert cp is not None and cp["state"]["avd.connections"]
        rest = [v for b in _run_avd(tmp_path, log, 3600, checkpoint=cp) for *_, v in b.records]
        # durations of connections open at the cut, and the dropped repeats,
        # need the state from the checkpoint
        assert head + rest == whole


def test_a_missing_file_raises_the_workers_error_in_the_parent(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        _run_worker(tmp_path, tmp_path / "missing.log")


class _Cluster:
    def __init__(self, parts: list[int]):
        self.parts = parts

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.parts)

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.parts)


@settings(max_examples=200, deadline=None)
@given(key=st.binary(min_size=1, max_size=64), n=st.integers(min_value=1, max_value=12))
def test_key_partitioner_agrees_with_kafka_pythons_default(key: bytes, n: int) -> None:
    parts = list(range(n))
    ours = KeyPartitioner({"t": parts})
    theirs = DefaultPartitioner().partition("t", key, key, None, None, _Cluster(parts))
    assert ours("t", key) == theirs
    assert ours("t", key) == theirs  # cached answer too
    assert ours("t", None) is None and ours("other", key) is None


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.integration
def test_the_worker_exits_when_the_connector_is_killed(
    tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    log = tmp_path / "adc.log"
    log.write_bytes(b"".join(_adc(i) for i in range(200)))
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": str(kafka_settings.bootstrap_servers),
        "ZONEWATCH_KAFKA__TOPIC_PREFIX": kafka_settings.topic_prefix,
        "ZONEWATCH_CONNECTORS__CHECKPOINT_DIR": str(tmp_path / "cp"),
        "ZONEWATCH_CONNECTORS__ZONES_FILE": str(ROOT / "rules/zones.yaml"),
        "ZONEWATCH_CONNECTORS__MAX_PAST_HORIZON_DAYS": "off",  # recorded days
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "zonewatch", "--log-level", "warning", "ingest", "vdi",
         "--format", "citrix-adc", "--file", str(log), "--follow"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (children := _children(proc.pid)):
            assert time.monotonic() < deadline, "no parse worker started"
            assert proc.poll() is None, "the connector exited"
            time.sleep(0.05)
        [worker] = children
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while _alive(worker):
            assert time.monotonic() < deadline, "the parse worker outlived its parent"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def committed_values(settings: KafkaSettings, topic: str, quiet_polls: int = 6) -> list[bytes]:
    """Every committed value of ``topic`` (read_committed), polled until quiet."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    consumer.assign([TopicPartition(topic, p) for p in range(settings.partitions)])
    consumer.seek_to_beginning()
    values: list[bytes] = []
    quiet = 0
    try:
        while quiet < quiet_polls:
            got = consumer.poll(timeout_ms=250, max_records=10000)
            batch = [r.value for rs in got.values() for r in rs]
            values += batch
            quiet = 0 if batch else quiet + 1
    finally:
        consumer.close()
    return values


def _committed_ids(settings: KafkaSettings, quiet_polls: int = 6) -> list[int]:
    """Event ids in the events topic (read_committed), polled until quiet."""
    values = committed_values(settings, settings.events_topic("vdi"), quiet_polls)
    return [int(orjson.loads(v)["event"]["id"]) - 100000 for v in values]


@pytest.mark.integration
def test_sigterm_mid_file_commits_exactly_the_lines_sent_and_a_restart_finishes(
    tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    ensure_topics(kafka_settings, [kafka_settings.events_topic("vdi")])
    log = tmp_path / "adc.log"
    lines = [_adc(i, user=f"user{i % 11}") for i in range(25000)]
    log.write_bytes(b"".join(lines))
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": str(kafka_settings.bootstrap_servers),
        "ZONEWATCH_KAFKA__TOPIC_PREFIX": kafka_settings.topic_prefix,
        "ZONEWATCH_KAFKA__PARTITIONS": str(kafka_settings.partitions),
        "ZONEWATCH_CONNECTORS__CHECKPOINT_DIR": str(tmp_path / "cp"),
        "ZONEWATCH_CONNECTORS__ZONES_FILE": str(ROOT / "rules/zones.yaml"),
        "ZONEWATCH_CONNECTORS__MAX_PAST_HORIZON_DAYS": "off",  # recorded days
    }
    cmd = [sys.executable, "-m", "zonewatch", "--log-level", "warning", "ingest", "vdi",
           "--format", "citrix-adc", "--file", str(log)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not list((tmp_path / "cp").glob("*.json")):  # a first commit: part way in
            assert time.monotonic() < deadline and proc.poll() is None, "no checkpoint"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    [checkpoint] = (tmp_path / "cp").glob("vdi-citrix-adc-*.json")
    offset = orjson.loads(checkpoint.read_bytes())["input"]["offset"]
    done = next(n for n in range(len(lines) + 1) if sum(map(len, lines[:n])) == offset)
    # what Kafka holds is exactly the lines before the saved offset, each once
    assert sorted(_committed_ids(kafka_settings)) == list(range(done))

    again = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    ids = _committed_ids(kafka_settings)
    assert sorted(ids) == list(range(25000))


def _hides_aborted_transactions(settings: KafkaSettings) -> bool:
    """Whether a read_committed consumer of this broker skips an aborted
    transaction (the embedded broker's does not: it shows the records)."""
    from kafka import KafkaProducer

    topic = settings.topic("abort-probe")
    ensure_topics(settings, [topic], partitions=1)
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        transactional_id=f"{settings.topic_prefix}-abort-probe",
        enable_idempotence=True,
        acks="all",
    )
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(topic, b"aborted")
    producer.flush()
    producer.abort_transaction()
    producer.begin_transaction()
    producer.send(topic, b"committed")
    producer.commit_transaction()
    producer.close()
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        isolation_level="read_committed",
    )
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    values: list[bytes] = []
    deadline = time.monotonic() + 10
    while b"committed" not in values and time.monotonic() < deadline:
        values += [r.value for rs in consumer.poll(250).values() for r in rs]
    consumer.close()
    return b"aborted" not in values


@pytest.mark.integration
def test_kill_9_mid_stateful_file_then_restart_delivers_every_event(
    tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    """AVD state travels only with some batches: the restart must continue at
    the last committed checkpoint with its state (no event lost, none made
    up), and with a broker that hides aborted transactions, none twice.

    The connector follows a file that keeps growing, so it is always mid-file
    when killed, however fast it runs; the kill comes once it has committed
    twice (into a later transaction, past batches without state)."""
    ensure_topics(kafka_settings, [kafka_settings.events_topic("vdi")])
    log = tmp_path / "avd.log"
    log.write_bytes(b"".join(_avd(i) for i in range(3000)))
    written = 3000
    stop = threading.Event()

    def grow() -> None:  # whole connections (three rows), a steady stream
        nonlocal written
        with log.open("ab") as fh:
            while not stop.is_set() and written < 90000:
                fh.write(b"".join(_avd(i) for i in range(written, written + 300)))
                fh.flush()
                written += 300
                time.sleep(0.01)

    env = _env(tmp_path, kafka_settings)
    cmd = [sys.executable, "-m", "zonewatch", "--log-level", "warning", "ingest", "vdi",
           "--format", "avd", "--file", str(log)]  # fmt: skip
    proc = subprocess.Popen(
        [*cmd, "--follow"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    writer = threading.Thread(target=grow)
    writer.start()
    try:
        offsets: list[int] = []
        deadline = time.monotonic() + 90
        while len(set(offsets)) < 2:  # two commits seen
            assert time.monotonic() < deadline, f"fewer than two commits: {offsets}"
            assert proc.poll() is None, "the connector exited"
            for checkpoint in (tmp_path / "cp").glob("*.json"):
                with contextlib.suppress(ValueError):  # replaced while read
                    offsets.append(orjson.loads(checkpoint.read_bytes())["input"]["offset"])
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        stop.set()
        writer.join()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The restart reads to the end of the file as it now is, and stops there.
    again = subprocess.run(cmd, env=env, capture_output=True, timeout=180)
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    topic = kafka_settings.events_topic("vdi")
    consumer = KafkaConsumer(
        bootstrap_servers=kafka_settings.bootstrap_servers,
        group_id=None,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    consumer.assign([TopicPartition(topic, p) for p in range(kafka_settings.partitions)])
    consumer.seek_to_beginning()
    seen: list[tuple[str, str]] = []
    quiet = 0
    while quiet < 6:
        got = [orjson.loads(r.value) for rs in consumer.poll(250, 10000).values() for r in rs]
        seen += [(ev["vdi"]["session_id"], ev["event"]["action"]) for ev in got]
        quiet = 0 if got else quiet + 1
    consumer.close()
    expected = {(f"c-{i}", a) for i in range(written // 3) for a in _AVD_ACTIONS}
    assert set(seen) == expected
    if _hides_aborted_transactions(kafka_settings):
        assert len(seen) == len(expected)
    # else the killed process's open transaction is visible too: what tells the
    # commits apart then is test_the_runner_commits_only_right_after_a_checkpoint


class _FakeWorker:
    def __init__(self, batches: list[Batch]):
        self.batches = batches
        self.finished = False

    def start(self, checkpoint: dict | None, partitions: dict) -> None:
        pass

    def next(self, timeout_s: float) -> Batch | None:
        batch = self.batches.pop(0)
        self.finished = not self.batches
        return batch

    def close(self) -> None:
        pass


class _FakeSink:
    transactional_id = "t"
    checkpoint_offset = None

    def __init__(self) -> None:
        self.log: list[tuple[str, object]] = []
        self.partitioner = KeyPartitioner({})

    def send_prepared(self, records: list) -> None:
        self.log.append(("send", records[0][3]))

    def commit(self, checkpoint: dict) -> None:
        self.log.append(("commit", checkpoint["input"]))


def test_the_runner_commits_only_right_after_a_checkpoint(tmp_path: Path) -> None:
    from connectors.parse_worker import WorkerRunner
    from connectors.pipeline import IngestStats, make_pipeline

    def batch(n: int, with_checkpoint: bool) -> Batch:
        cp = {"input": n, "state": {"s": n}} if with_checkpoint else None
        return Batch([(False, None, None, b"%d" % n)], 1, cp, IngestStats(read=n) if cp else None)

    # every batch is over the commit interval (0 s): commits wait for a checkpoint
    batches = [batch(1, True), batch(2, False), batch(3, False), batch(4, True), batch(5, True)]
    sink = _FakeSink()
    runner = WorkerRunner(
        make_pipeline(_settings(tmp_path), "vdi", "avd"),
        _FakeWorker(batches),  # type: ignore[arg-type]
        sink,  # type: ignore[arg-type]
        commit_interval_s=0.0,
    )
    stats = runner.run()
    assert sink.log == [
        ("send", b"1"), ("commit", 1),
        ("send", b"2"), ("send", b"3"), ("send", b"4"), ("commit", 4),
        ("send", b"5"), ("commit", 5),
        ("commit", 5),  # the final one (nothing new: an empty transaction)
    ]  # fmt: skip
    assert stats.read == 5


def test_a_process_with_threads_starts_the_worker_fresh_and_it_reads_the_same(
    tmp_path: Path,
) -> None:
    """With other threads running (a metrics server, a producer) forking is
    unsafe, so the worker is spawned; its spec must travel by pickle."""
    log = tmp_path / "adc.log"
    log.write_bytes(b"".join(_adc(i) for i in range(600)))
    quiet = threading.Event()
    other = threading.Thread(target=quiet.wait, daemon=True)
    other.start()
    try:
        settings = _settings(tmp_path)
        spec = WorkerSpec(settings, "vdi", "citrix-adc", "UTC", FileInput(log))
        worker = ParseWorker(spec)
        assert worker.process._popen.method == "spawn"  # type: ignore[attr-defined]
        try:
            worker.start(None, {settings.kafka.events_topic("vdi"): PARTS})
            batches = _drain(worker)
        finally:
            worker.close()
    finally:
        quiet.set()
        other.join()
    ids = [int(orjson.loads(v)["event"]["id"]) - 100000 for b in batches for *_, v in b.records]
    assert ids == list(range(600))
    assert batches[-1].checkpoint["input"]["offset"] == log.stat().st_size


def _env(tmp_path: Path, kafka_settings: KafkaSettings) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": str(kafka_settings.bootstrap_servers),
        "ZONEWATCH_KAFKA__TOPIC_PREFIX": kafka_settings.topic_prefix,
        "ZONEWATCH_KAFKA__PARTITIONS": str(kafka_settings.partitions),
        "ZONEWATCH_CONNECTORS__CHECKPOINT_DIR": str(tmp_path / "cp"),
        "ZONEWATCH_CONNECTORS__ZONES_FILE": str(ROOT / "rules/zones.yaml"),
        "ZONEWATCH_CONNECTORS__MAX_PAST_HORIZON_DAYS": "off",  # recorded days
    }


def _wait_for_ids(settings: KafkaSettings, n: int, timeout_s: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while len(ids := _committed_ids(settings, quiet_polls=2)) < n:
        assert time.monotonic() < deadline, f"{len(ids)} of {n} events arrived"
    return ids


@pytest.mark.integration
def test_stdin_goes_through_the_worker_and_a_quiet_pipe_still_delivers(
    tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    ensure_topics(kafka_settings, [kafka_settings.events_topic("vdi")])
    cmd = [sys.executable, "-m", "zonewatch", "--log-level", "warning", "ingest", "vdi",
           "--format", "citrix-adc", "-"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=_env(tmp_path, kafka_settings), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"".join(_adc(i) for i in range(300)))
        proc.stdin.flush()
        # the pipe stays open: the batch must leave the worker anyway
        assert sorted(_wait_for_ids(kafka_settings, 300)) == list(range(300))
        assert len(_children(proc.pid)) == 1, "stdin was not parsed in a worker"
        proc.stdin.write(b"".join(_adc(i) for i in range(300, 1000)) + b"garbage\n")
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert sorted(_committed_ids(kafka_settings)) == list(range(1000))


@pytest.mark.integration
def test_syslog_goes_through_the_worker_and_sigterm_sends_what_was_read(
    tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    import socket

    ensure_topics(kafka_settings, [kafka_settings.events_topic("vdi")])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "zonewatch", "--log-level", "warning", "ingest", "vdi",
           "--format", "citrix-adc", "--syslog", f"tcp://127.0.0.1:{port}"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=_env(tmp_path, kafka_settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while not _children(proc.pid):
            assert time.monotonic() < deadline and proc.poll() is None, "no parse worker"
            time.sleep(0.05)
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port))
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "the syslog port never opened"
                time.sleep(0.05)
        with conn:
            for i in range(0, 600, 50):  # a trickle, then a burst
                conn.sendall(b"".join(_adc(j) for j in range(i, i + 50)))
                time.sleep(0.02)
            assert sorted(_wait_for_ids(kafka_settings, 600)) == list(range(600))
            conn.sendall(b"".join(_adc(j) for j in range(600, 2000)))
            time.sleep(1.0)  # read by the worker; SIGTERM must not lose them
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert sorted(_committed_ids(kafka_settings)) == list(range(2000))
