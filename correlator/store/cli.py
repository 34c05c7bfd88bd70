"""``zonewatch query`` and ``zonewatch hunt``: forensic SQL over the alert store.

``query`` sends SQL to the running correlator's query endpoint when there is
one and otherwise opens the store file read-only. Exit codes: 0 ok, 2 bad or
refused SQL, 3 store unavailable.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from zonewatch.errors import QueryError

if TYPE_CHECKING:
    import pyarrow as pa

    from correlator.store.limits import QueryLimits

_EPILOG = """\b
Examples:
  zonewatch query "SELECT rule_title, count(*) FROM alerts GROUP BY 1"
  zonewatch query user-timeline --param user=tanaka@city.example.lg.jp --since 7d
  zonewatch query alert-evidence --param alert_id=3f2a9c01 --format jsonl
  zonewatch query user-timeline --param user=tanaka --timeline --format csv --out t.csv
  zonewatch query recent-alerts --format parquet --out alerts.parquet
  zonewatch query --list

\b
Tables: alerts, alert_evidence, events (archive), rules, outbox,
consumer_offsets, state. Queries are read-only: writes, COPY, ATTACH,
INSTALL and file or network access are refused.
"""


def db_path(ctx: click.Context, db: str | None) -> Path:
    if db:
        return Path(db)
    settings = ctx.obj
    if settings is not None:
        return Path(settings.correlator.db_path)
    return Path("var/zonewatch.duckdb")


def run_query(
    db: Path,
    sql: str,
    params: dict[str, Any] | None,
    timeout_s: float,
    limits: QueryLimits | None = None,
) -> pa.Table:
    """Through the running correlator if it serves ``db`` (its limits apply),
    else on the file read-only with ``limits``."""
    from correlator.store.alert_store import AlertStore
    from correlator.store.limits import QueryLimits
    from correlator.store.server import query_endpoint

    limits = limits or QueryLimits()
    limits.timeout(timeout_s)  # a usage error before anything is opened
    table = query_endpoint(db, sql, params, timeout_s)
    if table is not None:
        return table
    with AlertStore(db, read_only=True, query_limits=limits) as store:
        return store.query_arrow(sql, params, timeout_s)


def _parse_params(values: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise QueryError(f"--param {item!r}: write it as name=value")
        params[name.strip()] = value
    return params


def _list_saved(extra_dirs: tuple[Path, ...]) -> None:
    from correlator.store.saved import saved_queries

    for query in saved_queries(extra_dirs).values():
        click.echo(f"{query.name}\n    {query.description}")
        for p in query.params:
            how = "required" if p.required else f"default {p.default}"
            click.echo(f"    --param {p.name}=...  ({how}) {p.doc}")
        click.echo(f"    [{query.path}]")


@click.command(epilog=_EPILOG)
@click.argument("sql_or_name", required=False)
@click.option("--db", type=click.Path(dir_okay=False), help="Alert store file (default: settings).")
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["auto", "table", "csv", "json", "jsonl", "parquet"]),
    default="auto",
    show_default=True,
    help="auto: a table on a terminal, CSV when piped or written to --out.",
)
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write here.")
@click.option("--param", "-p", "param_values", multiple=True, help="name=value for $name.")
@click.option(
    "--since", help="Lower time bound for $since: ISO time/date (JST if no offset) or 24h, 7d."
)
@click.option("--until", help="Upper time bound for $until (exclusive).")
@click.option(
    "--timeline", is_flag=True, help="Timesketch fields first: message, datetime, timestamp_desc."
)
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds; the correlator's correlator.query_max_timeout_s caps it.",
)
@click.option(
    "--sql-file",
    type=click.File("r", encoding="utf-8"),
    help="Read the SQL from a file ('-' = stdin).",
)
@click.option(
    "--queries-dir",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Extra folder of saved .sql queries (besides settings: correlator.queries_dir).",
)
@click.option("--list", "list_saved", is_flag=True, help="List saved queries and their parameters.")
@click.pass_context
def query(
    ctx: click.Context,
    sql_or_name: str | None,
    db: str | None,
    fmt: str,
    out: Path | None,
    param_values: tuple[str, ...],
    since: str | None,
    until: str | None,
    timeline: bool,
    timeout_s: float,
    sql_file: Any,
    queries_dir: tuple[Path, ...],
    list_saved: bool,
) -> None:
    """Run read-only SQL, or a saved query by name, against the alert store."""
    from correlator.store.output import to_timeline, write_result
    from correlator.store.saved import looks_like_name, referenced_params, saved_queries
    from correlator.store.timerange import time_params

    configured = ctx.obj.correlator.queries_dir if ctx.obj is not None else None
    queries_dir = (*([configured] if configured else []), *queries_dir)
    if list_saved:
        _list_saved(queries_dir)
        return
    if sql_file is not None:
        sql_or_name = sql_file.read()
    if not sql_or_name:
        raise click.UsageError("give SQL, a saved query name (see --list), or --sql-file")
    given = _parse_params(param_values)
    window = time_params(since, until)
    title = None
    saved = saved_queries(queries_dir) if looks_like_name(sql_or_name) else {}
    if sql_or_name in saved:
        chosen = saved[sql_or_name]
        title = chosen.name
        sql = chosen.sql
        params = chosen.bind({**{k: v for k, v in window.items()}, **given})
    elif looks_like_name(sql_or_name):
        names = ", ".join(sorted(saved_queries(queries_dir)))
        raise QueryError(f"no saved query named {sql_or_name!r}; saved queries: {names}")
    else:
        sql = sql_or_name
        used = referenced_params(sql)
        for bound, flag in (("since", since), ("until", until)):
            if flag and bound not in used:
                raise QueryError(
                    f"--{bound} sets $${bound}; reference it in the SQL, e.g. "
                    f"WHERE first_seen >= $since::TIMESTAMPTZ AND first_seen < $until::TIMESTAMPTZ"
                )
        params = {k: v for k, v in {**window, **given}.items() if k in used}
        missing = sorted(used - set(params))
        if missing:
            raise QueryError(
                "the SQL uses " + ", ".join(f"${m}" for m in missing) + ": pass --param"
            )
    settings = ctx.obj
    from correlator.store.limits import QueryLimits, truncation

    limits = QueryLimits.from_settings(settings.correlator) if settings else None
    table = run_query(db_path(ctx, db), sql, params or None, timeout_s, limits)
    cut = truncation(table)
    if cut:
        click.echo(f"zonewatch: warning: {cut}", err=True)
    if timeline:
        table = to_timeline(table)
    if fmt == "auto":
        fmt = "table" if out is None and sys.stdout.isatty() else "csv"
    write_result(table, fmt, out, title)


@click.command()
@click.argument("alert_id")
@click.option(
    "--status",
    required=True,
    type=click.Choice(["new", "acknowledged", "closed", "false_positive"]),
    help="The alert's new status.",
)
@click.option("--note", help="Why: recorded in the alert's triage history.")
@click.option("--assignee", help="Who handles it ('' clears it; default: unchanged).")
@click.option("--by", "actor", help="Recorded as who made the change (default: your OS user).")
@click.option("--db", type=click.Path(dir_okay=False), help="Alert store file (default: settings).")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded change as JSON.")
@click.pass_context
def triage(
    ctx: click.Context,
    alert_id: str,
    status: str,
    note: str | None,
    assignee: str | None,
    actor: str | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Set an alert's triage status (new, acknowledged, closed, false_positive),
    with a note and an assignee; every change is kept in triage_history.

    Works while `zonewatch correlate` runs (the correlator applies the change
    between two batches) and while the console runs. Scaled out, pass the
    --db of the member that raised the alert. Exit codes: 0 changed, 2 usage,
    3 store unavailable, 65 no such alert.

    \b
    Example:
      zonewatch triage 3f2a9c01... --status closed --note "policy 77 reverted" --assignee sato
    """
    import getpass

    import orjson

    from correlator.store.triage import apply_triage

    change = apply_triage(
        db_path(ctx, db),
        alert_id,
        status,
        actor=actor or getpass.getuser(),
        via="cli",
        note=note,
        assignee=assignee,
    )
    if as_json:
        click.echo(orjson.dumps(change).decode())
        return
    who = f", assignee {change['to_assignee']}" if change["to_assignee"] else ""
    click.echo(f"{change['alert_id']}: {change['from_status']} -> {change['to_status']}{who}")
