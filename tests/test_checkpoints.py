"""Epoch checkpoints of in-process trials: newest wins, old ones go, a broken file falls back."""

import logging

import pytest
import torch

from sslab.checkpoints import EpochCheckpoints


def _state(epoch):
    return {"epoch": epoch, "weights": torch.full((3,), float(epoch))}


def test_no_checkpoint_yet_is_none(tmp_path):
    assert EpochCheckpoints(str(tmp_path / "never-written")).latest() is None


@pytest.mark.parametrize("uri", [False, True], ids=["path", "file-uri"])
def test_the_newest_epoch_is_restored_and_only_the_newest_are_kept(tmp_path, uri):
    location = f"file://{tmp_path}/trial" if uri else str(tmp_path / "trial")
    checkpoints = EpochCheckpoints(location, keep=2)
    for epoch in range(4):
        checkpoints.save(_state(epoch), epoch)
    restored = checkpoints.latest()
    assert restored["epoch"] == 3 and torch.equal(restored["weights"], torch.full((3,), 3.0))
    assert sorted(p.name for p in (tmp_path / "trial").iterdir()) == ["epoch-000002.pt", "epoch-000003.pt"]


def test_a_truncated_newest_file_falls_back_to_the_one_before(tmp_path, caplog):
    checkpoints = EpochCheckpoints(str(tmp_path), keep=2)
    checkpoints.save(_state(4), 4)
    checkpoints.save(_state(5), 5)
    newest = tmp_path / "epoch-000005.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # a disk that filled up mid-copy
    with caplog.at_level(logging.WARNING):
        assert checkpoints.latest()["epoch"] == 4
    assert "epoch-000005.pt does not load" in caplog.text


def test_keep_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="keep"):
        EpochCheckpoints(str(tmp_path), keep=0)


class _RunsCode:
    """A pickled object whose loading would call os.system: what a hostile bucket could hold."""

    def __reduce__(self):
        import os

        return (os.system, ("touch hacked",))


def test_a_checkpoint_is_loaded_as_tensors_and_plain_types_only(tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkpoints = EpochCheckpoints(str(tmp_path / "trial"), keep=2)
    checkpoints.save(_state(1), 1)
    checkpoints.save({"epoch": 2, "payload": _RunsCode()}, 2)
    with caplog.at_level(logging.WARNING):
        assert checkpoints.latest()["epoch"] == 1  # the newest is refused, the one before is used
    assert "epoch-000002.pt does not load" in caplog.text
    assert not (tmp_path / "hacked").exists()
