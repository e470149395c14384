"""The memory bank of PIRL (Misra & van der Maaten 2019, sec. 3.2) and NPID (Wu et al. 2018).

One L2-normalised row m_I per training image, an exponential moving average of the
image's representation f(v_I) over past epochs. Its rows serve as positives (m_I) and
as uniformly drawn negatives (m_I', I' != I) in the NCE loss. The bank is a persistent
buffer, so it is saved in checkpoints, and every write is all-gathered first so that
all data-parallel replicas hold the same bank (as VISSL's NCE memory bank does).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from sslab.methods.blocks.distributed import all_gather_no_grad


class MemoryBank(nn.Module):
    """``num_samples`` x ``dim`` unit vectors, initialised uniformly on the sphere.

    The initialisation uses torch's default generator, so ``torch.manual_seed`` makes it
    reproducible (and identical across replicas that seed alike).
    """

    bank: torch.Tensor

    def __init__(self, num_samples: int, dim: int) -> None:
        super().__init__()
        if num_samples < 1 or dim < 1:
            raise ValueError(f"MemoryBank needs num_samples >= 1 and dim >= 1, got {num_samples} x {dim}")
        self.num_samples, self.dim = num_samples, dim
        # A normalised Gaussian is uniform on the unit sphere.
        self.register_buffer("bank", F.normalize(torch.randn(num_samples, dim), dim=1), persistent=True)

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """The rows m_idx (any index shape; a trailing ``dim`` axis is added)."""
        return self.bank[idx.to(self.bank.device)]

    __getitem__ = rows

    def similarities(self, embeddings: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Cosine similarities s = f · m_idx of B embeddings to their rows: ``idx`` (B,) gives (B,),
        ``idx`` (B, N) gives (B, N). Differentiable in ``embeddings``; the bank is a constant.

        For N rows per embedding the textbook form gathers a B x N x d tensor (4.2 GB at PIRL's
        B = 256, N = 32,000, d = 128) that autograd keeps for the backward pass. When the bank
        has fewer rows than N x d (CIFAR's 50,000 < 4 M, ImageNet's 1.28 M too), scoring the
        batch against the whole bank with one matrix product and picking N columns per row is
        the same number with a B x |D| intermediate instead: see ``benchmarks/memory_bank.py``.
        """
        bank = self.bank
        idx = idx.to(bank.device)
        if idx.dim() == 1:
            return (embeddings * bank[idx]).sum(dim=1)
        if self.num_samples <= idx.shape[1] * self.dim:
            return (embeddings @ bank.T).gather(1, idx)
        return torch.einsum("bd,bnd->bn", embeddings, bank[idx])

    def sample_negatives(
        self, batch_size: int, num_negatives: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``batch_size`` x ``num_negatives`` row indices drawn uniformly with replacement.

        As in NPID and VISSL the draw does not exclude the positive's own row; with
        N << |D| it is hit with probability N/|D| and only dilutes one negative.
        """
        device = generator.device if generator is not None else self.bank.device
        idx = torch.randint(self.num_samples, (batch_size, num_negatives), generator=generator, device=device)
        return idx.to(self.bank.device)

    @torch.no_grad()
    def update(self, idx: torch.Tensor, embeddings: torch.Tensor, momentum: float) -> None:
        """m_I <- normalise(α m_I + (1 - α) f(v_I)) for the rows ``idx`` (PIRL sec. 3.2, α = momentum).

        Under torch.distributed (world size > 1) the indices and embeddings of every worker
        are all-gathered first, so all replicas write the same rows with the same values; every
        worker passes the same number of rows (the training loop's batches are all full).
        A row indexed more than once takes the value of its first occurrence.

        Nothing here waits for the device: no data-dependent shapes (``torch.unique``) and no
        exchange of batch sizes, so a GPU step is never stalled by the bank.
        """
        idx = idx.to(self.bank.device).reshape(-1)
        embeddings = embeddings.detach().to(self.bank.device, self.bank.dtype).reshape(len(idx), self.dim)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            idx, embeddings = all_gather_no_grad(idx), all_gather_no_grad(embeddings)
        embeddings = embeddings[_first_occurrence(idx, self.num_samples)]
        updated = momentum * self.bank[idx] + (1.0 - momentum) * embeddings
        # a repeated row is written more than once, always with the same value
        self.bank.index_copy_(0, idx, F.normalize(updated, dim=1))


def _first_occurrence(idx: torch.Tensor, num_rows: int) -> torch.Tensor:
    """For each position of ``idx``, the first position holding the same value (fixed shapes only)."""
    positions = torch.arange(len(idx), device=idx.device)
    first = torch.full((num_rows,), len(idx), dtype=positions.dtype, device=idx.device)
    return first.scatter_reduce_(0, idx, positions, reduce="amin")[idx]
