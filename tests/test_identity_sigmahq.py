"""SigmaHQ's Azure sign-in and Microsoft 365 rules, unchanged, on the identity source.

Vendor records go through our connector (what Kafka carries); the rule set is
what ``zonewatch correlate --rules rules/ --rules <sigmahq folders>`` loads,
with the ``ecs`` pipeline mapping the SigninLogs and Management Activity names
onto ``entra.*`` / ``m365.*`` (correlator/detection/pipelines.py). Each case
is a record of a situation a SigmaHQ rule describes, built from Microsoft's
documented error codes and operations.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from test_demo_story import parse_samples
from test_rule_pack_sigmahq import pack_with_sigmahq

from connectors.inputs import Record
from connectors.pipeline import Pipeline
from zonewatch.zones import load_zone_map

FOLDERS = ("rules/cloud/azure/signin_logs", "rules/cloud/m365")
ZONES = load_zone_map(ROOT / "rules" / "zones.yaml")


def signin(**kw: Any) -> str:
    status = {"errorCode": kw.pop("code", 0)}
    for key in ("failureReason", "additionalDetails"):
        if key in kw:
            status[key] = kw.pop(key)
    rec = {
        "id": "0b8f2c1d-7e6a-4d5c-9b3a-2f1e0d9c8b7a", "createdDateTime": "2026-11-26T02:00:00Z",
        "userPrincipalName": "kondo.makoto@city.example.lg.jp", "userId": "u-kondo",
        "appId": "4765445b-32c6-49b0-83e6-1d93765276ca", "appDisplayName": "OfficeHome",
        "ipAddress": "192.0.2.4", "clientAppUsed": "Browser", "isInteractive": True,
        "conditionalAccessStatus": "success",
        "authenticationRequirement": "multiFactorAuthentication", "authenticationProtocol": "none",
        "resourceDisplayName": "Office 365 Exchange Online",
        "deviceDetail": {"deviceId": "e0b1c2d3-0402", "displayName": "LT-0402", "isCompliant": True,
                         "isManaged": True, "trustType": "Azure AD joined"},
        "status": status, **kw,
    }  # fmt: skip
    return json.dumps({"time": rec["createdDateTime"], "category": "SignInLogs",
                       "operationName": "Sign-in activity", "properties": rec})  # fmt: skip


def audit(operation: str, **kw: Any) -> str:
    rec = {
        "CreationTime": "2026-11-26T02:10:00", "Id": "5a6b7c8d-0000-4e1f-9a2b-3c4d5e6f7a8b",
        "Operation": operation, "OrganizationId": "5f1c0d2e-8a34-4c1b-9e77-0c3b2a1d9f10",
        "RecordType": 8, "ResultStatus": "Success", "UserKey": "1003BFFD8EC47CA6", "UserType": 0,
        "Workload": "AzureActiveDirectory", "ObjectId": "kondo.makoto@city.example.lg.jp",
        "UserId": "kondo.makoto@city.example.lg.jp", "ClientIP": "192.0.2.4", **kw,
    }  # fmt: skip
    return json.dumps([rec])


# case -> (format, record, the SigmaHQ rule that must fire)
CASES = {
    "locked_out": ("signins", signin(code=50053, failureReason="Account is locked."),
                   "Account Lockout"),
    "disabled": ("signins", signin(code=50057, failureReason="User account is disabled. The "
                 "account has been disabled by an administrator."), "Login to Disabled Account"),
    "ca_blocked": ("signins", signin(code=53003, failureReason="Blocked by Conditional Access"),
                   "User Access Blocked by Azure Conditional Access"),
    "azurehound": ("signins", signin(userAgent="azurehound/v2.1.7"),
                   "Discovery Using AzureHound"),
    "noncompliant": ("signins", signin(deviceDetail={"deviceId": "e0b1c2d3-0188",
                     "displayName": "LT-0188", "isCompliant": False, "isManaged": True,
                     "trustType": "Azure AD joined"}), "Sign-ins from Non-Compliant Devices"),
    "single_factor": ("signins", signin(authenticationRequirement="singleFactorAuthentication"),
                      "Azure AD Only Single Factor Authentication Required"),
    "mfa_denied": ("signins", signin(code=500121, failureReason="Authentication failed during "
                   "strong authentication request.", additionalDetails="MFA denied; user "
                   "declined the authentication"), "Multifactor Authentication Denied"),
    "mfa_interrupted": ("signins", signin(code=500121, failureReason="Authentication failed "
                        "during strong authentication request."),
                        "Multifactor Authentication Interrupted"),
    "ropc": ("signins", signin(authenticationProtocol="ropc"),
             "Applications That Are Using ROPC Authentication Flow"),
    "legacy_bypass": ("signins", signin(userAgent="BAV2ROPC", clientAppUsed="Other clients"),
                      "Potential MFA Bypass Using Legacy Client Authentication"),
    "risky_unregistered": ("signins", signin(authenticationRequirement="singleFactorAuthentication",
                           riskState="atRisk", deviceDetail={"deviceId": "",
                           "operatingSystem": "Windows10", "browser": "Chrome 131.0.0"}),
                           "Suspicious SignIns From A Non Registered Device"),
    "device_auth_required": ("signins", signin(code=50097, failureReason="Device authentication "
                             "is required"), "Azure Unusual Authentication Interruption"),
    "ca_not_met": ("signins", signin(code=53003, failureReason="Blocked by Conditional Access"),
                   "Sign-in Failure Due to Conditional Access Requirements Not Met"),
    "device_registration": ("signins", signin(resourceDisplayName="Device Registration Service",
                            authenticationRequirement="singleFactorAuthentication"),
                            "Device Registration or Join Without MFA"),
    "bypass_ca": ("m365-audit", audit("UserLoggedIn", RecordType=15,
                  ApplicationId="9ba1a5c7-f17a-4de9-a1f1-6178c8d51223",
                  ExtendedProperties=[{"Name": "RequestType", "Value": "Cmsi:Cmsi"}]),
                  "Azure Login Bypassing Conditional Access Policies"),
    "disable_mfa": ("m365-audit", audit("Disable Strong Authentication."),
                    "Disabling Multi Factor Authentication"),
    "federated_domain": ("m365-audit", audit("Add domain to company."),
                         "New Federated Domain Added"),
}  # fmt: skip
ORDINARY = ("signins", signin())


@pytest.fixture(scope="module")
def both(shared_dir: Path) -> Any:
    return pack_with_sigmahq(shared_dir, FOLDERS)


def _sigmahq(ruleset: Any) -> dict[str, Any]:
    return {r.id: r for r in ruleset.detections if r.path and "sigmahq" in str(r.path)}


def _fired(ruleset: Any, fmt: str, line: str) -> dict[str, str]:
    events, letter = Pipeline("identity", fmt, zones=ZONES).handle(Record(line.encode()))
    assert letter is None, letter
    out: dict[str, str] = {}
    for event in events:
        for rule in ruleset.match(event, "identity"):
            if rule.generate:
                out[rule.id] = rule.title
    return out


def test_every_azure_sign_in_and_m365_rule_loads_and_routes_to_identity(both: Any) -> None:
    rules = _sigmahq(both)
    assert len(rules) == sum(
        1
        for f in FOLDERS
        for _ in (ROOT.parent / "shared" / "sigma" / "sigmahq" / f).rglob("*.yml")
    )
    assert {r.sources for r in rules.values()} == {frozenset({"identity"})}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sigmahq_rules_fire_unchanged_on_identity_events(both: Any, case: str) -> None:
    fmt, line, title = CASES[case]
    fired = _fired(both, fmt, line)
    assert title in set(fired.values()), fired


def test_how_many_fire_and_an_ordinary_sign_in_stays_quiet(both: Any) -> None:
    sigmahq = _sigmahq(both)
    fired: set[str] = set()
    for fmt, line, _ in CASES.values():
        fired |= set(_fired(both, fmt, line)) & set(sigmahq)
    print(
        f"\nSigmaHQ azure/signinlogs + m365: {len(sigmahq)} rules, {len(fired)} fire on the cases"
    )
    assert len(fired) >= 16
    assert _fired(both, *ORDINARY) == {}


def test_sigmahq_on_the_demo_day(both: Any) -> None:
    """What SigmaHQ adds on the demo's sign-ins and M365 records (reported, pinned)."""
    sigmahq = _sigmahq(both)
    day = [e for e in parse_samples() if e["event"]["dataset"] == "identity"]
    hits: dict[str, int] = {}
    for event in day:
        for rule in both.match(event, "identity"):
            if rule.id in sigmahq and rule.generate:
                hits[rule.title] = hits.get(rule.title, 0) + 1
    print(f"\nSigmaHQ on the demo's {len(day)} identity events: {hits}")
    # Tanaka from Singapore and the phone as Suzuki: no second factor; Sato's laptop
    assert hits == {
        "Azure AD Only Single Factor Authentication Required": 2,
        "Sign-ins from Non-Compliant Devices": 1,
    }
