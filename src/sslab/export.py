"""Take a trained representation home: ``sslab export`` writes a finished trial's backbone to one
file, and ``load_backbone`` makes it a ready module again, without Ray, the results store or the
dataset (docs/export.md).

The file is ``torch.save`` of a plain dict (tensors, strings, numbers, lists, dicts: no pickled
class, so ``torch.load(path, weights_only=True)`` reads it and loading it runs no code):

- ``format`` (``"sslab.backbone"``), ``format_version`` (``FORMAT_VERSION``), ``sslab_version``;
- ``architecture``: ``arch``, ``width``, ``cifar_stem`` (``methods.blocks.backbone.Backbone``'s
  arguments); ``image_size``: the side of the square images it trained and was evaluated on;
- ``normalization``: ``mean``, ``std`` (per RGB channel, in [0, 1] units: its training split's,
  with which every image it saw was normalised) and their ``source``;
- ``representation``: what ``features`` returns, in words;
- ``study``, ``trial_id``, ``setting_id``, ``method``, ``seed``, ``config`` (the method's resolved
  hyperparameters, the trial row's ``config/*``), ``spec`` (its ``train/*``, ``eval/*`` and
  ``data/*``), ``status``, ``epochs``, ``metrics`` (the recorded ``knn_top1``, ``probe_<tap>_top1``,
  ``invariance_l2_mean``, ``loss``, ...), ``checkpoint`` (the file the weights came from), ``exported_at``;
- ``state_dict``: the backbone's parameters and buffers (the method's ``backbone.*`` with the
  prefix stripped), at ``width=64`` exactly torchvision's ResNet's names less ``fc.*``.

A trial's weights are its last epoch's checkpoint under ``<root>/<study>/ray/train/<trial_id>/``:
``epoch-NNNNNN.pt`` of a trial trained in its own process (``checkpoints.EpochCheckpoints``
keeps the newest two) or ``checkpoint_*/state.pt`` of a TorchTrainer's (Ray Train keeps the newest
two), so the last epoch's always survives. The statistics are ``study.json``'s record of the
trial's setting (``settings[<setting_id>].normalization``); a store written before it kept them
has them computed again from the dataset, where it is at hand.

This module imports torch and the backbone only; the store, pandas and the dataset are imported
by ``export_trial`` alone, so ``load_backbone`` loads neither Ray nor the results wing.
"""

from __future__ import annotations

import io
import math
import os
import posixpath
import time
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from sslab.methods.blocks.backbone import TAPS, Backbone

FORMAT = "sslab.backbone"
FORMAT_VERSION = 1
#: what ``ExportedBackbone.features`` returns, said in the file
REPRESENTATION = ("res5 feature maps globally average-pooled, N x out_dim float32, of images in [0, 1] "
                  "normalised with `normalization`; the kNN evaluation L2-normalises them itself (cosine similarity)")
#: the trial ids an unknown one's message shows
_SHOWN_IDS = 5


class ExportError(Exception):
    """A trial cannot be exported as asked; the message names the cause and the fix."""


class ExportedBackbone(nn.Module):
    """An exported backbone, ready to use: ``features(images)`` takes float images in [0, 1]
    (N x 3 x H x W, RGB), normalises them with the training split's statistics and returns the
    pooled ``res5`` representation the kNN evaluation reads (N x ``out_dim``, float32; not
    L2-normalised: the kNN normalises, as ``engine.evaluate.knn_top1`` does). ``about`` is the
    file's record without the weights (trial, method, configuration, metrics, ...)."""

    def __init__(self, backbone: Backbone, *, mean: Sequence[float], std: Sequence[float], image_size: int,
                 about: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).reshape(1, 3, 1, 1), persistent=False)
        self.image_size, self.out_dim, self.about = image_size, backbone.out_dim, dict(about or {})

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``(images - mean) / std`` per channel, as every view of the training and evaluation was."""
        if not torch.is_tensor(images) or not images.is_floating_point() or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a float tensor N x 3 x H x W with values in [0, 1], got "
                             f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}"
                             " (uint8 pixels: divide by 255; H x W x 3 arrays: permute to 3 x H x W)")
        return (images.float() - self.mean) / self.std

    def feature_maps(self, images: torch.Tensor, taps: Sequence[str] = TAPS) -> dict[str, torch.Tensor]:
        """The feature maps at ``taps`` (``conv1``, ``res2`` .. ``res5``) of images in [0, 1]."""
        return self.backbone.features(self.normalize(images), taps)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled ``res5`` features of images in [0, 1] (N x 3 x H x W): the representation the
        trial's kNN and ``res5`` probe read (``engine.evaluate.pooled_features``)."""
        return self.feature_maps(images, ("res5",))["res5"].float().mean(dim=(2, 3))

    forward = features


