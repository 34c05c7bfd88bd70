"""Microsoft Graph ``deviceManagement/auditEvents``, polled with a high-water mark.

Authentication is the OAuth2 client-credentials grant (tenant, client id and
a client secret: ``settings.graph``, zonewatch/config.py); the token is renewed before it expires
and once more on a 401. Pages are followed through ``@odata.nextLink``. A 429
or 503 waits for ``Retry-After`` (seconds) and tries the same URL again.

Position: each poll asks for ``activityDateTime ge HWM``. The checkpoint
holds the high-water mark of the last completed poll plus the ids already
handed out since then, so a restart in the middle of a poll neither repeats
nor skips an event, even when several share one timestamp.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from connectors.inputs import Record
from zonewatch.config import GraphSettings
from zonewatch.errors import ZonewatchError
from zonewatch.logs import get_logger

log = get_logger(__name__)

AUDIT_PATH = "/v1.0/deviceManagement/auditEvents"
RETRY_STATUSES = (429, 502, 503, 504)


class GraphError(ZonewatchError):
    """Microsoft Graph refused the request (credentials, permissions, or outage)."""

    exit_code = 69


def _odata_time(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class GraphInput:
    # the application permission a 403 most likely lacks (subclasses name theirs)
    PERMISSION = "DeviceManagementApps.Read.All"

    def __init__(self, settings: GraphSettings, client: httpx.Client | None = None):
        self.settings = settings
        self.name = f"graph:{settings.base_url}{AUDIT_PATH}"
        self.client = client or httpx.Client(timeout=30.0)
        self._token: str | None = None
        self._token_expiry = 0.0
        self._hwm: str | None = None
        self._seen: set[str] = set()
        self._closed = False
        self.retries = 0  # 429/5xx answers waited out

    # -- checkpoint ---------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any] | None:
        if self._hwm is None:
            return None
        return {"hwm": self._hwm, "seen": sorted(self._seen)}

    def restore(self, checkpoint: dict[str, Any]) -> None:
        self._hwm = checkpoint.get("hwm")
        self._seen = set(checkpoint.get("seen", []))

    def close(self) -> None:
        self._closed = True
        self.client.close()

    # -- HTTP ---------------------------------------------------------------------------
    def _access_token(self, force: bool = False) -> str:
        if not force and self._token and time.monotonic() < self._token_expiry - 60:
            return self._token
        s = self.settings
        resp = self._request(
            "POST",
            s.token_endpoint,
            data={
                "grant_type": "client_credentials",
                "client_id": s.client_id,
                "client_secret": s.secret(),
                "scope": f"{s.base_url.rstrip('/')}/.default",
            },
            auth=False,
        )
        body = resp.json()
        token = body.get("access_token")
        if not token:
            raise GraphError("the token endpoint answered without an access_token")
        self._token = str(token)
        self._token_expiry = time.monotonic() + float(body.get("expires_in", 3600))
        return self._token

    def _request(self, method: str, url: str, *, auth: bool = True, **kw: Any) -> httpx.Response:
        refreshed = False
        while True:
            headers = {"Authorization": f"Bearer {self._access_token()}"} if auth else {}
            try:
                resp = self.client.request(method, url, headers=headers, **kw)
            except httpx.HTTPError as exc:
                raise GraphError(f"cannot reach {httpx.URL(url).host}: {exc}") from exc
            if resp.status_code in RETRY_STATUSES:
                wait = _retry_after(resp.headers.get("Retry-After"))
                wait = min(wait, self.settings.max_retry_wait_s)
                self.retries += 1
                log.warning("graph_throttled", status=resp.status_code, wait_s=wait)
                time.sleep(wait)
                continue
            if resp.status_code == 401 and auth and not refreshed:
                refreshed = True
                self._access_token(force=True)
                continue
            if resp.status_code >= 400:
                detail = resp.text[:200].replace("\n", " ")
                hint = f" (check the app's {self.PERMISSION} permission)"
                raise GraphError(
                    f"{method} {httpx.URL(url).path} answered {resp.status_code}: {detail}"
                    + (hint if resp.status_code == 403 else "")
                )
            return resp

    # -- polling ----------------------------------------------------------------------------
    def _first_url(self, since: str) -> str:
        s = self.settings
        return str(
            httpx.URL(
                s.base_url.rstrip("/") + AUDIT_PATH,
                params={
                    "$filter": f"activityDateTime ge {since}",
                    "$orderby": "activityDateTime asc",
                    "$top": str(s.page_size),
                },
            )
        )

    def poll(self) -> Iterator[Record]:
        """One pass over everything at or after the high-water mark."""
        if self._hwm is None:
            start = datetime.now(UTC) - timedelta(seconds=self.settings.lookback_s)
            self._hwm = self.settings.since or _odata_time(start)
        url: str | None = self._first_url(self._hwm)
        newest = self._hwm
        at_newest: set[str] = set()
        while url and not self._closed:
            page = self._request("GET", url).json()
            for item in page.get("value", []):
                item_id = str(item.get("id", ""))
                if item_id and item_id in self._seen:
                    continue
                if item_id:
                    self._seen.add(item_id)
                when = str(item.get("activityDateTime") or "")
                if when > newest:
                    newest, at_newest = when, {item_id}
                elif when == newest:
                    at_newest.add(item_id)
                yield Record(orjson.dumps(item), None, None, "graph")
            url = page.get("@odata.nextLink")
        if not self._closed and newest != self._hwm:
            # Completed pass: keep only the ids at the new mark (they match "ge" again).
            self._seen = at_newest
            self._hwm = newest

    def __iter__(self) -> Iterator[Record | None]:
        while not self._closed:
            yield from self.poll()
            if self.settings.once:
                return
            deadline = time.monotonic() + self.settings.interval_s
            while time.monotonic() < deadline and not self._closed:
                yield None
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def _retry_after(value: str | None) -> float:
    if not value:
        return 1.0
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            from email.utils import parsedate_to_datetime

            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return 1.0
