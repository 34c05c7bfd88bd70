"""``zonewatch console`` and ``zonewatch report``."""

from __future__ import annotations

import ipaddress
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from zonewatch.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from zonewatch.config import Settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _db(settings: Settings, db: Path | None) -> Path:
    return Path(db) if db else Path(settings.correlator.db_path)


def _policy(settings: Settings) -> Any:
    from zonewatch.zones import load_zone_map

    return load_zone_map(settings.connectors.zones_file).policy


class RuleErrors:
    """The load errors of the configured rules, loaded once in the background
    (pySigma takes a few seconds) for the rule-health page."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.errors: list[str] | None = None
        threading.Thread(target=self._load, name="zonewatch-console-rules", daemon=True).start()

    def _load(self) -> None:
        from correlator.detection import load_rules
        from correlator.detection.pipelines import configured_pipeline

        cfg = self.settings.correlator
        try:
            paths = [p for p in cfg.rules if Path(p).exists()]
            ruleset = load_rules(paths, pipeline=configured_pipeline(cfg))
            self.errors = [str(e) for e in ruleset.errors]
        except Exception as exc:  # the page says so; the console keeps running
            self.errors = [f"rules could not be loaded: {type(exc).__name__}: {exc}"]

    def __call__(self) -> list[str] | None:
        return self.errors


@click.command()
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="Alert store file.")
@click.option("--host", help="Address to listen on (default: console.host, 127.0.0.1).")
@click.option("--port", type=int, help="Port (default: console.port, 8765).")
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow a non-loopback --host; needs console.token_file (and TLS in front).",
)
@click.pass_obj
def console(
    settings: Settings, db: Path | None, host: str | None, port: int | None, allow_remote: bool
) -> None:
    """Serve the analyst console: zone matrix, alerts, alert detail and triage,
    entity timelines, rule health. Reads the store through the running
    correlator's query endpoint (or the file, read-only, when none runs).

    Sign-in: the token in console.token_file (ZONEWATCH_CONSOLE__TOKEN_FILE),
    as `Authorization: Bearer` or through the sign-in form. On loopback
    without one, a random token is written beside the store (mode 0600).
    """
    import uvicorn

    from console.app import ConsoleConfig, create_app
    from console.auth import Authenticator, generated_token_file, read_token_file
    from console.data import StoreAccess
    from console.sources import HealthSources

    cfg = settings.console
    host = host or cfg.host
    port = cfg.port if port is None else port
    if not is_loopback(host):
        if not allow_remote:
            raise click.UsageError(
                f"--host {host} is not a loopback address: add --allow-remote (and set "
                "console.token_file) to serve other machines"
            )
        if cfg.token_file is None:
            raise ConfigError(
                f"refusing to listen on {host} without authentication: set "
                "console.token_file (ZONEWATCH_CONSOLE__TOKEN_FILE) to a file holding a token"
            )
    db_path = _db(settings, db)
    if not db_path.exists():
        raise StoreError(
            f"no alert store at {db_path}: pass --db or set correlator.db_path "
            "(`zonewatch correlate` creates it)"
        )
    from zonewatch.preflight import check_port_free

    check_port_free(host, port, "the console", "--port")
    token_path = cfg.token_file or generated_token_file(db_path)
    auth = Authenticator(
        read_token_file(Path(token_path)), ttl_s=cfg.session_ttl_s, idle_s=cfg.session_idle_s
    )
    StoreAccess(db_path).migrate()
    app = create_app(
        ConsoleConfig(
            db_path=db_path,
            policy=_policy(settings),
            auth=auth,
            locale=cfg.locale,
            timezone=cfg.timezone,
            secure_cookies=bool(cfg.public_url and cfg.public_url.startswith("https://")),
            rule_errors=RuleErrors(settings),
            health_extra=HealthSources(settings),
        )
    )
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"console  http://{shown}:{port}/  (sign in with the token in {token_path})")
    from zonewatch.logs import get_logger

    get_logger(__name__).info("console_started", host=host, port=port, db=str(db_path))
    uvicorn.run(
        app, host=host, port=port, log_level="warning", access_log=False, server_header=False
    )


@click.command()
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="Alert store file.")
@click.option("--since", help="From (ISO time/date, JST if no offset, or 24h, 7d).")
@click.option("--until", help="Until (exclusive).")
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
)
@click.option("--locale", type=click.Choice(["ja", "en"]), help="Default: console.locale.")
@click.pass_obj
def report(
    settings: Settings,
    db: Path | None,
    since: str | None,
    until: str | None,
    out: Path,
    locale: str | None,
) -> None:
    """Write one self-contained HTML report (opens offline, makes no network
    request): zone matrix, alerts per day and level, top rules, top users and
    devices, and every alert with its status."""
    write_report_file(settings, _db(settings, db), out, since=since, until=until, locale=locale)
    click.echo(f"report   {out}")


def write_report_file(
    settings: Settings,
    db_path: Path,
    out: Path,
    *,
    since: str | None = None,
    until: str | None = None,
    locale: str | None = None,
) -> int:
    from datetime import datetime

    from console.data import StoreAccess
    from console.queries import TimeRange
    from console.report import write_report
    from correlator.store.timerange import parse_time

    window = TimeRange(
        "custom",
        datetime.fromisoformat(parse_time(since)) if since else None,
        datetime.fromisoformat(parse_time(until)) if until else None,
    )
    with StoreAccess(db_path).reader() as reader:
        return write_report(
            reader,
            _policy(settings),
            window,
            out,
            locale=locale or settings.console.locale,
            timezone=settings.console.timezone,
        )