def load_backbone(path: str | os.PathLike, device: torch.device | str = "cpu") -> ExportedBackbone:
    """The backbone an ``sslab export`` file holds, on ``device``, in eval mode (a local path or a
    URI such as ``s3://bucket/model.pt``). ``model.features(images)`` of images in [0, 1]."""
    record = read_export(path)
    model = ExportedBackbone(_backbone(record), mean=record["normalization"]["mean"],
                             std=record["normalization"]["std"], image_size=record["image_size"],
                             about={k: v for k, v in record.items() if k != "state_dict"})
    return model.to(device).eval()


def _backbone(record: dict[str, Any]) -> Backbone:
    """The file's backbone, built on the meta device (no initialisation to throw away) and given the file's tensors."""
    shape = record["architecture"]
    with torch.device("meta"):
        backbone = Backbone(shape["arch"], cifar_stem=shape["cifar_stem"], width=shape["width"])
    backbone.load_state_dict(record["state_dict"], strict=True, assign=True)
    return backbone


def read_export(path: str | os.PathLike) -> dict[str, Any]:
    """The plain dict an export file holds (tensors on the CPU), checked to be one sslab can read."""
    path = os.fspath(path)
    try:
        if "://" in path:
            from sslab.results.store import filesystem_for

            fs, where = filesystem_for(path)
            with fs.open_input_stream(where) as src:
                record = torch.load(io.BytesIO(src.read()), map_location="cpu", weights_only=True)
        else:
            record = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file; write one with: sslab export <study>") from None
    except Exception as err:  # noqa: BLE001 - not a torch file, or one holding more than plain data
        raise ValueError(f"{path} is not an sslab backbone file ({type(err).__name__}: {err})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{path} is not an sslab backbone file (no format {FORMAT!r}); write one with: "
                         "sslab export <study>")
    if int(record.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{path} is of format version {record['format_version']}, newer than this sslab reads "
                         f"({FORMAT_VERSION}); upgrade sslab (it was written by sslab {record.get('sslab_version')})")
    return record


