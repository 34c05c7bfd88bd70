"""The ``zonewatch`` command. Subcommands live beside the code they drive and
are imported only when called, so ``zonewatch broker`` does not load pySigma.

Exit codes (README, "Exit codes"; tests/test_exit_codes.py runs each row):
0 ok, also when the reader of the output went away (``| head -1``);
1 unexpected failure (a bug); 2 usage (unknown option or value, a file
named on the command line that does not exist, a bad query); 3 store
unavailable; 65 bad input data or rule (incl. failing rule tests and stale
generated rules); 69 broker unavailable; 78 bad configuration (incl. a port
in use); 130 interrupted.
"""

from __future__ import annotations

import importlib
import os
import sys
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


class _OutputClosed(Exception):
    """The reader of stdout went away (``zonewatch parse ... | head -1``)."""


def _late_log_level(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """``--log-level`` given after the subcommand: applied once it is parsed."""
    if value:
        from zonewatch.logs import configure_logging

        configure_logging(value, json=ctx.find_root().meta.get("zonewatch.log_json"))


def _accept_log_level(command: click.Command) -> click.Command:
    """Let ``--log-level`` follow the subcommand too (``zonewatch parse ... --log-level
    debug``), on every command and subcommand."""
    if not any(p.name == "late_log_level" for p in command.params):
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
    from pathlib import Path

    from zonewatch.config import load_settings
    from zonewatch.logs import configure_logging

    settings = load_settings(Path(config_file) if config_file else None)
    json = log_json if log_json is not None else settings.log_json
    ctx.meta["zonewatch.log_json"] = json
    configure_logging(log_level or settings.log_level, json=json)
    ctx.obj = settings


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
