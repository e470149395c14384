"""Jigsaw permutation sets: validity, determinism, and the max-min Hamming property."""

import itertools
import math
import time

import numpy as np
import pytest
import torch

from sslab.methods.blocks.permutations import minimum_hamming_distance, permutation_set

ALL = math.factorial(9)


def test_greedy_set_is_p_distinct_valid_permutations():
    perms = permutation_set(100, seed=0)
    assert perms.shape == (100, 9) and perms.dtype == torch.long
    assert (perms.sort(dim=1).values == torch.arange(9)).all()
    assert len({tuple(p) for p in perms.tolist()}) == 100


def test_deterministic_in_seed_and_returns_fresh_copies():
    a = permutation_set(50, seed=7)
    a[0, 0] = 99  # callers may mutate their copy without poisoning the cache
    b = permutation_set(50, seed=7)
    assert (b.sort(dim=1).values == torch.arange(9)).all()
    assert torch.equal(b, permutation_set(50, seed=7))
    assert not torch.equal(b, permutation_set(50, seed=8))
    assert torch.equal(permutation_set(10, seed=7), b[:10])  # greedy: a prefix of the longer run


def test_greedy_set_is_farther_apart_than_a_random_set():
    greedy = minimum_hamming_distance(permutation_set(100, seed=0))
    rng = np.random.default_rng(0)
    random_sets = [np.array([rng.permutation(9) for _ in range(100)]) for _ in range(5)]
    assert all(greedy >= minimum_hamming_distance(r) for r in random_sets)
    assert greedy >= 6  # far above the 2-3 typical of random sets


def test_p_1000_takes_seconds_and_keeps_distance():
    start = time.perf_counter()
    perms = permutation_set(1000, seed=123)
    assert time.perf_counter() - start < 10
    assert minimum_hamming_distance(perms) >= 5


def test_all_permutations():
    perms = permutation_set(ALL)
    assert perms.shape == (ALL, 9)
    assert perms[:3].tolist() == [list(p) for p in itertools.islice(itertools.permutations(range(9)), 3)]
    assert len(np.unique(perms.numpy(), axis=0)) == ALL
    assert minimum_hamming_distance(perms) == 2


@pytest.mark.parametrize("bad", [0, -1, ALL + 1])
def test_out_of_range_sizes_are_rejected(bad):
    with pytest.raises(ValueError, match=rf"num_permutations \(P\) = {bad}.*\[1, {ALL}\]"):
        permutation_set(bad)


def test_minimum_hamming_distance_small_cases():
    assert minimum_hamming_distance(torch.tensor([[0, 1, 2], [0, 2, 1]])) == 2
    assert minimum_hamming_distance([[0, 1, 2], [1, 2, 0], [2, 0, 1]]) == 3
    assert minimum_hamming_distance([[0, 1, 2], [0, 1, 2]]) == 0
    assert minimum_hamming_distance([[0, 1, 2]]) == 3
