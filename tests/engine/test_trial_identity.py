"""A result is exactly what it says (issue 32), end to end: a rerun with other settings reuses
nothing and mixes nothing, the store keeps every trial's true record, one process writes a store,
and what is known to fail or to cost too much is refused before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from small import SMALL, by_name, needs_cifar
from sslab.engine import runner
from sslab.results.store import ResultsStore
from sslab.engine.runner import run_study
from sslab.plan.spec import name_of
from sslab.results.lock import StoreLockedError
from sslab.plan.study import Study
from sslab.results.summary import by_configuration, current_setting

REPO = Path(__file__).parents[2]
STUDY = Study(name="lam", method="pirl", grid={"loss_weight": [0.0, 1.0]}, base={"num_negatives": 64})
SMOKE = SMALL.with_overrides(epochs=1, train_subset=100)


def _run(capsys, study=STUDY, **kwargs) -> tuple[pd.DataFrame, str]:
    trials = run_study(study, **kwargs)
    return trials, capsys.readouterr().out


@needs_cifar
def test_a_smoke_test_then_the_real_run_then_more_seeds_then_another_base_never_reuse_or_mix(
        ray_local, tmp_path, capsys):
    # 1. the smoke test, one trial at a time (--max-trials 1), then the rest
    first, out = _run(capsys, profile=SMOKE, root=tmp_path, max_trials=1)
    assert "2 trial(s), 0 already in the results store" in out and "to run now: 1 trial(s), about" in out
    assert len(first) == 1
    smoke, out = _run(capsys, profile=SMOKE, root=tmp_path)
    assert "2 trial(s), 1 already in the results store" in out and len(smoke) == 2
    assert (smoke.status == "ok").all() and (smoke["train/epochs"] == 1).all() and (smoke["data/train_subset"] == 100).all()

    # 2. the real run into the same root: trains its own trials, shows only them
    real, out = _run(capsys, profile=SMALL, root=tmp_path)
    assert "2 trial(s), 0 already in the results store" in out
    assert "2 trial(s) of 1 other setting(s) are in the store and not shown" in out
    assert "epochs 1 vs 2" in out and "train_subset 100 vs 200" in out
    assert len(real) == 4 and real.trial_id.is_unique
    shown = current_setting(real, ResultsStore(tmp_path, STUDY.name).read("baselines"),
                            ResultsStore(tmp_path, STUDY.name).metadata())
    assert set(shown.trials.trial_id) == set(real.trial_id) - set(smoke.trial_id)
    assert (shown.trials["train/epochs"] == 2).all() and (shown.trials["data/train_num_images"] == 200).all()
    # the smoke test's record is untouched: its rows, and its setting in study.json
    pd.testing.assert_frame_equal(by_name(real[real.trial_id.isin(smoke.trial_id)]).sort_index()[smoke.columns],
                                  by_name(smoke).sort_index()[smoke.columns])
    meta = json.loads((tmp_path / STUDY.name / "study.json").read_text())
    assert {s["profile"]["epochs"] for s in meta["settings"].values()} == {1, 2}
    assert meta["profile"]["epochs"] == 2 and len(meta["setting_ids"]) == 1

    # 3. --seeds 2: only seed 1 trains; the means are over this setting's two seeds, never the smoke test's
    more, out = _run(capsys, profile=SMALL, root=tmp_path, seeds=2)
    assert "4 trial(s), 2 already in the results store" in out
    assert len(more) == 6
    store = ResultsStore(tmp_path, STUDY.name)
    shown = current_setting(more, store.read("baselines"), store.metadata())
    assert sorted(shown.trials.seed) == [0, 0, 1, 1]
    table = by_configuration(shown.trials, ["loss_weight"], "knn_top1", "max", shown.baselines)
    assert list(table.n) == [2, 2]
    for _, row in table.iterrows():
        mine = shown.trials[shown.trials["config/loss_weight"] == row["config/loss_weight"]]
        assert row["mean"] == pytest.approx(mine.knn_top1.mean())
    # the baselines compared are those of this run's data and evaluation, one per seed
    assert sorted(shown.baselines.seed) == [0, 1] and shown.baselines.setting_id.nunique() == 1
    assert shown.baselines.setting_id.iloc[0] == shown.trials.baseline_setting.iloc[0]

    # 4. another base value: other trials again, the earlier ones kept
    other = Study(name="lam", method="pirl", grid={"loss_weight": [0.0, 1.0]}, base={"num_negatives": 32})
    again, out = _run(capsys, other, profile=SMALL, root=tmp_path)
    assert "2 trial(s), 0 already in the results store" in out and "num_negatives 64 vs 32" in out
    assert len(again) == 8 and again.trial_id.is_unique
    # every row says how it was made, and where
    assert again.groupby("setting_id")["config/num_negatives"].nunique().eq(1).all()
    assert again["host/cpu"].astype(bool).all() and again["host/torch"].astype(bool).all()

    # the same command twice: everything reused, nothing trained
    before = again.set_index("trial_id").finished_at
    last, out = _run(capsys, other, profile=SMALL, root=tmp_path)
    assert "2 trial(s), 2 already in the results store" in out
    pd.testing.assert_series_equal(last.set_index("trial_id").finished_at, before)


def _images(folder: Path, classes: int = 2, per_class: int = 4, side: int = 32) -> None:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / f"class{c}" / f"{i}.png")


def _folders(tmp_path: Path) -> dict[str, str]:
    flat, one_class, unreadable = tmp_path / "flat", tmp_path / "one_class", tmp_path / "unreadable"
    _images(flat)
    _images(one_class / "train", classes=1)
    _images(one_class / "test", classes=1)
    for split in ("train", "test"):
        for c in range(2):
            (unreadable / split / f"class{c}").mkdir(parents=True)
            (unreadable / split / f"class{c}" / "0.png").write_bytes(b"not an image")
    return {"missing": str(tmp_path / "nowhere"), "flat": str(flat), "one_class": str(one_class),
            "unreadable": str(unreadable)}


@pytest.mark.parametrize("case, flags, says", [
    ("seeds", ["--seeds", "100000"], "would run 500,000 trial(s), about"),
    ("missing", ["--dataset", "imagefolder:{missing}"], "not found"),
    ("flat", ["--dataset", "imagefolder:{flat}"], "needs a train and a test split"),
    ("one_class", ["--dataset", "imagefolder:{one_class}"], "need at least 2"),
    ("unreadable", ["--dataset", "imagefolder:{unreadable}"], "could be decoded"),
])
def test_what_is_known_to_fail_or_to_cost_too_much_is_refused_in_one_line_before_ray(tmp_path, case, flags, says):
    """Before Ray starts, within seconds, in one line (exit 2), with nothing written to the store."""
    folders = _folders(tmp_path / "data")
    results = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"SSLAB_RESULTS": str(results)}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "studies/pirl_lambda.py", *(f.format(**folders) for f in flags)], env=env,
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and says in lines[0], done.stdout[-2000:]
    assert time.monotonic() - start < 10 + 10  # the refusal itself; the rest is Python importing torch
    assert not results.exists() or not any(results.rglob("*"))  # no study.json, no folder
    if case == "seeds":  # both ways forward named
        assert "--yes" in lines[0] and "--max-trials" in lines[0]


def test_images_much_smaller_than_the_profile_are_said_with_the_factor(tmp_path, monkeypatch, capsys):
    for split in ("train", "test"):
        _images(tmp_path / "tiny" / split, side=1, per_class=30)
    monkeypatch.setattr(runner, "_init_ray", lambda *_: pytest.fail("the note comes before Ray starts"))
    monkeypatch.setattr(runner, "StoreLock", lambda *a, **k: pytest.fail("the note comes before the store is locked"))
    with pytest.raises(pytest.fail.Exception):
        run_study(STUDY, profile=SMALL.with_overrides(dataset=f"imagefolder:{tmp_path / 'tiny'}", batch_size=10),
                  root=tmp_path / "results")
    out = capsys.readouterr().out
    assert "1x1 px" in out and "upscaled 32x" in out


def test_a_second_process_on_the_same_store_is_refused_in_one_line_naming_the_holder(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "data"
    for split in ("train", "test"):
        _images(folder / split, per_class=30)
    profile = SMALL.with_overrides(dataset=f"imagefolder:{folder}", batch_size=10, train_subset=None, test_subset=None)
    monkeypatch.setattr(runner, "_init_ray", lambda *_: pytest.fail("Ray was started"))
    store = ResultsStore(tmp_path / "results", STUDY.name)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, pyarrow.fs as fs\n"
        "from sslab.results.lock import StoreLock\n"
        f"with StoreLock(fs.LocalFileSystem(), {store.lock_path!r}):\n"
        "    print('held', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(StoreLockedError) as refused:
            run_study(STUDY, profile=profile, root=tmp_path / "results", quiet=True)
        assert time.monotonic() - start < 10
        message = str(refused.value)
        assert "\n" not in message and f"pid {holder.pid}" in message and "since" in message
        assert not (tmp_path / "results" / STUDY.name / "study.json").exists()  # the holder's store is untouched
    finally:
        holder.kill()
        holder.wait()
    # killed: its lock is stale, taken over (said in one line), and this run writes the store
    assert Path(store.lock_path).exists()
    capsys.readouterr()
    monkeypatch.setattr(runner, "_init_ray", lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run_study(STUDY, profile=profile, root=tmp_path / "results")
    said = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert said.count("taking over the lock") == 1
    assert f"left by pid {holder.pid}" in said and "which is no longer running" in said
    # ... and released it when interrupted
    assert (tmp_path / "results" / STUDY.name / "study.json").exists() and not Path(store.lock_path).exists()


def test_two_lines_of_the_store_from_different_settings_are_never_averaged():
    """``current_setting`` keeps one setting; a store from before settings shows all, with a note."""
    trials = pd.DataFrame({"trial_id": ["a-1", "b-1", "c-1"], "setting_id": ["s1", "s1", "s2"],
                           "baseline_setting": ["b1", "b1", "b2"], "status": "ok", "knn_top1": [0.5, 0.7, 0.1],
                           "train/epochs": [16, 16, 1], "config/loss_weight": [0.5, 0.5, 0.5], "seed": [0, 1, 0]})
    baselines = pd.DataFrame({"setting_id": ["b1", "b2"], "seed": [0, 0], "backbone": "r", "knn_top1": [0.3, 0.9]})
    shown = current_setting(trials, baselines, {"setting_ids": ["s1"], "knobs": ["loss_weight"], "study": "lam"})
    assert list(shown.trials.trial_id) == ["a-1", "b-1"] and list(shown.baselines.knn_top1) == [0.3]
    assert "1 trial(s) of 1 other setting(s)" in shown.note and "epochs 1 vs 16" in shown.note
    assert "sslab report lam --setting ID" in shown.note and "s2" in shown.note
    table = by_configuration(shown.trials, ["loss_weight"], "knn_top1", "max", shown.baselines)
    assert table["mean"].tolist() == [pytest.approx(0.6)] and table["vs_baseline"].tolist() == [pytest.approx(0.3)]
    other = current_setting(trials, baselines, {"setting_ids": ["s1"]}, setting="s2")
    assert list(other.trials.trial_id) == ["c-1"] and list(other.baselines.knn_top1) == [0.9]
    legacy = current_setting(trials.drop(columns=["setting_id"]), baselines, {})
    assert len(legacy.trials) == 3 and "recorded before sslab kept each trial's specification" in legacy.note
    assert name_of("pirl-loss_weight=0.5-seed=0-0123456789") == "pirl-loss_weight=0.5-seed=0"


def test_a_trials_identity_is_computed_once_and_every_later_reader_looks_it_up(monkeypatch):
    """The runner builds every spec once (``_plan``: ``Specs.with_planned`` computes the ids); the
    trial and the store callback look a grid's spec up by id, and its id, setting and baseline
    setting are hashed once per spec, also after the trip to a trial (pickled, as Tune sends it).
    A search's proposal is resolved the first time a process sees it and looked up after that."""
    import pickle

    from sslab.plan import spec as spec_module
    from sslab.plan.spec import Specs

    specs = Specs(STUDY, SMOKE, {"dataset": "fake", "train_num_images": 100})
    planned = specs.planned_specs(2)
    specs = specs.with_planned(planned)  # the runner's plan: every trial id computed here
    hashed = []
    digest = spec_module.digest
    monkeypatch.setattr(spec_module, "digest", lambda *args, **kwargs: hashed.append(args) or digest(*args, **kwargs))
    for _ in range(3):  # a trial, then the callback's start, results and completion
        for spec in planned:
            found = specs.of_tune_config({"trial_id": spec.trial_id})
            assert found is spec
            assert (found.trial_id, found.setting_id, found.baseline.setting_id) == (
                spec.trial_id, spec.setting_id, spec.baseline.setting_id)
    assert len(hashed) == 2 * len(planned)  # the setting and baseline setting, once each; the ids never again
    hashed.clear()
    sent = pickle.loads(pickle.dumps(specs))
    assert [sent.of_tune_config({"trial_id": s.trial_id}).trial_id for s in planned] == [s.trial_id for s in planned]
    assert hashed == []

    resolved = []
    resolve = Specs.spec
    monkeypatch.setattr(Specs, "spec", lambda self, *args: resolved.append(args) or resolve(self, *args))
    proposal = {"method": "pirl", "loss_weight": 0.5, "seed": 0}
    first = specs.of_tune_config(proposal)
    assert specs.of_tune_config(dict(proposal)) is first and len(resolved) == 1
    assert first.trial_id == resolve(specs, "pirl", {"loss_weight": 0.5}, 0).trial_id
