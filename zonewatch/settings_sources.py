"""Where settings come from: the pydantic-settings sources of ``Settings``.

Precedence, highest first (``Settings.settings_customise_sources``):

1. arguments (``Settings(**values)``, ``load_settings(**overrides)``);
2. the environment, ``ZONEWATCH_<SECTION>__<NAME>`` (pydantic-settings'
   own env source, nested delimiter ``__``);
3. the older environment names in ``LEGACY_ENV`` (``KAFKA_BOOTSTRAP_SERVERS``,
   ``ZONEWATCH_TEAMS_URL``, ``ZONEWATCH_GRAPH_TENANT_ID`` ...): still read,
   below the ``ZONEWATCH_<SECTION>__<NAME>`` ones;
4. the YAML or TOML file named by ``load_settings(config_file)`` or
   ``ZONEWATCH_CONFIG``, nested by section;
5. the defaults of the models.

A secret in ``SECRET_FILES`` may instead come from a file: a variable
``ZONEWATCH_<SECTION>__<NAME>_FILE`` (or ``<name>_file`` in the config file)
names a file holding it, as compose secrets and systemd credentials do.
``origins`` says which variable or file each value came from, for
``zonewatch config show``.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import yaml
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource

from zonewatch import bounded_yaml
from zonewatch.errors import ConfigError

ENV_PREFIX = "ZONEWATCH_"
CONFIG_ENV = "ZONEWATCH_CONFIG"

# Secrets that may come from a file named by ``<setting>_file``.
SECRET_FILES = frozenset({"kafka.sasl_password", "teams.webhook_url", "graph.client_secret"})

# Environment names older than ``ZONEWATCH_<SECTION>__<NAME>``, which
# deployments (docker-compose.yml, systemd units) and tests still use.
LEGACY_ENV: dict[str, str] = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka.bootstrap_servers",
    "ZONEWATCH_TEAMS_URL": "teams.webhook_url",
    "ZONEWATCH_GRAPH_TENANT_ID": "graph.tenant_id",
    "ZONEWATCH_GRAPH_CLIENT_ID": "graph.client_id",
    "ZONEWATCH_GRAPH_CLIENT_SECRET_FILE": "graph.client_secret_file",
    "ZONEWATCH_GRAPH_BASE_URL": "graph.base_url",
    "ZONEWATCH_GRAPH_TOKEN_URL": "graph.token_url",
    "ZONEWATCH_M365_PUBLISHER_ID": "graph.m365_publisher_id",
    "ZONEWATCH_QUERIES_DIR": "correlator.queries_dir",
}

# The file ``load_settings(config_file)`` names while it builds settings.
_config_file: ContextVar[Path | None] = ContextVar("zonewatch_config_file", default=None)


@contextmanager
def config_file_given(path: Path | None) -> Iterator[None]:
    """Within the block, ``ConfigFileSource`` reads ``path`` (else ``ZONEWATCH_CONFIG``)."""
    token = _config_file.set(path)
    try:
        yield
    finally:
        _config_file.reset(token)


def config_file_path(environ: Mapping[str, str] | None = None) -> Path | None:
    environ = os.environ if environ is None else environ
    given = _config_file.get()
    if given is not None:
        return given
    return Path(environ[CONFIG_ENV]) if environ.get(CONFIG_ENV) else None


def read_secret_file(what: str, path: str | os.PathLike[str]) -> str:
    """The secret held in ``path`` (stripped); ConfigError naming ``what`` if unreadable."""
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from exc
    if not secret:
        raise ConfigError(f"{what}: the secret file {path} is empty")
    return secret


def read_config_file(path: Path) -> dict[str, Any]:
    """A YAML (size-limited, ``zonewatch.bounded_yaml``) or TOML settings file."""
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


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{name}.")
        else:
            yield name, value


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _read_secret_files(data: dict[str, Any], named_by: Mapping[str, str]) -> dict[str, Any]:
    """Replace each ``<secret>_file`` entry with the secret it names.

    ``named_by`` maps the dotted ``<secret>_file`` name to what named it
    (an environment variable or the config file), for error messages."""
    flat = dict(_flatten(data))
    for secret in SECRET_FILES:
        path = flat.pop(f"{secret}_file", None)
        if path is not None:
            flat[secret] = read_secret_file(named_by.get(f"{secret}_file", secret), path)
    return _nest(flat)


class ZonewatchEnvSource(EnvSettingsSource):
    """``ZONEWATCH_<SECTION>__<NAME>``, plus ``..._FILE`` for the secrets."""

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        return _read_secret_files(data, {s: _env_name(s) for s in _secret_file_names()})

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        """JSON for lists and mappings; a value that is not JSON goes on as
        given, so validation names the setting (``correlator.rules``)."""
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            return value


class LegacyEnvSource(PydanticBaseSettingsSource):
    """The environment names of ``LEGACY_ENV``."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads everything at once

    def __call__(self) -> dict[str, Any]:
        flat = {
            dotted: os.environ[var] for var, dotted in LEGACY_ENV.items() if os.environ.get(var)
        }
        named_by = {dotted: var for var, dotted in LEGACY_ENV.items()}
        return _read_secret_files(_nest(flat), named_by)


class ConfigFileSource(PydanticBaseSettingsSource):
    """The YAML or TOML file given to ``load_settings``, else ``$ZONEWATCH_CONFIG``."""

    def __init__(self, settings_cls: type[BaseSettings]):
        super().__init__(settings_cls)
        self.path = config_file_path()

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads everything at once

    def __call__(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        data = read_config_file(self.path)
        label = f"config file {self.path}"
        return _read_secret_files(data, {s: f"{label} ({s})" for s in _secret_file_names()})


def _secret_file_names() -> list[str]:
    return [f"{s}_file" for s in SECRET_FILES]


def _env_name(dotted: str) -> str:
    return ENV_PREFIX + dotted.replace(".", "__").upper()


def _secret_named(dotted: str) -> str | None:
    """``kafka.sasl_password_file`` -> ``kafka.sasl_password``; None for other names."""
    secret = dotted.removesuffix("_file")
    return secret if secret != dotted and secret in SECRET_FILES else None


def origins(
    sections: set[str], config_file: Path | None, environ: Mapping[str, str]
) -> dict[str, str]:
    """Where each setting that is not a default comes from, as the sources
    layer them: ``file PATH``, ``env VAR`` or ``file named by env VAR``."""
    found: dict[str, str] = {}

    def add(dotted: str, origin: str) -> None:
        secret = _secret_named(dotted)
        if secret is None:
            found[dotted] = origin
        elif origin.startswith("env "):
            found[secret] = f"file named by {origin}"
        else:
            found[secret] = origin

    if config_file is not None:
        for name, _ in _flatten(read_config_file(config_file)):
            add(name, f"file {config_file}")
    for var, dotted in LEGACY_ENV.items():
        if environ.get(var):
            add(dotted, f"env {var}")
    for var in environ:
        if not var.upper().startswith(ENV_PREFIX):
            continue
        parts = var[len(ENV_PREFIX) :].lower().split("__")
        if parts[0] not in sections:
            continue
        dotted = ".".join(parts)
        # A section or a mapping given whole as JSON sets each setting it holds.
        value = _json_mapping(environ[var])
        if value:
            for name, _ in _flatten(value, f"{dotted}."):
                add(name, f"env {var}")
        else:
            add(dotted, f"env {var}")
    return found


def _json_mapping(text: str) -> dict[str, Any] | None:
    if not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
