"""``zonewatch correlate``: the long-running consumer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from correlator.runtime import tune_process
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
    envvar="ZONEWATCH_TEAMS_URL",
    callback=teams_url_flag,
    show_envvar=True,
    help=(
        "Deprecated: shows the webhook URL in the process list. Set "
        "ZONEWATCH_TEAMS__SECRETS_FILE (a file holding the URL) or ZONEWATCH_TEAMS_URL."
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
    SIGHUP reloads the rules between batches: new correlation rules start,
    removed ones drop their state, unchanged ones keep theirs.
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
    with CorrelatorService(settings, teams_url=teams_url) as service:
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
