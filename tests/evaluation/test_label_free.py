"""Label-free measures against closed forms, and against direct re-computations of the formulas
their reference code uses (numpy, written out here independently of the module)."""

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sslab.evaluation import label_free
from sslab.evaluation.label_free import MEASURES, alignment, alpha_req, alpha_req_gap, lidar, rankme, uniformity


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _orthonormal(rows, cols, gen, avoid=None):
    """``rows`` × ``cols`` with orthonormal columns, orthogonal to the columns of ``avoid``."""
    a = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    if avoid is not None:
        q, _ = torch.linalg.qr(avoid)
        a = a - q @ (q.T @ a)
    return torch.linalg.qr(a)[0]


def _equal_rank(k, m, eps):
    """exp(entropy) of p = (1/k + eps) k times and eps (m - k) times: k equal values among m."""
    p1 = 1.0 / k + eps
    entropy = -k * p1 * math.log(p1) - (m - k) * eps * math.log(eps)
    return math.exp(entropy)


# --- RankMe -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,d,k", [(200, 64, 1), (200, 64, 7), (200, 64, 64), (30, 100, 5), (30, 100, 30)])
def test_rankme_of_k_orthogonal_equal_norm_directions_is_k(n, d, k):
    gen = _gen(k)
    x = 3.7 * _orthonormal(n, k, gen) @ _orthonormal(d, k, gen).T  # k singular values, all 3.7
    assert rankme(x) == pytest.approx(_equal_rank(k, min(n, d), 1e-7), rel=1e-9)
    assert rankme(x) == pytest.approx(k, rel=1e-2)


def test_rankme_of_a_rank_one_matrix_is_one():
    gen = _gen(1)
    x = torch.randn(500, 1, generator=gen, dtype=torch.float64) * torch.randn(1, 128, generator=gen, dtype=torch.float64)
    assert rankme(x) == pytest.approx(1.0, abs=1e-3)
    assert rankme(x) == pytest.approx(_equal_rank(1, 128, 1e-7), rel=1e-9)
    assert rankme(x, eps=1e-12) == pytest.approx(_equal_rank(1, 128, 1e-12), rel=1e-12)


def test_rankme_matches_the_papers_formula_and_ignores_scale():
    x = torch.randn(300, 40, generator=_gen(2)) ** 3  # an uneven spectrum
    s = np.linalg.svd(x.double().numpy(), compute_uv=False)
    p = s / np.abs(s).sum() + 1e-7
    expected = float(np.exp(-(p * np.log(p)).sum()))
    assert rankme(x) == pytest.approx(expected, rel=1e-8)
    assert rankme(1e3 * x) == pytest.approx(expected, rel=1e-8)
    assert 1.0 < expected < 40.0


def test_rankme_of_zero_features_is_zero():
    assert rankme(torch.zeros(10, 4)) == 0.0


# --- α-ReQ --------------------------------------------------------------------------------------


