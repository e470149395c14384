"""``sslab export`` and ``sslab.load_backbone``: a finished trial's backbone as one file, and back.

End to end on a tiny finished study (CIFAR-10, two trials on Ray): the exported file, loaded in a
fresh process with neither Ray nor the results store, gives the features the trial's evaluation
read and the kNN it recorded. The choice of trial, the checkpoint layouts (a trial's own and Ray
Train's), the errors, an object-store root and torchvision are tested on stores written here,
without Ray."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from small import SMALL, needs_cifar, run_in_local_ray
from sslab.cli import main
from sslab.export import FORMAT_VERSION, load_backbone, pack, read_export, to_torchvision, write
from sslab.methods.blocks.backbone import Backbone
from sslab.plan.study import Study
from sslab.results.store import ResultsStore

#: three epochs: the first one's checkpoint is pruned (a trial keeps its newest two)
PROFILE = SMALL.with_overrides(epochs=3)
STUDY = Study(name="export_mini", method="simclr", grid={"temperature": [0.1, 0.5]})
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The tiny study, run to the end once for the module (exporting needs no Ray: every test below
    runs without it): (results root, its trials by id)."""
    root = tmp_path_factory.mktemp("results")
    trials = run_in_local_ray(STUDY, PROFILE, root)
    assert set(trials.status) == {"ok"}
    return root, trials.set_index("trial_id")


def _export(*args: str) -> dict:
    """``sslab export`` through the CLI; the record of the file it wrote (``--out`` must be given)."""
    assert main(["export", *args]) == 0
    return read_export(args[args.index("--out") + 1])


