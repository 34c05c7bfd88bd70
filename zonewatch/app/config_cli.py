"""``zonewatch config show [--defaults]`` and ``zonewatch config reference``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from zonewatch.config import Settings


@click.group()
def config() -> None:
    """Show the effective settings, or the settings reference (docs/settings.md)."""


@config.command()
@click.option("--defaults", is_flag=True, help="Show the defaults, ignoring environment and file.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: setting -> value, source.")
@click.pass_context
def show(ctx: click.Context, defaults: bool, as_json: bool) -> None:
    """Print every setting with its value and where it comes from (default,
    env VAR, file PATH). Secrets are masked. Command options (e.g.
    `correlate --db`) are not included: they win over everything shown."""
    import orjson

    from zonewatch.settings_doc import effective
    from zonewatch.settings_sources import config_file_path

    settings: Settings = ctx.obj
    root = ctx.find_root().params.get("config_file") or config_file_path()
    rows = effective(None if defaults else settings, Path(root) if root and not defaults else None)
    if as_json:
        doc = {name: {"value": value, "source": source} for name, value, source in rows}
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    width = max(len(name) for name, _, _ in rows)
    value_width = min(40, max(len(value) for _, value, _ in rows))
    for name, value, source in rows:
        click.echo(f"{name:<{width}}  {value:<{value_width}}  {source}")


@config.command()
def reference() -> None:
    """Print the settings reference as Markdown (docs/settings.md is this output)."""
    from zonewatch.settings_doc import reference_markdown

    click.echo(reference_markdown(), nl=False)
