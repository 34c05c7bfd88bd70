"""The ``zonewatch`` command. Subcommands live beside the code they drive and
are imported only when called, so ``zonewatch broker`` does not load pySigma;
``zonewatch --help`` imports none of them (``SUMMARIES`` holds their one-line
help), and settings are loaded when a command runs, not for its ``--help``.

Exit codes (README, "Exit codes"; tests/test_exit_codes.py runs each row):
0 ok, also when the reader of the output went away (``| head -1``);
1 unexpected failure (a bug); 2 usage (unknown option or value, a file
named on the command line that does not exist, a bad query); 3 store
unavailable; 65 bad input data or rule (incl. failing rule tests and stale
generated rules); 69 broker unavailable; 78 bad configuration (incl. a port
in use); 130 interrupted.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from zonewatch.errors import ZonewatchError

# name -> "module:attribute" of a click command or group
COMMANDS: dict[str, str] = {
    "broker": "zonewatch.app.broker_cli:broker",
    "topics": "zonewatch.app.broker_cli:topics",
    "ingest": "connectors.cli:ingest",
    "parse": "connectors.cli:parse",
    "checkpoints": "connectors.cli:checkpoints",
    "match": "correlator.detection.cli:match",
    "rules": "correlator.detection.cli:rules",
    "correlate": "correlator.cli:correlate",
    "query": "correlator.store.cli:query",
    "hunt": "correlator.cli:hunt",
    "triage": "correlator.store.cli:triage",
    "console": "console.cli:console",
    "report": "console.cli:report",
    "demo": "zonewatch.app.demo:demo",
    "config": "zonewatch.app.config_cli:config",
}

# name -> the command's one-line help, for ``zonewatch --help`` without importing
# every command (tests/test_cli_startup.py checks it against the commands).
SUMMARIES: dict[str, str] = {
    "broker": "Run the embedded Kafka-compatible broker (tansu, memory storage) in the foreground.",
    "topics": "Create zonewatch's topics on the configured cluster (idempotent).",
    "ingest": "Stream SOURCE's logs into Kafka (topic zonewatch.events.SOURCE).",
    "parse": "Print normalized events of each FILE (or - for stdin) as NDJSON, without Kafka.",
    "checkpoints": "List or reset the connectors' input checkpoints (where a file was read up to).",
    "match": "Match NDJSON EVENTS (a file or - for stdin) against Sigma rules, offline.",
    "rules": "Check and test Sigma rules.",
    "correlate": (
        "Consume normalized events from Kafka, match Sigma rules and correlations, store "
        "alerts in DuckDB, send them to Teams, then commit offsets."
    ),
    "query": "Run read-only SQL, or a saved query by name, against the alert store.",
    "hunt": "Run rules over the events archive; store the hits as alerts marked 'hunt'.",
    "triage": (
        "Set an alert's triage status (new, acknowledged, closed, false_positive), with a "
        "note and an assignee; every change is kept in triage_history."
    ),
    "console": (
        "Serve the analyst console: zone matrix, alerts, alert detail and triage, entity "
        "timelines, rule health."
    ),
    "report": (
        "Write one self-contained HTML report (opens offline, makes no network request): "
        "zone matrix, alerts per day and level, top rules, top users and devices, and "
        "every alert with its status."
    ),
    "demo": "Run the whole pipeline on the bundled sample logs and print what it found.",
    "config": "Show the effective settings, or the settings reference (docs/settings.md).",
}


class _OutputClosed(Exception):
    """The reader of stdout went away (``zonewatch parse ... | head -1``)."""


def _late_log_level(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """``--log-level`` given after the subcommand: applied with the settings."""
    if value:
        ctx.find_root().meta["zonewatch.late_log_level"] = value


def _load_settings(ctx: click.Context) -> None:
    """Settings and logging, once, before a command runs (its ``--help`` needs neither).

    Every context of the chain gets the settings as ``obj``: a context copies
    its parent's ``obj`` when it is made, which is before this runs.
    """
    root = ctx.find_root()
    if "zonewatch.settings" not in root.meta:
        from pathlib import Path

        from zonewatch.config import load_settings
        from zonewatch.logs import configure_logging

        config_file, log_level, log_json = root.meta["zonewatch.options"]
        settings = load_settings(Path(config_file) if config_file else None)
        json = log_json if log_json is not None else settings.log_json
        level = root.meta.get("zonewatch.late_log_level") or log_level or settings.log_level
        configure_logging(level, json=json)
        root.meta["zonewatch.settings"] = settings
    node: click.Context | None = ctx
    while node is not None:
        node.obj = root.meta["zonewatch.settings"]
        node = node.parent


def _with_settings(callback: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        _load_settings(click.get_current_context())
        return callback(*args, **kwargs)

    return run


def _accept_log_level(command: click.Command) -> click.Command:
    """Let ``--log-level`` follow the subcommand too (``zonewatch parse ... --log-level
    debug``), on every command and subcommand; load the settings before each runs."""
    if not any(p.name == "late_log_level" for p in command.params):
        if command.callback is not None and not isinstance(command, click.Group):
            command.callback = _with_settings(command.callback)
        command.params.append(
            click.Option(
                ["--log-level", "late_log_level"],
                expose_value=False,
                is_eager=True,
                callback=_late_log_level,
                help="debug, info, warning, error (also accepted before the command).",
            )
        )
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _accept_log_level(sub)
    return command


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from ``SUMMARIES``, as click lays it out, importing nothing."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))
        rows = [(n, click.Command(n, help=SUMMARIES[n]).get_short_help_str(limit)) for n in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                return None  # that part of zonewatch is not installed
            raise
        command: click.Command = getattr(module, attr)
        return _accept_log_level(command)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()
            return result
        except BrokenPipeError as exc:
            raise _OutputClosed() from exc


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="zonewatch")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="ZONEWATCH_CONFIG",
    help="YAML or TOML settings file (environment ZONEWATCH_* wins over it).",
)
@click.option("--log-level", default=None, help="debug, info, warning, error")
@click.option(
    "--log-json/--log-pretty",
    default=None,
    help="Log format; default JSON unless stderr is a terminal.",
)
@click.pass_context
def cli(
    ctx: click.Context, config_file: str | None, log_level: str | None, log_json: bool | None
) -> None:
    """zonewatch: prove that nothing crosses a zone boundary except by allowed paths.

    Connectors stream Intune, gateway, firewall and VDI logs into Kafka; the
    correlator matches Sigma rules and correlations, stores alerts in DuckDB
    and posts them to Microsoft Teams.
    """
    # Loaded when the command runs (``_load_settings``), so --help stays quick.
    ctx.meta["zonewatch.options"] = (config_file, log_level, log_json)


def main(argv: list[str] | None = None) -> Any:
    try:
        return cli.main(args=argv, prog_name="zonewatch", standalone_mode=False)
    except _OutputClosed:
        # Not an error: the reader has what it wanted. Point stdout at
        # /dev/null so the interpreter's final flush stays quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except ZonewatchError as exc:
        click.echo(f"zonewatch: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
