"""Settings: one model, built one way (pydantic-settings).

Precedence: arguments > environment > config file > defaults; the sources
and the older environment names still read are in
``zonewatch/settings_sources.py``. Nested settings use ``__`` in environment
names, e.g. ``ZONEWATCH_KAFKA__SASL_MECHANISM=SCRAM-SHA-512``; the plain
``KAFKA_BOOTSTRAP_SERVERS`` is read too, because that is the name operators
and our tests use to point at a real cluster. Secrets are ``SecretStr``
(masked in reprs, ``zonewatch config show`` and log lines).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from zonewatch import sources as topics
from zonewatch.errors import ConfigError
from zonewatch.logs import register_secret
from zonewatch.options import teams_url_flag as teams_url_flag  # re-exported
from zonewatch.settings_sources import (
    ENV_PREFIX,
    ConfigFileSource,
    LegacyEnvSource,
    ZonewatchEnvSource,
    config_file_given,
)

# Re-exported for correlator/stream.py (being split on another branch); new
# code imports them from zonewatch.sources, their one definition.
from zonewatch.sources import SOURCES as SOURCES
from zonewatch.sources import source_of_topic as source_of_topic
from zonewatch.timebounds import DEFAULT_FUTURE_SKEW_S, DEFAULT_PAST_HORIZON_DAYS


def _off_is_none(value: Any) -> Any:
    """``off`` / ``none`` / empty in an environment variable: no bound."""
    if isinstance(value, str) and value.strip().lower() in ("", "off", "none", "null"):
        return None
    return value


# A past horizon in days; ``off`` (env) or null (file) lifts it.
Horizon = Annotated[float | None, BeforeValidator(_off_is_none)]


def _comma_list(value: Any) -> Any:
    """``a,b`` or a JSON list (environment, command line) -> a list of names."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return orjson.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


# Field names; an environment variable lists them separated by commas.
FieldNames = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]


class KafkaSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str | None = Field(
        default=None,
        description="host:port[,host:port]; unset means 'start or use the embedded broker'",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True
    client_id: str = "zonewatch"
    topic_prefix: str = "zonewatch"
    partitions: int = Field(default=3, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    # A group join costs one session timeout in the worst case; 6 s keeps
    # start-up quick while tolerating GC pauses.
    session_timeout_ms: int = Field(default=6000, ge=1000)
    heartbeat_interval_ms: int = Field(default=1000, ge=100)
    # How long a starting correlator waits for the broker to answer before it
    # gives up (exit 69); compose and systemd restart it after that.
    connect_timeout_s: float = Field(default=15.0, gt=0)

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL"):
            if not self.sasl_mechanism:
                raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
            if not self.sasl_username or self.sasl_password is None:
                raise ValueError("SASL needs sasl_username and sasl_password")
        return self

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"

    def events_topic(self, source: str) -> str:
        return self.topic(f"{topics.EVENTS}.{source}")

    @property
    def deadletter_topic(self) -> str:
        return self.topic(topics.DEADLETTER)

    @property
    def checkpoints_topic(self) -> str:
        """Connector checkpoints, written in the same transaction as the events
        they cover; one partition so a connector reads back one ordered history."""
        return self.topic(topics.CHECKPOINTS)

    def scale_out_topics(self, group_id: str, *, legacy: bool = False) -> topics.ScaleOutTopics:
        """Scale-out's internal topics of one consumer group (correlator/scaleout/):
        hits re-keyed by correlation group, and the shards' changelog
        (compacted). ConfigError for a group id that cannot name them."""
        return topics.scale_out_topics(self.topic_prefix, group_id, legacy=legacy)

    @property
    def alerts_topic(self) -> str:
        """Every stored alert and triage change, as JSON keyed by alert id, for
        a SIEM or SOAR to subscribe to (correlator/alerting/publish.py)."""
        return self.topic(topics.ALERTS)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by kafka-python producers, consumers and admin."""
        if not self.bootstrap_servers:
            raise ConfigError(
                "no Kafka bootstrap servers: set KAFKA_BOOTSTRAP_SERVERS or "
                "ZONEWATCH_KAFKA__BOOTSTRAP_SERVERS, or start one with `zonewatch broker`"
            )
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            password = self.sasl_password.get_secret_value() if self.sasl_password else None
            # kafka-python logs its configuration at debug level.
            register_secret(password)
            kwargs["sasl_plain_password"] = password
        if self.security_protocol.endswith("SSL"):
            kwargs["ssl_check_hostname"] = self.ssl_check_hostname
            if self.ssl_cafile:
                kwargs["ssl_cafile"] = str(self.ssl_cafile)
            if self.ssl_certfile:
                kwargs["ssl_certfile"] = str(self.ssl_certfile)
            if self.ssl_keyfile:
                kwargs["ssl_keyfile"] = str(self.ssl_keyfile)
        return kwargs


class SourceTiming(BaseModel):
    """How late one source's events may arrive (``correlator.sources.<source>``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # How far behind its input's newest event an event may come and still be
    # correlated exactly (buffered); unset: ``correlator.allowed_lateness_s``.
    allowed_lateness_s: float | None = Field(default=None, ge=0)
    # How long after its event time an event of this source may reach Kafka
    # (a Graph export, a buffering relay): a quiet input of the source holds
    # the watermark at wall clock less this, instead of letting it follow the
    # wall clock. 0: today's rule (an idle input holds nothing back).
    max_delivery_delay_s: float = Field(default=0.0, ge=0)


class CorrelatorSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: list[Path] = Field(default_factory=lambda: [Path("rules")])
    pipeline: str = "ecs"
    # YAML: placeholder name -> values, for rules using |expand (every
    # command that loads rules reads it; --placeholders overrides it).
    placeholders_file: Path | None = None
    # A folder of saved .sql queries (`zonewatch query NAME`), beside the shipped ones.
    queries_dir: Path | None = None
    group_id: str = "zonewatch-correlator"
    db_path: Path = Path("var/zonewatch.duckdb")
    allowed_lateness_s: float = Field(default=60.0, ge=0)
    late_events_update_windows: bool = False
    # Throttle of the rules generated from zones.yaml that set no ``suppress:``
    # of their own: one alert per key of these fields within this window of
    # event time (a Sigma timespan: 30s, 10m, 1h), or ``off``
    # (correlator/detection/throttle.py).
    zone_policy_suppress: str = "10m"
    zone_policy_suppress_fields: FieldNames = Field(
        default_factory=lambda: ["source.ip", "zone.destination"], min_length=1
    )

    @field_validator("zone_policy_suppress")
    @classmethod
    def _timespan_or_off(cls, value: str) -> str:
        value = value.strip()
        if value != "off" and not re.fullmatch(r"[1-9]\d*[smhdwMy]", value):
            raise ValueError(f"{value!r} is not a timespan like 30s, 10m, 1h, nor off")
        return value

    # Per source (firewall, vdi, ...): allowed lateness and delivery delay.
    sources: dict[str, SourceTiming] = Field(default_factory=dict)
    # A late event at most this far behind the watermark is still applied to
    # its windows (kept this much longer); alerts it completes say ``late``.
    late_horizon_s: float = Field(default=0.0, ge=0)
    # Events stamped further ahead of their Kafka record's time (capped at
    # this clock) are flagged and kept out of correlation: they must never
    # move a watermark (zonewatch/timebounds.py). A past horizon is off by
    # default: an old event cannot move a watermark (it is late, or the first
    # of its partition), ingest already refuses the absurd ones, and replays
    # of recorded days must keep correlating as they age.
    max_future_skew_s: float = Field(default=DEFAULT_FUTURE_SKEW_S, ge=0)
    max_past_horizon_days: Horizon = Field(default=None, gt=0)
    # An input partition that delivered nothing for this long stops holding
    # back the event-time merge of the others (correlator/ordering.py).
    input_idle_s: float = Field(default=1.0, gt=0)
    # Keep every consumed event in the store's ``events`` table, so
    # ``zonewatch hunt`` and timelines see more than alert evidence.
    archive_events: bool = True
    # Correlation state (possibly large) is snapshotted with its offsets this
    # often; alerts and archived events are stored with every batch.
    checkpoint_interval_s: float = Field(default=5.0, ge=0)
    # Correlation state caps. The state is estimated with the event bodies it
    # holds; correlate checks at start-up that the caps and the store's limit
    # fit together and in this host (correlator/budget.py, exit 78 if not).
    max_groups_per_rule: int = Field(default=1_000_000, ge=1)
    max_state_bytes: int = Field(default=1 << 30, ge=1 << 20)
    events_retention_days: float | None = Field(default=30.0, gt=0)
    max_batch: int = Field(default=2000, ge=1)
    # DuckDB's buffer pool of the alert store (DuckDB sizes, e.g. 512MB, 2GB;
    # at least 32MB); above it queries and writes, the correlation state's
    # too, spill to <db_path>.tmp.
    store_memory_limit: str = "512MB"
    # While the consumer works through a backlog, alerts and archived events
    # of several polls go to DuckDB in one write (a write has a fixed cost);
    # caught up, every poll is written at once.
    write_batch_events: int = Field(default=10_000, ge=1)
    write_delay_s: float = Field(default=0.25, ge=0)
    # Several correlators in one consumer group: correlation hits are
    # re-keyed by group through an internal topic and each shard's state
    # moves with its partition (correlator/scaleout/). Off: one member
    # correlates everything it reads, and must read everything.
    scale_out: bool = False
    # Scale-out's internal topics are per group (<prefix>.correlation.<group>.hits
    # / .state); true keeps the names every group on the prefix shared before
    # (<prefix>.correlation.hits / .state), so a deployment upgraded from then
    # keeps its open windows. At most one group per prefix may set it.
    scale_out_legacy_topics: bool = False
    # Reload the rules when a rule file, connectors.zones_file or the
    # placeholder file changes (as SIGHUP does), once no change came for
    # watch_debounce_s; a broken edit is refused and the running rules stay.
    watch_rules: bool = True
    # Produce every stored alert and triage change to <topic_prefix>.alerts,
    # exactly once with the store (correlator/alerting/publish.py).
    publish_alerts: bool = True
    publish_transaction_records: int = Field(default=2000, ge=1)
    # The alerts topic's Kafka producer runs in a child process: kafka-python
    # is pure Python and would take the stream loop's GIL (zonewatch/producer_process.py).
    publish_process: bool = True
    watch_debounce_s: float = Field(default=0.5, gt=0)
    poll_timeout_ms: int = Field(default=200, ge=1)
    # Forensic queries (`zonewatch query`, through the correlator's endpoint
    # or on the file): the longest a client may ask for, the rows and MB a
    # result may hold before it is cut, and how many run at once.
    query_max_timeout_s: float = Field(default=300.0, gt=0)
    query_max_rows: int = Field(default=1_000_000, ge=1)
    query_max_result_mb: float = Field(default=256.0, gt=0)
    query_max_concurrent: int = Field(default=4, ge=1)
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, value: dict[str, SourceTiming]) -> dict[str, SourceTiming]:
        unknown = sorted(set(value) - set(SOURCES))
        if unknown:
            raise ValueError(
                f"unknown source(s) {', '.join(unknown)}; the sources are {', '.join(SOURCES)}"
            )
        return value


class TeamsSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    webhook_url: SecretStr | None = None
    secrets_file: Path | None = None
    requests_per_second: float = Field(default=4.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)
    alert_link_template: str | None = None
    routing_file: Path | None = Field(
        default=None, description="YAML: destinations and routes by level, tag, zone crossing"
    )
    # Language of the cards' labels and of the rule description they show.
    # Unset: the console's (console.locale), so one setting serves a team
    # that reads both; set it when the channel's readers differ.
    locale: Literal["ja", "en"] | None = None


class ConnectorSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    zones_file: Path = Path("rules/zones.yaml")
    timezone: str = "Asia/Tokyo"
    max_line_bytes: int = Field(default=64 * 1024, ge=256)
    # `ingest` dead-letters events stamped further ahead of this clock or
    # further behind it (zonewatch/timebounds.py); None: no past bound.
    max_future_skew_s: float = Field(default=DEFAULT_FUTURE_SKEW_S, ge=0)
    max_past_horizon_days: Horizon = Field(default=DEFAULT_PAST_HORIZON_DAYS, gt=0)
    checkpoint_dir: Path = Path("var/checkpoints")
    # Learned identities (connectors/bindings.py): how long an address stays
    # bound to the user last seen on it, and how many addresses are kept.
    identity_binding_ttl_s: float = Field(default=4 * 3600.0, gt=0)
    identity_max_addresses: int = Field(default=100_000, ge=1)
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)


