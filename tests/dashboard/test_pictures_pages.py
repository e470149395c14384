"""The Neighbours and Embedding map pages through Streamlit's AppTest, on a store whose trials
recorded pictures (written through the real store API), on the fixture root (recorded none) and on
a store without thumbnails."""

import re
from io import BytesIO
import shutil

import numpy as np
import pytest
from PIL import Image

import store_factory
from dashboard_testing import figure_of
from sslab.evaluation.pictures import QUERIES, thumbnail
from sslab.results import pictures
from test_app import open_page

CLASSES = ["cat", "dog", "frog"]
DATA = {"data/train_content_sha256": "trainhash", "data/test_content_sha256": "testhash", "data/train_classes": CLASSES}
K = 8


def _png(value: int) -> bytes:
    return thumbnail(np.full((32, 32, 3), value, dtype=np.uint8))


def write_pictures(root, name="pirl_lambda"):
    """The grid fixture with its trials' data named and each finished trial's (and each baseline's)
    pictures recorded: query q's neighbours under trial t are training images 100·t + q·k + r."""
    store = store_factory.write_grid(root, name)
    trials = store.read("trials")
    for t, row in enumerate(trials.to_dict("records")):
        store.record_trial({**row, **DATA})
        if row["status"] != "ok":
            continue
        pictures.record_pictures(store, row["trial_id"], _neighbours(offset=100 * (t + 1)), _embedding(shift=t),
                                 seconds=1.25)
    for seed in range(3):
        pictures.record_pictures(store, pictures.baseline_id(store_factory.BASELINE_SETTING, seed),
                                 _neighbours(offset=0), _embedding(shift=10))
    rows = [{"split": "train", "index": i, "label": i % 3, "png": _png(i % 256)} for i in range(1200)]
    rows += [{"split": "test", "index": q, "label": q % 3, "png": _png(q)} for q in range(QUERIES)]
    pictures.record_thumbnails(store, pictures.dataset_key(DATA), rows)
    return store


def _neighbours(offset):
    return [{"query": q, "query_label": q % 3, "rank": r, "neighbour": offset + q * K + r, "label": (q + r) % 3,
             "similarity": 0.9 - 0.05 * r} for q in range(QUERIES) for r in range(K)]


def _embedding(shift):
    rng = np.random.default_rng(shift)
    return [{"index": i, "label": i % 3, "x": float(rng.normal(i % 3 + shift)), "y": float(rng.normal())}
            for i in range(60)]


@pytest.fixture(scope="module")
def pictures_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pictures")
    write_pictures(root)
    return root


def _images(markdown: str) -> list[str]:
    return re.findall(r'<img src="data:image/png;base64,[^"]+" title="([^"]+)"', markdown)


def test_neighbours_page_shows_the_query_and_each_trials_top_k_beside_random_init(pictures_root, monkeypatch):
    app = open_page(pictures_root, "neighbours", monkeypatch)
    (grid,) = [m.value for m in app.markdown if "<table" in m.value]
    titles = _images(grid)
    # the query, then the two best trials' rows (λ = 1, seeds 1 and 0), each followed by its random-init baseline's
    assert titles[0] == "test image 0" and len(titles) == 1 + 4 * K
    names = re.findall(r'<span style="[^"]+">([^<]+)</span>', grid)
    assert names == ["pirl_lambda · loss_weight=1 seed 1", "pirl_lambda · random init seed 1",
                     "pirl_lambda · loss_weight=1 seed 0", "pirl_lambda · random init seed 0"]
    assert titles[1 + K].startswith("training image 0 (cat)")  # the baseline's nearest
    assert titles[1].startswith(f"training image {100 * 8} (cat)")  # the best trial's (the 8th row of the grid store)
    share = app.dataframe[0].value
    assert list(share.iloc[:, 1]) == pytest.approx([3 / 8 * 1] * 4, abs=0.01)  # (q + r) % 3 == q % 3 for r in 0, 3, 6
    # another query: its own neighbours
    app.selectbox(key="neighbours_query").set_value(5).run()
    (grid,) = [m.value for m in app.markdown if "<table" in m.value]
    assert _images(grid)[0] == "test image 5" and "training image 0 (cat)" not in grid


def test_embedding_page_draws_one_map_per_trial_one_colour_per_class(pictures_root, monkeypatch):
    app = open_page(pictures_root, "embedding", monkeypatch)
    charts = app.get("plotly_chart")
    assert len(charts) == 4  # two trials, each with its random-init baseline
    colours = set()
    for chart in charts:
        traces, layout = figure_of(chart)
        assert [t["name"] for t in traces] == CLASSES
        assert sum(len(t["x"]) for t in traces) == 60
        colours.add(tuple(t["marker"]["color"] for t in traces))
    assert len(colours) == 1 and len(set(next(iter(colours)))) == len(CLASSES)  # the same class colours on every map
    assert any("of the trial's 100 s (1.2%)" in c.value for c in app.caption)


def test_the_pages_say_why_an_old_store_has_no_pictures(fixture_root, monkeypatch):
    for page, table in (("neighbours", "neighbours"), ("embedding", "embedding")):
        app = open_page(fixture_root, page, monkeypatch, studies=["pirl_lambda"])
        assert not app.get("plotly_chart")
        (message,) = [i.value for i in app.info]
        assert f"{table}/" in message and "recorded before" in message


def test_neighbours_without_thumbnails_say_why(tmp_path, monkeypatch):
    store = write_pictures(tmp_path)
    shutil.rmtree(store.table_folder(pictures.THUMBNAILS))
    app = open_page(tmp_path, "neighbours", monkeypatch)
    assert any("no thumbnails of this dataset" in i.value for i in app.info)
    (grid,) = [m.value for m in app.markdown if "<table" in m.value]
    assert not _images(grid) and "training image" in grid  # the grid keeps its cells, each named


def test_a_thumbnail_is_the_image_as_stored():
    png = _png(7)
    assert np.asarray(Image.open(BytesIO(png))).max() == 7
