"""pySigma processing pipelines: Sigma taxonomy -> the ECS fields our connectors emit,
and logsource -> the zonewatch source whose events a rule may see.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from sigma.processing.conditions import LogsourceCondition
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import (
    FieldMappingTransformation,
    ValueListPlaceholderTransformation,
)
from sigma.rule import SigmaLogSource

from correlator.detection.modifiers import install as install_modifiers
from zonewatch import bounded_yaml
from zonewatch.config import CorrelatorSettings
from zonewatch.errors import ConfigError
from zonewatch.sources import SOURCES

__all__ = [
    "SOURCES",
    "build_pipeline",
    "configured_pipeline",
    "ecs_pipeline",
    "load_placeholders",
    "route",
]


# utf16 / utf16le / utf16be / wide as the specification defines them (modifiers.py).
install_modifiers()

# W3C extended log names used by SigmaHQ proxy rules (taxonomy appendix).
# A list maps one Sigma field onto several ECS fields joined by OR, because
# connectors fill url.full or url.original depending on what the vendor logs.
PROXY_FIELDS: dict[str, str | list[str]] = {
    "c-uri": ["url.full", "url.original"],
    "cs-uri": ["url.full", "url.original"],
    "c-uri-extension": "url.extension",
    "c-uri-query": "url.query",
    "c-uri-stem": "url.path",
    "cs-uri-stem": "url.path",
    "cs-uri-query": "url.query",
    "c-useragent": "user_agent.original",
    "cs-host": "url.domain",
    "r-dns": ["url.domain", "destination.domain"],
    "cs-method": "http.request.method",
    "cs-referrer": "http.request.referrer",
    "cs-version": "http.version",
    "sc-status": "http.response.status_code",
    "cs-bytes": "http.request.bytes",
    "sc-bytes": "http.response.bytes",
    "cs-cookie": "http.request.cookie",
    "c-ip": "source.ip",
    "src_ip": "source.ip",
    "s-ip": "destination.ip",
    "dst_ip": "destination.ip",
    "cs-username": "user.name",
    "username": "user.name",
}

FIREWALL_FIELDS: dict[str, str | list[str]] = {
    "src_ip": "source.ip",
    "src_port": "source.port",
    "dst_ip": "destination.ip",
    "dst_port": "destination.port",
    "username": "user.name",
    "action": "event.action",
    "protocol": "network.transport",
    "src_zone": "observer.ingress.zone",
    "dst_zone": "observer.egress.zone",
}


# Microsoft Entra ID sign-in logs: SigmaHQ writes the Log Analytics SigninLogs
# columns (and a few variants of them) onto our ``entra.*`` fields
# (connectors/entra.py). ``Status`` holds "Success"/"Failure" or a failure text.
SIGNIN_FIELDS: dict[str, str | list[str]] = {
    "ResultType": "entra.status.error_code",
    "ResultDescription": "entra.status.failure_reason",
    "Resultdescription": "entra.status.failure_reason",
    "Status": ["event.outcome", "entra.status.failure_reason", "entra.status.additional_details"],
    "AuthenticationRequirement": "entra.authentication_requirement",
    "ConditionalAccessStatus": "entra.conditional_access_status",
    "conditionalAccessStatus": "entra.conditional_access_status",
    "ResourceDisplayName": "entra.resource_display_name",
    "AppDisplayName": "entra.app_display_name",
    "AppId": "entra.app_id",
    "ClientApp": "entra.client_app_used",
    "ClientAppUsed": "entra.client_app_used",
    "RiskState": "entra.risk_state",
    "RiskLevelDuringSignIn": "entra.risk_level_during_signin",
    "userAgent": "user_agent.original",
    "UserAgent": "user_agent.original",
    "UserPrincipalName": "user.name",
    "Username": "user.name",
    "IPAddress": "source.ip",
    "Location": "source.geo.country_iso_code",
    "DeviceDetail.isCompliant": "entra.device_detail.is_compliant",
    "DeviceDetail.isManaged": "entra.device_detail.is_managed",
    "DeviceDetail.trusttype": "entra.device_detail.trust_type",
    "DeviceDetail.trustType": "entra.device_detail.trust_type",
    "DeviceDetail.deviceId": "entra.device_detail.device_id",
    "properties.message": "entra.authentication_protocol",
}

# Microsoft 365 unified audit log: the Management Activity API's own names
# onto ``m365.*`` (connectors/m365.py).
M365_FIELDS: dict[str, str | list[str]] = {
    "Operation": "m365.operation",
    "Workload": "m365.workload",
    "ResultStatus": "m365.result_status",
    "ObjectId": "m365.object_id",
    "ApplicationId": "m365.application_id",
    "RequestType": "m365.extended_properties.RequestType",
    "UserId": "user.name",
    "ClientIP": "source.ip",
    "UserAgent": "user_agent.original",
    "eventSource": "m365.workload",
    "eventName": ["m365.alert.name", "m365.operation"],
    "status": "m365.result_status",
}


def _mapping(fields: dict[str, str | list[str]]) -> dict[str | None, str | list[str]]:
    return dict(fields.items())


def ecs_pipeline(placeholders: dict[str, Any] | None = None) -> ProcessingPipeline:
    """SigmaHQ proxy, firewall, Entra sign-in and Microsoft 365 rules onto our ECS
    events; own rules pass untouched."""
    items = [
        ProcessingItem(
            identifier="zonewatch_proxy_fields",
            transformation=FieldMappingTransformation(_mapping(PROXY_FIELDS)),
            rule_conditions=[LogsourceCondition(category="proxy")],
        ),
        ProcessingItem(
            identifier="zonewatch_firewall_fields",
            transformation=FieldMappingTransformation(_mapping(FIREWALL_FIELDS)),
            rule_conditions=[LogsourceCondition(category="firewall")],
        ),
        ProcessingItem(
            identifier="zonewatch_signin_fields",
            transformation=FieldMappingTransformation(_mapping(SIGNIN_FIELDS)),
            rule_conditions=[LogsourceCondition(product="azure", service="signinlogs")],
        ),
        ProcessingItem(
            identifier="zonewatch_m365_fields",
            transformation=FieldMappingTransformation(_mapping(M365_FIELDS)),
            rule_conditions=[LogsourceCondition(product="m365")],
        ),
    ]
    return ProcessingPipeline(
        name="zonewatch ECS",
        priority=20,
        items=items + _placeholder_items(),
        vars=dict(placeholders or {}),
    )


def verbatim_pipeline(placeholders: dict[str, Any] | None = None) -> ProcessingPipeline:
    """Rule fields as written (SigmaHQ regression data, flattened evtx)."""
    return ProcessingPipeline(
        name="verbatim", priority=20, items=_placeholder_items(), vars=dict(placeholders or {})
    )


def _placeholder_items() -> list[ProcessingItem]:
    # |expand values: %name% is replaced by the list configured under that name.
    return [
        ProcessingItem(
            identifier="zonewatch_placeholders",
            transformation=ValueListPlaceholderTransformation(),
        )
    ]


def build_pipeline(
    name: str | None, placeholders: dict[str, Any] | None = None
) -> ProcessingPipeline:
    """``ecs`` (default), ``none``, or a pySigma pipeline YAML file."""
    if name is None or name == "none":
        return verbatim_pipeline(placeholders)
    if name == "ecs":
        return ecs_pipeline(placeholders)
    path = Path(name)
    if path.is_file():
        try:
            text = bounded_yaml.read_text(path)
            bounded_yaml.check(text)
            custom = ProcessingPipeline.from_yaml(text)
        except Exception as exc:  # pySigma raises several unrelated types here
            raise ConfigError(f"pipeline file {path}: {exc}") from exc
        return custom + verbatim_pipeline(placeholders)
    raise ConfigError(f"unknown pipeline {name!r}: use 'ecs', 'none' or a pySigma pipeline file")


def configured_pipeline(
    cfg: CorrelatorSettings,
    pipeline: str | None = None,
    placeholders: str | Path | None = None,
) -> ProcessingPipeline:
    """The pipeline every command loads rules with (``match``, ``rules``,
    ``correlate``, ``hunt``, the console's rule health): ``pipeline`` or
    ``correlator.pipeline``, with the ``|expand`` values of the file
    ``placeholders`` or ``correlator.placeholders_file``. Built afresh on
    each call, so a reload reads the placeholder file again."""
    path = placeholders or cfg.placeholders_file
    return build_pipeline(pipeline or cfg.pipeline, load_placeholders(path) if path else None)


def load_placeholders(path: str | Path) -> dict[str, list[str]]:
    """A YAML mapping placeholder name -> value or list of values (for ``|expand``)."""
    try:
        data = bounded_yaml.safe_load(bounded_yaml.read_text(path)) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"placeholder file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"placeholder file {path}: expected a mapping of name -> values")
    out: dict[str, list[str]] = {}
    for key, value in data.items():
        values = value if isinstance(value, list) else [value]
        out[str(key).strip("%")] = [str(v) for v in values]
    return out


def route(logsource: SigmaLogSource) -> frozenset[str] | None:
    """The zonewatch sources a rule's logsource selects.

    None means every source (the logsource does not restrict); an empty set
    means none of ours, so the rule runs only when an event's source is unknown.
    """
    product = (logsource.product or "").lower()
    category = (logsource.category or "").lower()
    service = (logsource.service or "").lower()
    if not (product or category or service):
        return None
    if product == "zonewatch":
        if service in SOURCES:
            return frozenset({service})
        if category == "proxy":
            return frozenset({"gateway"})
        if category == "firewall":
            return frozenset({"firewall"})
        return None if not (service or category) else frozenset()
    if category == "proxy":
        return frozenset({"gateway"})
    if category == "firewall":
        return frozenset({"firewall"})
    if (product == "azure" and service == "signinlogs") or product == "m365":
        return frozenset({"identity"})
    if product == "azure" and service in ("auditlogs", "activitylogs", "intune", ""):
        return frozenset({"intune"})
    return frozenset()
