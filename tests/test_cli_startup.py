"""``zonewatch --help`` and every command's ``--help`` answer without loading the
heavy libraries (DuckDB, pyarrow, pySigma, Kafka, pydantic-settings): listing
commands imports none of them, and settings load only when a command runs."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from conftest import ROOT

from zonewatch.app.cli import COMMANDS, SUMMARIES, cli

HEAVY = ("duckdb", "pyarrow", "sigma", "kafka", "pydantic_settings", "structlog", "re2")

PROBE = """
import sys
from zonewatch.app.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("HEAVY", " ".join(heavy))
"""


def loaded_after(*argv: str) -> tuple[str, list[str]]:
    """(help text, heavy modules imported) of ``zonewatch ARGV`` in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    text, _, last = proc.stdout.rstrip("\n").rpartition("\n")
    assert last.startswith("HEAVY"), proc.stdout
    return text, last.split()[1:]


def test_zonewatch_help_lists_every_command_and_imports_none_of_them() -> None:
    text, heavy = loaded_after("--help")
    assert heavy == []
    for name in COMMANDS:
        assert f"  {name} " in text


@pytest.mark.parametrize(
    "argv",
    [
        [name, "--help"]
        for name in COMMANDS
        if not isinstance(cli.get_command(click.Context(cli), name), click.Group)
    ]
    + [["rules", "check", "--help"], ["rules", "generate", "--help"], ["config", "show", "--help"]],
    ids=" ".join,
)
def test_a_commands_help_loads_no_heavy_library(argv: list[str]) -> None:
    text, heavy = loaded_after(*argv)
    assert "Usage: " in text
    assert heavy == []


def test_match_still_loads_what_it_needs_when_it_runs(tmp_path: object) -> None:
    _, heavy = loaded_after("match", "--rules", "rules/generated", "/dev/null")
    assert "sigma" in heavy and "pydantic_settings" in heavy


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_summaries_are_the_commands_own_short_help(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    for limit in (30, 45, 70, 200):
        summary = click.Command(name, help=SUMMARIES[name]).get_short_help_str(limit)
        assert summary == command.get_short_help_str(limit)
