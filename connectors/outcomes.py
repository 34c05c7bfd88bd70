"""One outcome vocabulary: each vendor's decision words -> ECS outcome and type.

Every parser that reads a vendor's action or verdict word looks it up in
that vendor's table here. A word the table knows sets ``event.outcome``
(``success`` when the traffic or request went through, ``failure`` when it
was stopped) and ``event.type`` (``allowed`` / ``denied``, or a lifecycle
word such as ``start``); ``event.action`` always keeps the device's own
word, lower-cased. A word the table does not know keeps ``event.action``
and gets ``event.outcome: unknown``: guessing from a word's look (is
``quarantine`` a block? is ``monitor`` an allow?) is how a security tool
mislabels, so unknown words are listed by the coverage tests instead.

The words come from the vendors' own references: FortiOS Log Message
Reference (``action`` of traffic, UTM and event logs), PAN-OS syslog field
descriptions (Action of traffic/threat/url logs), Zscaler NSS web feed
(``action``), Squid result codes, ProxySG ``sc-filter-result``/``s-action``,
Check Point, Fortinet, Palo Alto, Forcepoint and Trend Micro CEF ``act``
values.
"""

from __future__ import annotations

from typing import NamedTuple


class Verdict(NamedTuple):
    outcome: str  # success / failure / unknown
    type: str | None  # allowed / denied, or an ECS lifecycle type; None adds none


ALLOWED = Verdict("success", "allowed")
DENIED = Verdict("failure", "denied")
UNKNOWN = Verdict("unknown", None)
START = Verdict("success", "start")
END = Verdict("success", "end")
SUCCESS = Verdict("success", None)
FAILURE = Verdict("failure", None)
CHANGE = Verdict("success", "change")
CREATION = Verdict("success", "creation")
DELETION = Verdict("success", "deletion")


def _table(**groups: tuple[Verdict, str]) -> dict[str, Verdict]:
    """Words given as one space-separated string per verdict."""
    out: dict[str, Verdict] = {}
    for verdict, words in groups.values():
        for word in words.split():
            out[word] = verdict
    return out


# FortiOS traffic logs: session results (accept/close/... for sessions that passed)
FORTIGATE_TRAFFIC = _table(
    ok=(ALLOWED, "accept close timeout server-rst client-rst ip-conn dns start perf-stats"),
    no=(DENIED, "deny dropped blocked block"),
)
# FortiOS UTM logs (webfilter, virus, ips, app-ctrl, dlp, dns, waf, ssl, file-filter,
# emailfilter, anomaly): what the profile did with the request or session
FORTIGATE_UTM = _table(
    ok=(
        ALLOWED,
        "passthrough pass pass_session allowed allow monitored monitor detected log-only "
        "exempt exempted warning authentication",
    ),
    no=(
        DENIED,
        "blocked block dropped drop reset reset_client reset_server reset-client reset-server "
        "deny clear_session redirect ban banned-ip quarantine-ip content-disarm",
    ),
)
# FortiOS event logs without a status= field: the action word itself says it
FORTIGATE_EVENT = _table(
    ok=(
        SUCCESS,
        "login auth-logon fsso-logon auth-logout fsso-logout logout ssl-new-con "
        "tunnel-stats negotiate install_sa phase2-up ssl-web-pass dpd sso-logon",
    ),
    fail=(
        FAILURE,
        "ssl-login-fail login-fail auth-fail ssl-exit-fail ssl-exit-error negotiate_error "
        "ssl-web-deny ssl-alert tunnel-fail auth-failure",
    ),
    start=(START, "tunnel-up"),
    end=(END, "tunnel-down delete_phase1_sa phase2-down"),
    add=(CREATION, "add"),
    edit=(CHANGE, "edit move rename set"),
    delete=(DELETION, "delete"),
)
FORTIGATE_STATUS = _table(
    ok=(SUCCESS, "success succeeded successful pass up"),
    fail=(FAILURE, "failure failed fail error negotiate_error timeout down denied"),
)

# PAN-OS Action column of traffic, threat and url logs
PANOS = _table(
    ok=(ALLOWED, "allow alert continue override block-continue-allowed"),
    no=(
        DENIED,
        "deny drop drop-icmp drop-all-packets reset-client reset-server reset-both block-url "
        "block-ip block-continue block-override override-lockout random-drop sinkhole block "
        "reset",
    ),
)

# Zscaler NSS web feed ``action``
ZSCALER = _table(
    ok=(ALLOWED, "allowed allow"),
    no=(DENIED, "blocked block caution denied isolate"),
)

# Generic CEF ``act`` words and the CEF ``outcome`` field
CEF_GENERIC = _table(
    ok=(
        ALLOWED,
        "allow allowed accept accepted permit permitted pass passed passthrough success succeeded",
    ),
    no=(
        DENIED,
        "block blocked deny denied drop dropped reject rejected reset failure failed fail "
        "prevent prevented quarantine quarantined",
    ),
)
CEF_OUTCOME = _table(
    ok=(SUCCESS, "success succeeded successful allowed /success"),
    fail=(FAILURE, "failure failed fail denied blocked /failure"),
)
# Per CEF device vendor (lower-cased): their own act words first
CEF_VENDORS: dict[str, dict[str, Verdict]] = {
    "palo alto networks": PANOS,
    "fortinet": {**FORTIGATE_TRAFFIC, **FORTIGATE_UTM},
    "zscaler": ZSCALER,
    "check point": _table(
        ok=(ALLOWED, "accept allow encrypt decrypt bypass detect inform ask"),
        no=(DENIED, "drop reject block prevent"),
    ),
    "forcepoint": _table(
        ok=(ALLOWED, "permitted allowed permit allow"),
        no=(DENIED, "blocked block denied"),
    ),
    "websense": _table(
        ok=(ALLOWED, "permitted allowed"),
        no=(DENIED, "blocked denied"),
    ),
    "trend micro": _table(
        ok=(ALLOWED, "permit pass allow log"),
        no=(DENIED, "block deny drop reset reject"),
    ),
}

# Squid result codes end in what happened; the denied ones refused the request
SQUID_DENIED = frozenset({"TCP_DENIED", "TCP_DENIED_REPLY", "UDP_DENIED", "NONE_NONE_ABORTED"})
# ProxySG sc-filter-result
PROXYSG_FILTER = _table(
    ok=(ALLOWED, "OBSERVED PROXIED"),
    no=(DENIED, "DENIED"),
)


def lookup(table: dict[str, Verdict], word: str | None) -> Verdict:
    """The verdict for ``word`` (case-insensitive); UNKNOWN when absent or unlisted."""
    if not word:
        return UNKNOWN
    return table.get(word) or table.get(word.lower()) or UNKNOWN


def apply(event: dict[str, object], verdict: Verdict, kind: str | None = None) -> None:
    """Set ``outcome`` and ``type`` on the ``event`` object; ``kind``
    (``connection``, ``access``...) opens the type list when given."""
    event["outcome"] = verdict.outcome
    types = [kind] if kind else []
    if verdict.type is not None:
        types.append(verdict.type)
    if types:
        event["type"] = types
