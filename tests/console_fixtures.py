"""A running ``zonewatch console`` on the demo day's store, and a real
headless Chromium (Debian's ``chromium``) driven by Playwright."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT
from zonewatch.app.broker import free_port

CHROMIUM = Path(os.environ.get("ZONEWATCH_CHROMIUM", "/usr/bin/chromium"))


@dataclass
class Console:
    url: str
    token: str
    db: Path
    log: Path
    process: subprocess.Popen[bytes]

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.token}"} if token != "" else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def start_console(
    db: Path, workdir: Path, *extra: str, env: dict[str, str] | None = None
) -> Console:
    token_file = workdir / "console.token"
    token = "t0k3n-" + os.urandom(16).hex()
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    port = free_port()
    log = workdir / f"console-{port}.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zonewatch",
            "console",
            "--db",
            str(db),
            "--port",
            str(port),
            *extra,
        ],
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "ZONEWATCH_CONSOLE__TOKEN_FILE": str(token_file),
            "ZONEWATCH_LOG_LEVEL": "info",
            **(env or {}),
        },
    )
    console = Console(f"http://127.0.0.1:{port}", token, db, log, process)
    deadline = time.monotonic() + 60
    while True:  # until it answers
        try:
            if httpx.get(f"{console.url}/healthz", timeout=1).status_code == 200:
                return console
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop_console(console)
            raise AssertionError(f"the console did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def stop_console(console: Console) -> None:
    if console.process.poll() is None:
        console.process.terminate()
        try:
            console.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            console.process.kill()
            console.process.wait()


def browser_or_skip() -> Iterator[object]:
    """A headless Chromium; a clear skip when none is installed (and a
    failure on CI, which must have one)."""
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        message = (
            f"no Chromium at {CHROMIUM}: browser tests need Debian's chromium "
            "(apt-get install chromium; .ci/run installs it)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
            args=["--no-sandbox", "--disable-gpu"],
        )
        try:
            yield browser
        finally:
            browser.close()