class ConsoleSettings(BaseModel):
    """``zonewatch console``: the analyst web console (console/README.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    # A file holding the sign-in token (never the token itself in settings).
    # Unset on loopback: a random token is written beside the store (0600).
    token_file: Path | None = None
    # Where analysts reach the console (behind a TLS proxy); Teams cards then
    # carry an "open in console" action to <public_url>/alerts/<id>.
    public_url: str | None = None
    locale: Literal["ja", "en"] = "ja"
    timezone: str = "Asia/Tokyo"
    session_ttl_s: float = Field(default=8 * 3600, gt=0)
    session_idle_s: float = Field(default=30 * 60, gt=0)


M365_CONTENT_TYPES = (
    "Audit.AzureActiveDirectory",
    "Audit.Exchange",
    "Audit.SharePoint",
    "Audit.General",
)


class GraphSettings(BaseModel):
    """``zonewatch ingest --graph``: pulls from Microsoft Graph (Intune audit
    events and devices, Entra sign-ins) and the Office 365 Management API."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: str | None = None
    client_id: str | None = None
    # From a file: ZONEWATCH_GRAPH__CLIENT_SECRET_FILE (settings_sources.py).
    client_secret: SecretStr | None = Field(default=None, repr=False)
    base_url: str = "https://graph.microsoft.com"
    token_url: str | None = None
    interval_s: float = Field(default=60.0, gt=0)
    # First start only: events at or after ``since`` (RFC 3339), else this far back.
    lookback_s: float = Field(default=24 * 3600.0, ge=0)
    since: str | None = None
    once: bool = False
    page_size: int = Field(default=500, ge=1)
    max_retry_wait_s: float = Field(default=300.0, ge=0)
    m365_content_types: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)] = (
        M365_CONTENT_TYPES
    )
    m365_publisher_id: str | None = None

    @property
    def token_endpoint(self) -> str:
        return (
            self.token_url
            or f"https://login.microsoftonline.com/{self.tenant_id}/oauth2/v2.0/token"
        )

    def secret(self) -> str:
        """The client secret, registered so log lines never show it."""
        value = self.client_secret.get_secret_value() if self.client_secret else ""
        register_secret(value)
        return value

    def check_complete(self) -> GraphSettings:
        """Self, or ConfigError naming every credential still missing."""
        missing = [
            what
            for what, value in (
                ("--graph-tenant-id / ZONEWATCH_GRAPH__TENANT_ID", self.tenant_id),
                ("--graph-client-id / ZONEWATCH_GRAPH__CLIENT_ID", self.client_id),
                (
                    "--graph-client-secret-file / ZONEWATCH_GRAPH__CLIENT_SECRET_FILE",
                    self.client_secret,
                ),
            )
            if not value
        ]
        if missing:
            raise ConfigError(f"--graph needs {', '.join(missing)}")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    log_level: str = "info"
    log_json: bool | None = None
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    correlator: CorrelatorSettings = Field(default_factory=CorrelatorSettings)
    teams: TeamsSettings = Field(default_factory=TeamsSettings)
    connectors: ConnectorSettings = Field(default_factory=ConnectorSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    graph: GraphSettings = Field(default_factory=GraphSettings)

    @property
    def scale_out_topics(self) -> topics.ScaleOutTopics:
        """The internal topics of ``correlate --scale-out`` for the configured
        group (``KafkaSettings.scale_out_topics``)."""
        return self.kafka.scale_out_topics(
            self.correlator.group_id, legacy=self.correlator.scale_out_legacy_topics
        )

    def updated(self, **sections: dict[str, Any] | BaseModel) -> Settings:
        """A validated copy with fields of the named sections replaced:
        ``settings.updated(correlator={"db_path": path}, kafka=other_kafka)``."""
        data = self.model_dump()
        for name, values in sections.items():
            if isinstance(values, BaseModel):
                data[name] = values.model_dump()
            else:
                data[name] = {**data[name], **values}
        try:
            return Settings.model_validate(data)
        except ValidationError as exc:
            raise _invalid(exc) from exc

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Highest precedence first (zonewatch/settings_sources.py); no .env files."""
        return (
            init_settings,
            ZonewatchEnvSource(settings_cls),
            LegacyEnvSource(settings_cls),
            ConfigFileSource(settings_cls),
        )


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings: defaults < config file < environment < ``overrides``.

    ``config_file`` None reads ``$ZONEWATCH_CONFIG`` if set. Raises
    :class:`ConfigError` with the offending setting named.
    """
    try:
        with config_file_given(config_file):
            return Settings(**overrides)
    except ValidationError as exc:
        raise _invalid(exc) from exc
    except SettingsError as exc:  # e.g. an environment value that is not the JSON a list needs
        raise ConfigError(f"invalid setting: {exc}") from exc


def _invalid(exc: ValidationError) -> ConfigError:
    """The first validation error, naming the setting to fix."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "settings"
    return ConfigError(f"invalid setting {where}: {first['msg']}")
