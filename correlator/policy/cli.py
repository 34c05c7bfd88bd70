"""``zonewatch rules generate``: the flow matrix as Sigma rules."""

from __future__ import annotations

import os
from pathlib import Path

import click

from zonewatch.errors import ZonewatchError


class GeneratedRulesStale(ZonewatchError):
    """``--check`` found generated rules that differ from the policy (stale
    rules are bad rules: 65)."""

    exit_code = 65


def _display(path: Path) -> str:
    """The policy path as rules should name it: relative to the working
    directory when inside it, so output does not depend on the checkout."""
    try:
        return Path(os.path.relpath(path.resolve(), Path.cwd())).as_posix()
    except ValueError:  # another drive on Windows
        return path.as_posix()


@click.command()
@click.option(
    "--zones",
    "zones_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=Path("rules/zones.yaml"),
    show_default=True,
    help="The zone policy with the allowed-flow matrix.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the generated rules (default: generated/ beside the zones file).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 65 when the folder differs from what the policy generates.",
)
def generate(zones_file: Path, out: Path | None, check: bool) -> None:
    """Write a Sigma rule for every forbidden zone crossing of the flow matrix.

    One rule per ordered zone pair that some traffic may not take: it fires
    when the firewall allows traffic of that crossing that no flow covers.
    Ids derive from the crossing, so regenerating keeps them. Files of an
    earlier generation that the policy no longer needs are deleted.
    """
    from correlator.policy.files import generate_files, stale_files, write_files
    from zonewatch.zones import load_zone_map

    zone_map = load_zone_map(zones_file)
    out = out if out is not None else zones_file.parent / "generated"
    files = generate_files(zone_map.policy, _display(zones_file))
    if check:
        stale = stale_files(out, files)
        if stale:
            for name in stale:
                click.echo(f"stale: {out / name}", err=True)
            raise GeneratedRulesStale(
                f"{len(stale)} generated rule file(s) in {out} differ from {zones_file}; "
                f"run: zonewatch rules generate --zones {zones_file} --out {out}"
            )
        click.echo(f"{len(files)} generated rule file(s) in {out} match {zones_file}")
        return
    written, removed = write_files(out, files)
    for name in written:
        click.echo(f"wrote   {out / name}")
    for name in removed:
        click.echo(f"removed {out / name}")
    click.echo(
        f"{len(files)} rule file(s) for {zones_file}: {len(written)} written, "
        f"{len(removed)} removed, {len(files) - len(written)} unchanged"
    )
