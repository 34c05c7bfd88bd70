"""``zonewatch ingest`` (into Kafka) and ``zonewatch parse`` (to NDJSON, offline)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from zonewatch.sources import SOURCES

if TYPE_CHECKING:
    from zonewatch.config import Settings
from zonewatch.errors import UsageError, ZonewatchError

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
        sink = _WrongFormatGuard(NdjsonSink())
        try:
            stats = parse_stream(
                pipeline,
                StreamInput(stream, name, settings.connectors.max_line_bytes),
                sink,
            )
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
        if stats.dead_lettered and not stats.produced:
            top = stats.reasons.most_common(1)[0][0] if stats.reasons else "unparsable"
            hidden = f", {sink.hidden} of them not shown" if sink.hidden else ""
            click.echo(
                f"zonewatch: error: none of the {stats.dead_lettered} lines of {name} parsed as "
                f"{source}/{fmt} ({top}{hidden}). Is --format right? "
                f"`zonewatch parse --source {source} --list-formats` lists them; --format auto "
                "detects one per file",
                err=True,
            )
        dead += stats.dead_lettered
    if dead:
        sys.exit(65)


class _WrongFormatGuard:
    """Passes events and dead letters to ``sink``, until the first
    ``WRONG_FORMAT_LINES`` records all failed: then the format is wrong, and
    printing every line again as a dead letter only buries the reason. The
    rest are counted (``hidden``) and summarised once at the end."""

    WRONG_FORMAT_LINES = 20

    def __init__(self, sink: Any):
        self.sink = sink
        self.events = 0
        self.dead = 0
        self.hidden = 0

    def emit(self, event: dict[str, Any], value: bytes | None = None) -> None:
        self.events += 1
        self.sink.emit(event, value)

    def dead_letter(self, letter: Any) -> None:
        self.dead += 1
        if not self.events and self.dead > self.WRONG_FORMAT_LINES:
            self.hidden += 1
            return
        self.sink.dead_letter(letter)

    def commit(self, checkpoint: dict[str, Any] | None = None) -> None:
        self.sink.commit(checkpoint)


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
@click.option("--graph-tenant-id", default=None, help="Default: settings (graph.tenant_id).")
@click.option("--graph-client-id", default=None, help="Default: settings (graph.client_id).")
@click.option(
    "--graph-client-secret-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="File holding the client secret (never pass secrets on the command line). "
    "Default: settings (graph.client_secret, ZONEWATCH_GRAPH__CLIENT_SECRET_FILE).",
)
@click.option(
    "--graph-base-url",
    default=None,
    help="Default: settings (graph.base_url, https://graph.microsoft.com).",
)
@click.option(
    "--graph-token-url",
    default=None,
    help="OAuth2 token endpoint (default: login.microsoftonline.com for the tenant).",
)
@click.option(
    "--graph-interval",
    type=float,
    default=None,
    help="Seconds between Graph polls (default: settings, 60).",
)
@click.option(
    "--graph-since",
    default=None,
    metavar="RFC3339",
    help="First start only: fetch audit events from this UTC time (default: 24 h ago).",
)
@click.option(
    "--m365-content-types",
    default=None,
    help="With identity --format m365-audit --graph: the content types to pull, "
    "comma-separated (default: settings, the four Audit.* types).",
)
@click.option(
    "--m365-publisher-id",
    default=None,
    help="PublisherIdentifier for the Management Activity API's throttling quota.",
)
@click.option("--once", is_flag=True, help="With --graph: stop after catching up once.")
@click.option(
    "--from-start",
    is_flag=True,
    help="Ignore the checkpoint: read --file from its start and send every line again.",
)
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
    graph_base_url: str | None,
    graph_token_url: str | None,
    graph_interval: float | None,
    graph_since: str | None,
    m365_content_types: str | None,
    m365_publisher_id: str | None,
    once: bool,
    from_start: bool,
    timezone: str | None,
    encoding: str,
) -> None:
    """Stream SOURCE's logs into Kafka (topic zonewatch.events.SOURCE).

    Exactly one input: --file PATH [--follow], --syslog URL, --graph, or - for
    stdin. Unparsable or oversized records go to the dead-letter topic.
    Prints a one-line summary; SIGTERM commits the producer and the checkpoint
    before exiting.
    """
    from connectors.ingest import ingest as run_ingest
    from zonewatch.logs import get_logger

    log = get_logger("connectors.cli")
    chosen = [bool(file_path), bool(syslog_url), graph, stdin_marker == "-"]
    if stdin_marker not in (None, "-"):
        raise click.UsageError(f"unexpected argument {stdin_marker!r}: use --file PATH")
    if sum(chosen) != 1:
        raise click.UsageError("give exactly one input: --file PATH, --syslog URL, --graph or -")
    if follow and not file_path:
        raise click.UsageError("--follow needs --file")
    if file_path and not follow and not Path(file_path).is_file():
        # before connecting to Kafka: --follow waits for a file to appear
        raise UsageError(f"cannot read {file_path}: no such file (use --follow to wait for it)")
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
        from zonewatch.settings_sources import read_secret_file

        given = {
            "tenant_id": graph_tenant_id,
            "client_id": graph_client_id,
            "base_url": graph_base_url,
            "token_url": graph_token_url,
            "interval_s": graph_interval,
            "since": graph_since,
            "once": once or None,
            "m365_content_types": m365_content_types,
            "m365_publisher_id": m365_publisher_id,
        }
        if graph_client_secret_file:
            given["client_secret"] = read_secret_file(
                "--graph-client-secret-file", graph_client_secret_file
            )
        settings = settings.updated(graph={k: v for k, v in given.items() if v is not None})
        pull = settings.graph.check_complete()
        try:
            source_input = cloud_input(source, fmt, pull)
        except ZonewatchError as exc:  # a source/format without a pull input
            raise click.UsageError(str(exc)) from exc
    else:
        from connectors.inputs.stream import StreamInput

        source_input = StreamInput.stdin(limit)
        checkpointed = False
    server = None
    long_running = follow or bool(syslog_url) or (graph and not settings.graph.once)
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
            from_start=from_start,
        )
    finally:
        if server is not None:
            server.close()
    log.info("ingest_done", source=source, format=fmt, input=source_input.name, **stats.as_dict())
    click.echo(f"{source}/{fmt} from {source_input.name}: {stats.summary()}")
    if file_path and not follow and stats.read == 0 and stats.resumed_at is not None:
        where = stats.resumed_at.get("offset") if isinstance(stats.resumed_at, dict) else None
        at = f" (byte {where})" if where is not None else ""
        click.echo(
            f"nothing new in {file_path} since its checkpoint{at}: every line was sent "
            "before. To send the file again: add --from-start "
            "(`zonewatch checkpoints list` shows the checkpoints)",
            err=True,
        )


@click.group()
def checkpoints() -> None:
    """List or reset the connectors' input checkpoints (where a file was read up to).

    A checkpointed input (--file, --graph) resumes where it stopped. Reset
    one to make the next `zonewatch ingest` read it from its start; stop that
    connector first, or its next commit writes its position again.
    """


@checkpoints.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per checkpoint.")
@click.pass_obj
def list_checkpoints_cmd(settings: Settings, as_json: bool) -> None:
    """Show the checkpoints under settings.connectors.checkpoint_dir."""
    import orjson

    from connectors.checkpoints import list_checkpoints

    found = list_checkpoints(settings.connectors.checkpoint_dir)
    if as_json:
        for info in found:
            click.echo(orjson.dumps(info.as_dict()).decode())
        return
    if not found:
        click.echo(f"no checkpoints in {settings.connectors.checkpoint_dir}", err=True)
        return
    click.echo("source\tformat\tposition\tsaved_at\tinput")
    for info in found:
        row = info.as_dict()
        click.echo(
            f"{row['source']}\t{row['format']}\t{row['position']}\t{row['saved_at']}\t"
            f"{row['input']}"
        )


@checkpoints.command("reset")
@click.option("--source", type=click.Choice(SOURCES), help="Only this source's inputs.")
@click.option("--input", "input_name", help="Only this input: a file path as given to --file.")
@click.option("--all", "everything", is_flag=True, help="Every checkpoint (no --source/--input).")
@click.pass_obj
def reset_checkpoints_cmd(
    settings: Settings, source: str | None, input_name: str | None, everything: bool
) -> None:
    """Forget inputs' positions (in Kafka and locally): the next ingest reads them
    from the start. Choose with --source and/or --input, or --all."""
    from connectors.checkpoints import list_checkpoints, reset_checkpoints, select

    if not (source or input_name or everything):
        raise click.UsageError("say which checkpoints: --source S, --input PATH, or --all")
    found = list_checkpoints(settings.connectors.checkpoint_dir)
    chosen = select(found, source, input_name)
    if not chosen:
        raise click.UsageError(
            f"no checkpoint matches in {settings.connectors.checkpoint_dir} "
            "(`zonewatch checkpoints list` shows them)"
        )
    kafka = settings.kafka if settings.kafka.bootstrap_servers else None
    if kafka is None:
        click.echo(
            "no Kafka configured: removing the local copies only (a transactional "
            "connector would still find its position in Kafka)",
            err=True,
        )
    reset_checkpoints(kafka, chosen)
    for info in chosen:
        click.echo(f"reset\t{info.source}\t{info.format}\t{info.input}")
