"""Makes docs/images/dashboard.png, the README's picture of the dashboard: ``sslab dashboard`` on a
real results store, its ablation-curve page in headless Chromium (as tests/dashboard/test_browser.py
drives it).

    python docs/images/dashboard_picture.py --results ROOT [--page ablation]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, help="a results root holding at least one study")
    parser.add_argument("--page", default="ablation")
    parser.add_argument("--out", default=str(Path(__file__).with_name("dashboard.png")))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "sslab.cli", "dashboard", "--results", args.results,
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(180):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            page.goto(f"{url}/{args.page}")
            page.wait_for_function("() => document.querySelector('.js-plotly-plot g.trace')", timeout=120_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=args.out)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(args.out)


if __name__ == "__main__":
    main()
