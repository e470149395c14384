"""Studies on data other than CIFAR-10: a folder of small grayscale images, end to end,
through the real study script; and a study that compares two methods on it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
from PIL import Image

from sslab.plan.profiles import Profile
from sslab.results.store import ResultsStore
from sslab.engine.runner import run_study
from sslab.plan.study import Study

REPO = Path(__file__).resolve().parents[2]
CLASSES = ("circle", "stripes", "noise")


def _grayscale_folder(root: Path, per_class: dict[str, int], side: int = 28) -> Path:
    """train/<class>/*.png and test/<class>/*.png: 28×28 8-bit grayscale images, one pattern per class."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side]
    for split, count in per_class.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                if label == 0:
                    r = rng.uniform(4, 12)
                    img = ((yy - side / 2) ** 2 + (xx - side / 2) ** 2 < r * r) * 200.0
                elif label == 1:
                    img = ((xx + rng.integers(0, 8)) // 4 % 2) * 220.0
                else:
                    img = rng.uniform(0, 255, (side, side))
                img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img, mode="L").save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def gray_folder(tmp_path_factory) -> Path:
    return _grayscale_folder(tmp_path_factory.mktemp("gray"), {"train": 40, "test": 10})


def test_pirl_lambda_runs_on_a_folder_of_28px_grayscale_images(gray_folder, tmp_path):
    env = {**os.environ, "SSLAB_RESULTS": str(tmp_path), "RAY_ADDRESS": ""}
    done = subprocess.run(
        [sys.executable, "studies/pirl_lambda.py", "--dataset", f"imagefolder:{gray_folder}", "--epochs", "1"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:]
    assert "using all of them" in done.stdout  # the profile's 5,000-image subset is capped, and said so
    trials = ResultsStore(tmp_path, "pirl_lambda").read("trials")
    assert sorted(trials["config/loss_weight"]) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert (trials.status == "ok").all(), trials.error.tolist()
    assert trials.knn_top1.between(0, 1).all() and trials.invariance_l2_mean.notna().all()
    assert (trials.images_seen == 64).all()  # 120 images, batch 64, drop_last: one step per epoch
    baselines = ResultsStore(tmp_path, "pirl_lambda").read("baselines")
    assert len(baselines) == 1
    # The same folder with one image changed is other data: its trials train anew beside the first
    # ones, which are kept and never mixed in (the split's content hash is in every trial's id)
    changed = tmp_path / "changed"
    shutil.copytree(gray_folder, changed)
    image = changed / "train" / CLASSES[0] / "0.png"
    pixels = np.array(Image.open(image))
    pixels[0, 0] ^= 1  # one bit of one pixel
    Image.fromarray(pixels, mode="L").save(image)
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    again = subprocess.run([sys.executable, "studies/pirl_lambda.py", "--dataset", f"imagefolder:{gray_folder}",
                            "--epochs", "1"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=600)
    # (the console wraps its long lines: the checks read the words)
    assert again.returncode == 0 and "5 trial(s), 5 already in the results store" in " ".join(again.stdout.split())
    other = subprocess.run([sys.executable, "studies/pirl_lambda.py", "--dataset", f"imagefolder:{changed}",
                            "--epochs", "1"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=600)
    said = " ".join(other.stdout.split())
    assert other.returncode == 0 and "5 trial(s), 0 already in the results store" in said, other.stdout[-3000:]
    assert "5 trial(s) of 1 other setting(s) are in the store and not shown" in said and "train_content_sha256" in said
    both = ResultsStore(tmp_path, "pirl_lambda").read("trials")
    assert len(both) == 10 and both.setting_id.nunique() == 2 and both.trial_id.is_unique
    assert both.groupby("setting_id")["data/train_content_sha256"].nunique().eq(1).all()


TINY = Profile(
    name="tiny", train_subset=None, test_subset=None, width=4, epochs=1, batch_size=30,
    num_workers=0, knn_k=10, probe_epochs=2, invariance_samples=10, monitor_images=30, torch_threads=1,
    method_defaults={"num_negatives": 32, "lr_scaling": "none", "base_lr": 0.05, "warmup_epochs": 0},
)


def test_a_study_compares_two_methods_on_the_same_data(gray_folder, tmp_path):
    from sslab.engine.placement import TRIAL_RESOURCE

    study = Study(name="two_methods", methods={"npid": {}, "simclr": {"projection_dim": 16}},
                  grid={"temperature": [0.2]})
    if not ray.is_initialized():
        ray.init(num_cpus=2, resources={TRIAL_RESOURCE: 10}, include_dashboard=False, log_to_driver=False)
    profile = TINY.with_overrides(dataset=f"imagefolder:{gray_folder}")
    try:
        alone = run_study(study.with_method("npid"), profile=profile, root=tmp_path, quiet=True)  # --method npid
        assert ResultsStore(tmp_path, "two_methods").read("trials").method.tolist() == ["npid"]
        trials = run_study(study, profile=profile, root=tmp_path, quiet=True)
    finally:
        ray.shutdown()
    assert sorted(trials.method) == ["npid", "simclr"]
    # the whole study found npid's trial done (the same row, not trained again)
    assert trials.set_index("method").loc["npid", "finished_at"] == alone.finished_at.iloc[0]
    assert (trials.status == "ok").all(), trials.error.tolist()
    assert (trials["config/temperature"] == 0.2).all()
    by_method = trials.set_index("method")
    assert by_method.loc["simclr", "config/projection_dim"] == 16
    assert pd.isna(by_method.loc["simclr", "config/loss_weight"])  # a knob simclr does not have
    assert by_method.loc["npid", "config/num_negatives"] == 32  # the profile's setting, where a method has the knob
    assert by_method.invariance_l2_mean.notna().all()  # both methods declare an invariance pair
