"""Microsoft cloud pull inputs beyond Intune's audit events (connectors/inputs/graph.py).

All share ``GraphInput``'s client: the OAuth2 client-credentials grant (token
renewed a minute before it expires and once more on a 401), ``Retry-After``
on 429/502/503/504, secrets read from a file and never logged.

``GraphSignInInput`` (``ingest identity --format signins --graph``)
    Graph ``auditLogs/signIns`` after a high-water mark on ``createdDateTime``.
    Entra ID writes sign-ins minutes after they happen, so each poll asks again
    from ``overlap_s`` before the mark and skips the ids it already handed out
    (the checkpoint keeps the ids inside that overlap).
``GraphDevicesInput`` (``ingest intune --format devices --graph``)
    A full listing of ``deviceManagement/managedDevices`` with ``$select`` of
    the properties the change events use, every ``interval_s``. Pages go out as
    Graph sent them, with the time of the request in
    ``@zonewatch.retrievedDateTime``; the devices format compares them with
    the state of the source and reports devices missing from a complete
    listing as removed.
``ManagementActivityInput`` (``ingest identity --format m365-audit --graph``)
    The Office 365 Management Activity API: starts the subscriptions, lists
    the content blobs of each content type in windows of at most 24 h by
    ``contentCreated`` (following ``NextPageUri``), downloads each blob once.
    The checkpoint holds, per content type, the start of the current window
    and the blobs of it already handed out. Blobs past ``contentExpiration``
    (or answered AF20051/AF20050) are skipped and counted, a cursor older than
    the API's seven days moves forward with a warning: that content is gone.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from connectors.inputs import Record
from connectors.inputs.graph import GraphError, GraphInput
from zonewatch.config import M365_CONTENT_TYPES as CONTENT_TYPES
from zonewatch.config import GraphSettings
from zonewatch.errors import ConfigError
from zonewatch.logs import get_logger

log = get_logger(__name__)

SIGNINS_PATH = "/v1.0/auditLogs/signIns"
DEVICES_PATH = "/v1.0/deviceManagement/managedDevices"
# What the device change events and the identity map use (connectors/intune/).
DEVICE_SELECT = (
    "id,deviceName,userPrincipalName,userId,complianceState,managedDeviceOwnerType,"
    "lastSyncDateTime,operatingSystem,osVersion,azureADDeviceId,"
    "complianceGracePeriodExpirationDateTime,serialNumber,model,managementAgent,jailBroken,"
    "wiFiMacAddress"
)
RETRIEVED_ANNOTATION = "@zonewatch.retrievedDateTime"
M365_BASE_URL = "https://manage.office.com"
# The API keeps content for seven days and lists windows of at most 24 hours.
M365_RETENTION = timedelta(days=7)
M365_WINDOW = timedelta(hours=24)


def _parse_time(value: str) -> datetime:
    text = value.strip().replace("Z", "+00:00")
    if "." in text:  # Graph writes up to 7 fractional digits; Python reads 6
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _odata(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class GraphSignInInput(GraphInput):
    PERMISSION = "AuditLog.Read.All"

    def __init__(
        self,
        settings: GraphSettings,
        client: httpx.Client | None = None,
        *,
        path: str = SIGNINS_PATH,
        overlap_s: float = 900.0,
    ):
        super().__init__(settings, client)
        self.path = path
        self.overlap = timedelta(seconds=overlap_s)
        self.name = f"graph:{settings.base_url}{path}"
        self._handed: dict[str, str] = {}  # id -> createdDateTime, inside the overlap

    def checkpoint(self) -> dict[str, Any] | None:
        if self._hwm is None:
            return None
        return {"hwm": self._hwm, "handed": dict(self._handed)}

    def restore(self, checkpoint: dict[str, Any]) -> None:
        self._hwm = checkpoint.get("hwm")
        handed = checkpoint.get("handed")
        self._handed = dict(handed) if isinstance(handed, dict) else {}

    def _url(self, since: datetime) -> str:
        s = self.settings
        return str(
            httpx.URL(
                s.base_url.rstrip("/") + self.path,
                params={"$filter": f"createdDateTime ge {_odata(since)}", "$top": str(s.page_size)},
            )
        )

    def poll(self) -> Iterator[Record]:
        if self._hwm is None:
            start = datetime.now(UTC) - timedelta(seconds=self.settings.lookback_s)
            self._hwm = self.settings.since or _odata(start)
        mark = _parse_time(self._hwm)
        url: str | None = self._url(mark - self.overlap)
        newest = mark
        while url and not self._closed:
            page = self._request("GET", url).json()
            for item in page.get("value", []):
                item_id = str(item.get("id") or "")
                created = str(item.get("createdDateTime") or "")
                if item_id in self._handed:
                    continue
                if item_id and created:
                    self._handed[item_id] = created
                    newest = max(newest, _parse_time(created))
                yield Record(orjson.dumps(item), None, None, "graph")
            url = page.get("@odata.nextLink")
        if not self._closed:
            self._hwm = _odata(newest)
            cutoff = newest - self.overlap
            self._handed = {i: c for i, c in self._handed.items() if _parse_time(c) >= cutoff}


class GraphDevicesInput(GraphInput):
    PERMISSION = "DeviceManagementManagedDevices.Read.All"

    def __init__(
        self,
        settings: GraphSettings,
        client: httpx.Client | None = None,
        *,
        path: str = DEVICES_PATH,
        select: str = DEVICE_SELECT,
    ):
        super().__init__(settings, client)
        self.path = path
        self.select = select
        self.name = f"graph:{settings.base_url}{path}"
        self._last_poll: str | None = None
        self.polls = 0

    def checkpoint(self) -> dict[str, Any] | None:
        return {"last_poll": self._last_poll} if self._last_poll else None

    def restore(self, checkpoint: dict[str, Any]) -> None:
        self._last_poll = checkpoint.get("last_poll")

    def poll(self) -> Iterator[Record]:
        s = self.settings
        params = {"$select": self.select, "$top": str(s.page_size)}
        url: str | None = str(httpx.URL(s.base_url.rstrip("/") + self.path, params=params))
        asked = _odata(datetime.now(UTC))
        while url and not self._closed:
            page = self._request("GET", url).json()
            page[RETRIEVED_ANNOTATION] = asked
            url = page.get("@odata.nextLink")
            yield Record(orjson.dumps(page), None, None, "graph")
        if not self._closed:
            self._last_poll = asked
            self.polls += 1


class ManagementActivityInput(GraphInput):
    PERMISSION = "ActivityFeed.Read (Office 365 Management APIs)"

    def __init__(
        self,
        settings: GraphSettings,
        client: httpx.Client | None = None,
        *,
        content_types: tuple[str, ...] = CONTENT_TYPES,
        publisher_id: str | None = None,
        lag_s: float = 300.0,
        now: Any = None,
    ):
        super().__init__(settings, client)
        unknown = [t for t in content_types if t not in CONTENT_TYPES and t != "DLP.All"]
        if unknown:
            raise ConfigError(
                f"unknown content type(s) {', '.join(unknown)}: use {', '.join(CONTENT_TYPES)}"
            )
        self.content_types = content_types
        self.publisher_id = publisher_id
        self.lag = timedelta(seconds=lag_s)
        self.root = f"{settings.base_url.rstrip('/')}/api/v1.0/{settings.tenant_id}/activity/feed"
        self.name = f"m365:{self.root}"
        self._now = now or (lambda: datetime.now(UTC))
        self._cursors: dict[str, dict[str, Any]] = {}
        self._subscribed = False
        self.expired = 0  # content blobs that were gone before we fetched them
        self.blobs = 0

    def checkpoint(self) -> dict[str, Any] | None:
        if not self._cursors:
            return None
        return {
            t: {"start": c["start"], "done": sorted(c["done"])} for t, c in self._cursors.items()
        }

    def restore(self, checkpoint: dict[str, Any]) -> None:
        for content_type, cursor in checkpoint.items():
            if isinstance(cursor, dict) and cursor.get("start"):
                self._cursors[content_type] = {
                    "start": cursor["start"],
                    "done": set(cursor.get("done") or []),
                }

    def _params(self, **kw: str) -> dict[str, str]:
        if self.publisher_id:
            kw["PublisherIdentifier"] = self.publisher_id
        return kw

    def _subscribe(self) -> None:
        for content_type in self.content_types:
            url = str(
                httpx.URL(
                    f"{self.root}/subscriptions/start",
                    params=self._params(contentType=content_type),
                )
            )
            try:
                self._request("POST", url, json={})
            except GraphError as exc:
                if "AF20024" not in str(exc):  # "the subscription is already enabled"
                    raise
        self._subscribed = True

    @staticmethod
    def _when(value: datetime) -> str:
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")

    def _blobs(self, content_type: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        url: str | None = str(
            httpx.URL(
                f"{self.root}/subscriptions/content",
                params=self._params(
                    contentType=content_type, startTime=self._when(start), endTime=self._when(end)
                ),
            )
        )
        blobs: list[dict[str, Any]] = []
        while url and not self._closed:
            resp = self._request("GET", url)
            listed = resp.json()
            if isinstance(listed, list):
                blobs.extend(b for b in listed if isinstance(b, dict) and b.get("contentId"))
            url = resp.headers.get("NextPageUri")
        return sorted(blobs, key=lambda b: str(b.get("contentCreated") or ""))

    def _fetch(self, blob: dict[str, Any], now: datetime) -> bytes | None:
        expires = blob.get("contentExpiration")
        if isinstance(expires, str) and _parse_time(expires) <= now:
            self.expired += 1
            log.warning("m365_content_expired", content_id=blob["contentId"], expired=expires)
            return None
        try:
            return self._request("GET", str(blob["contentUri"])).content
        except GraphError as exc:
            if "AF20051" in str(exc) or "AF20050" in str(exc):  # expired / no longer exists
                self.expired += 1
                log.warning("m365_content_gone", content_id=blob["contentId"], error=str(exc))
                return None
            raise

    def poll(self) -> Iterator[Record]:
        if not self._subscribed:
            self._subscribe()
        for content_type in self.content_types:
            yield from self._poll_type(content_type)

    def _poll_type(self, content_type: str) -> Iterator[Record]:
        now = self._now()
        oldest = now - M365_RETENTION + timedelta(minutes=5)
        cursor = self._cursors.get(content_type)
        if cursor is None:
            first = self.settings.since
            start = (
                _parse_time(first)
                if first
                else now - timedelta(seconds=min(self.settings.lookback_s, 7 * 86400))
            )
            cursor = self._cursors[content_type] = {"start": self._when(start), "done": set()}
        start = _parse_time(cursor["start"])
        if start < oldest:
            log.warning(
                "m365_gap",
                content_type=content_type,
                since=cursor["start"],
                detail="content older than seven days is no longer available",
            )
            start = oldest
            cursor.update(start=self._when(start), done=set())
        until = now - self.lag
        while start < until and not self._closed:
            end = min(start + M365_WINDOW, until)
            for blob in self._blobs(content_type, start, end):
                if blob["contentId"] in cursor["done"] or self._closed:
                    continue
                body = self._fetch(blob, self._now())
                cursor["done"].add(blob["contentId"])
                if body is not None:
                    self.blobs += 1
                    yield Record(body, None, None, "m365")
            if self._closed:
                return
            start = end
            cursor.update(start=self._when(start), done=set())


def cloud_input(
    source: str,
    fmt: str,
    settings: GraphSettings,
) -> GraphInput:
    """The pull input for ``zonewatch ingest SOURCE --format FMT --graph``."""
    if (source, fmt) == ("intune", "graph"):
        return GraphInput(settings)
    if (source, fmt) == ("intune", "devices"):
        return GraphDevicesInput(settings)
    if (source, fmt) == ("identity", "signins"):
        return GraphSignInInput(settings)
    if (source, fmt) == ("identity", "m365-audit"):
        if settings.base_url.rstrip("/") == "https://graph.microsoft.com":
            settings = settings.model_copy(update={"base_url": M365_BASE_URL})
        return ManagementActivityInput(
            settings,
            content_types=settings.m365_content_types,
            publisher_id=settings.m365_publisher_id,
        )
    raise ConfigError(
        f"--graph has nothing to pull for {source}/{fmt}: use intune --format graph (audit "
        "events) or devices (managed devices), identity --format signins or m365-audit"
    )
