"""``zonewatch ingest`` (into Kafka) and ``zonewatch parse`` (to NDJSON, offline)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from zonewatch.config import SOURCES, Settings
from zonewatch.errors import ZonewatchError

_TZ_HELP = "Time zone for timestamps without one (default: settings, Asia/Tokyo)."
_ENCODING_HELP = (
    "Encoding of the input: utf-8 (default), cp932 (Shift_JIS), another Python codec, "
    "or auto (UTF-8, else CP932 for records that are not UTF-8)."
)


@click.command()
@click.option("--source", required=True, type=click.Choice(SOURCES), help="Log source.")
@click.option(
    "--format",
    "fmt",
    default="auto",
    show_default=True,
    help="Format of the source (see `zonewatch parse --source S --list-formats`).",
)
@click.option("--timezone", default=None, help=_TZ_HELP)
@click.option("--encoding", default="utf-8", show_default=True, help=_ENCODING_HELP)
@click.option("--list-formats", is_flag=True, help="List the formats of --source and exit.")
@click.argument("paths", nargs=-1, metavar="[FILE|-]...")
@click.pass_obj
def parse(
    settings: Settings,
    source: str,
    fmt: str,
    timezone: str | None,
    encoding: str,
    list_formats: bool,
    paths: tuple[str, ...],
) -> None:
    """Print normalized events of each FILE (or - for stdin) as NDJSON, without Kafka.

    Events are enriched with zones from settings.connectors.zones_file. Lines
    that cannot be parsed go to stderr as JSON objects with line, reason and
    raw; the exit code is 65 when there were any. With --format auto each
    file is sniffed on its own and every choice is reported on stderr as
    {"input", "format_detected", "line"} (also when a file changes format).
    """
    import orjson

    from connectors.detect import Choice
    from connectors.inputs.stream import StreamInput
    from connectors.pipeline import NdjsonSink, formats_of, make_pipeline, parse_stream

    if list_formats:
        for name, f in sorted(formats_of(source).items()):
            auto = "" if f.sniff else "  (not auto-detected)"
            click.echo(f"{name:12} {f.description.strip().splitlines()[0]}{auto}")
        return
    dead = 0
    for path in paths or ("-",):
        stream: Any
        if path == "-":
            stream, name = sys.stdin.buffer, "stdin"
        else:
            try:
                stream, name = open(path, "rb"), path  # noqa: SIM115
            except OSError as exc:
                raise click.BadParameter(f"cannot read {path}: {exc.strerror}") from exc

        def report(choice: Choice, name: str = name) -> None:
            body = {
                "input": choice.stream or name,
                "format_detected": f"{source}/{choice.format}",
                "line": choice.position,
            }
            if choice.previous:
                body["previous"] = f"{source}/{choice.previous}"
            sys.stderr.buffer.write(orjson.dumps(body) + b"\n")
            sys.stderr.buffer.flush()

        pipeline = make_pipeline(
            settings, source, fmt, timezone, name, encoding, report, shared_identity=False
        )
        try:
            stats = parse_stream(
                pipeline,
                StreamInput(stream, name, settings.connectors.max_line_bytes),
                NdjsonSink(),
            )
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
        dead += stats.dead_lettered
    if dead:
        sys.exit(65)


@click.command()
@click.argument("source", type=click.Choice(SOURCES))
@click.argument("stdin_marker", required=False, metavar="[-]")
@click.option("--format", "fmt", required=True, help="Format of the source, or auto.")
@click.option(
    "--file",
    "file_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Read this file (checkpointed: a restart neither skips nor repeats lines).",
)
@click.option("--follow", is_flag=True, help="With --file: keep reading as it grows and rotates.")
@click.option(
    "--syslog",
    "syslog_url",
    default=None,
    help="Listen for syslog: udp://HOST:PORT or tcp://HOST:PORT.",
)
@click.option(
    "--graph",
    "graph",
    is_flag=True,
    help=(
        "Pull from Microsoft's cloud: intune --format graph (audit events) or devices "
        "(managed devices), identity --format signins (Entra sign-ins) or m365-audit "
        "(Office 365 Management Activity API)."
    ),
)
@click.option("--graph-tenant-id", envvar="ZONEWATCH_GRAPH_TENANT_ID", default=None)
@click.option("--graph-client-id", envvar="ZONEWATCH_GRAPH_CLIENT_ID", default=None)
@click.option(
    "--graph-client-secret-file",
    envvar="ZONEWATCH_GRAPH_CLIENT_SECRET_FILE",
    type=click.Path(dir_okay=False),
    default=None,
    help="File holding the client secret (never pass secrets on the command line).",
)
@click.option(
    "--graph-base-url",
    envvar="ZONEWATCH_GRAPH_BASE_URL",
    default="https://graph.microsoft.com",
    show_default=True,
)
@click.option(
    "--graph-token-url",
    envvar="ZONEWATCH_GRAPH_TOKEN_URL",
    default=None,
    help="OAuth2 token endpoint (default: login.microsoftonline.com for the tenant).",
)
@click.option(
    "--graph-interval",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds between Graph polls.",
)
@click.option(
    "--graph-since",
    default=None,
    metavar="RFC3339",
    help="First start only: fetch audit events from this UTC time (default: 24 h ago).",
)
@click.option(
    "--m365-content-types",
    default="Audit.AzureActiveDirectory,Audit.Exchange,Audit.SharePoint,Audit.General",
    show_default=True,
    help="With identity --format m365-audit --graph: the content types to pull.",
)
@click.option(
    "--m365-publisher-id",
    envvar="ZONEWATCH_M365_PUBLISHER_ID",
    default=None,
    help="PublisherIdentifier for the Management Activity API's throttling quota.",
)
@click.option("--once", is_flag=True, help="With --graph: stop after catching up once.")
@click.option("--timezone", default=None, help=_TZ_HELP)
@click.option("--encoding", default="utf-8", show_default=True, help=_ENCODING_HELP)
@click.pass_obj
def ingest(
    settings: Settings,
    source: str,
    stdin_marker: str | None,
    fmt: str,
    file_path: str | None,
    follow: bool,
    syslog_url: str | None,
    graph: bool,
    graph_tenant_id: str | None,
    graph_client_id: str | None,
    graph_client_secret_file: str | None,
    graph_base_url: str,
    graph_token_url: str | None,
    graph_interval: float,
    graph_since: str | None,
    m365_content_types: str,
    m365_publisher_id: str | None,
    once: bool,
    timezone: str | None,
    encoding: str,
) -> None:
    """Stream SOURCE's logs into Kafka (topic zonewatch.events.SOURCE).

    Exactly one input: --file PATH [--follow], --syslog URL, --graph, or - for
    stdin. Unparsable or oversized records go to the dead-letter topic.
    Prints a one-line summary; SIGTERM commits the producer and the checkpoint
    before exiting.
    """
    from connectors.pipeline import ingest as run_ingest
    from zonewatch.logs import get_logger

    log = get_logger("connectors.cli")
    chosen = [bool(file_path), bool(syslog_url), graph, stdin_marker == "-"]
    if stdin_marker not in (None, "-"):
        raise click.UsageError(f"unexpected argument {stdin_marker!r}: use --file PATH")
    if sum(chosen) != 1:
        raise click.UsageError("give exactly one input: --file PATH, --syslog URL, --graph or -")
    if follow and not file_path:
        raise click.UsageError("--follow needs --file")
    limit = settings.connectors.max_line_bytes
    checkpointed = True
    source_input: Any
    if file_path:
        from connectors.inputs.file import FileInput

        source_input = FileInput(Path(file_path), follow=follow, max_line_bytes=limit)
    elif syslog_url:
        from connectors.inputs.syslog import SyslogInput

        source_input = SyslogInput.from_url(syslog_url, max_line_bytes=limit)
        checkpointed = False
    elif graph:
        from connectors.inputs.cloud import cloud_input
        from connectors.inputs.graph import GraphSettings

        cloud = GraphSettings.from_options(
            tenant_id=graph_tenant_id,
            client_id=graph_client_id,
            client_secret_file=graph_client_secret_file,
            base_url=graph_base_url,
            token_url=graph_token_url,
            interval_s=graph_interval,
            since=graph_since,
            once=once,
        )
        try:
            source_input = cloud_input(
                source,
                fmt,
                cloud,
                content_types=tuple(t.strip() for t in m365_content_types.split(",") if t.strip()),
                publisher_id=m365_publisher_id,
            )
        except ZonewatchError as exc:  # a source/format without a pull input
            raise click.UsageError(str(exc)) from exc
    else:
        from connectors.inputs.stream import StreamInput

        source_input = StreamInput.stdin(limit)
        checkpointed = False
    server = None
    long_running = follow or bool(syslog_url) or (graph and not once)
    if long_running and settings.connectors.metrics_port is not None:
        from zonewatch.metrics import serve_metrics

        server = serve_metrics(settings.connectors.metrics_host, settings.connectors.metrics_port)
    try:
        stats = run_ingest(
            settings,
            source,
            fmt,
            source_input,
            timezone=timezone,
            checkpointed=checkpointed,
            encoding=encoding,
        )
    finally:
        if server is not None:
            server.close()
    log.info("ingest_done", source=source, format=fmt, input=source_input.name, **stats.as_dict())
    click.echo(f"{source}/{fmt} from {source_input.name}: {stats.summary()}")
