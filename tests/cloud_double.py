"""A local HTTP server that behaves like the Microsoft endpoints the pull inputs use.

* ``POST /token``: the client-credentials grant; tokens stop working after
  ``token_uses`` requests (401, as an expired token does).
* Graph ``GET /v1.0/auditLogs/signIns?$filter=createdDateTime ge X`` and
  ``GET /v1.0/deviceManagement/managedDevices?$select=...``: pages of
  ``page_size`` with ``@odata.nextLink``.
* The Office 365 Management Activity API under ``/api/v1.0/{tenant}/activity/feed``:
  ``subscriptions/start`` (AF20024 when already enabled), ``subscriptions/content``
  (blobs by ``contentCreated`` in ``[startTime, endTime)``, ``NextPageUri``
  paging; AF20030 for windows over 24 h or older than 7 days), and the blobs
  themselves (AF20051 once a blob is marked expired).
* The first ``throttle`` data requests answer 429 with ``Retry-After``.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from graph_double import send_json

TENANT = "5f1c0d2e-8a34-4c1b-9e77-0c3b2a1d9f10"


def _time(text: str) -> datetime:
    """ISO 8601 with up to 7 fractional digits (Graph) or none (the activity API)."""
    m = re.fullmatch(r"(.+?:\d\d(?::\d\d)?)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?", text.strip())
    if m is None:
        raise ValueError(f"not a time: {text!r}")
    head, frac, zone = m.groups()
    dt = datetime.fromisoformat(head + (f".{frac[:6]}" if frac else ""))
    if zone and zone != "Z":
        return dt.replace(tzinfo=datetime.fromisoformat(f"2000-01-01T00:00:00{zone}").tzinfo)
    return dt.replace(tzinfo=UTC)


class CloudDouble:
    def __init__(self, page_size: int = 2, throttle: int = 0, token_uses: int = 10_000):
        self.page_size = page_size
        self.throttle = throttle
        self.token_uses = token_uses
        self.client_id, self.client_secret = "app-1", "s3cret"
        self.signins: list[dict[str, Any]] = []
        self.devices: list[dict[str, Any]] = []
        self.blobs: dict[str, list[dict[str, Any]]] = {}  # content type -> blob descriptors
        self.contents: dict[str, list[dict[str, Any]]] = {}  # contentId -> records
        self.expired: set[str] = set()  # contentIds answered with AF20051
        self.subscriptions: set[str] = set()
        self.tokens: dict[str, int] = {}  # token -> uses left
        self.tokens_issued = 0
        self.requests: list[str] = []
        self.throttled = 0
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                send_json(self, status, body, headers)

            def _error(self, status: int, code: str, message: str) -> None:
                self._send(status, {"error": {"code": code, "message": message}})

            def _authorized(self) -> bool:
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                left = double.tokens.get(token, 0)
                if left <= 0:
                    self._send(401, {"error": {"code": "InvalidAuthenticationToken"}})
                    return False
                double.tokens[token] = left - 1
                return True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length).decode()
                url = urlparse(self.path)
                if url.path == "/token":
                    form = parse_qs(body)
                    ok = (
                        form.get("grant_type") == ["client_credentials"]
                        and form.get("client_id") == [double.client_id]
                        and form.get("client_secret") == [double.client_secret]
                    )
                    if not ok:
                        self._send(401, {"error": "invalid_client"})
                        return
                    double.tokens_issued += 1
                    token = f"tok{double.tokens_issued}"
                    double.tokens[token] = double.token_uses
                    self._send(200, {"access_token": token, "expires_in": 3599})
                    return
                double.requests.append(f"POST {self.path}")
                if not self._authorized():
                    return
                if url.path.endswith("/subscriptions/start"):
                    content_type = parse_qs(url.query)["contentType"][0]
                    if content_type in double.subscriptions:
                        self._error(400, "AF20024", "The subscription is already enabled.")
                        return
                    double.subscriptions.add(content_type)
                    self._send(200, {"contentType": content_type, "status": "enabled"})
                    return
                self._send(404, {"error": "not found"})

            def do_GET(self) -> None:
                double.requests.append(f"GET {self.path}")
                if not self._authorized():
                    return
                if double.throttle > 0:
                    double.throttle -= 1
                    double.throttled += 1
                    self._send(429, {"error": {"code": "AF429"}}, {"Retry-After": "0.1"})
                    return
                url = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/v1.0/auditLogs/signIns":
                    since = _time(q["$filter"].split(" ge ")[1])
                    rows = sorted(
                        (s for s in double.signins if _time(s["createdDateTime"]) >= since),
                        key=lambda s: s["createdDateTime"],
                    )
                    self._page(url.path, q, rows)
                elif url.path == "/v1.0/deviceManagement/managedDevices":
                    keep = set(q.get("$select", "").split(","))
                    rows = [{k: v for k, v in d.items() if k in keep} for d in double.devices]
                    self._page(url.path, q, rows, context="deviceManagement/managedDevices")
                elif url.path.endswith("/subscriptions/content"):
                    self._content_list(url.path, q)
                elif "/activity/feed/audit/" in url.path:
                    content_id = url.path.rsplit("/", 1)[1]
                    if content_id in double.expired:
                        self._error(
                            400, "AF20051", f"Content requested with the key {content_id} has "
                            "already expired. Content older than 7 days cannot be retrieved."
                        )  # fmt: skip
                        return
                    self._send(200, double.contents[content_id])
                else:
                    self._send(404, {"error": "not found"})

            def _page(
                self, path: str, q: dict[str, str], rows: list[Any], context: str = ""
            ) -> None:
                skip = int(q.pop("$skiptoken", "0"))
                size = min(int(q.get("$top", double.page_size)), double.page_size)
                body: dict[str, Any] = {
                    "@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#{context}",
                    "value": rows[skip : skip + size],
                }
                if skip + size < len(rows):
                    host, port = self.server.server_address[:2]
                    body["@odata.nextLink"] = (
                        f"http://{host}:{port}{path}?{urlencode({**q, '$skiptoken': skip + size})}"
                    )
                self._send(200, body)

            def _content_list(self, path: str, q: dict[str, str]) -> None:
                content_type = q["contentType"]
                if content_type not in double.subscriptions:
                    self._error(
                        400, "AF20022", "No subscription found for the specified content type"
                    )
                    return
                start, end = _time(q["startTime"]), _time(q["endTime"])
                if end - start > timedelta(hours=24) or start < double.now() - timedelta(days=7):
                    self._error(400, "AF20030", "Start time and end time must ...")
                    return
                rows = [
                    b for b in double.blobs.get(content_type, [])
                    if start <= _time(b["contentCreated"]) < end
                ]  # fmt: skip
                skip = int(q.pop("nextPage", "0"))
                headers = {}
                if skip + double.page_size < len(rows):
                    host, port = self.server.server_address[:2]
                    nxt = urlencode({**q, "nextPage": skip + double.page_size})
                    headers["NextPageUri"] = f"http://{host}:{port}{path}?{nxt}"
                self._send(200, rows[skip : skip + double.page_size], headers)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.clock = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.clock

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def add_blob(
        self, content_type: str, created: str, records: list[dict[str, Any]],
        expires: str | None = None,
    ) -> str:  # fmt: skip
        content_id = f"{content_type}-{len(self.contents)}"
        self.contents[content_id] = records
        self.blobs.setdefault(content_type, []).append(
            {
                "contentType": content_type,
                "contentId": content_id,
                "contentUri": f"{self.url}/api/v1.0/{TENANT}/activity/feed/audit/{content_id}",
                "contentCreated": created,
                "contentExpiration": expires or "2026-12-03T00:00:00.000Z",
            }
        )
        return content_id

    def __enter__(self) -> CloudDouble:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
