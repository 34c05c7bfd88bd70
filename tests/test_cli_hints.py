"""Hints instead of noise: the command says what is wrong once, and what to run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
from conftest import ROOT
from zonewatch_cli import run_zonewatch

SQUID = (
    "1795000{i:03d}.{i:03d}    120 10.10.21.{h} TCP_TUNNEL/200 5120 CONNECT "
    "files.example.net:443 tanaka.h HIER_DIRECT/198.51.100.7 -\n"
)


def _zonewatch(*args: str) -> subprocess.CompletedProcess[str]:
    return run_zonewatch(*args)


def test_parse_with_the_wrong_format_prints_a_summary_not_every_line(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text("".join(SQUID.format(i=i, h=i % 250 + 1) for i in range(300)))
    done = _zonewatch("parse", "--source", "gateway", "--format", "zscaler", str(log))
    assert done.returncode == 65
    letters = [orjson.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    letters = [x for x in letters if "line" in x]
    assert [x["line"] for x in letters] == list(range(1, 21))  # the first 20, as they were
    [summary] = [line for line in done.stderr.splitlines() if line.startswith("zonewatch:")]
    assert "none of the 300 lines" in summary and "280 of them not shown" in summary
    assert "--list-formats" in summary and "--format auto" in summary


def test_parse_with_a_few_bad_lines_still_reports_each_of_them(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    lines = [SQUID.format(i=i, h=i % 250 + 1) for i in range(30)]
    lines[3] = lines[17] = "garbage\n"
    log.write_text("".join(lines))
    done = _zonewatch("parse", "--source", "gateway", "--format", "squid", str(log))
    assert done.returncode == 65
    letters = [orjson.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [x["line"] for x in letters if "line" in x] == [4, 18]
    assert "zonewatch: error" not in done.stderr
    assert len(done.stdout.splitlines()) == 28


def test_match_on_a_raw_vendor_log_suggests_parse_and_does_not_list_every_line(
    tmp_path: Path,
) -> None:
    log = tmp_path / "access.log"
    log.write_text("".join(SQUID.format(i=i, h=i % 250 + 1) for i in range(200)))
    done = _zonewatch("match", "--rules", str(ROOT / "rules"), str(log))
    assert done.returncode == 65
    skipped = [line for line in done.stderr.splitlines() if line.startswith("zonewatch: skipped")]
    assert len(skipped) == 5
    assert "... and 195 more" in done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("zonewatch: error:")
    assert f"zonewatch parse --source SOURCE {log} | zonewatch match" in error


def test_log_level_works_after_the_subcommand_too(tmp_path: Path) -> None:
    """A missing zones file is a warning: shown at info, hidden at error,
    wherever --log-level stands."""
    log = tmp_path / "access.log"
    log.write_text(SQUID.format(i=1, h=1))
    base = ("parse", "--source", "gateway", "--format", "squid", str(log))
    missing = ("--config", str(_config(tmp_path)))
    assert "no_zone_map" in _zonewatch(*missing, *base).stderr
    assert "no_zone_map" not in _zonewatch(*missing, "--log-level", "error", *base).stderr
    after = _zonewatch(*missing, *base, "--log-level", "error")
    assert after.returncode == 0, after.stderr
    assert "no_zone_map" not in after.stderr
    nested = _zonewatch(
        "rules", "check", "--no-validate", str(ROOT / "rules"), "--log-level", "debug"
    )
    assert nested.returncode == 0, nested.stderr


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "zonewatch.yaml"
    config.write_text(f"connectors:\n  zones_file: {tmp_path / 'no-zones.yaml'}\n")
    return config