def _checkpoint_backbone(path: Path, arch="resnet18", width=8, cifar_stem=True) -> Backbone:
    """The trial's backbone rebuilt by hand from one of its checkpoints (what export spares the user)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    backbone = Backbone(arch, cifar_stem=cifar_stem, width=width)
    backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in state["model"].items()
                              if k.startswith("backbone.")})
    return backbone.eval()


@needs_cifar
@pytest.mark.slow
def test_an_export_loaded_in_a_fresh_process_gives_the_trials_features_and_its_knn(finished, tmp_path):
    from sslab.data.train_test import evaluation_arrays, load_train_test
    from sslab.evaluation.evaluate import knn_top1, pooled_features

    root, trials = finished
    out = tmp_path / "model.pt"
    record = _export("export_mini", "--results", str(root), "--out", str(out))  # default: the best by knn_top1
    best = trials.knn_top1.idxmax()
    row = trials.loc[best]
    assert record["trial_id"] == best and record["study"] == "export_mini" and record["method"] == "simclr"
    assert record["format_version"] == FORMAT_VERSION and record["sslab_version"]
    assert record["architecture"] == {"arch": "resnet18", "width": 8, "cifar_stem": True} and record["image_size"] == 32
    assert record["config"]["temperature"] == row["config/temperature"]
    assert record["metrics"]["knn_top1"] == row.knn_top1
    assert record["metrics"]["probe_res5_top1"] == row.probe_res5_top1 and record["metrics"]["loss"] == row.loss
    assert record["spec"]["eval"]["knn_k"] == PROFILE.knn_k and record["spec"]["data"]["dataset"] == "cifar10"

    # the evaluation's data: the profile's subsets, normalised with the whole training split's statistics
    train, test = load_train_test("cifar10", image_size=32, train_subset=PROFILE.train_subset,
                                  test_subset=PROFILE.test_subset, note=lambda line: None)
    arrays = evaluation_arrays(train, test)
    assert record["normalization"]["source"] == "study.json"
    np.testing.assert_allclose(record["normalization"]["mean"], arrays["stats"].mean, rtol=1e-12)
    np.testing.assert_allclose(record["normalization"]["std"], arrays["stats"].std, rtol=1e-12)
    images = tmp_path / "images.npz"
    np.savez(images, train=arrays["train_images"], test=arrays["test_images"])

    code = textwrap.dedent(f"""
        import sys
        import numpy as np, torch
        import sslab
        model = sslab.load_backbone({str(out)!r})
        assert not model.training and model.image_size == 32 and model.out_dim == 64
        images = np.load({str(images)!r})
        def unit(pixels):  # uint8 N x H x W x 3 -> float N x 3 x H x W in [0, 1]
            x = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2), dtype=np.float32)
            x *= np.float32(1 / 255)
            return torch.from_numpy(x)
        with torch.no_grad():
            np.savez({str(tmp_path / 'features.npz')!r}, **{{k: model.features(unit(images[k])).numpy() for k in ("train", "test")}})
        print(sorted(m for m in ("ray", "pandas", "sslab.results.store", "sslab.engine") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"  # neither Ray nor the store: the file alone
    features = np.load(tmp_path / "features.npz")

    checkpoint = Path(record["checkpoint"])
    assert checkpoint.name == "epoch-000002.pt" and record["epochs"] == 3
    backbone = _checkpoint_backbone(checkpoint)
    for split in ("train", "test"):  # the features the trial's evaluation computed from these weights
        used = pooled_features(backbone, arrays[f"{split}_images"], ("res5",), stats=arrays["stats"])["res5"]
        np.testing.assert_allclose(features[split], used.numpy(), rtol=1e-5, atol=1e-6)
    knn = knn_top1(torch.from_numpy(features["train"]), torch.as_tensor(arrays["train_labels"]),
                   torch.from_numpy(features["test"]), torch.as_tensor(arrays["test_labels"]),
                   k=PROFILE.knn_k, temperature=PROFILE.knn_temperature)
    assert knn == row.knn_top1


@needs_cifar
@pytest.mark.slow
def test_the_last_epoch_survives_pruning_and_best_trial_and_out_default(finished, tmp_path, monkeypatch, capsys):
    root, trials = finished
    for trial_id in trials.index:  # keep=2 pruned the first epoch; the last one is there
        names = sorted(p.name for p in (root / "export_mini" / "ray" / "train" / trial_id).glob("epoch-*.pt"))
        assert names == ["epoch-000001.pt", "epoch-000002.pt"]
    monkeypatch.chdir(tmp_path)
    lowest = trials.loss.idxmin()
    assert main(["export", "export_mini", "--results", str(root), "--best", "loss"]) == 0
    assert f"load it with: sslab.load_backbone('{lowest}.pt')" in capsys.readouterr().out
    assert read_export(tmp_path / f"{lowest}.pt")["trial_id"] == lowest  # lower loss is better
    other = (set(trials.index) - {trials.knn_top1.idxmax()}).pop()
    assert main(["export", "export_mini", "--results", str(root), "--trial", other[:-4], "--out", "sub/"]) == 0  # a prefix
    assert read_export(tmp_path / "sub" / f"{other}.pt")["trial_id"] == other


@needs_cifar
@pytest.mark.slow
def test_export_errors_on_the_finished_study(finished, tmp_path):
    root, trials = finished
    with pytest.raises(SystemExit, match=r"no trial 'nope' in 'export_mini'.*simclr-temperature=0\.1.*simclr-temperature=0\.5"):
        main(["export", "export_mini", "--results", str(root), "--trial", "nope"])
    with pytest.raises(SystemExit, match=r"no results for 'missing' under .*; studies there: export_mini"):
        main(["export", "missing", "--results", str(root)])
    copy = tmp_path / "copy"
    shutil.copytree(root / "export_mini", copy / "export_mini", ignore=shutil.ignore_patterns("tune-*"))
    first, second = sorted(trials.index)
    (copy / "export_mini" / "ray" / "train" / first / "epoch-000002.pt").unlink()
    with pytest.raises(SystemExit, match=r"trial .* has no final weights: .*epoch-000001\.pt holds epoch 2, not its last \(3\)"):
        main(["export", "export_mini", "--results", str(copy), "--trial", first, "--out", str(tmp_path / "x.pt")])
    shutil.rmtree(copy / "export_mini" / "ray" / "train" / second)
    with pytest.raises(SystemExit, match=r"has no checkpoint under .*: its final weights are gone"):
        main(["export", "export_mini", "--results", str(copy), "--trial", second, "--out", str(tmp_path / "x.pt")])
    assert not (tmp_path / "x.pt").exists()


@needs_cifar
@pytest.mark.slow
def test_a_study_json_without_the_statistics_has_them_from_the_dataset(finished, tmp_path):
    root, _ = finished
    shutil.copytree(root / "export_mini", tmp_path / "export_mini", ignore=shutil.ignore_patterns("ray"))
    shutil.copytree(root / "export_mini" / "ray" / "train", tmp_path / "export_mini" / "ray" / "train")
    meta_path = tmp_path / "export_mini" / "study.json"
    meta = json.loads(meta_path.read_text())
    recorded = next(iter(meta["settings"].values()))["normalization"]
    for setting in meta["settings"].values():  # as a store written before the record
        del setting["normalization"]
    meta_path.write_text(json.dumps(meta))
    record = _export("export_mini", "--results", str(tmp_path), "--out", str(tmp_path / "m.pt"))
    assert record["normalization"]["source"].startswith("dataset cifar10")
    np.testing.assert_allclose(record["normalization"]["mean"], recorded["mean"], rtol=1e-12)
    np.testing.assert_allclose(record["normalization"]["std"], recorded["std"], rtol=1e-12)


# ---------------------------------------------------------------- stores written here, no Ray
STATS = {"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.15]}


def _trial(store: ResultsStore, trial_id: str, *, setting="s1", status="ok", knn=0.5, loss=1.0, layout="own",
           epochs=2, checkpoints=True, **metrics) -> Backbone:
    """A trial's row and its checkpoints (its own ``epoch-*.pt`` or Ray Train's ``checkpoint_*/state.pt``,
    an older one and the last); the backbone of the last one."""
    store.record_trial({"trial_id": trial_id, "setting_id": setting, "method": "simclr", "seed": 0,
                        "status": status, "error": "loss became NaN" if status == "failed" else "",
                        "knn_top1": knn, "loss": loss, "epochs": epochs, "config/temperature": 0.2,
                        "config/num_negatives": float("nan"),  # another method's knob in a study of two
                        "train/arch": "resnet18", "train/width": 8, "train/cifar_stem": True,
                        "train/image_size": 32, "data/dataset": "cifar10", **metrics})
    backbone = None
    folder = Path(store.ray_storage) / "train" / trial_id
    for epoch in range(epochs) if checkpoints else ():
        torch.manual_seed(epoch)
        backbone = Backbone("resnet18", cifar_stem=True, width=8)
        model = {**{f"backbone.{k}": v for k, v in backbone.state_dict().items()}, "projector.0.weight": torch.ones(2)}
        path = (folder / f"epoch-{epoch:06d}.pt" if layout == "own"
                else folder / f"checkpoint_2026-01-0{epoch + 1}_00-00-00.000000" / "state.pt")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model, "epoch": epoch, "optimizer": {}}, path)
    return backbone


def _store(root, metric="knn_top1", mode="max", setting_ids=("s1",)) -> ResultsStore:
    store = ResultsStore(root, "fake")
    store.write_metadata({"metric": metric, "mode": mode, "setting_ids": list(setting_ids),
                          "settings": {"s1": {"normalization": STATS}, "s2": {"normalization": STATS}}})
    return store


def test_best_is_the_current_settings_best_by_the_studys_metric_and_mode(tmp_path):
    store = _store(tmp_path / "r")
    _trial(store, "a", knn=0.3, loss=2.0)
    _trial(store, "b", knn=0.6, loss=3.0)
    _trial(store, "c", knn=0.9, loss=0.5, setting="s2")  # another setting's: never compared
    _trial(store, "d", knn=float("nan"), status="stopped")
    out = str(tmp_path / "m.pt")
    assert _export("fake", "--results", str(tmp_path / "r"), "--out", out)["trial_id"] == "b"
    assert _export("fake", "--results", str(tmp_path / "r"), "--out", out, "--best", "loss")["trial_id"] == "a"
    store.write_metadata({**store.metadata(), "metric": "loss", "mode": "min"})
    assert _export("fake", "--results", str(tmp_path / "r"), "--out", out)["trial_id"] == "a"
    store.write_metadata({**store.metadata(), "metric": "knn_top1", "mode": "min"})  # the study's mode, not a guess
    assert _export("fake", "--results", str(tmp_path / "r"), "--out", out)["trial_id"] == "a"
    with pytest.raises(SystemExit, match=r"no finished trial of 'fake''s current setting has 'probe_res5_top1'"):
        main(["export", "fake", "--results", str(tmp_path / "r"), "--best", "probe_res5_top1", "--out", out])


def test_best_by_a_metric_the_study_did_not_optimise_takes_that_metrics_own_end(tmp_path):
    """``--best`` of another metric: the loss and uniformity are better low, RankMe high; invariance
    has no better end sslab knows, so it is refused with the way out instead of guessed."""
    store = _store(tmp_path / "r")
    _trial(store, "a", knn=0.3, loss=2.0, rankme=40.0, uniformity=-1.0, invariance_l2_mean=0.2)
    _trial(store, "b", knn=0.6, loss=3.0, rankme=20.0, uniformity=-3.0, invariance_l2_mean=0.9)
    out, root = str(tmp_path / "m.pt"), str(tmp_path / "r")
    assert [_export("fake", "--results", root, "--out", out, "--best", metric)["trial_id"]
            for metric in ("loss", "rankme", "uniformity")] == ["a", "a", "b"]
    with pytest.raises(SystemExit, match=r"'invariance_l2_mean' has no better end.*--trial ID"):
        main(["export", "fake", "--results", root, "--best", "invariance_l2_mean", "--out", out])


@pytest.mark.parametrize("layout", ["own", "ray_train"])
def test_the_last_epochs_backbone_is_exported_from_either_checkpoint_layout(tmp_path, layout):
    store = _store(tmp_path)
    last = _trial(store, "t", layout=layout, epochs=3)
    record = _export("fake", "--results", str(tmp_path), "--trial", "t", "--out", str(tmp_path / "m.pt"))
    assert record["checkpoint"].endswith("epoch-000002.pt" if layout == "own" else "checkpoint_2026-01-03_00-00-00.000000/state.pt")
    assert record["epochs"] == 3 and record["config"] == {"temperature": 0.2}  # the method's knobs only
    assert record["normalization"] == {**STATS, "source": "study.json"}
    assert record["state_dict"].keys() == last.state_dict().keys()  # the backbone's alone, prefix stripped
    assert all(torch.equal(record["state_dict"][k], v) for k, v in last.state_dict().items())


def test_export_errors_name_the_cause_and_the_fix(tmp_path, capsys):
    store = _store(tmp_path)
    _trial(store, "crashed", status="failed")
    _trial(store, "bare", checkpoints=False)
    for n in range(7):
        _trial(store, f"many-{n}", checkpoints=False)
    with pytest.raises(SystemExit, match=r"trial crashed failed \(loss became NaN\): it has no final weights.*--retry-failed"):
        main(["export", "fake", "--results", str(tmp_path), "--trial", "crashed"])
    with pytest.raises(SystemExit, match=r"trial bare has no checkpoint under .*bare.*move .*bare\.parquet aside"):
        main(["export", "fake", "--results", str(tmp_path), "--trial", "bare"])
    with pytest.raises(SystemExit, match=r"no trial 'many' .*; it begins several of them; its trials: bare, crashed, "
                                         r"many-0, many-1, many-2 and 4 more \(sslab report fake --format csv"):
        main(["export", "fake", "--results", str(tmp_path), "--trial", "many"])
    with pytest.raises(SystemExit):
        main(["export", "fake", "--results", str(tmp_path), "--bogus"])
    assert "unrecognised arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"no results for 'fake' under .*nowhere.*sslab run fake"):
        main(["export", "fake", "--results", str(tmp_path / "nowhere")])


def test_a_study_on_s3_exports_like_a_local_one_and_the_file_may_live_there(tmp_path, s3_bucket):
    import pyarrow.fs as pafs

    last = _trial(_store(tmp_path / "local"), "t", layout="ray_train")
    s3, base = pafs.FileSystem.from_uri(f"{s3_bucket}/results")
    pafs.copy_files(str(tmp_path / "local"), base, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=s3)
    out = f"{s3_bucket}/models/t.pt"
    record = _export("fake", "--results", f"{s3_bucket}/results", "--trial", "t", "--out", out)
    assert record["checkpoint"] == f"{s3_bucket}/results/fake/ray/train/t/checkpoint_2026-01-02_00-00-00.000000/state.pt"
    model = load_backbone(out)
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in last.state_dict().items())


