"""Every command's common mistakes, run as a user runs them, against the
README's exit-code table: each mistake exits with the code of its row, says
so in one line, and shows no traceback. A row of the table without a
mistake here, or a command without one, fails too."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from conftest import ROOT
from zonewatch_cli import run_zonewatch

from zonewatch.app.broker import free_port
from zonewatch.app.cli import COMMANDS

# Rows a test cannot provoke on purpose: 1 is a bug, 130 an interrupt whose
# timing a test cannot pin to the moment Python handles it.
UNTESTABLE = {1, 130}

GOOD_RULE = """\
title: Curl to a paste site
id: 3b1a7c52-0000-4000-8000-00000000e001
logsource: {category: proxy}
detection:
  selection: {c-useragent|startswith: 'curl/', cs-host|endswith: 'pastebin.com'}
  condition: selection
level: high
tests:
  source: gateway
  match:
    - {"user_agent": {"original": "curl/8.4"}, "url": {"domain": "pastebin.com"}}
"""

FAILING_TEST_RULE = GOOD_RULE.replace("curl/8.4", "Mozilla/5.0").replace("e001", "e002")

BAD_RULE = """\
title: Broken modifier
id: 3b1a7c52-0000-4000-8000-00000000e003
logsource: {category: proxy}
detection:
  selection: {c-uri|nosuchmodifier: x}
  condition: selection
