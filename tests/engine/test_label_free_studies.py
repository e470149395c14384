"""Choosing without labels, end to end: a search on a label-free measure of the embedding (TPE
proposes on it, ASHA stops on its per-epoch value) that reads no label of its data, and a folder of images without
labels pretrained with the label-free measures only, then with a labelled evaluation dataset."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from PIL import Image

from sslab import reports
from sslab.data import train_test
from sslab.data.split import Split
from sslab.engine import runner
from sslab.engine.runner import run_study
from sslab.plan.profiles import Profile
from sslab.plan.study import Search, Study
from sslab.results import metrics, picks
from sslab.results.store import ResultsStore

TINY = Profile(
    name="tiny", train_subset=None, test_subset=None, width=4, epochs=2, batch_size=30, num_workers=0,
    knn_k=5, probe_epochs=2, invariance_samples=10, monitor_images=40, lidar_instances=16, lidar_views=3,
    torch_threads=1, method_defaults={"lr_scaling": "none", "base_lr": 0.05, "warmup_epochs": 0},
)


def _images(folder: Path, count: int, seed: int, side: int = 16) -> None:
    """``count`` colour PNGs of stripes and blobs straight into ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:side, :side]
    for i in range(count):
        base = ((xx + rng.integers(0, 6)) // rng.integers(2, 5) % 2)[..., None] * rng.uniform(60, 250, 3)
        blob = ((yy - rng.uniform(0, side)) ** 2 + (xx - rng.uniform(0, side)) ** 2 < 16)[..., None] * 80.0
        pixels = np.clip(base + blob + rng.normal(0, 12, (side, side, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """``unlabelled``: train/ and test/ holding images directly; ``labelled``: train/<class>/ and
    test/<class>/ for two classes."""
    root = tmp_path_factory.mktemp("label_free")
    _images(root / "unlabelled" / "train", 90, seed=0)
    _images(root / "unlabelled" / "test", 40, seed=1)
    for split, count in (("train", 30), ("test", 12)):
        for label, name in enumerate(("a", "b")):
            _images(root / "labelled" / split / name, count, seed=10 + 2 * label + (split == "test"))
    return {"unlabelled": root / "unlabelled", "labelled": root / "labelled"}


class LabelsRaise(Split):
    """A split whose labels raise when read while ``sealed``: any code that reads one fails the test."""

    sealed = True

    @property
    def labels(self):
        if LabelsRaise.sealed:
            raise AssertionError("a label of the training data was read")
        return self._sealed

    @labels.setter
    def labels(self, value):
        self._sealed = value


def test_a_search_on_a_label_free_measure_reads_no_label(ray_local, folders, tmp_path, monkeypatch):
    real = train_test.load_split

    def sealed(*args, **kwargs):
        split = real(*args, **kwargs)
        assert split.labelled  # labelled data: what must stay unread
        return LabelsRaise(images=split.images, labels=split.labels, idx=split.idx, classes=split.classes,
                           skipped=split.skipped, source=split.source, normalization=split.normalization,
                           source_side=split.source_side, source_side_min=split.source_side_min)

    monkeypatch.setattr(train_test, "load_split", sealed)
    check_pick = runner._check_pick

    def unsealed(*args, **kwargs):  # the choosing is over: the check of the pick may read the labels
        monkeypatch.setattr(LabelsRaise, "sealed", False)
        return check_pick(*args, **kwargs)

    monkeypatch.setattr(runner, "_check_pick", unsealed)
    chosen = metrics.embedding("uniformity")  # a name with a "/" in it, and a measure to minimise, through Tune
    study = Study(name="no_labels", method="simclr", metric=chosen, base={"projection_dim": 16},
                  search=Search(space={"temperature": FloatDistribution(0.1, 1.0)}, trials=3, grace_epochs=1))
    assert study.mode == "min" and not study.reads_labels  # the measure's own mode (metrics.LABEL_FREE)
    profile = TINY.with_overrides(dataset=f"imagefolder:{folders['labelled']}")
    trials = run_study(study, profile=profile, root=tmp_path, quiet=True)

    assert len(trials) == 3 and set(trials.status) <= {"ok", "stopped"}, trials.error.tolist()
    assert metrics.KNN not in trials and not any(metrics.probe_tap(c) for c in trials)  # nothing read a label
    ok = trials[trials.status == "ok"]
    for column in [*metrics.LABEL_FREE, metrics.embedding("lidar"), metrics.embedding("rankme")]:
        assert ok[column].notna().all(), column
    assert (trials["data/train_num_classes"] == 0).all()  # the data's identity: its pixels, read blind
    epochs = ResultsStore(tmp_path, "no_labels").read("epochs")
    assert epochs[chosen].notna().all() and metrics.KNN not in epochs  # the per-epoch value ASHA reads
    # TPE was told each trial's last value (the final evaluation's, or the monitor's where ASHA stopped it)
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(tmp_path / "no_labels" / "optuna.journal")))
    (summary,) = optuna.get_all_study_summaries(journal)
    told = sorted(t.value for t in optuna.load_study(study_name=summary.study_name, storage=journal).trials)
    last = epochs.sort_values("epoch").groupby("trial_id")[chosen].last()
    assert told == pytest.approx(sorted(last))

    # then its pick, and only its pick, is evaluated with the labels: exactly what training it with
    # --eval-dataset <the same images> gives, beside the random-init backbone's on the same images
    (check,) = ResultsStore(tmp_path, "no_labels").read(picks.TABLE).to_dict("records")
    pick = ok.loc[ok[chosen].idxmin()]
    assert check["trial_id"] == pick.trial_id and check["picked_by"] == chosen and check["picked_value"] == pick[chosen]
    assert 0 <= check[metrics.KNN] <= 1 and 0 <= check[picks.RANDOM_INIT + metrics.KNN] <= 1
    assert check[metrics.probe("res5")] >= 0 and check["data/eval_dataset"] == profile.dataset
    again = Study(name="evaluated", method="simclr", base={"projection_dim": 16},
                  grid={"temperature": [float(pick["config/temperature"])]})
    (evaluated,) = run_study(again, profile=profile.with_overrides(eval_dataset=profile.dataset), root=tmp_path,
                             quiet=True).to_dict("records")
    assert evaluated["data/eval_train_content_sha256"] == check["data/eval_train_content_sha256"]
    assert evaluated[metrics.KNN] == check[metrics.KNN]
    assert evaluated[metrics.probe("res5")] == pytest.approx(check[metrics.probe("res5")], abs=1e-6)
    baseline = ResultsStore(tmp_path, "evaluated").read("baselines").iloc[0]
    assert baseline[metrics.KNN] == check[picks.RANDOM_INIT + metrics.KNN]
    # a rerun finds the pick checked and evaluates nothing again
    monkeypatch.setattr(LabelsRaise, "sealed", True)
    run_study(study, profile=profile, root=tmp_path, quiet=True)
    (kept,) = ResultsStore(tmp_path, "no_labels").read(picks.TABLE).to_dict("records")
    assert (kept["checked_at"], kept["check_s"]) == (check["checked_at"], check["check_s"])


def test_images_without_labels_pretrain_with_the_label_free_measures_then_evaluate_on_labelled_data(
        ray_local, folders, tmp_path, capsys):
    study = Study(name="unlabelled", method="simclr", grid={"temperature": [0.5]}, base={"projection_dim": 16})
    assert study.reads_labels  # kNN, the default: the data has none, so the label-free measures stand in
    profile = TINY.with_overrides(dataset=f"imagefolder:{folders['unlabelled']}")
    with pytest.raises(ValueError, match="has no labels, and supervised trains on labels"):
        run_study(Study(name="sup", method="supervised"), profile=profile, root=tmp_path, quiet=True)
    searching = Study(name="knn_search", method="simclr", search=Search(space={"temperature": FloatDistribution(0.1, 1)}))
    with pytest.raises(ValueError, match=r"searches on knn_top1, which reads them: give --eval-dataset NAME"):
        run_study(searching, profile=profile, root=tmp_path, quiet=True)
    trials = run_study(study, profile=profile, root=tmp_path, quiet=False)
    said = " ".join(capsys.readouterr().out.split())
    assert said.count("has no labels: kNN and the linear probes are skipped") == 1  # said once
    assert (trials.status == "ok").all(), trials.error.tolist()
    assert metrics.KNN not in trials and trials["rankme"].notna().all() and trials["lidar"].notna().all()
    assert trials[metrics.embedding("uniformity")].notna().all() and trials[metrics.INVARIANCE].notna().all()
    assert "rankme per configuration" in said  # the summary ranks by RankMe
    baselines = ResultsStore(tmp_path, "unlabelled").read("baselines")
    assert baselines["rankme"].notna().all() and metrics.KNN not in baselines
    reports.report(study, str(tmp_path), "markdown")
    report = capsys.readouterr().out
    assert report.startswith("## unlabelled: rankme") and "Random-init baseline: rankme" in report

    # the same images with a labelled evaluation dataset: kNN and the probes on it, a setting of its own
    evaluated = profile.with_overrides(eval_dataset=f"imagefolder:{folders['labelled']}")
    both = run_study(study, profile=evaluated, root=tmp_path, quiet=True)
    mine = both[both["data/eval_dataset"].notna()] if "data/eval_dataset" in both else both.iloc[0:0]
    assert len(both) == 2 and len(mine) == 1 and both.setting_id.nunique() == 2
    assert mine[metrics.KNN].between(0, 1).all() and mine[metrics.probe("res5")].notna().all()
    assert mine["data/eval_train_num_classes"].eq(2).all() and mine["data/eval_train_content_sha256"].notna().all()
    # the label-free measures still read the training data's test images: the same as without the evaluation
    # dataset, to the last digit, for the same trial settings (the evaluation dataset changes nothing else)
    first = both[both["data/eval_dataset"].isna()]
    assert not math.isnan(mine["rankme"].iloc[0]) and mine["rankme"].iloc[0] == pytest.approx(first["rankme"].iloc[0])
