"""A trial's training state on storage: what a checkpoint holds, where its files are, which loads.

Ray Train keeps the checkpoints of a TorchTrainer run (``checkpoint_*/state.pt``); a trial
that skips the TorchTrainer (a profile with ``num_workers=0``) keeps its own here, one file per
epoch (``epoch-NNNNNN.pt``) under a folder named by the trial's stable id (a local path or a URI
such as ``s3://bucket/...``, through ``pyarrow.fs``). Tune's retry of a lost trial process and a
re-run of an interrupted study both continue from the newest readable file, so no finished
epoch is trained twice; ``sslab export`` reads a finished trial's last one (``trial_files``).

What a checkpoint holds is ``TrainingState``, the same on either path. This module imports
neither Ray nor the engine, so the export reads checkpoints through it as the engine writes them.
"""

from __future__ import annotations

import io
import logging
import posixpath
import re
import uuid
from dataclasses import dataclass, fields
from typing import Any

import pyarrow.fs as pafs
import torch

from sslab.results.store import filesystem_for

log = logging.getLogger(__name__)

_NAME = re.compile(r"^epoch-(\d{6})\.pt$")
#: the file in which a TorchTrainer's checkpoint folder (``checkpoint_*``) holds the state
RAY_TRAIN_FILE = "state.pt"


def read(fs: pafs.FileSystem, path: str) -> dict[str, Any]:
    """The state dict in one checkpoint file, loaded as tensors and plain types only (no code runs)."""
    with fs.open_input_file(path) as src:
        return torch.load(io.BytesIO(src.read()), map_location="cpu", weights_only=True)


def trial_files(location: str) -> tuple[pafs.FileSystem, list[str]]:
    """A trial's checkpoint files under ``location``, newest first: its own epoch files
    (``EpochCheckpoints``), then Ray Train's ``checkpoint_*/state.pt`` (Ray's folder names sort by
    time). Whether each loads is for the reader to find out (``read``)."""
    fs, base = filesystem_for(location)
    found = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=True))
    own = sorted((int(m.group(1)), info.path) for info in found if posixpath.dirname(info.path) == base.rstrip("/")
                 and (m := _NAME.match(info.base_name)))
    ray = sorted(info.path for info in found if info.base_name == RAY_TRAIN_FILE
                 and posixpath.basename(posixpath.dirname(info.path)).startswith("checkpoint_"))
    return fs, [path for _, path in reversed(own)] + list(reversed(ray))


def final_state(location: str, epochs: int | None) -> tuple[dict[str, Any] | None, str | None, list[str]]:
    """A finished trial's last state: the newest of its checkpoint files (``trial_files``) that
    loads and holds its last epoch (``epochs`` - 1; any, when ``epochs`` is None). Returns the
    state, its path (a URI keeps its scheme) and why each newer file was passed over; (None, None,
    reasons) when none qualifies, (None, None, []) when the trial has no checkpoint file."""
    fs, candidates = trial_files(location)
    last = None if epochs is None else int(epochs) - 1
    passed = []
    for path in candidates:
        try:
            state = read(fs, path)
        except Exception as err:  # noqa: BLE001 - a truncated or foreign file: say it and look at the one before
            passed.append(f"{path} does not load ({type(err).__name__}: {err})")
            continue
        if last is not None and state.get("epoch") != last:
            passed.append(f"{path} holds epoch {int(state.get('epoch', -2)) + 1}, not its last ({last + 1})")
            continue
        return state, (f"{location.split('://')[0]}://{path}" if "://" in location else path), passed
    return None, None, passed


def backbone_weights(state: dict[str, Any]) -> dict[str, Any]:
    """The backbone's parameters and buffers in a training state: the method's ``backbone.*``
    entries with the prefix stripped (a ``methods.blocks.backbone.Backbone``'s own names)."""
    model = state.get("model") or {}  # the method's state_dict: its backbone's, its heads', its buffers'
    return {k.removeprefix("backbone."): v for k, v in model.items() if k.startswith("backbone.")}