level: low
"""

FORTI = (
    'date=2026-11-26 time=11:{m:02d}:{s:02d} devname="city-fw01" devid="FG200FTK23004711" '
    'tz="+0900" logid="0000000013" type="traffic" subtype="forward" level="notice" vd="root" '
    'srcip=10.10.23.{h} srcport={p} srcintf="core" srcintfrole="lan" dstip=10.200.8.15 '
    'dstport=445 dstintf="lgwan" dstintfrole="lan" sessionid={p} proto=6 action="accept" '
    'policyid=77 policytype="policy" service="SMB" duration=3 sentbyte=100 rcvdbyte=200\n'
)


def readme_table() -> dict[int, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| (\d+) \| ([^|]+)\|", section, flags=re.M)
    return {int(code): meaning.strip() for code, meaning in rows}


@dataclass
class World:
    """Files the mistakes need, made once per module."""

    root: Path
    fw_log: Path = field(init=False)
    rules: Path = field(init=False)
    failing_rules: Path = field(init=False)
    bad_rules: Path = field(init=False)
    stale_zones: Path = field(init=False)
    store: Path = field(init=False)
    events: Path = field(init=False)

    def __post_init__(self) -> None:
        root = self.root
        self.fw_log = root / "fw.log"
        self.fw_log.write_text(
            "".join(FORTI.format(m=i // 60, s=i % 60, h=i % 250, p=40000 + i) for i in range(400))
        )
        self.rules = self._rules("good", GOOD_RULE)
        self.failing_rules = self._rules("failing", FAILING_TEST_RULE)
        self.bad_rules = self._rules("bad", BAD_RULE)
        # A policy whose generated/ folder is missing a rule: stale.
        policy = root / "policy"
        policy.mkdir()
        shutil.copy(ROOT / "rules" / "zones.yaml", policy / "zones.yaml")
        shutil.copytree(ROOT / "rules" / "generated", policy / "generated")
        next(iter(sorted((policy / "generated").glob("*.yml")))).unlink()
        self.stale_zones = policy / "zones.yaml"
        from correlator.store import AlertStore

        self.store = root / "alerts.duckdb"
        AlertStore(self.store).close()
        event = {
            "@timestamp": "2026-11-26T02:00:00Z",
            "event": {"dataset": "gateway"},
            "user_agent": {"original": "curl/8.4"},
            "url": {"domain": "pastebin.com"},
        }
        self.events = root / "events.ndjson"
        self.events.write_bytes(b"".join(orjson.dumps(event) + b"\n" for _ in range(3000)))

    def _rules(self, name: str, text: str) -> Path:
        folder = self.root / f"rules-{name}"
        folder.mkdir()
        (folder / "rule.yml").write_text(text)
        return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("mistakes"))


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


@dataclass(frozen=True)
class Mistake:
    command: str  # the COMMANDS entry it exercises
    what: str
    code: int
    args: str  # {root}, {fw_log}, {rules}, ... filled from World; {port}: a busy port
    env: dict[str, str] = field(default_factory=dict)
    says: str = ""  # a piece of the one-line message

    @property
    def id(self) -> str:
        return f"{self.command}: {self.what}"

    def argv(self, world: World, port: int) -> list[str]:
        names = {k: str(v) for k, v in vars(world).items()}
        return [arg.format(port=port, **names) for arg in self.args.split()]


DOWN = {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
DOWN_FAST = {**DOWN, "ZONEWATCH_KAFKA__CONNECT_TIMEOUT_S": "1"}
FW = "firewall --format fortigate"
CORRELATE = "correlate --rules {rules} --db"

MISTAKES = [
    Mistake("broker", "a port that is not a number", 2, "broker --port x"),
    Mistake("broker", "a busy port", 78, "broker --port {port}", says="in use"),
    Mistake("topics", "the broker down", 69, "topics", DOWN, "no Kafka broker"),
    Mistake("topics", "an invalid setting", 78, "topics", {"ZONEWATCH_KAFKA__PARTITIONS": "0"},
            "kafka.partitions"),
    Mistake("topics", "a blank group id", 78, "topics", {"ZONEWATCH_CORRELATOR__GROUP_ID": " "},
            "group id is empty"),
    Mistake("ingest", "a missing file", 2, f"ingest {FW} --file {{root}}/nope.log",
            says="no such file"),
    Mistake("ingest", "an unknown format", 2, "ingest firewall --format fortigat --file {fw_log}",
            says="unknown format"),
    Mistake("ingest", "no input", 2, f"ingest {FW}"),
    Mistake("ingest", "the broker down", 69, f"ingest {FW} --file {{fw_log}}", DOWN,
            "no Kafka broker"),
    Mistake("ingest", "a missing config file", 78,
            f"--config {{root}}/nope.yaml ingest {FW} --file {{fw_log}}", says="config file"),
    Mistake("parse", "a missing file", 2, "parse --source firewall {root}/nope.log"),
    Mistake("parse", "an unknown format", 2, "parse --source firewall --format nope {fw_log}",
            says="unknown format"),
    Mistake("parse", "an unknown source", 2, "parse --source router {fw_log}"),
    Mistake("parse", "the wrong format", 65, "parse --source firewall --format asa {fw_log}",
            says="Is --format right?"),
    Mistake("checkpoints", "reset without saying which", 2, "checkpoints reset"),
    Mistake("checkpoints", "an unknown subcommand", 2, "checkpoints rest"),
    Mistake("match", "a missing events file", 2, "match --rules {rules} {root}/nope.ndjson"),
    Mistake("match", "a raw vendor log", 65, "match --rules {rules} {fw_log}",
            says="zonewatch parse"),
    Mistake("match", "a missing rules folder", 2, "match --rules {root}/nope {events}"),
    Mistake("rules", "check: a missing path", 2, "rules check {root}/nope"),
    Mistake("rules", "check: a broken rule", 65, "rules check --no-validate {bad_rules}",
            says="rule error"),
    Mistake("rules", "test: a failing rule test", 65, "rules test {failing_rules}",
            says="rule test"),
    Mistake("rules", "generate --check: stale rules", 65,
            "rules generate --zones {stale_zones} --check", says="differ from"),
    Mistake("rules", "generate: a missing zones file", 2, "rules generate --zones {root}/no.yaml"),
    Mistake("correlate", "a missing rules folder", 2, "correlate --rules {root}/nope"),
    Mistake("correlate", "the broker down", 69, f"{CORRELATE} {{root}}/c.duckdb", DOWN_FAST,
            "waited 1s"),
    Mistake("correlate", "a busy metrics port", 78,
            f"{CORRELATE} {{root}}/c.duckdb --metrics-port {{port}}", DOWN_FAST, "--metrics-port"),
    Mistake("correlate", "a store path inside a file", 3, f"{CORRELATE} {{fw_log}}/c.duckdb",
            DOWN_FAST, "not a folder"),
    Mistake("query", "no store yet", 3, "query --db {root}/nope.duckdb SELECT",
            says="no alert store"),
    Mistake("query", "bad SQL", 2, "query --db {store} SELEC"),
    Mistake("query", "an unknown --format", 2, "query --db {store} --format xml alerts"),
    Mistake("hunt", "no store yet", 3, "hunt --rules {rules} --db {root}/nope.duckdb",
            says="no alert store"),
    Mistake("demo", "a workdir that is a file", 2, "demo --workdir {fw_log}"),
    Mistake("config", "an invalid setting", 78, "config show",
            {"ZONEWATCH_CORRELATOR__MAX_BATCH": "lots"}, "correlator.max_batch"),
    Mistake("config", "an unknown subcommand", 2, "config shw"),
    Mistake("triage", "an unknown status", 2, "triage abc --status done --db {store}"),
    Mistake("triage", "no store yet", 3, "triage abc --status closed --db {root}/nope.duckdb"),
    Mistake("triage", "an alert that is not there", 65,
            "triage nosuchalert --status closed --db {store}", says="no alert"),
    Mistake("report", "no store yet", 3, "report --db {root}/nope.duckdb -o {root}/r.html"),
    Mistake("console", "a busy port", 78, "console --db {store} --port {port}", says="in use"),
    Mistake("console", "a remote address without a token file", 78,
            "console --db {store} --host 0.0.0.0 --allow-remote", says="token"),
]  # fmt: skip


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.id)
def test_each_mistake_exits_with_the_code_of_its_row(
    mistake: Mistake, world: World, busy_port: int
) -> None:
    table = readme_table()
    assert mistake.code in table, f"exit code {mistake.code} is not in the README's table"
    done = run_zonewatch(*mistake.argv(world, busy_port), env=mistake.env)
    assert done.returncode == mistake.code, (
        f"{mistake.id}: README says {mistake.code} ({table[mistake.code]}), got "
        f"{done.returncode}\n{done.stderr[-2000:]}"
    )
    assert "Traceback" not in done.stderr
    assert "ERROR:kafka" not in done.stderr
    messages = [
        line
        for line in done.stderr.splitlines()
        if line.startswith(("zonewatch: error:", "Error:"))
    ]
    assert len(messages) == 1, done.stderr[-2000:]
    assert mistake.says in done.stderr, done.stderr[-2000:]


def test_every_row_and_every_command_has_a_mistake() -> None:
    codes = {m.code for m in MISTAKES}
    assert set(readme_table()) - UNTESTABLE - {0} <= codes
    assert set(COMMANDS) <= {m.command for m in MISTAKES}


@pytest.mark.parametrize(
    "argv",
    [
        ["parse", "--source", "firewall", "--format", "fortigate", "{fw_log}"],
        ["match", "--rules", "{rules}", "{events}"],
    ],
    ids=["parse", "match"],
)
def test_a_closed_pipe_exits_0_quietly(argv: list[str], world: World) -> None:
    """``zonewatch parse … | head -1``: the reader has what it wanted."""
    args = [a.format(fw_log=world.fw_log, rules=world.rules, events=world.events) for a in argv]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ZONEWATCH_", "KAFKA_"))}
    shell = f"{' '.join(map(_quote, [sys.executable, '-m', 'zonewatch', *args]))} | head -c 10"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell],
        env={**clean, "ZONEWATCH_LOG_JSON": "true"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(done.stdout) == 10
    assert "Broken pipe" not in done.stderr and "Exception ignored" not in done.stderr
    assert "Traceback" not in done.stderr


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