def _power_law_features(n, d, alpha, gen, ranks=None):
    """n × d features (offset by a common mean) whose centred covariance has eigenvalues exactly
    k^-alpha for k = 1..ranks (default min(n - 1, d)) and 0 after."""
    r = ranks or min(n - 1, d)
    u = _orthonormal(n, r, gen, avoid=torch.ones(n, 1, dtype=torch.float64))  # centred columns
    lam = torch.arange(1, r + 1, dtype=torch.float64) ** -alpha
    x = u * ((n - 1) * lam).sqrt() @ _orthonormal(d, r, gen).T
    return x + torch.randn(1, d, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_alpha_req_recovers_an_exact_power_law(alpha):
    x = _power_law_features(1000, 256, alpha, _gen(3))
    assert alpha_req(x) == pytest.approx(alpha, abs=1e-6)
    assert alpha_req_gap(x) == pytest.approx(abs(alpha - 1.0), abs=1e-6)


def test_alpha_req_with_fewer_samples_than_dimensions():
    x = _power_law_features(150, 512, 1.5, _gen(4))  # 149 non-zero eigenvalues
    assert alpha_req(x) == pytest.approx(1.5, abs=1e-6)


def test_alpha_req_range_stops_at_the_available_eigenvalues():
    x = _power_law_features(500, 40, 1.2, _gen(5))  # ranks 11..40
    assert alpha_req(x) == pytest.approx(1.2, abs=1e-6)
    with pytest.raises(ValueError, match="needs at least 12 eigenvalues"):
        alpha_req(torch.randn(500, 11, generator=_gen(5)))


def test_alpha_req_is_the_authors_weighted_fit_on_ranks_11_to_100():
    """A spectrum that is no power law, so the range and the 1/rank weights matter: the fit of
    reptrix's get_powerlaw (after Stringer & Pachitariu), re-done here in numpy."""
    x = (torch.randn(2000, 256, generator=_gen(6), dtype=torch.float64) * torch.linspace(0.1, 3, 256)) ** 3
    c = x.numpy() - x.numpy().mean(axis=0)
    eigen = np.linalg.svd(c, compute_uv=False) ** 2
    eigen = eigen / eigen.sum()  # PCA's explained-variance ratio
    trange = np.arange(10, 100)
    y = np.log(np.abs(eigen))[trange][:, None]
    trange = trange + 1
    xs = np.concatenate((-np.log(trange)[:, None], np.ones((trange.size, 1))), axis=1)
    w = 1.0 / trange.astype(np.float64)[:, None]
    b = np.linalg.solve(xs.T @ (xs * w), (w * xs).T @ y).flatten()
    assert alpha_req(x) == pytest.approx(b[0], rel=1e-9)
    unweighted = -np.polyfit(np.log(trange), y[:, 0], 1)[0]
    assert abs(unweighted - b[0]) > 1e-3  # the weights make a difference that the test would see


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_alpha_req_of_a_collapsed_spectrum_is_infinite(dtype):
    """Rank 5 < 11: ranks 11..100 hold only round-off of the features' dtype, whose fit alone
    would give α ≈ 1 for float32."""
    gen = _gen(7)
    x = torch.randn(400, 5, generator=gen, dtype=dtype) @ torch.randn(5, 128, generator=gen, dtype=dtype)
    assert alpha_req(x) == math.inf
    assert alpha_req_gap(x) == math.inf
    assert alpha_req(torch.ones(50, 30)) == math.inf


# --- LiDAR --------------------------------------------------------------------------------------


def _lda_features(n, q, d, k, between, within, gen):
    """(n, q, d) embeddings whose sample Σ_b is between² P (P: projector on k directions) and
    whose sample Σ_w (without δ) is within² I, exactly."""
    indicator = torch.kron(torch.eye(n, dtype=torch.float64), torch.ones(q, 1, dtype=torch.float64))
    noise = _orthonormal(n * q, d, gen, avoid=indicator) * within * math.sqrt(n * (q - 1))
    means = _orthonormal(n, k, gen, avoid=torch.ones(n, 1, dtype=torch.float64))
    means = means * between * math.sqrt(n - 1) @ _orthonormal(d, k, gen).T
    offset = torch.randn(1, 1, d, generator=gen, dtype=torch.float64)
    return means[:, None, :] + noise.reshape(n, q, d) + offset


@pytest.mark.parametrize("k", [1, 4, 16])
def test_lidar_of_rank_k_between_scatter_with_isotropic_noise_is_k(k):
    z = _lda_features(60, 4, 32, k, between=2.0, within=0.5, gen=_gen(k))
    assert lidar(z) == pytest.approx(_equal_rank(k, 32, 1e-8), rel=1e-9)
    assert lidar(z) == pytest.approx(k, rel=1e-3)


def _lidar_numpy(z, eps, delta):
    """The paper's formulas, written out with loops over instances and views."""
    n, q, d = z.shape
    mu_i = z.mean(axis=1)
    mu = mu_i.mean(axis=0)
    sb = sum(np.outer(m - mu, m - mu) for m in mu_i) / (n - 1)
    sw = sum(np.outer(z[i, j] - mu_i[i], z[i, j] - mu_i[i]) for i in range(n) for j in range(q)) / (n * (q - 1))
    sw = sw + delta * np.eye(d)
    vals, vecs = np.linalg.eigh(sw)
    inv_sqrt = vecs @ np.diag(vals ** -0.5) @ vecs.T
    lam = np.linalg.eigvalsh(inv_sqrt @ sb @ inv_sqrt)
    lam = np.clip(lam, 0, None)
    p = lam / np.abs(lam).sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


@pytest.mark.parametrize("eps,delta", [(1e-8, 1e-4), (1e-7, 1e-6), (1e-6, 0.5)])
def test_lidar_matches_a_direct_computation_of_the_formula(eps, delta):
    gen = _gen(8)
    clean = torch.randn(40, 1, 12, generator=gen, dtype=torch.float64) * torch.linspace(0.1, 2, 12)
    z = clean + 0.3 * torch.randn(40, 5, 12, generator=gen, dtype=torch.float64)
    expected = _lidar_numpy(z.numpy(), eps, delta)
    assert lidar(z, eps=eps, delta=delta) == pytest.approx(expected, rel=1e-9)
    assert 1.0 < expected < 12.0


@pytest.mark.parametrize("delta", [1e-4, 0.5])
def test_lidar_of_embeddings_wider_than_their_rows_is_the_formulas(delta):
    """D > n·q: computed in the span of the rows (the docstring), the same value as the formula in D dimensions."""
    gen = _gen(10)
    clean = torch.randn(8, 1, 40, generator=gen, dtype=torch.float64) * torch.linspace(0.1, 2, 40)
    z = clean + 0.3 * torch.randn(8, 3, 40, generator=gen, dtype=torch.float64) + 2.0
    expected = _lidar_numpy(z.numpy(), 1e-8, delta)
    assert lidar(z, delta=delta) == pytest.approx(expected, rel=1e-9)
    assert lidar(z.float(), delta=delta) == pytest.approx(expected, rel=1e-5)
    assert lidar(z[:, :, :20], delta=delta) != pytest.approx(expected, rel=1e-3)  # the width counts
    with pytest.raises(ValueError, match="singular"):
        lidar(z, delta=0.0)


def test_lidar_without_delta_is_invariant_to_an_invertible_linear_map():
    gen = _gen(9)
    z = torch.randn(30, 6, 8, generator=gen, dtype=torch.float64) + torch.randn(30, 1, 8, generator=gen, dtype=torch.float64)
    a = torch.randn(8, 8, generator=gen, dtype=torch.float64) + 3 * torch.eye(8, dtype=torch.float64)
    assert lidar(z @ a + 5.0, delta=0.0) == pytest.approx(lidar(z, delta=0.0), rel=1e-8)
    assert lidar(z @ a, delta=1e-4) != pytest.approx(lidar(z, delta=1e-4), rel=1e-8)  # δ breaks it


def test_lidar_rejects_bad_shapes_and_a_singular_within_scatter():
    with pytest.raises(ValueError, match="at least 2 views"):
        lidar(torch.randn(10, 1, 4))
    with pytest.raises(ValueError, match="at least 2 samples"):
        lidar(torch.randn(1, 3, 4))
    with pytest.raises(ValueError, match="3-dimensional"):
        lidar(torch.randn(10, 4))
    with pytest.raises(ValueError, match="singular"):
        lidar(torch.randn(3, 2, 16), delta=0.0)  # 3 within-instance directions in 16 dimensions


# --- alignment and uniformity -------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_alignment_closed_forms(alpha):
    x = torch.randn(64, 16, generator=_gen(10), dtype=torch.float64)
    assert alignment(x, x, alpha=alpha) == pytest.approx(0.0, abs=1e-12)
    assert alignment(x, 2.5 * x, alpha=alpha) == pytest.approx(0.0, abs=1e-12)  # normalised first
    assert alignment(x, -3 * x, alpha=alpha) == pytest.approx(2 ** alpha, rel=1e-12)  # antipodal
    e = torch.eye(16)
    assert alignment(e[:8], 4 * e[8:], alpha=alpha) == pytest.approx(2 ** (alpha / 2), rel=1e-12)  # orthogonal


def test_alignment_matches_the_official_align_loss():
    gen = _gen(11)
    a = torch.nn.functional.normalize(torch.randn(100, 32, generator=gen, dtype=torch.float64), dim=1)
    b = torch.nn.functional.normalize(a + 0.5 * torch.randn(100, 32, generator=gen, dtype=torch.float64), dim=1)
    assert alignment(a, b) == pytest.approx(float((a - b).norm(p=2, dim=1).pow(2).mean()), rel=1e-12)
    with pytest.raises(ValueError, match="equal shapes"):
        alignment(a, b[:50])


@pytest.mark.parametrize("t", [0.5, 2.0, 3.0])
def test_uniformity_of_two_antipodal_points(t):
    x = torch.tensor([[1.0, 2.0, -2.0], [-1.0, -2.0, 2.0]])
    assert uniformity(x, t=t) == pytest.approx(-4 * t, rel=1e-12)


@pytest.mark.parametrize("n", [3, 7, 12])
def test_uniformity_of_a_regular_polygon_on_a_circle(n):
    """Points at angles 2πi/n: each has the same n - 1 partners, at squared distances
    2 - 2 cos(2πm/n), m = 1..n-1."""
    t = 2.0
    angles = 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
    circle = torch.stack([angles.cos(), angles.sin()], dim=1)
    x = circle @ _orthonormal(5, 2, _gen(n)).T  # the circle in a random plane of R^5
    expected = math.log(sum(math.exp(-t * (2 - 2 * math.cos(2 * math.pi * m / n))) for m in range(1, n)) / (n - 1))
    assert uniformity(x, t=t) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("extra", [1, 477])
def test_uniformity_matches_the_official_pdist_formula_across_row_blocks(extra):
    n = label_free._BLOCK_ROWS + extra  # two blocks, the second of one row or more
    x = torch.nn.functional.normalize(torch.randn(n, 24, generator=_gen(12), dtype=torch.float64), dim=1)
    official = float(torch.pdist(x, p=2).pow(2).mul(-2).exp().mean().log())
    assert uniformity(x) == pytest.approx(official, rel=1e-10)
    assert uniformity(7 * x) == pytest.approx(official, rel=1e-10)  # normalised first
    assert uniformity(torch.ones(5, 3)) == pytest.approx(0.0, abs=1e-12)  # one point, repeated


# --- inputs -------------------------------------------------------------------------------------


def _calls(x):
    """Each measure applied to 2-d features ``x`` (LiDAR to its rows paired as two views)."""
    return {
        "rankme": lambda: rankme(x),
        "alpha_req": lambda: alpha_req(x),
        "lidar": lambda: lidar(x.reshape(x.shape[0] // 2, 2, x.shape[1])),
        "alignment": lambda: alignment(x, x.flip(0)),
        "uniformity": lambda: uniformity(x),
    }


@pytest.mark.parametrize("name", ["rankme", "alpha_req", "lidar", "alignment", "uniformity"])
def test_every_measure_rejects_nan_inf_and_a_single_sample(name):
    for bad in (float("nan"), float("inf")):
        x = torch.randn(64, 16, generator=_gen(13))
        x[5, 3] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            _calls(x)[name]()
    single = {"lidar": lambda: lidar(torch.randn(1, 2, 16)), "alignment": lambda: alignment(torch.randn(1, 4), torch.randn(1, 4))}
    with pytest.raises(ValueError, match="at least 2 samples"):
        single.get(name, _calls(torch.randn(1, 16))[name])()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_every_measure_accepts_any_float_dtype_and_computes_in_float64(dtype):
    x = torch.randn(64, 16, generator=_gen(14)).to(dtype)
    low, high = _calls(x), _calls(x.double())
    for name in low:
        assert low[name]() == pytest.approx(high[name](), rel=1e-12), name


def test_measures_accept_numpy_and_tensors_that_require_grad():
    x = torch.randn(64, 16, generator=_gen(15), requires_grad=True)
    assert rankme(x) == pytest.approx(rankme(x.detach().numpy()), rel=1e-12)
    assert isinstance(uniformity(x), float)


def test_measures_table():
    assert {name: m.mode for name, m in MEASURES.items()} == {
        "rankme": "max", "lidar": "max", "alpha_req_gap": "min", "alignment": "min", "uniformity": "min"}
    for name, m in MEASURES.items():
        assert callable(getattr(label_free, name)) and m.description


def test_the_module_imports_torch_only():
    tree = ast.parse(Path(label_free.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "math", "typing", "torch"}
