"""Every setting with its description, default, environment variable, and
where its current value comes from (pure; ``zonewatch config`` prints it).

``docs/settings.md`` is :func:`reference_markdown` verbatim; a test fails
when it is stale (regenerate: ``zonewatch config reference > docs/settings.md``).
A setting without a ``Field(description=...)`` takes its text from
``DESCRIPTIONS`` below; a setting with neither fails that test too.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from zonewatch.config import Settings
from zonewatch.settings_sources import ENV_PREFIX, LEGACY_ENV, SECRET_FILES, origins

MASK = "********"
_SECRET_WORDS = ("password", "secret", "token", "webhook_url")

DESCRIPTIONS: dict[str, str] = {
    "log_level": "Log level: debug, info, warning, error (`--log-level` wins).",
    "log_json": "JSON log lines (true) or pretty ones (false); unset: JSON unless stderr is a "
    "terminal.",
    "kafka.bootstrap_servers": "Kafka brokers, host:port[,host:port]. The plain "
    "`KAFKA_BOOTSTRAP_SERVERS` variable is read too. Unset: commands that need Kafka say how "
    "to start the embedded one.",
    "kafka.security_protocol": "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL; must match the "
    "listener (a mismatch is reported at start-up).",
    "kafka.sasl_mechanism": "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (needed with SASL_*).",
    "kafka.sasl_username": "SASL user name.",
    "kafka.sasl_password": "SASL password (never logged). `ZONEWATCH_KAFKA__SASL_PASSWORD_FILE` "
    "names a file holding it instead (compose secrets, systemd credentials).",
    "kafka.ssl_cafile": "CA bundle (PEM) that signed the brokers' certificates.",
    "kafka.ssl_certfile": "Client certificate (PEM) for mutual TLS.",
    "kafka.ssl_keyfile": "Private key of the client certificate.",
    "kafka.ssl_check_hostname": "Check that the broker's certificate names its host.",
    "kafka.client_id": "Client id the brokers see (quotas, request logs).",
    "kafka.topic_prefix": "Prefix of every topic: `<prefix>.events.<source>`, "
    "`<prefix>.deadletter`, `<prefix>.checkpoints`, `<prefix>.correlation.*`.",
    "kafka.partitions": "Partitions of the topics `zonewatch topics` creates (the checkpoint "
    "topic always has one).",
    "kafka.replication_factor": "Replication factor of the topics zonewatch creates; 3 on a "
    "three-broker cluster (docs/deploy.md).",
    "kafka.session_timeout_ms": "Consumer group session timeout: how long a silent member "
    "keeps its partitions.",
    "kafka.heartbeat_interval_ms": "Consumer heartbeat interval (well below the session timeout).",
    "kafka.connect_timeout_s": "How long a starting correlator (and `zonewatch broker`) waits "
    "for the broker to answer before exiting with 69.",
    "correlator.rules": "Sigma rule files or folders (`--rules`).",
    "correlator.placeholders_file": "YAML of Sigma placeholder values (`%name%` in rules); "
    "every command that loads rules uses it (`--placeholders`). Unset: rules with "
    "placeholders are refused with the names they lack.",
    "correlator.queries_dir": "A folder of saved `.sql` queries for `zonewatch query NAME`; "
    "they override shipped ones of the same name (`--queries-dir` adds more).",
    "correlator.pipeline": "Field mapping for SigmaHQ rules: `ecs`, `none`, or a pySigma "
    "pipeline YAML file.",
    "correlator.group_id": "Kafka consumer group of the correlator (`--group-id`).",
    "correlator.db_path": "DuckDB alert store file (`--db`).",
    "correlator.allowed_lateness_s": "How far behind the watermark an event may arrive and "
    "still count in correlation windows.",
    "correlator.sources": "Per source (`firewall`, `vdi`, `gateway`, `intune`, `identity`): "
    "`allowed_lateness_s` (unset: `correlator.allowed_lateness_s`) and `max_delivery_delay_s` "
    "(default 0), e.g. `sources: {vdi: {max_delivery_delay_s: 600}}` or "
    "`ZONEWATCH_CORRELATOR__SOURCES__VDI__MAX_DELIVERY_DELAY_S=600`. A quiet input of a source "
    "with a delivery delay holds the watermark at wall clock less the delay instead of letting "
    "it follow the wall clock, so its events arriving up to that late still correlate; "
    "alerts wait as long. The engine buffers for the largest allowed lateness; memory: "
    "correlated events per second times that lateness, plus, for the delay, the events of "
    "the other sources waiting in the merge (see correlator/correlation/README.md).",
    "correlator.late_horizon_s": "A correlated event that arrives late (behind its input's "
    "watermark) by at most this much is still applied, out of order, to its windows, which are "
    "kept this much longer after they expire so that it finds them open or re-opens them; the "
    "alerts it completes carry `late: true` (store column, Teams card). Further behind it is "
    "counted and dropped. Per source: "
    "`zonewatch_correlator_late_events_by_source_total{source,outcome}`. Memory: windows live "
    "`(timespan + horizon) / timespan` times as long. 0 (default): late events are dropped.",
    "correlator.late_events_update_windows": "Whether events later than the allowed lateness "
    "still update windows (they are always counted).",
    "correlator.zone_policy_suppress": "Throttle of the zone-policy rules generated from "
    "`zones.yaml` (a rule's own `suppress:` wins): at most one alert per key of "
    "`zone_policy_suppress_fields` within this window of event time (`30s`, `10m`, `1h`); "
    "`off` raises one per connection. Suppressed alerts are counted in "
    "`zonewatch_detection_suppressed_total`.",
    "correlator.zone_policy_suppress_fields": "Fields whose values make the throttle key of "
    "the zone-policy rules (default: one alert per source host and destination zone).",
    "correlator.input_idle_s": "An input partition quiet this long stops holding back the "
    "event-time merge of the others.",
    "correlator.archive_events": "Keep every consumed event in the store's `events` table "
    "(for `zonewatch hunt` and timelines).",
    "correlator.checkpoint_interval_s": "How often the correlation state is snapshotted with "
    "the offsets it covers.",
    "correlator.max_groups_per_rule": "Cap on open correlation groups per rule (oldest are "
    "evicted beyond it).",
    "correlator.max_state_bytes": "Cap on the correlation state's size in bytes.",
    "correlator.events_retention_days": "Days archived events are kept in the store; unset "
    "keeps them forever.",
    "correlator.max_batch": "Records per poll.",
    "correlator.store_memory_limit": "DuckDB buffer pool of the store (e.g. 512MB, 2GB); "
    "beyond it work spills to `<db>.tmp`.",
    "correlator.write_batch_events": "While working through a backlog, rows gathered into "
    "one store write at most.",
    "correlator.write_delay_s": "While working through a backlog, how long rows may wait "
    "for a bigger store write.",
    "correlator.scale_out": "Several correlators share one group (`--scale-out`); see "
    "correlator/correlation/README.md.",
    "correlator.scale_out_legacy_topics": "Scale-out on the internal topics every group on the "
    "prefix shared before they were per group (`<prefix>.correlation.hits` / `.state`): for a "
    "deployment upgraded from then, to keep its open windows; one group per prefix at most "
    "(docs/deploy.md).",
    "correlator.publish_alerts": "Produce every stored alert and triage change to "
    "`<topic_prefix>.alerts` as JSON keyed by alert id, exactly once with the store "
    '(correlator/alerting/README.md, "The alerts topic"); `false`: the store and Teams only.',
    "correlator.publish_transaction_records": "Records per Kafka transaction of the alerts "
    "topic (fewer: smaller transactions, more round trips).",
    "correlator.publish_process": "Produce to the alerts topic from a child process "
    "(`python -m zonewatch.producer_process`, about 60-70 MB): the correlator's loop keeps its "
    "core. `false`: from the correlator's own process, whose stream loop then runs 20-25 % slower "
    "with the topic on.",
    "correlator.watch_rules": "Reload the rules when a rule file, `connectors.zones_file` or "
    "the placeholder file changes, as SIGHUP does; a broken edit is refused (logged, "
    "`zonewatch_rules_reload_failures_total`) and the running rules stay.",
    "correlator.watch_debounce_s": "Seconds without a further change before a rule edit is "
    "reloaded (an editor's save is several changes).",
    "correlator.poll_timeout_ms": "How long one poll waits for records.",
    "correlator.metrics_host": "Address of `/metrics` and `/healthz` (0.0.0.0 in a container).",
    "correlator.metrics_port": "Port of `/metrics` and `/healthz` (`--metrics-port`); unset: "
    "not served.",
    # Settings other branches add (described here so the reference test
    # holds after they merge; an entry for a setting that does not exist is
    # never shown).
    "correlator.query_max_timeout_s": "The longest a forensic query may ask to run "
    "(`zonewatch query --timeout`).",
    "correlator.query_max_rows": "Rows a query result may hold before it is cut.",
    "correlator.query_max_result_mb": "MB a query result may hold before it is cut.",
    "correlator.query_max_concurrent": "Queries the correlator's query endpoint runs at once.",
    "connectors.identity_binding_ttl_s": "How long an address stays bound to the user last "
    "seen on it (learned identities).",
    "connectors.identity_max_addresses": "How many learned address-to-user bindings are kept.",
    "teams.webhook_url": "Teams Workflows webhook URL (secret; prefer `teams.secrets_file`, or "
    "`ZONEWATCH_TEAMS__WEBHOOK_URL_FILE` naming a file holding it).",
    "teams.secrets_file": "File holding the webhook URL, or `name: url` lines for routes.",
    "teams.requests_per_second": "Requests per second per webhook at most.",
    "teams.timeout_s": "Timeout of one webhook request.",
    "teams.locale": "Language of the Teams cards: ja or en; unset: follows `console.locale`.",
    "teams.alert_link_template": "Link put on each card, with `{alert_id}` filled in.",
    "teams.routing_file": "YAML: destinations and routes by level, tag, zone crossing "
    "(correlator/alerting/README.md).",
    "graph.tenant_id": "Entra tenant (directory) id of the app `ingest --graph` signs in as "
    "(`--graph-tenant-id`).",
    "graph.client_id": "Application (client) id of that app (`--graph-client-id`).",
    "graph.client_secret": "Its client secret (never logged); set "
    "`ZONEWATCH_GRAPH__CLIENT_SECRET_FILE` (or `--graph-client-secret-file`) to a file "
    "holding it.",
    "graph.base_url": "Microsoft Graph endpoint (`--graph-base-url`); m365-audit uses "
    "manage.office.com while this is the default.",
    "graph.token_url": "OAuth2 token endpoint (`--graph-token-url`); unset: "
    "login.microsoftonline.com for the tenant.",
    "graph.interval_s": "Seconds between polls (`--graph-interval`).",
    "graph.lookback_s": "First start without `graph.since`: fetch this many seconds back.",
    "graph.since": "First start only: fetch from this UTC time, RFC 3339 (`--graph-since`).",
    "graph.once": "Stop after catching up once (`--once`).",
    "graph.page_size": "Records asked for per page (`$top`).",
    "graph.max_retry_wait_s": "Longest wait a `Retry-After` answer is honoured for.",
    "graph.m365_content_types": "Content types m365-audit pulls, comma-separated "
    "(`--m365-content-types`).",
    "graph.m365_publisher_id": "PublisherIdentifier for the Management Activity API's "
    "throttling quota (`--m365-publisher-id`).",
    "connectors.zones_file": "Zone policy the connectors tag events with.",
    "connectors.timezone": "Time zone of timestamps that carry none (`--timezone`).",
    "connectors.max_line_bytes": "Longer input records go to the dead-letter topic (head kept).",
    "connectors.checkpoint_dir": "Local copies of the input checkpoints (`zonewatch "
    "checkpoints list`).",
    "connectors.metrics_host": "Address of a long-running connector's `/metrics`.",
    "connectors.metrics_port": "Port of a long-running connector's `/metrics`; unset: not served.",
    "connectors.max_future_skew_s": "`ingest` sends events stamped more than this many seconds "
    "ahead of the clock to the dead-letter topic.",
    "connectors.max_past_horizon_days": "`ingest` sends events stamped more than this many days "
    "ago to the dead-letter topic; `off` (environment) or null lifts the bound (backfills).",
    "correlator.max_future_skew_s": "Events stamped more than this many seconds ahead of their "
    "Kafka record's time are flagged (tag `zonewatch.event_time_out_of_bounds`), kept out of "
    "correlation and never move a watermark.",
    "correlator.max_past_horizon_days": "Events older than this many days are treated like "
    "future-dated ones; unset (default): no past bound, so replays of old days correlate.",
    "console.host": "Address `zonewatch console` listens on; anything but loopback needs "
    "`--allow-remote` and `console.token_file`.",
    "console.port": "Port of `zonewatch console`.",
    "console.token_file": "File holding the console's sign-in token (Bearer or the login "
    "form); unset on loopback: a random token written beside the store (0600).",
    "console.public_url": "Where analysts reach the console; Teams cards then carry an "
    '"open in console" action.',
    "console.locale": "Console and report language: ja or en (Teams cards follow it unless "
    "`teams.locale` is set).",
    "console.timezone": "Time zone the console and the report show times in.",
    "console.session_ttl_s": "A console sign-in expires this many seconds after it began.",
    "console.session_idle_s": "A console sign-in expires after this many idle seconds.",
}


@dataclass(frozen=True)
class SettingInfo:
    name: str  # dotted: kafka.sasl_password
    env: str  # ZONEWATCH_KAFKA__SASL_PASSWORD
    type: str
    default: Any
    description: str
    secret: bool


def _type_name(annotation: Any) -> str:
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(a) for a in args if a is not type(None)]
        return " \\| ".join(parts) + (" (optional)" if type(None) in args else "")
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}"
    if annotation is SecretStr:
        return "secret"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return field.default


def settings_info() -> list[SettingInfo]:
    """Every leaf setting, in the order the model declares them."""
    out: list[SettingInfo] = []

    def add(name: str, field: FieldInfo) -> None:
        text = DESCRIPTIONS.get(name) or field.description or ""
        secret = field.annotation is not None and "SecretStr" in str(field.annotation)
        secret = secret or any(word in name for word in _SECRET_WORDS)
        env = ENV_PREFIX + name.replace(".", "__").upper()
        out.append(
            SettingInfo(name, env, _type_name(field.annotation), _default(field), text, secret)
        )

    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for sub, subfield in annotation.model_fields.items():
                add(f"{name}.{sub}", subfield)
        else:
            add(name, field)
    return out


def _show(value: Any, secret: bool) -> str:
    if value is None:
        return "(unset)"
    if secret:
        return MASK
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def reference_markdown() -> str:
    """docs/settings.md: one table per section."""
    lines = [
        "# Settings reference",
        "",
        "<!-- generated by `zonewatch config reference`; tests/test_config_cli.py checks it -->",
        "",
        "Every setting comes from, in order of precedence: a command's own option (e.g.",
        "`correlate --db`), the environment (`ZONEWATCH_<SECTION>__<NAME>`, then the older",
        "names listed at the end, such as the plain `KAFKA_BOOTSTRAP_SERVERS`), a YAML or TOML",
        "file (`--config` or `ZONEWATCH_CONFIG`, nested as below), and the default. A secret",
        "can come from a file instead: `<VARIABLE>_FILE` (or `<name>_file` in the config",
        "file) names a file holding it. `zonewatch config show` prints the effective values",
        "and where each comes from (secrets masked); `--defaults` prints the defaults.",
        "",
    ]
    sections: dict[str, list[SettingInfo]] = {}
    for info in settings_info():
        head = info.name.split(".", 1)[0] if "." in info.name else "general"
        sections.setdefault(head, []).append(info)
    for head, infos in sections.items():
        lines += [
            f"## {head}",
            "",
            "| setting | environment variable | type | default | what it does |",
            "|---|---|---|---|---|",
        ]
        for info in infos:
            default = (
                "(secret)"
                if info.secret and info.default is not None
                else _show(info.default, False)
            )
            text = info.description.replace("|", "\\|")
            env = f"`{info.env}`" + (f", `{info.env}_FILE`" if info.name in SECRET_FILES else "")
            lines.append(f"| `{info.name}` | {env} | {info.type} | `{default}` | {text} |")
        lines.append("")
    lines += [
        "## older environment names",
        "",
        "Still read, below the `ZONEWATCH_<SECTION>__<NAME>` names.",
        "",
        "| variable | setting |",
        "|---|---|",
    ]
    for var, dotted in LEGACY_ENV.items():
        secret = dotted.removesuffix("_file")
        what = f"`{secret}`, from the file it names" if secret != dotted else f"`{dotted}`"
        lines.append(f"| `{var}` | {what} |")
    lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def value_sources(config_file: Path | None, environ: Mapping[str, str]) -> dict[str, str]:
    """Where each setting that is not a default comes from (the winning source)."""
    return origins(set(Settings.model_fields), config_file, environ)


def effective(
    settings: Settings | None,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[tuple[str, str, str]]:
    """(setting, shown value, source) of each setting; ``settings`` None gives the defaults."""
    environ = os.environ if environ is None else environ
    sources = value_sources(config_file, environ) if settings is not None else {}
    rows = []
    for info in settings_info():
        value: Any = info.default
        if settings is not None:
            value = settings
            for part in info.name.split("."):
                value = getattr(value, part)
        rows.append((info.name, _show(value, info.secret), _source_of(info.name, sources)))
    return rows


def _source_of(name: str, sources: Mapping[str, str]) -> str:
    """Where a setting comes from; a mapping setting (``correlator.sources``)
    from where its entries do."""
    if name in sources:
        return sources[name]
    inner = sorted({origin for key, origin in sources.items() if key.startswith(f"{name}.")})
    return " + ".join(inner) if inner else "default"
