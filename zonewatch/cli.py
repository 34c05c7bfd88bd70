"""The ``zonewatch`` command. Subcommands live beside the code they drive and
are imported only when called, so ``zonewatch broker`` does not load pySigma.

Exit codes: 0 ok; 1 unexpected failure; 2 usage or bad query; 3 store
unavailable; 65 bad input data or rule; 69 broker unavailable; 78 bad config.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from zonewatch.errors import ZonewatchError

# name -> "module:attribute" of a click command or group
COMMANDS: dict[str, str] = {
    "broker": "zonewatch.broker_cli:broker",
    "topics": "zonewatch.broker_cli:topics",
    "ingest": "connectors.cli:ingest",
    "parse": "connectors.cli:parse",
    "checkpoints": "connectors.cli:checkpoints",
    "match": "correlator.detection.cli:match",
    "rules": "correlator.detection.cli:rules",
    "correlate": "correlator.cli:correlate",
    "query": "correlator.store.cli:query",
    "hunt": "correlator.store.cli:hunt",
    "demo": "zonewatch.demo:demo",
}


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
        return command


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
    configure_logging(
        log_level or settings.log_level,
        json=log_json if log_json is not None else settings.log_json,
    )
    ctx.obj = settings


def main(argv: list[str] | None = None) -> Any:
    try:
        return cli.main(args=argv, prog_name="zonewatch", standalone_mode=False)
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
