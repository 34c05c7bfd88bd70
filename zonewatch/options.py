"""Click parameter callbacks shared by several commands (light: imported at start-up)."""

from __future__ import annotations

import click
from click.core import ParameterSource


def teams_url_flag(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Click callback of ``--teams-url``: still works, but given on the command
    line the URL (the webhook's only secret) shows in the process list."""
    if value and ctx.get_parameter_source(str(param.name)) == ParameterSource.COMMANDLINE:
        click.echo(
            "zonewatch: warning: --teams-url is deprecated: the webhook URL is a secret and "
            "the command line shows in the process list. Put the URL in a file readable only "
            "by this user and set ZONEWATCH_TEAMS__SECRETS_FILE to its path, or set "
            "ZONEWATCH_TEAMS_URL in the environment.",
            err=True,
        )
    return value
