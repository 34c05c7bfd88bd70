"""``zonewatch correlate``: the long-running consumer; ``zonewatch hunt``: the
same loop over the events archive."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from correlator.runtime import tune_process
from zonewatch.errors import StoreError
from zonewatch.options import teams_url_flag

if TYPE_CHECKING:
    from zonewatch.config import Settings


@click.command()
@click.option(
    "--rules",
    "rules",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Sigma rule file or folder (repeatable). Default: settings (rules/).",
)
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="DuckDB alert store file. Default: settings (var/zonewatch.duckdb).",
)
@click.option("--group-id", help="Kafka consumer group; processes sharing it split the work.")
@click.option("--pipeline", help="Field mapping pipeline for SigmaHQ rules: ecs (default) or none.")
@click.option(
    "--placeholders",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML mapping placeholder name -> values, for rules using |expand. "
    "Default: settings (correlator.placeholders_file).",
)
@click.option("--metrics-port", type=int, help="Serve /metrics and /healthz on this loopback port.")
@click.option(
    "--teams-url",
    callback=teams_url_flag,
    help=(
        "Deprecated: shows the webhook URL in the process list. Set "
        "ZONEWATCH_TEAMS__SECRETS_FILE (a file holding the URL) or ZONEWATCH_TEAMS_URL "
        "(settings.teams.webhook_url)."
    ),
)
@click.option(
    "--idle-exit",
    type=float,
    default=None,
    help=(
        "Exit after this many seconds without new events, counted from the"
        " partition assignment when nothing arrives at all (batch runs, demos)."
    ),
)
@click.option(
    "--scale-out",
    is_flag=True,
    default=None,
    help=(
        "Share correlation with the other members of the group: hits are re-keyed by"
        " correlation group through Kafka and state moves with its shard."
    ),
)
@click.pass_obj
def correlate(
    settings: Settings,
    rules: tuple[Path, ...],
    db_path: Path | None,
    group_id: str | None,
    pipeline: str | None,
    placeholders: Path | None,
    metrics_port: int | None,
    teams_url: str | None,
    idle_exit: float | None,
    scale_out: bool | None,
) -> None:
    """Consume normalized events from Kafka, match Sigma rules and correlations,
    store alerts in DuckDB, send them to Teams, then commit offsets.

    SIGTERM or Ctrl-C finishes the current batch, checkpoints it and exits 0.
    A saved rule edit (or SIGHUP) reloads the rules between batches: new
    correlation rules start, removed ones drop their state, unchanged ones
    keep theirs; a broken edit is refused and the running rules stay.
    """
    from correlator.service import CorrelatorService

    updates: dict[str, object] = {}
    if rules:
        updates["rules"] = list(rules)
    if db_path:
        updates["db_path"] = db_path
    if group_id:
        updates["group_id"] = group_id
    if pipeline:
        updates["pipeline"] = pipeline
    if placeholders:
        updates["placeholders_file"] = placeholders
    if metrics_port is not None:
        updates["metrics_port"] = metrics_port
    if scale_out:
        updates["scale_out"] = True
    if updates:
        settings = settings.updated(correlator=updates)
    if teams_url:
        settings = settings.updated(teams={"webhook_url": teams_url})
    with CorrelatorService(settings) as service:
        service.start()
        tune_process()
        stats = service.run(idle_timeout_s=idle_exit, install_signal_handlers=True)
    from zonewatch.logs import get_logger

    get_logger(__name__).info(
        "correlator_stopped",
        consumed=stats.consumed,
        alerts=stats.new_alerts,
        dead_letters=stats.dead_letters,
    )


@click.command()
@click.option(
    "--rules",
    "rule_paths",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Rule file or folder (repeatable).",
)
@click.option("--db", type=click.Path(dir_okay=False), help="Alert store file (default: settings).")
@click.option("--since", help="Hunt events from this time (ISO, JST if no offset, or 24h, 7d).")
@click.option("--until", help="Hunt events before this time.")
@click.option("--pipeline", default=None, help="Processing pipeline (default: settings).")
@click.option(
    "--placeholders",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML mapping placeholder name -> values, for rules using |expand "
    "(default: settings, correlator.placeholders_file).",
)
@click.option("--batch", "batch_size", type=int, default=5000, show_default=True)
@click.pass_context
def hunt(
    ctx: click.Context,
    rule_paths: tuple[Path, ...],
    db: str | None,
    since: str | None,
    until: str | None,
    pipeline: str | None,
    placeholders: Path | None,
    batch_size: int,
) -> None:
    """Run rules over the events archive; store the hits as alerts marked 'hunt'.

    Uses the streaming engines (detection and correlation) over archived
    events in time order. Needs the store to itself: stop the correlator, or
    run the hunt against a copy of the store file.
    """
    from correlator.hunt import run_hunt
    from correlator.store.cli import db_path
    from correlator.store.timerange import time_params

    settings = ctx.obj
    window = time_params(since, until)
    path = db_path(ctx, db)
    if not path.exists():  # a hunt over a store created empty would find nothing
        raise StoreError(f"no alert store at {path}: run `zonewatch correlate` first or pass --db")
    result = run_hunt(
        path,
        list(rule_paths),
        since=window["since"],
        until=window["until"],
        pipeline=pipeline,
        placeholders=placeholders,
        settings=settings,
        batch_size=batch_size,
        progress=sys.stderr.isatty(),
    )
    click.echo(
        f"hunted {result.events} events with {result.rules} rules: "
        f"{result.alerts} hits, {result.new_alerts} new alerts stored (origin 'hunt')"
    )