def to_torchvision(path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    """The backbone as a ``torchvision.models.ResNet`` (``resnet18()``, ``resnet50()``; ``resnet10``:
    ``ResNet(BasicBlock, [1, 1, 1, 1])``), its weights loaded strictly, ``fc`` an ``nn.Identity``
    (its output: the pooled ``res5`` features), in eval mode. A CIFAR stem replaces torchvision's
    ``conv1`` (7x7, stride 2) by a 3x3 stride-1 convolution and its ``maxpool`` by ``nn.Identity``.
    Inputs are normalised images: ``torchvision.transforms.Normalize(**read_export(path)["normalization"])``
    less its ``source``. Only the standard width (64) is a torchvision ResNet."""
    from torchvision.models import resnet
    from torchvision.models.resnet import BasicBlock, ResNet

    record = read_export(path)
    shape = record["architecture"]
    if shape["width"] != 64:
        raise ValueError(f"{path}: a {shape['arch']} of width {shape['width']} is no torchvision ResNet (their first "
                         "stage is 64 channels wide); use sslab.load_backbone for it")
    builders = {"resnet10": lambda: ResNet(BasicBlock, [1, 1, 1, 1]), "resnet18": resnet.resnet18,
                "resnet50": resnet.resnet50}
    if shape["arch"] not in builders:
        raise ValueError(f"{path}: no torchvision ResNet for arch {shape['arch']!r}; known: {sorted(builders)}")
    with torch.device("meta"):  # no initialisation to throw away: every tensor comes from the file
        model = builders[shape["arch"]]()
        if shape["cifar_stem"]:
            model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            model.maxpool = nn.Identity()
        model.fc = nn.Identity()
    model.load_state_dict(record["state_dict"], strict=True, assign=True)
    return model.to(device).eval()


def pack(backbone: Backbone, *, image_size: int, mean: Sequence[float], std: Sequence[float],
         about: dict[str, Any] | None = None, source: str = "given") -> dict[str, Any]:
    """The file's dict for ``backbone``: its shape and weights, the statistics its inputs are
    normalised with and ``about`` (the trial's record: see the module docstring)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        sslab_version = version("sslab")
    except PackageNotFoundError:  # run from a source tree that is not installed
        sslab_version = "unknown"
    return {
        **_plain(dict(about or {})),
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sslab_version": sslab_version,
        "architecture": {"arch": backbone.arch, "width": int(backbone.width), "cifar_stem": bool(backbone.cifar_stem)},
        "image_size": int(image_size),
        "normalization": {"mean": [float(m) for m in mean], "std": [float(s) for s in std], "source": source},
        "representation": REPRESENTATION,
        # copies: a view would save the whole storage it views
        "state_dict": {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()},
    }


def write(record: dict[str, Any], out: str | os.PathLike) -> str:
    """Save ``record`` to ``out`` (a local path, made whole before it replaces a file, or a URI)."""
    out = os.fspath(out)
    buffer = io.BytesIO()
    torch.save(record, buffer)
    if "://" in out:
        from sslab.results.store import filesystem_for

        fs, where = filesystem_for(out)
        with fs.open_output_stream(where) as dst:
            dst.write(buffer.getvalue())
        return out
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(out)}.{os.getpid()}.tmp")
    with open(tmp, "wb") as dst:
        dst.write(buffer.getvalue())
    os.replace(tmp, out)
    return out


# ------------------------------------------------------------------ export from a results store
def export_trial(study: str, *, trial: str | None = None, best: str | None = None, out: str | None = None,
                 root: str | None = None) -> tuple[str, dict[str, Any]]:
    """Write the backbone of one finished trial of ``study`` (under the results ``root``, local or a
    URI) to ``out`` (default ``<trial_id>.pt`` here; a folder: that file in it): ``trial`` by id (or an
    unambiguous beginning of one), else the best trial of the study's current setting by ``best``
    (default: the study's metric, in its mode). Returns the path written and the record (less its
    weights). Raises ``ExportError`` (or the store's ``StoreError``) with the cause and the fix."""
    from sslab.results.store import ResultsStore, results_root

    store = ResultsStore(results_root(root), study)
    meta, trials = store.metadata(), store.read("trials")
    if not meta and trials.empty:
        raise ExportError(f"no results for {study!r} under {store.location}{_studies_there(store)}; run it with: "
                          f"sslab run {study}, or pass --results ROOT where it ran")
    if trials.empty:
        raise ExportError(f"{study!r} under {store.location} has no finished trial yet; see: sslab status {study}")
    row = _chosen(store, meta, trials, trial, best)
    state, checkpoint = _final_state(store, row)
    shape = {name: _training(row, meta, name) for name in ("arch", "width", "cifar_stem", "image_size")}
    backbone = Backbone(str(shape["arch"]), cifar_stem=bool(shape["cifar_stem"]), width=int(shape["width"]))
    from sslab.checkpoints import backbone_weights

    try:
        backbone.load_state_dict(backbone_weights(state), strict=True)
    except RuntimeError as err:
        raise ExportError(f"the checkpoint {checkpoint} does not hold a {shape['arch']} of width {shape['width']} "
                          f"(cifar_stem={shape['cifar_stem']}) as the trial's record says: {err}") from None
    mean, std, source = _normalization(meta, row, int(shape["image_size"]))
    record = pack(backbone, image_size=int(shape["image_size"]), mean=mean, std=std, source=source,
                  about=_about(store, row, int(state.get("epoch", -1)), checkpoint))
    path = out or f"{row['trial_id']}.pt".replace("/", "_")
    if "://" not in path and (os.path.isdir(path) or path.endswith(("/", os.sep))):
        path = os.path.join(path, f"{row['trial_id']}.pt".replace("/", "_"))
    write(record, path)
    return path, {k: v for k, v in record.items() if k != "state_dict"}


def command(study: str, trial: str | None, best: str | None, out: str | None, root: str | None) -> int:
    """``sslab export``: one line saying what was written and how to load it; an error, one line."""
    from sslab.results.store import StoreError

    try:
        path, record = export_trial(study, trial=trial, best=best, out=out, root=root)
    except (ExportError, StoreError) as err:
        raise SystemExit(f"sslab: {err}") from None
    scores = ", ".join(f"{k} {v:.4g}" for k, v in record["metrics"].items())
    shape = record["architecture"]
    print(f"{record['trial_id']} ({record['method']}, {shape['arch']} width {shape['width']}, "
          f"{record['image_size']} px; {scores or 'no metrics recorded'}) written to {path}; "
          f"load it with: sslab.load_backbone({path!r})")
    return 0


def _chosen(store, meta: dict[str, Any], trials, trial: str | None, best: str | None):
    """The trial's row: by id (or the one id it begins), else the best of the current setting."""
    from sslab.results.metrics import MONITOR_KNN
    from sslab.results.picks import best_trial
    from sslab.results.summary import current_setting

    ids = trials["trial_id"].astype(str)
    if trial is not None:
        hit = trials[ids == trial]
        if hit.empty and (ids.str.startswith(trial)).sum() == 1:
            hit = trials[ids.str.startswith(trial)]
        if hit.empty:
            known = sorted(ids)
            more = f" and {len(known) - _SHOWN_IDS} more" if len(known) > _SHOWN_IDS else ""
            several = ("; it begins several of them" if (ids.str.startswith(trial)).sum() > 1 else "")
            raise ExportError(f"no trial {trial!r} in {store.study!r} under {store.location}{several}; its trials: "
                              f"{', '.join(known[:_SHOWN_IDS])}{more} (sslab report {store.study} --format csv "
                              "lists them all)")
        return hit.iloc[-1]
    metric, mode = _metric_mode(meta, best)
    shown = current_setting(trials, trials.iloc[0:0], meta).trials
    pick = best_trial(shown, metric, mode or "max")
    if pick is None:
        ok = shown[shown["status"] == "ok"] if "status" in shown else shown
        have = sorted(c for c in shown.columns if c.endswith("_top1") and c != MONITOR_KNN)
        raise ExportError(f"no finished trial of {store.study!r}'s current setting has {metric!r} (of {len(shown)} "
                          f"trial(s) of that setting, {len(ok)} finished); --best one of {', '.join(have) or 'knn_top1'}, "
                          "or pass --trial ID")
    if mode is None:
        raise ExportError(f"{metric!r} has no better end (sslab does not say whether more or less of it is better); "
                          "--best a metric that has one (knn_top1, probe_res5_top1, loss, rankme, ...), "
                          "or pass --trial ID")
    return pick


def _metric_mode(meta: dict[str, Any], best: str | None) -> tuple[str, str | None]:
    """``best`` (default: the study's first metric) and whether higher or lower is better: the
    study's mode for its own metric, else the metric's own (``metrics.mode_of``; None: neither end)."""
    from sslab.results.metrics import mode_of, study_metrics

    own = dict(study_metrics(meta))
    metric = best or next(iter(own))
    # another metric: its own end (the loss: lower; a label-free measure's own, uniformity: lower)
    return metric, own[metric] if metric in own else mode_of(metric)


def _final_state(store, row) -> tuple[dict[str, Any], str]:
    """The trial's last epoch's checkpoint (the training state's dict) and where it is."""
    from sslab.checkpoints import final_state

    trial_id, status = str(row["trial_id"]), str(row.get("status", "ok"))
    if status == "failed":
        raise ExportError(f"trial {trial_id} failed ({row.get('error') or 'no error recorded'}): it has no final "
                          f"weights; export a finished one (sslab report {store.study}), or rerun it with: "
                          f"sslab run {store.study} --retry-failed")
    folder = f"{store.ray_storage}/train/{trial_id}"
    rerun = (f"to train it again, move {store.location}/trials/{trial_id}.parquet aside and run the study again "
             f"(sslab run {store.study})")
    epochs = row.get("epochs")
    state, path, passed = final_state(folder, None if epochs is None or _missing(epochs) else int(epochs))
    if state is None and not passed:
        raise ExportError(f"trial {trial_id} has no checkpoint under {folder}: its final weights are gone (the "
                          f"study's ray/ folder was moved or cleaned); {rerun}")
    if state is None:
        raise ExportError(f"trial {trial_id} has no final weights: {'; '.join(passed)}; {rerun}")
    return state, path


def _training(row, meta: dict[str, Any], name: str) -> Any:
    """A training field of the trial's spec (``train/<name>``); a store written before trials kept
    their spec has it in the profile of ``study.json``."""
    value = row.get(f"train/{name}")
    if value is None or _missing(value):
        value = (meta.get("profile") or {}).get(name)
    if value is None:
        raise ExportError(f"the record of trial {row['trial_id']} says no {name}: the store is older than sslab's "
                          "trial specifications; export is not possible from it")
    return value.item() if isinstance(value, np.generic) else value


def _normalization(meta: dict[str, Any], row, image_size: int) -> tuple[list[float], list[float], str]:
    """The training split's statistics: ``study.json``'s record of the trial's setting, else the
    dataset's, computed again (a store written before the record: the dataset must be at hand)."""
    setting = (meta.get("settings") or {}).get(str(row.get("setting_id"))) or {}
    recorded = setting.get("normalization")
    if recorded:
        return list(recorded["mean"]), list(recorded["std"]), "study.json"
    from sslab.data.catalog import train_normalization

    dataset = row.get("data/dataset")
    dataset = dataset if isinstance(dataset, str) else (meta.get("profile") or {}).get("dataset")
    try:
        stats = train_normalization(dataset, image_size=image_size, download=False)
    except (OSError, ValueError) as err:
        raise ExportError(f"study.json of {meta.get('study')!r} has no normalisation statistics for trial "
                          f"{row['trial_id']}'s setting (it was written by an older sslab), and the dataset "
                          f"{dataset!r} to compute them from is not here ({err}); set SSLAB_DATA to the folder "
                          "holding it and export again") from None
    return list(stats.mean), list(stats.std), f"dataset {dataset} (train split), computed at export"


def _about(store, row, epoch: int, checkpoint: str) -> dict[str, Any]:
    """What the file says of the trial: its identity, configuration, specification and metrics."""
    from sslab import methods
    from sslab.results import metrics as names

    method = str(row["method"])
    try:
        own = methods.get(method).Config.field_names()
    except (KeyError, ValueError):  # a method no longer registered: every knob it has a value of
        own = {c.removeprefix("config/") for c in row.index if c.startswith("config/") and not _missing(row[c])}
    config = {c.removeprefix("config/"): row[c] for c in row.index
              if c.startswith("config/") and c.removeprefix("config/") in own}
    spec = {part: {c.split("/", 1)[1]: row[c] for c in row.index if c.startswith(f"{part}/")}
            for part in ("train", "eval", "data")}
    scores = [names.KNN, *names.probe_columns(row.index), names.INVARIANCE, names.MONITOR_KNN, names.LOSS]
    metrics = {m: float(row[m]) for m in scores if m in row.index and not _missing(row[m])}
    return {"study": store.study, "trial_id": str(row["trial_id"]), "setting_id": row.get("setting_id"),
            "method": method, "seed": row.get("seed"), "status": row.get("status"), "config": config, "spec": spec,
            "epochs": epoch + 1, "metrics": metrics, "checkpoint": checkpoint,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _studies_there(store) -> str:
    """``; studies there: a, b`` (the folders with a study.json under the root), or nothing."""
    import pyarrow.fs as pafs

    from sslab.results.store import filesystem_for

    try:
        fs, base = filesystem_for(store.root)
        found = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
                       if i.type == pafs.FileType.Directory
                       and fs.get_file_info(posixpath.join(i.path, "study.json")).type == pafs.FileType.File)
    except OSError:
        return ""
    return f"; studies there: {', '.join(found[:10])}" if found else ""


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _plain(value: Any) -> Any:
    """``value`` as plain Python (numpy scalars and arrays of a pandas row become numbers and lists),
    which ``torch.load(weights_only=True)`` reads."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if value is not None and not isinstance(value, (str, int, float, bool)):
        return str(value)  # a timestamp or another type a row may hold: its text
    return value
