"""`zonewatch rules check` needs no network (issue 20, point 8): pySigma's
ATT&CK and D3FEND tag validators downloaded MITRE data at run time (and were
skipped offline); zonewatch ships the names they need."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest
import structlog

from tests.conftest import ROOT
from zonewatch.app.cli import main

TAGGED = """\
title: Direct SMB From a Core Laptop Into LGWAN
id: {id}
status: test
logsource:
  product: zonewatch
  service: firewall
detection:
  selection:
    zone.crossing: core->lgwan
    destination.port: 445
  condition: selection
level: high
tags:
  - attack.lateral-movement
  - attack.t1021.002
  - attack.g0016
  - attack.s0002
  - attack.m1030
  - d3fend.d3-nta
  - attack.t9999
  - d3fend.d3-not-a-technique
"""


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every attempt to reach another host is refused and recorded."""
    attempts: list[str] = []

    def refuse(what: str):  # type: ignore[no-untyped-def]
        def call(*args, **kwargs):  # type: ignore[no-untyped-def]
            attempts.append(f"{what}{args[:2]!r}")
            raise OSError(f"network access during rules check: {what}")

        return call

    real_connect = socket.socket.connect

    def connect(self: socket.socket, address):  # type: ignore[no-untyped-def]
        if self.family == socket.AF_UNIX:
            return real_connect(self, address)
        return refuse("connect")(address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    return attempts


def rules_check(capsys: pytest.CaptureFixture[str], *paths: Path) -> tuple[int, str]:
    capsys.readouterr()
    try:
        main(["rules", "check", *map(str, paths)])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        structlog.reset_defaults()
    return code, capsys.readouterr().err


def test_the_rule_pack_checks_without_any_network(no_network: list[str], capsys) -> None:
    code, err = rules_check(capsys, ROOT / "rules")
    assert code == 0, err
    assert "skipped" not in err
    assert no_network == []


def test_attack_and_d3fend_tags_are_checked_against_the_shipped_names(
    no_network: list[str], capsys, tmp_path: Path
) -> None:
    rule = tmp_path / "net_core_to_lgwan_smb.yml"
    rule.write_text(TAGGED.format(id=uuid.uuid4()))
    code, err = rules_check(capsys, rule)
    assert code == 0, err
    flagged = [line for line in err.splitlines() if "Invalid MITRE" in line]
    assert len(flagged) == 2, err
    assert "Invalid MITRE ATT&CK tagging (attacktag)" in flagged[0] + flagged[1]
    assert "Invalid MITRE D3FEND tagging (d3_fendtag)" in flagged[0] + flagged[1]
    assert "skipped" not in err
    assert no_network == []