@dataclass
class TrainingState:
    """What the training loop keeps after each epoch and resumes from: one trial's checkpoint.

    On storage it is a plain dict of tensors and plain types (``to_dict``; its keys are the
    field names), so that ``torch.load(weights_only=True)`` reads it and no checkpoint can run code
    on the node that resumes from it."""

    #: ``method.state_dict()``: every parameter and persistent buffer (a memory bank, an EMA encoder)
    model: dict[str, Any]
    optimizer: dict[str, Any]
    #: the warm-up + cosine LR schedule (its ``last_epoch`` is the global step)
    schedule: dict[str, Any]
    #: the last finished epoch
    epoch: int
    #: one row per finished epoch (``EpochReport.row``: the epochs table)
    history: list[dict[str, Any]]
    images_seen: int
    #: seconds of training and of evaluation, over every attempt
    train_seconds: float
    eval_seconds: float
    #: wall seconds of every attempt so far
    wall_seconds: float
    #: (stolen, total) CPU ticks over every attempt (``results/cpu_steal.py``); None: not measured
    cpu_steal_ticks: tuple[int, int] | None
    #: every worker's random-number generators (``device.rng_of_every_worker``)
    rng: Any
    #: how often the trial resumed from a checkpoint
    restarts: int
    #: the last epoch's result as it was reported, said again by an attempt that resumes after
    #: the last epoch (``EpochReport.to_result``)
    last_metrics: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The state as saved: field name -> value (the values themselves, not copies)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> "TrainingState":
        """The state a checkpoint holds. Checkpoints written before the loop counted restarts, kept
        its evaluation and wall seconds over every attempt, or measured the CPU steal lack those
        keys; they still resume, with zero for what came before them and the steal unknown (None),
        and this is the one place that knows it."""
        values = {"restarts": 0, "eval_seconds": 0.0, "wall_seconds": 0.0, "cpu_steal_ticks": None, **state}
        return cls(**{f.name: values[f.name] for f in fields(cls)})


class EpochCheckpoints:
    """The newest ``keep`` epoch states of one trial."""

    def __init__(self, location: str, *, keep: int = 2):
        if keep < 1:
            raise ValueError(f"keep = {keep} must be at least 1")
        self.location, self.keep = location, keep
        self.fs, self._base = filesystem_for(location)
        self._local = isinstance(self.fs, pafs.LocalFileSystem)
        #: why each checkpoint that did not load was passed over (path and error), for the report
        self.skipped: list[str] = []

    def _epochs(self) -> list[int]:
        """The epochs with a checkpoint file, oldest first."""
        selector = pafs.FileSelector(self._base, allow_not_found=True)
        names = (posixpath.basename(info.path) for info in self.fs.get_file_info(selector))
        return sorted(int(m.group(1)) for m in map(_NAME.match, names) if m)

    def newest_epoch(self) -> int | None:
        """The newest epoch with a checkpoint file (None without one); whether it loads is not checked."""
        epochs = self._epochs()
        return epochs[-1] if epochs else None

    def _path(self, epoch: int) -> str:
        return posixpath.join(self._base, f"epoch-{epoch:06d}.pt")

    def save(self, state: dict[str, Any], epoch: int) -> None:
        """Write the state of ``epoch`` whole (a crash mid-write leaves the older files intact),
        then drop all but the newest ``keep``."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.fs.create_dir(self._base, recursive=True)
        path = self._path(epoch)
        # one PUT on an object store is already all-or-nothing; a local file is renamed into place
        target = posixpath.join(self._base, f".{uuid.uuid4().hex}.tmp") if self._local else path
        with self.fs.open_output_stream(target) as out:
            out.write(buffer.getvalue())
        if target != path:
            self.fs.move(target, path)
        for old in self._epochs()[: -self.keep]:
            self.fs.delete_file(self._path(old))

    def latest(self) -> dict[str, Any] | None:
        """The newest state that loads; None when the trial has none yet.

        A file that does not load (a disk that filled up, a truncated copy) is
        skipped with a warning in favour of the one before it.
        """
        for epoch in reversed(self._epochs()):
            try:
                return read(self.fs, self._path(epoch))
            except Exception as err:  # noqa: BLE001 - any unreadable file: fall back to the previous epoch
                log.warning("checkpoint %s does not load (%s); resuming from the one before it",
                            self._path(epoch), err)
                self.skipped.append(f"{self._path(epoch)} does not load ({type(err).__name__}: {err})")
        return None
