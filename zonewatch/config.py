"""Settings from environment variables (``ZONEWATCH_*``) and an optional file.

Precedence: explicit arguments > environment > config file > defaults.
Nested settings use ``__`` in environment names, e.g.
``ZONEWATCH_KAFKA__SASL_MECHANISM=SCRAM-SHA-512``. The plain
``KAFKA_BOOTSTRAP_SERVERS`` variable is honoured too, because that is the name
operators and our tests use to point at a real cluster.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import yaml
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
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from zonewatch import bounded_yaml
from zonewatch.errors import ConfigError
from zonewatch.logs import register_secret
from zonewatch.options import teams_url_flag as teams_url_flag  # re-exported
from zonewatch.sources import SOURCES as SOURCES  # re-exported
from zonewatch.sources import source_of_topic as source_of_topic  # re-exported
from zonewatch.timebounds import DEFAULT_FUTURE_SKEW_S, DEFAULT_PAST_HORIZON_DAYS


def _off_is_none(value: Any) -> Any:
    """``off`` / ``none`` / empty in an environment variable: no bound."""
    if isinstance(value, str) and value.strip().lower() in ("", "off", "none", "null"):
        return None
    return value


# A past horizon in days; ``off`` (env) or null (file) lifts it.
Horizon = Annotated[float | None, BeforeValidator(_off_is_none)]


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
        return self.topic(f"events.{source}")

    @property
    def deadletter_topic(self) -> str:
        return self.topic("deadletter")

    @property
    def checkpoints_topic(self) -> str:
        """Connector checkpoints, written in the same transaction as the events
        they cover; one partition so a connector reads back one ordered history."""
        return self.topic("checkpoints")

    @property
    def correlation_hits_topic(self) -> str:
        """Scale-out: correlation hits re-keyed by group (correlator/scaleout/)."""
        return self.topic("correlation.hits")

    @property
    def correlation_state_topic(self) -> str:
        """Scale-out: the changelog of each correlation shard's state (compacted)."""
        return self.topic("correlation.state")

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
    group_id: str = "zonewatch-correlator"
    db_path: Path = Path("var/zonewatch.duckdb")
    allowed_lateness_s: float = Field(default=60.0, ge=0)
    late_events_update_windows: bool = False
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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ZONEWATCH_",
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
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "settings"
            raise ConfigError(f"invalid setting {where}: {first['msg']}") from exc

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        def env_without_secret_files() -> dict[str, Any]:
            # *_FILE variables name files (_env_overrides reads them); they
            # are not settings themselves.
            data: dict[str, Any] = env_settings()
            for dotted in _SECRET_FILE_VARS:
                section, key = dotted.split(".")
                if isinstance(data.get(section), dict):
                    data[section].pop(key, None)
            return data

        env_source = cast(PydanticBaseSettingsSource, env_without_secret_files)
        return (init_settings, env_source, file_secret_settings)


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = bounded_yaml.read_text(path)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            data = bounded_yaml.safe_load(text) or {}
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:]}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_overrides() -> dict[str, Any]:
    """Environment values as a nested dict, so they can win over the file."""
    prefix = "ZONEWATCH_"
    fields = set(Settings.model_fields)
    out: dict[str, Any] = {}
    for name, value in os.environ.items():
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix) :].lower().split("__")
        if parts[0] not in fields:
            # ZONEWATCH_CONFIG, ZONEWATCH_TEAMS_URL, ZONEWATCH_GRAPH_* ... are
            # command options read by the commands themselves, not settings.
            continue
        if ".".join(parts) in _SECRET_FILE_VARS:
            # ZONEWATCH_KAFKA__SASL_PASSWORD_FILE=/run/secrets/kafka_password:
            # the secret stays in a file (compose secrets, systemd credentials).
            parts[-1] = parts[-1].removesuffix("_file")
            value = _read_secret_file(name, value)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


# Secrets that may come from a file named by ``ZONEWATCH_<NAME>_FILE``.
_SECRET_FILE_VARS = frozenset({"kafka.sasl_password_file", "teams.webhook_url_file"})


def _read_secret_file(var: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{var}: cannot read {path}: {exc.strerror}") from exc


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings: defaults < config file < environment < ``overrides``.

    Raises :class:`ConfigError` with the offending setting named.
    """
    config_file = config_file or (
        Path(os.environ["ZONEWATCH_CONFIG"]) if os.environ.get("ZONEWATCH_CONFIG") else None
    )
    data: dict[str, Any] = _read_config_file(config_file) if config_file else {}
    data = _deep_merge(data, _env_overrides())
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and not (
        data.get("kafka", {}).get("bootstrap_servers")
    ):
        data.setdefault("kafka", {})["bootstrap_servers"] = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    data = _deep_merge(data, overrides)
    try:
        # Values already merged; stop pydantic-settings from reading env again.
        return Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from exc
