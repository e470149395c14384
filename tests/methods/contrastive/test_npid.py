"""NPID++ (PIRL at λ = 0): its loss and its memory-bank update against hand-written formulas."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from method_testing import CTX, build_method, view_batch

from sslab.methods.base import DataInfo, state_names
from sslab.methods.contrastive.npid import NPID, NPIDConfig
from sslab.methods.views import ImageView

SAMPLES, BATCH, NEGATIVES = 40, 6, 7


def _npid(**config) -> NPID:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_method(NPID, arch="resnet18", data=DataInfo(SAMPLES, 1, 32), num_negatives=NEGATIVES,
                            embedding_dim=8, **config)


def _step_with_its_negatives(method: NPID, batch):
    """The step's loss, f(v_I) and the negatives it drew (the same draw, replayed from the seed)."""
    torch.manual_seed(11)
    out = method.training_step(batch, CTX)
    loss, metrics = out.loss, out.metrics
    torch.manual_seed(11)
    negatives = method.memory_bank.sample_negatives(BATCH, NEGATIVES)
    with torch.no_grad():
        f = method.embed_image(batch["image"])
    return loss, metrics, f, negatives


def test_infonce_loss_is_the_softmax_over_the_positive_row_and_n_drawn_rows():
    method = _npid(loss_form="infonce", temperature=0.2)
    bank = method.memory_bank.bank.clone()
    batch = view_batch([ImageView()], BATCH, idx=SAMPLES)
    loss, metrics, f, negatives = _step_with_its_negatives(method, batch)
    per_image = []
    for i, row in enumerate(batch["idx"].tolist()):
        pos = float(bank[row] @ f[i]) / 0.2
        negs = [float(bank[j] @ f[i]) / 0.2 for j in negatives[i].tolist()]
        per_image.append(-pos + math.log(math.exp(pos) + sum(math.exp(n) for n in negs)))
    assert loss.item() == pytest.approx(sum(per_image) / BATCH, rel=1e-5)
    assert metrics["loss"].item() == metrics["loss_image"].item() == pytest.approx(loss.item())
    assert math.isnan(metrics["loss_jigsaw"])  # no jigsaw term at λ = 0


def test_nce_loss_follows_eq_3_and_4_with_z_estimated_on_the_first_batch():
    method = _npid(loss_form="nce", temperature=0.1)
    bank = method.memory_bank.bank.clone()
    batch = view_batch([ImageView()], BATCH, seed=1, idx=SAMPLES)
    loss, _, f, negatives = _step_with_its_negatives(method, batch)
    pos = [float(bank[row] @ f[i]) for i, row in enumerate(batch["idx"].tolist())]
    neg = [[float(bank[j] @ f[i]) for j in negatives[i].tolist()] for i in range(BATCH)]
    # Z ≈ |D| · mean exp(s/τ) over every similarity of the first batch (NPID eq. 4-5)
    every = pos + [s for row in neg for s in row]
    z = SAMPLES * sum(math.exp(s / 0.1) for s in every) / len(every)
    assert float(method.log_z_image) == pytest.approx(math.log(z), rel=1e-5)
    noise = NEGATIVES / SAMPLES  # N · P_n with the uniform noise 1/|D|

    def h(s):
        e = math.exp(s / 0.1) / z
        return e / (e + noise)

    per_image = [-math.log(h(pos[i])) - sum(math.log(1 - h(s)) for s in neg[i]) for i in range(BATCH)]
    assert loss.item() == pytest.approx(sum(per_image) / BATCH, rel=1e-4)


def test_after_step_moves_each_row_to_the_normalised_ema_of_f():
    method = _npid(bank_momentum=0.3)
    batch = view_batch([ImageView()], BATCH, seed=2, idx=SAMPLES)
    before = method.memory_bank.bank.clone()
    out = method.training_step(batch, CTX)
    f = out.carry.clone()  # f(v_I), carried to after_step
    method.after_step(batch, out, CTX)
    after = method.memory_bank.bank
    rows = batch["idx"].tolist()
    for i, row in enumerate(rows):
        expected = 0.3 * before[row] + 0.7 * f[i]
        torch.testing.assert_close(after[row], expected / expected.norm())
    untouched = [r for r in range(SAMPLES) if r not in rows]
    assert torch.equal(after[untouched], before[untouched])


def test_npid_trains_the_image_head_only_and_refuses_a_jigsaw_weight():
    method = _npid()
    assert NPID.views(method.config, 32) == [ImageView()]
    assert set(state_names(method, method.unused_parameters())) == {
        n for n, _ in method.named_parameters() if n.startswith(("patch_head.", "jigsaw_head."))}
    with pytest.raises(ValueError, match=r"loss_weight \(λ\) = 0.5 .*use the method 'pirl'"):
        NPIDConfig(loss_weight=0.5)
