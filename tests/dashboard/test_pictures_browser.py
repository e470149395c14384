"""The Neighbours and Embedding map pages in a real browser, on a real store: a small study
(SimCLR, one trial and its random-init baseline, on real CIFAR-10) runs through Ray into a results
root, ``sslab dashboard`` serves it, headless Chromium (Playwright) opens both pages and saves a
screenshot of each, under the test's tmp folder and ``$SSLAB_SCREENSHOTS`` (default
``/tmp/sslab_screens``).

What must show: the trained trial's neighbours differ from random init's, and the map has one
colour per class (CIFAR-10: ten).
"""

import os
import shutil
from pathlib import Path

import pytest

from small import needs_cifar, run_in_local_ray
from sslab.plan.profiles import get_profile
from sslab.plan.study import Study
from sslab.results import pictures
from sslab.results.store import ResultsStore
from dashboard_testing import serve_dashboard
from test_browser import CHROMIUM, CHROMIUM_FLAGS, _browser_or_skip

#: the local profile's backbone and data, smaller: 1,000 training and 500 test images, four epochs
PROFILE = get_profile("local").with_overrides(train_subset=1000, test_subset=500, epochs=4, probe_epochs=5)
STUDY = Study(name="pictures_mini", method="simclr", grid={"temperature": [0.2]})
SCREENS = Path(os.environ.get("SSLAB_SCREENSHOTS", "/tmp/sslab_screens"))

pytestmark = [needs_cifar, pytest.mark.slow]


@pytest.fixture(scope="module")
def real_root(tmp_path_factory):
    """The study run to the end once (its trial and the random-init baseline recorded): the results root."""
    _browser_or_skip()
    root = tmp_path_factory.mktemp("results")
    trials = run_in_local_ray(STUDY, PROFILE, root)  # the dashboard needs no Ray
    assert list(trials.status) == ["ok"]
    return root


def test_the_real_store_holds_each_ones_pictures_and_the_datasets_thumbnails(real_root):
    store = ResultsStore(real_root, STUDY.name)
    (trial,) = store.read("trials").to_dict("records")
    (baseline,) = store.read("baselines").to_dict("records")
    base_key = pictures.baseline_id(baseline["setting_id"], baseline["seed"])
    assert base_key == pictures.baseline_id(trial["baseline_setting"], trial["seed"])
    trained = pictures.read(store, pictures.NEIGHBOURS, [trial["trial_id"]])
    untrained = pictures.read(store, pictures.NEIGHBOURS, [base_key])
    assert len(trained) == len(untrained) == 16 * 8
    assert list(trained["query"]) == list(untrained["query"])  # the same queries
    assert list(trained["neighbour"]) != list(untrained["neighbour"])  # other neighbours
    points = pictures.read(store, pictures.EMBEDDING, [trial["trial_id"], base_key])
    assert len(points) == 2 * 500 and points["label"].nunique() == 10
    assert 0 < points["pictures_s"].max() < trial["wall_s"]
    thumbs = pictures.read(store, pictures.THUMBNAILS, [pictures.dataset_key(trial)])
    assert (thumbs["split"] == "train").sum() == 1000
    assert set(trained["neighbour"]) <= set(thumbs.loc[thumbs["split"] == "train", "index"])
    assert set(trained["query"]) == set(thumbs.loc[thumbs["split"] == "test", "index"])


def test_neighbours_and_embedding_pages_in_chromium(real_root, tmp_path):
    from playwright.sync_api import sync_playwright

    SCREENS.mkdir(parents=True, exist_ok=True)
    shots = {}
    with serve_dashboard(real_root, tmp_path / "streamlit.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        errors = []

        def open_page(path: str, title: str):
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(f"{url}/{path}")
            page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
            return page

        page = open_page("neighbours", "Neighbours")
        grid = page.locator("table").filter(has=page.locator("img")).first
        grid.wait_for(timeout=60_000)
        rows = grid.locator("tr")
        assert rows.count() == 3  # the query, the trial's row, random init's
        trained = [rows.nth(1).locator("img").nth(i).get_attribute("title") for i in range(8)]
        untrained = [rows.nth(2).locator("img").nth(i).get_attribute("title") for i in range(8)]
        assert "random init" in rows.nth(2).inner_text() and "random init" not in rows.nth(1).inner_text()
        assert all(t and t.startswith("training image") for t in trained + untrained)
        assert trained != untrained, (trained, untrained)  # what the trained features call near is not random init's
        # every thumbnail drew (a broken data URI leaves a 0-wide natural image)
        assert page.evaluate("[...document.querySelectorAll('table img')].every(i => i.complete && i.naturalWidth > 0)")
        page.wait_for_timeout(500)
        assert page.locator("[data-testid='stException']").count() == 0
        shots["neighbours"] = tmp_path / "neighbours.png"
        page.screenshot(path=str(shots["neighbours"]), full_page=True)

        page = open_page("embedding", "Embedding map")
        page.wait_for_function("[...document.querySelectorAll('.js-plotly-plot')].filter(e => "
                               "e.querySelectorAll('path.point').length > 0).length >= 2", timeout=60_000)
        page.wait_for_timeout(1000)
        maps = page.locator(".js-plotly-plot")
        assert maps.count() == 2  # the trial's map and random init's
        for i in range(2):
            fills = maps.nth(i).evaluate("e => [...new Set([...e.querySelectorAll('path.point')]"
                                         ".map(p => p.style.fill))]")
            legend = maps.nth(i).locator("g.legend g.traces")
            assert len(fills) == 10 and legend.count() == 10, (fills, legend.count())  # one colour per class
            assert maps.nth(i).locator("path.point").count() == 500
        assert maps.first.locator("g.legend", has_text="airplane").count() == 1  # the legend names the classes
        assert page.locator("[data-testid='stException']").count() == 0
        shots["embedding"] = tmp_path / "embedding.png"
        page.screenshot(path=str(shots["embedding"]), full_page=True)
        browser.close()
    assert not errors, errors
    for name, shot in shots.items():
        assert shot.stat().st_size > 20_000, (name, shot.stat().st_size)  # a rendered page, not a blank frame
        shutil.copy(shot, SCREENS / shot.name)
