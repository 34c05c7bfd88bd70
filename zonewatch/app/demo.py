"""``zonewatch demo``: the whole pipeline on the bundled sample logs.

Starts the embedded broker (or uses KAFKA_BOOTSTRAP_SERVERS), runs the
connectors of the five sources over ``samples/``, runs the correlator until it has consumed
everything they produced, delivers the alerts to a local Teams-like receiver
(or ``--teams-url``), prints the alerts and a forensic query, and stops.
Everything is the production code path; only the inputs are files.
"""

from __future__ import annotations

import contextlib
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from zonewatch.options import teams_url_flag
from zonewatch.samples import ROOT, SAMPLES

if TYPE_CHECKING:
    from zonewatch.config import Settings

# Sorted by the time each alert became true (its last evidence), shown in JST.
ALERTS_QUERY = """\
SELECT CASE WHEN first_seen = last_seen
            THEN strftime(last_seen AT TIME ZONE 'Asia/Tokyo', '%H:%M:%S')
            ELSE strftime(first_seen AT TIME ZONE 'Asia/Tokyo', '%H:%M') || '-'
                 || strftime(last_seen AT TIME ZONE 'Asia/Tokyo', '%H:%M') END AS jst,
       level, type, rule_title, zone_crossing,
       (SELECT count(*) FROM alert_evidence e WHERE e.alert_id = alerts.id) AS evidence
FROM alerts ORDER BY last_seen, first_seen, rule_title
"""
# Levels listed one by one; the others are counted in one line under the table.
LISTED_LEVELS = ("low", "medium", "high", "critical")

FORENSIC_QUERY = """\
-- Which zone crossings did each user's alerts involve, and when?
SELECT coalesce(json_extract_string(e.event, '$.user.name'), '-') AS "user",
       a.zone_crossing AS crossing,
       count(DISTINCT a.id) AS alerts,
       strftime(min(a.first_seen) AT TIME ZONE 'Asia/Tokyo', '%H:%M') AS first_jst,
       strftime(max(a.last_seen) AT TIME ZONE 'Asia/Tokyo', '%H:%M') AS last_jst,
       string_agg(DISTINCT a.rule_title, '; ') AS rules
FROM alerts a JOIN alert_evidence e ON e.alert_id = a.id
GROUP BY ALL ORDER BY alerts DESC, "user"
"""


@contextlib.contextmanager
def _kafka(bootstrap: str | None, workdir: Path) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    from zonewatch.app.broker import EmbeddedBroker

    with EmbeddedBroker(log_file=workdir / "broker.log") as broker:
        yield broker.bootstrap


@contextlib.contextmanager
def _teams(url: str | None) -> Iterator[tuple[str, Any]]:
    if url:
        yield url, None
        return
    from correlator.alerting.teams_receiver import TeamsReceiver

    receiver = TeamsReceiver().start()
    try:
        yield receiver.url, receiver
    finally:
        receiver.stop()


