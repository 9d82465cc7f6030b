"""Screenshots of the dashboard after `kalibr demo`, for the docs: `python -m benchmarks.dashboard_screenshot`.

Runs the demo (600 calls, the best model breaks halfway) into a fresh SQLite file, serves the dashboard over it
and photographs the goal page and the goals page in Debian's headless Chromium (`apt-get install chromium`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
GOAL = "extract_company"


def main() -> None:
    from playwright.sync_api import sync_playwright

    from kalibr.dashboard import create_dashboard, token_for_tenant
    from kalibr.service._server import serve_in_thread
    from kalibr.stores.sqlite import SQLiteStore

    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("needs Debian's chromium: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as scratch:
        db = Path(scratch) / "demo.db"
        demo = [sys.executable, "-m", "kalibr", "demo", "--db", str(db), "--pace", "0.02"]
        subprocess.run(demo, check=True, stdout=subprocess.DEVNULL)
        store = SQLiteStore(db)
        app = create_dashboard(store, tenant_for_key=token_for_tenant("docs", "default"), read_only=True)
        with serve_in_thread(app) as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium)
            page = browser.new_page(viewport={"width": 1360, "height": 900}, device_scale_factor=1)
            page.goto(f"{url}/login?key=docs")
            page.goto(f"{url}/goals/{GOAL}")
            page.wait_for_selector("#charts[data-drawn='3']")
            page.screenshot(path=str(DOCS / "dashboard-goal.png"), full_page=True)
            page.goto(f"{url}/")
            page.screenshot(path=str(DOCS / "dashboard-goals.png"))
            browser.close()
        store.close()
    print(f"wrote {DOCS / 'dashboard-goal.png'} and {DOCS / 'dashboard-goals.png'}")


if __name__ == "__main__":
    main()
