"""Who may use the console: the sign-in token, sessions and CSRF tokens.

Pure logic with an injected clock; the web layer (``app.py``) calls it.

- The token comes from a secrets file (``console.token_file``), never from
  the command line or the settings themselves, and is compared in constant
  time. It is accepted as ``Authorization: Bearer <token>`` (scripts) or
  through the sign-in form, which opens a session.
- Sessions live in this process only (a restart signs everyone out), are
  random 256-bit ids in an HttpOnly, SameSite=Strict cookie, and expire after
  ``session_ttl_s`` or ``session_idle_s`` without a request.
- Every session has its own CSRF token; every state-changing request of a
  session must carry it (form field or ``X-CSRF-Token``). Bearer requests
  need none: a browser never adds that header on its own, which is what a
  CSRF attack relies on.
"""

from __future__ import annotations

import os
import secrets
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from zonewatch.errors import ConfigError
from zonewatch.logs import get_logger

log = get_logger(__name__)

MIN_TOKEN_CHARS = 16
_MAX_SESSIONS = 10_000
# Failed sign-ins per client before it has to wait, and for how long.
_MAX_FAILURES = 5
_FAILURE_WINDOW_S = 60.0


def read_token_file(path: Path) -> str:
    """The token in ``path`` (first line, stripped); ConfigError when unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read console.token_file {path}: {exc.strerror}; "
            "write a random token into it (e.g. `openssl rand -hex 32 > FILE; chmod 600 FILE`)"
        ) from exc
    lines = text.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"console.token_file {path} holds no token of at least {MIN_TOKEN_CHARS} "
            "characters: write a random one (e.g. `openssl rand -hex 32`)"
        )
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "console_token_file_readable_by_others",
            path=str(path),
            fix="chmod 600 the token file",
        )
    return token


def generated_token_file(db_path: Path) -> Path:
    """A random token beside the store (mode 0600), for a loopback console
    started without ``console.token_file``; reused on the next start."""
    path = db_path.with_name(db_path.name + ".console-token")
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secrets.token_urlsafe(32) + "\n")
    return path


@dataclass
class Session:
    user: str
    csrf: str
    created: float
    seen: float


@dataclass
class Authenticator:
    """The token, the open sessions and the sign-in throttle."""

    token: str
    ttl_s: float
    idle_s: float
    clock: Callable[[], float] = time.monotonic
    _sessions: dict[str, Session] = field(default_factory=dict)
    _failures: dict[str, list[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def token_ok(self, given: str | None) -> bool:
        return same_secret(given, self.token)

    def bearer_ok(self, authorization: str | None) -> bool:
        scheme, _, value = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(value.strip())

    # -- sign-in throttle ----------------------------------------------------

    def throttled(self, client: str) -> bool:
        now = self.clock()
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if now - t < _FAILURE_WINDOW_S]
            self._failures[client] = recent
            return len(recent) >= _MAX_FAILURES

    def failed(self, client: str) -> None:
        with self._lock:
            self._failures.setdefault(client, []).append(self.clock())
            if len(self._failures) > _MAX_SESSIONS:  # keep the table bounded
                self._failures.pop(next(iter(self._failures)))

    # -- sessions --------------------------------------------------------------

    def open_session(self, user: str) -> tuple[str, Session]:
        now = self.clock()
        session = Session(user, secrets.token_urlsafe(32), now, now)
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._expire(now)
            if len(self._sessions) >= _MAX_SESSIONS:
                oldest = min(self._sessions, key=lambda k: self._sessions[k].seen)
                del self._sessions[oldest]
            self._sessions[sid] = session
        return sid, session

    def session(self, sid: str | None) -> Session | None:
        """The live session of ``sid`` (its idle time restarts), else None."""
        if not sid:
            return None
        now = self.clock()
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                return None
            if now - session.created > self.ttl_s or now - session.seen > self.idle_s:
                del self._sessions[sid]
                return None
            session.seen = now
            return session

    def close_session(self, sid: str | None) -> None:
        with self._lock:
            self._sessions.pop(sid or "", None)

    def _expire(self, now: float) -> None:
        dead = [
            k
            for k, s in self._sessions.items()
            if now - s.created > self.ttl_s or now - s.seen > self.idle_s
        ]
        for k in dead:
            del self._sessions[k]


def same_secret(given: str | None, expected: str) -> bool:
    """``given`` equals ``expected`` (compared in constant time); never for an empty one."""
    if not given or not expected:
        return False
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def csrf_ok(session: Session, given: str | None) -> bool:
    return same_secret(given, session.csrf)