# ---------------------------------------------------------------- the file, load_backbone, torchvision
def _random_stats(backbone: Backbone) -> Backbone:
    """BatchNorm affine weights and running statistics away from their initial 1 and 0, so that a
    comparison of them can fail."""
    generator = torch.Generator().manual_seed(0)
    for module in backbone.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            for tensor in (module.weight.data, module.bias.data, module.running_mean, module.running_var):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
    return backbone.eval()


@pytest.mark.parametrize("arch, cifar_stem, convolutions", [("resnet18", True, 20), ("resnet18", False, 20),
                                                            ("resnet50", False, 53), ("resnet10", True, 12)])
def test_to_torchvision_holds_every_weight_and_computes_the_same_trunk(tmp_path, arch, cifar_stem, convolutions):
    torch.manual_seed(0)
    backbone = _random_stats(Backbone(arch, cifar_stem=cifar_stem, width=64))
    path = write(pack(backbone, image_size=32, mean=STATS["mean"], std=STATS["std"]), tmp_path / "m.pt")
    theirs, ours = to_torchvision(path), load_backbone(path)
    assert not theirs.training and isinstance(theirs.fc, torch.nn.Identity)
    kinds = (torch.nn.Conv2d, torch.nn.BatchNorm2d)
    modules = {name: m for name, m in theirs.named_modules() if isinstance(m, kinds)}
    assert sum(isinstance(m, torch.nn.Conv2d) for m in modules.values()) == convolutions
    assert modules.keys() == {name for name, m in backbone.named_modules() if isinstance(m, kinds)}
    assert theirs.conv1.kernel_size == ((3, 3) if cifar_stem else (7, 7))
    for name, module in modules.items():
        mine = backbone.get_submodule(name)
        for key, tensor in module.state_dict().items():
            assert torch.equal(tensor, mine.state_dict()[key]), f"{name}.{key}"
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(theirs(ours.normalize(images)).numpy(), ours.features(images).numpy(),
                                   rtol=1e-4, atol=1e-5)
    narrow = write(pack(Backbone(arch, width=8), image_size=32, mean=STATS["mean"], std=STATS["std"]), tmp_path / "n.pt")
    with pytest.raises(ValueError, match="width 8 is no torchvision ResNet"):
        to_torchvision(narrow)


