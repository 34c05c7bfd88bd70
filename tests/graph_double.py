"""A local HTTP server that behaves like Microsoft Graph for auditEvents.

Client-credentials token endpoint, ``$filter=activityDateTime ge X``,
paging through ``@odata.nextLink``, and a configurable number of 429 answers
with ``Retry-After``.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson


def send_json(
    handler: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    """Answer a request with a JSON body (shared by the doubles of Microsoft's APIs)."""
    data = orjson.dumps(body)
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(data)


class GraphDouble:
    def __init__(self, events: list[dict[str, Any]], page_size: int = 3, throttle: int = 0):
        self.events = events
        self.page_size = page_size
        self.throttle = throttle  # answer this many list requests with 429 first
        self.client_id = "app-1"
        self.client_secret = "s3cret"
        self.tokens_issued = 0
        self.requests: list[str] = []
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                send_json(self, status, body, headers)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                form = parse_qs(self.rfile.read(length).decode())
                ok = (
                    form.get("grant_type") == ["client_credentials"]
                    and form.get("client_id") == [double.client_id]
                    and form.get("client_secret") == [double.client_secret]
                )
                if not ok:
                    self._json(401, {"error": "invalid_client"})
                    return
                double.tokens_issued += 1
                self._json(200, {"access_token": f"tok{double.tokens_issued}", "expires_in": 3600})

            def do_GET(self) -> None:
                double.requests.append(self.path)
                if not (self.headers.get("Authorization") or "").startswith("Bearer tok"):
                    self._json(401, {"error": "no token"})
                    return
                if double.throttle > 0:
                    double.throttle -= 1
                    self._json(429, {"error": "TooManyRequests"}, {"Retry-After": "0.2"})
                    return
                url = urlparse(self.path)
                q = parse_qs(url.query)
                since = q.get("$filter", ["activityDateTime ge 0"])[0].split(" ge ")[1]
                skip = int(q.get("$skiptoken", ["0"])[0])
                matching = sorted(
                    (e for e in double.events if e["activityDateTime"] >= since),
                    key=lambda e: e["activityDateTime"],
                )
                page = matching[skip : skip + double.page_size]
                body: dict[str, Any] = {"value": page}
                if skip + double.page_size < len(matching):
                    host, port = self.server.server_address[:2]
                    f = q.get("$filter", [""])[0].replace(" ", "%20")
                    body["@odata.nextLink"] = (
                        f"http://{host}:{port}{url.path}?$filter={f}"
                        f"&$skiptoken={skip + double.page_size}"
                    )
                self._json(200, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> GraphDouble:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def audit_event(i: int, when: str, upn: str = "tanaka.hanako@city.example.lg.jp") -> dict[str, Any]:
    return {
        "id": f"evt-{i}",
        "displayName": f"Wipe ManagedDevice {i}",
        "componentName": "Devices",
        "activity": "Wipe ManagedDevice",
        "activityDateTime": when,
        "activityResult": "Success",
        "actor": {"userPrincipalName": upn, "ipAddress": "10.10.4.21"},
        "resources": [{"displayName": f"LT-{i:04d}"}],
        "category": "Device",
    }
