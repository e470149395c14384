"""Memory bank: the EMA of PIRL sec. 3.2, unit rows, and identical writes under torch.distributed."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from sslab.methods.blocks.memory_bank import MemoryBank


def test_initial_rows_are_unit_vectors_and_seeded():
    torch.manual_seed(3)
    a = MemoryBank(50, 16)
    torch.manual_seed(3)
    b = MemoryBank(50, 16)
    assert torch.allclose(a.bank.norm(dim=1), torch.ones(50), atol=1e-6)
    assert torch.equal(a.bank, b.bank)
    assert "bank" in a.state_dict()


def test_update_is_the_normalised_ema_and_touches_only_its_rows():
    bank = MemoryBank(20, 8)
    before = bank.bank.clone()
    idx = torch.tensor([3, 7, 11])
    emb = F.normalize(torch.randn(3, 8), dim=1)
    alpha = 0.3
    bank.update(idx, emb, alpha)
    for row, e in zip(idx.tolist(), emb):
        mixed = alpha * before[row] + (1 - alpha) * e
        assert torch.allclose(bank.bank[row], mixed / mixed.norm(), atol=1e-6)
    others = torch.ones(20, dtype=torch.bool)
    others[idx] = False
    assert torch.equal(bank.bank[others], before[others])
    assert torch.allclose(bank.bank.norm(dim=1), torch.ones(20), atol=1e-6)
    assert torch.equal(bank[idx], bank.rows(idx)) and torch.equal(bank.rows(idx), bank.bank[idx])


def test_update_does_not_track_gradients_and_momentum_zero_copies():
    bank = MemoryBank(10, 4)
    emb = F.normalize(torch.randn(2, 4), dim=1).requires_grad_(True)
    bank.update(torch.tensor([0, 5]), emb, 0.0)
    assert not bank.bank.requires_grad
    assert torch.allclose(bank.bank[[0, 5]], emb.detach(), atol=1e-6)


def test_repeated_index_is_written_once_from_its_first_occurrence():
    bank = MemoryBank(10, 4)
    before = bank.bank.clone()
    emb = F.normalize(torch.randn(3, 4), dim=1)
    bank.update(torch.tensor([2, 2, 4]), emb, 0.5)
    expected = F.normalize(0.5 * before[2] + 0.5 * emb[0], dim=0)
    assert torch.allclose(bank.bank[2], expected, atol=1e-6)


def test_sample_negatives_shape_range_and_generator():
    bank = MemoryBank(30, 4)
    idx = bank.sample_negatives(5, 1000, generator=torch.Generator().manual_seed(0))
    again = bank.sample_negatives(5, 1000, generator=torch.Generator().manual_seed(0))
    assert idx.shape == (5, 1000) and idx.dtype == torch.long
    assert idx.min() >= 0 and idx.max() < 30
    assert torch.equal(idx, again)
    assert len(idx.unique()) == 30  # uniform over all rows: 5000 draws hit every one of 30


def _update_worker(rank, world, init_file, bank0, idx, emb, momentum, split, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        bank = MemoryBank(*bank0.shape)
        bank.bank.copy_(bank0)
        start, stop = split[rank], split[rank + 1]
        bank.update(idx[start:stop], emb[start:stop], momentum)
        torch.save(bank.bank, f"{out}/bank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("split", [(0, 6, 12)], ids=["halves"])
def test_two_worker_update_equals_single_worker_update(tmp_path, split):
    torch.manual_seed(0)
    bank0 = MemoryBank(40, 8).bank.clone()
    idx = torch.randperm(40)[:12]
    emb = F.normalize(torch.randn(12, 8), dim=1)
    mp.spawn(
        _update_worker,
        args=(2, tmp_path / "rendezvous", bank0, idx, emb, 0.5, split, str(tmp_path)),
        nprocs=2,
        join=True,
    )
    single = MemoryBank(40, 8)
    single.bank.copy_(bank0)
    single.update(idx, emb, 0.5)
    for rank in range(2):
        assert torch.allclose(torch.load(tmp_path / f"bank{rank}.pt"), single.bank, atol=1e-6)


@pytest.mark.parametrize("num_samples", [50, 5000])  # 50 <= N*d: whole-bank product; 5000 > N*d: gather
def test_similarities_match_the_gathered_dot_products_and_their_gradient(num_samples):
    torch.manual_seed(0)
    bank = MemoryBank(num_samples, 8)
    emb = F.normalize(torch.randn(6, 8), dim=1).requires_grad_(True)
    idx = torch.randint(num_samples, (6,))
    neg = torch.randint(num_samples, (6, 20))
    expected_pos = (emb * bank.bank[idx]).sum(1)
    expected_neg = torch.stack([bank.bank[neg[b]] @ emb[b] for b in range(6)])
    pos, sims = bank.similarities(emb, idx), bank.similarities(emb, neg)
    assert sims.shape == (6, 20) and pos.shape == (6,)
    torch.testing.assert_close(pos, expected_pos)
    torch.testing.assert_close(sims, expected_neg)
    weights = torch.randn(6, 20)
    (grad,) = torch.autograd.grad((sims * weights).sum(), emb)
    (expected_grad,) = torch.autograd.grad((expected_neg * weights).sum(), emb)
    torch.testing.assert_close(grad, expected_grad)