def test_load_backbone_refuses_what_it_cannot_read_and_images_out_of_its_contract(tmp_path):
    torch.save({"model": {}}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="is not an sslab backbone file"):
        load_backbone(tmp_path / "checkpoint.pt")
    record = pack(Backbone("resnet10", width=4), image_size=32, mean=STATS["mean"], std=STATS["std"])
    write({**record, "format_version": FORMAT_VERSION + 1}, tmp_path / "newer.pt")
    with pytest.raises(ValueError, match=r"format version 2, newer than this sslab reads \(1\); upgrade sslab"):
        load_backbone(tmp_path / "newer.pt")
    with pytest.raises(FileNotFoundError, match="no such file; write one with: sslab export"):
        load_backbone(tmp_path / "absent.pt")
    model = load_backbone(write(record, tmp_path / "m.pt"))
    with pytest.raises(ValueError, match="float tensor N x 3 x H x W with values in \\[0, 1\\].*divide by 255"):
        model.features(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    half = torch.full((1, 3, 8, 8), 0.5)  # the statistics are applied: (0.5 - mean) / std, not 0.5, reaches the trunk
    expected = model.backbone((half - torch.tensor(STATS["mean"]).view(1, 3, 1, 1)) / torch.tensor(STATS["std"]).view(1, 3, 1, 1))
    assert torch.allclose(model.features(half), expected, atol=1e-6)
    assert not torch.allclose(model.features(half), model.backbone(half), atol=1e-3)


def test_import_sslab_stays_light_and_load_backbone_loads_no_ray():
    code = ("import sys; import sslab; light = 'torch' not in sys.modules; load = sslab.load_backbone; "
            "print(light, callable(load), sorted(m for m in ('ray', 'pandas', 'sslab.results.store') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "True True []"