def run_demo(
    settings: Settings,
    workdir: Path,
    teams_url: str | None = None,
    samples_dir: Path | None = None,
    echo: Any = click.echo,
) -> dict[str, Any]:
    """Run the demo; return figures (also used by the end-to-end test)."""
    from connectors.ingest import ingest_file
    from correlator.service import CorrelatorService

    samples_dir = samples_dir or ROOT
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    started = time.monotonic()
    result: dict[str, Any] = {"workdir": str(workdir)}
    configured = settings.teams.webhook_url
    teams_url = teams_url or (configured.get_secret_value() if configured else None)
    with (
        _kafka(settings.kafka.bootstrap_servers, workdir) as bootstrap,
        _teams(teams_url) as (
            url,
            receiver,
        ),
    ):
        run_id = uuid.uuid4().hex[:8]
        kafka: dict[str, Any] = {"bootstrap_servers": bootstrap}
        external = bool(settings.kafka.bootstrap_servers)
        if external:  # a shared cluster: keep runs apart
            kafka["topic_prefix"] = f"zonewatch-demo-{run_id}"
        # The demo replays a recorded day: no past horizon, or the day would
        # be dead-lettered once it is a year old.
        settings = settings.updated(
            kafka=kafka,
            teams={"webhook_url": url},
            correlator={
                "rules": [ROOT / "rules"],
                "db_path": workdir / "zonewatch.duckdb",
                "group_id": f"zonewatch-demo-{run_id}",
                "max_past_horizon_days": None,
            },
            connectors={
                "zones_file": ROOT / "rules" / "zones.yaml",
                "checkpoint_dir": workdir / "checkpoints",
                "max_past_horizon_days": None,
            },
        )
        kind = "external" if external else "embedded tansu"
        echo(f"broker   {bootstrap} ({kind})")
        produced = 0
        for sample in SAMPLES:
            stats = ingest_file(settings, sample.source, sample.format, samples_dir / sample.path)
            produced += stats.produced
            echo(
                f"ingest   {sample.source:<8} {sample.format:<10} {stats.read:>4} lines -> "
                f"{stats.produced:>4} events, {stats.dead_lettered} dead-lettered"
            )
        result["produced"] = produced

        with CorrelatorService(settings) as service:
            service.start()
            run = service.run(
                until=lambda s: s.consumed >= produced, idle_timeout_s=15, end_of_input=True
            )
            echo(f"correlate {run.consumed} events -> {run.new_alerts} alerts")
            if service.sender is not None:
                service.sender.drain(timeout_s=30)
            columns, rows = service.store.query(ALERTS_QUERY)
            _print_alerts(columns, rows, echo)
            fcols, frows = service.store.query(FORENSIC_QUERY)
            _print_table("Forensic query: alerts per user and zone crossing", fcols, frows, echo)
            echo(FORENSIC_QUERY.rstrip())
            result["alerts"] = [dict(zip(columns, r, strict=True)) for r in rows]
            result["sources_with_alerts"] = sorted(
                {
                    r[0]
                    for r in service.store.query(
                        "SELECT DISTINCT json_extract_string(event, '$.event.dataset') "
                        "FROM alert_evidence"
                    )[1]
                    if r[0]
                }
            )
        if receiver is not None:
            result["teams_cards"] = len(receiver.received)
            echo(f"teams    {len(receiver.received)} cards received by the local Teams receiver")
        result["db"] = str(settings.correlator.db_path)
    from console.cli import write_report_file

    report = workdir / "report.html"
    write_report_file(settings, Path(result["db"]), report)
    result["report"] = str(report)
    result["seconds"] = round(time.monotonic() - started, 1)
    echo(f"done in {result['seconds']} s; alerts are in {result['db']}")
    echo(f"report   {report} (one HTML file, opens offline)")
    sql = "SELECT rule_title, count(*) FROM alerts GROUP BY 1"
    echo(f'try: zonewatch query --db {result["db"]} "{sql}"')
    echo(
        f"console: zonewatch console --db {result['db']}   "
        f"(http://127.0.0.1:8765/; sign in with the token it writes to "
        f"{result['db']}.console-token)"
    )
    return result


def _print_alerts(columns: list[str], rows: list[tuple[Any, ...]], echo: Any) -> None:
    """The alerts table; informational alerts are summarized so they do not bury the rest."""
    level = columns.index("level")
    listed = [r for r in rows if r[level] in LISTED_LEVELS]
    _print_table(f"Alerts ({len(rows)})", columns, listed, echo)
    quiet: dict[str, int] = {}
    for row in rows:
        if row[level] not in LISTED_LEVELS:
            title = row[columns.index("rule_title")]
            quiet[title] = quiet.get(title, 0) + 1
    if quiet:
        summary = "; ".join(f"{title} x{n}" for title, n in sorted(quiet.items()))
        echo(f"         + {sum(quiet.values())} informational alert(s): {summary}")
    by_level = {lv: sum(1 for r in rows if r[level] == lv) for lv in LISTED_LEVELS}
    echo(
        "         "
        + ", ".join(f"{n} {lv}" for lv, n in reversed(by_level.items()) if n)
        + f" -- from {len({r[columns.index('rule_title')] for r in rows})} rules"
    )


def _print_table(title: str, columns: list[str], rows: list[tuple[Any, ...]], echo: Any) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for column in columns:
        # Titles and times read best on one line; long lists may wrap.
        keep = column in ("jst", "level", "type", "evidence")
        table.add_column(
            "ev" if column == "evidence" else column,
            overflow="fold",
            no_wrap=keep,
            ratio=3 if column in ("rule_title", "rules") else None,
        )
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console = Console(width=max(132, shutil.get_terminal_size().columns))
    with console.capture() as capture:
        console.print(table)
    echo(capture.get().rstrip())


@click.command()
@click.option(
    "--teams-url",
    callback=teams_url_flag,
    help=(
        "Post to this Teams webhook instead of the local receiver (deprecated: set "
        "ZONEWATCH_TEAMS__WEBHOOK_URL_FILE or ZONEWATCH_TEAMS_URL; settings.teams.webhook_url)."
    ),
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-out"),
    show_default=True,
    help="Where the DuckDB file and checkpoints go (recreated).",
)
@click.pass_obj
def demo(settings: Settings, teams_url: str | None, workdir: Path) -> None:
    """Run the whole pipeline on the bundled sample logs and print what it found."""
    result = run_demo(settings, workdir, teams_url=teams_url)
    if not result.get("alerts"):
        raise click.ClickException("the demo produced no alerts; see the log lines above")
