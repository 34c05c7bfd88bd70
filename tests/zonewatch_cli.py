"""Run the ``zonewatch`` command as a user runs it: a child process, its own
environment (none of the caller's ``ZONEWATCH_*``/``KAFKA_*`` settings leak
in), JSON log lines on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_zonewatch(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 120,
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ZONEWATCH_", "KAFKA_"))}
    return subprocess.run(
        [sys.executable, "-m", "zonewatch", *args],
        env={**clean, "ZONEWATCH_LOG_JSON": "true", **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
