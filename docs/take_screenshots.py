"""Take the README's screenshots of the console and the report with headless
Chromium, on the demo day's store (with two triage changes).

    .venv/bin/python docs/take_screenshots.py

Needs Debian's chromium (and a Japanese font, e.g. fonts-ipafont-gothic);
shrinks the PNGs with pngquant when it is installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from console.demo_store import build_demo_store  # noqa: E402
from correlator.store import AlertStore  # noqa: E402
from tests.console_fixtures import start_console, stop_console  # noqa: E402

DOCS = ROOT / "docs"
ALERT = "Firewall Policy Change Followed by a Forbidden Zone Crossing"


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="zw-shots-"))
    db = work / "zonewatch.duckdb"
    build_demo_store(db)
    with AlertStore(db) as store:
        ((alert_id,),) = store.query("SELECT id FROM alerts WHERE rule_title = ?", [ALERT])[1]
        store.triage(alert_id, "acknowledged", actor="sato", via="console", assignee="sato",
                     note="ポリシー77の変更者に確認中")  # fmt: skip
    report = work / "report.html"
    subprocess.run(
        [sys.executable, "-m", "zonewatch", "report", "--db", str(db), "-o", str(report)],
        check=True,
        cwd=ROOT,
    )
    console = start_console(db, work)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 820})
            page.goto(f"{console.url}/login")
            page.fill("input[name=user]", "sato")
            page.fill("input[name=token]", console.token)
            page.click("button[type=submit]")
            page.wait_for_url("**/matrix")
            page.screenshot(path=str(DOCS / "console-matrix.png"))
            page.goto(f"{console.url}/alerts/{alert_id}")
            page.screenshot(path=str(DOCS / "console-alert.png"))
            page.goto(report.as_uri())
            page.wait_for_selector("[data-figure='fig-entities'] .main-svg")
            page.set_viewport_size({"width": 1280, "height": 1400})
            page.screenshot(path=str(DOCS / "report.png"))
            browser.close()
    finally:
        stop_console(console)
        shutil.rmtree(work, ignore_errors=True)
    if shutil.which("pngquant"):
        for png in DOCS.glob("*.png"):
            subprocess.run(
                ["pngquant", "--force", "--skip-if-larger", "--output", str(png), "64", str(png)],
                check=False,
            )
    for png in sorted(DOCS.glob("*.png")):
        print(f"{png.relative_to(ROOT)}  {png.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
