"""The dashboard in a real browser: ``sslab dashboard`` serves the fixture store on localhost,
headless Chromium (Debian's ``chromium``, driven by Playwright) visits every page, checks that
the plotly charts rendered and no exception box appeared, and saves a screenshot of each page
(``$SSLAB_SCREENSHOTS``, default ``build/screenshots``).

CI installs chromium and sets ``SSLAB_REQUIRE_BROWSER=1``, so there a missing browser fails the
test instead of skipping it.
"""

import os
import shutil
import urllib.request
from pathlib import Path

import pytest

from dashboard_testing import ROOT, serve_dashboard
CHROMIUM = os.environ.get("SSLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
#: url path → (page title, plotly charts drawn on the fixture store)
PAGES = {"": ("Studies", 0), "ablation": ("Ablation curve", 1), "probes": ("Layer probes", 1),
         "invariance": ("Invariance", 1), "training": ("Training curves", 1), "search": ("Search", 3),
         "trials": ("Trials", 0), "label_free": ("Label-free vs kNN", 6)}
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def _browser_or_skip():
    missing = []
    if not CHROMIUM:
        missing.append("chromium (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install playwright)")
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if os.environ.get("SSLAB_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def server(fixture_root, tmp_path_factory):
    _browser_or_skip()
    with serve_dashboard(fixture_root, tmp_path_factory.mktemp("server") / "streamlit.log") as url:
        yield url
    # sslab dashboard is the server itself: stopping it leaves nothing listening
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)


def test_every_page_renders_its_charts_in_chromium(server):
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("SSLAB_SCREENSHOTS", ROOT / "build" / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    expected = {f"{p or 'studies'}.png" for p in PAGES}
    for name in expected:  # a picture left by an earlier run must not stand in for this run's
        (shots / name).unlink(missing_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        errors = []
        for path, (title, charts) in PAGES.items():
            # a fresh browser session per page: a link straight to a page must work, not only navigation
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(f"{server}/{path}")
            page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
            if charts:
                # a rendered chart has drawn marks (a trace, or parallel-coordinate axes), not just a frame
                page.wait_for_function("n => [...document.querySelectorAll('.js-plotly-plot')]"
                                       ".filter(e => e.querySelector('g.trace, .parcoords')).length >= n",
                                       arg=charts, timeout=60_000)
            else:
                page.wait_for_selector("[data-testid='stDataFrame']", timeout=60_000)
            page.wait_for_timeout(500)  # let the charts finish their transitions before the picture
            assert page.locator("[data-testid='stException']").count() == 0, f"exception on /{path}"
            # every page runs under app.py: its navigation names all seven pages by title
            nav = page.locator("[data-testid='stSidebarNav']")
            assert all(nav.get_by_text(t, exact=True).count() == 1 for t, _ in PAGES.values()), f"/{path}: {nav.inner_text()}"
            if path == "ablation":  # the curve shows each point's spread over seeds and the random-init line
                plot = page.locator(".js-plotly-plot").first
                assert plot.locator("g.errorbar").count() >= 1, "no error bars on the ablation curve"
                assert plot.locator("text", has_text="random init").count() >= 1, "no random-init baseline line"
            page.screenshot(path=str(shots / f"{path or 'studies'}.png"), full_page=True)
        # the sidebar's navigation links lead to the pages too
        page.goto(server)
        page.get_by_role("link", name="Layer probes").click()
        page.get_by_role("heading", name="Layer probes").first.wait_for(timeout=60_000)
        browser.close()
    assert not errors, errors
    taken = {p.name: p.stat().st_size for p in shots.glob("*.png")}
    assert expected <= set(taken), sorted(expected - set(taken))  # every page pictured by this run
    assert all(taken[name] > 20_000 for name in expected), taken  # a rendered page, not a blank frame
