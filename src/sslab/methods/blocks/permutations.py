"""Jigsaw permutation sets (Noroozi & Favaro 2016, "Unsupervised Learning of Visual
Representations by Solving Jigsaw Puzzles").

A permutation of the 3x3 grid is a row of 9 tile indices. PIRL (Misra & van der
Maaten 2019) draws the permutation of v_I^t from a set of size P; P = 9! means any
permutation. For P < 9! the set is chosen greedily so that its permutations are
far apart in Hamming distance, which makes puzzles built from it hard to confuse.
Noroozi & Favaro's released code maximises the *average* distance to the chosen
set; here the greedy step maximises the *minimum* distance (the max-min variant),
which directly guarantees the set's minimum Hamming distance.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import torch

GRID_CELLS = 9
NUM_ALL = math.factorial(GRID_CELLS)  # 362880


@functools.lru_cache(maxsize=1)
def _all_permutations() -> np.ndarray:
    """All 9! permutations in ``itertools.permutations`` order, uint8 (9! x 9), read-only."""
    perms = np.array(list(itertools.permutations(range(GRID_CELLS))), dtype=np.uint8)
    perms.setflags(write=False)
    return perms


@functools.lru_cache(maxsize=16)
def _greedy_max_min(num_permutations: int, seed: int) -> np.ndarray:
    """Indices (into ``_all_permutations()``) of a greedy max-min Hamming set, in selection order."""
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(NUM_ALL))]
    # Distinct permutations are >= 2 apart, so a candidate whose minimum distance to the chosen
    # set has fallen to 2 stays there: only candidates still above 2 ("active") need updating.
    active = np.arange(NUM_ALL)
    min_dist = np.full(NUM_ALL, GRID_CELLS, dtype=np.uint8)
    while True:
        # equal[k][v]: which active candidates put tile v in cell k, so that the Hamming distance
        # to a permutation p is 9 - sum_k equal[k][p[k]] (nine vectorised additions per pick).
        perms = _all_permutations()[active]
        equal = [[perms[:, k] == v for v in range(GRID_CELLS)] for k in range(GRID_CELLS)]
        while len(chosen) < num_permutations:
            matches = np.zeros(len(active), dtype=np.uint8)
            for k, v in enumerate(_all_permutations()[chosen[-1]]):
                matches += equal[k][v]
            np.minimum(min_dist, GRID_CELLS - matches, out=min_dist)
            best = int(min_dist.max())
            if best <= 2 or (min_dist > 2).sum() < len(active) // 2:
                break
            ties = np.flatnonzero(min_dist == best)  # in index order, so shrinking changes no draw
            chosen.append(int(active[ties[rng.integers(len(ties))]]))
        if len(chosen) == num_permutations:
            break
        if best <= 2:
            # Every unchosen candidate is tied at distance 2 for good: draw the rest at once.
            unchosen = np.ones(NUM_ALL, dtype=bool)
            unchosen[chosen] = False
            rest = rng.choice(np.flatnonzero(unchosen), num_permutations - len(chosen), replace=False)
            chosen.extend(int(i) for i in rest)
            break
        keep = min_dist > 2
        active, min_dist = active[keep], min_dist[keep]
    result = np.array(chosen, dtype=np.int64)
    result.setflags(write=False)
    return result


def permutation_set(num_permutations: int, seed: int = 0) -> torch.Tensor:
    """A set of ``num_permutations`` distinct permutations of the 9 jigsaw cells, LongTensor P x 9.

    ``P == 9!`` returns every permutation in ``itertools.permutations`` order. Smaller P
    gives the greedy maximal-minimum-Hamming-distance selection of Noroozi & Favaro (2016):
    start from a random permutation, then repeatedly add the candidate whose minimum
    Hamming distance to the chosen set is largest, ties broken at random. Deterministic in
    ``seed``; results are cached, and the returned tensor is a fresh copy.
    """
    if isinstance(num_permutations, bool) or not isinstance(num_permutations, int | np.integer):
        raise ValueError(f"num_permutations (P) = {num_permutations!r} must be an integer in [1, {NUM_ALL}]")
    if not 1 <= num_permutations <= NUM_ALL:
        raise ValueError(f"num_permutations (P) = {num_permutations} is outside the allowed range [1, {NUM_ALL}]")
    if num_permutations == NUM_ALL:
        return torch.from_numpy(_all_permutations().astype(np.int64))
    rows = _greedy_max_min(int(num_permutations), int(seed))
    return torch.from_numpy(_all_permutations()[rows].astype(np.int64))


def minimum_hamming_distance(perms: torch.Tensor | np.ndarray) -> int:
    """The smallest Hamming distance between two distinct rows of ``perms`` (P x n).

    Returns 0 when two rows are equal, and ``n`` (the largest possible) for a single row.
    Large sets of permutations are checked through their transposition neighbours first
    (distance 2 is the smallest possible between distinct permutations), so P = 9! is fast.
    """
    a = perms.cpu().numpy() if isinstance(perms, torch.Tensor) else np.asarray(perms)
    if a.ndim != 2:
        raise ValueError(f"perms must be a 2-D array P x n, got shape {tuple(a.shape)}")
    num, width = a.shape
    if num < 2:
        return int(width)
    a = a.astype(np.int64)
    if len(np.unique(a, axis=0)) < num:
        return 0
    is_permutation = bool((np.sort(a, axis=1) == np.arange(width)).all())
    if num > 2048 and is_permutation:
        keys = _row_keys(a, width)
        for i, j in itertools.combinations(range(width), 2):
            swapped = a.copy()
            swapped[:, [i, j]] = swapped[:, [j, i]]
            if np.isin(_row_keys(swapped, width), keys).any():
                return 2
    # Pairwise matches as a matrix product of one-hot rows (exact in float32), in row chunks.
    values, codes = np.unique(a, return_inverse=True)
    onehot = torch.from_numpy(np.eye(len(values), dtype=np.float32)[codes.reshape(a.shape)].reshape(num, -1))
    best, chunk = width, max(1, 2**24 // num)  # at most 64 MB of distances at a time
    for start in range(0, num, chunk):
        distances = width - onehot[start : start + chunk] @ onehot.T
        rows = torch.arange(len(distances))
        distances[rows, rows + start] = width + 1  # skip each row's distance to itself
        best = min(best, int(distances.min()))
    return best


def _row_keys(a: np.ndarray, base: int) -> np.ndarray:
    """One integer per row (the row read as a number in ``base``), for set membership tests."""
    return a @ (base ** np.arange(a.shape[1], dtype=np.int64))
